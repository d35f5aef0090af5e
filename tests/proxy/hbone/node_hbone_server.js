// HBONE server for hbone_node_interop_test: Node's http2 secure server
// (mTLS, h2 only) answers CONNECT to 198.18.0.5:8080 with 200 and echoes the
// tunnel's bytes (half-close included); other authorities get 503. Checks
// the client's SPIFFE ID. Prints "PORT <n>" when listening.
// Usage: node node_hbone_server.js <dir with root.pem server.pem server.key> <client spiffe id>
'use strict';
const http2 = require('http2');
const fs = require('fs');
const path = require('path');

const [dir, clientId] = process.argv.slice(2);
const read = (f) => fs.readFileSync(path.join(dir, f));
setTimeout(() => process.exit(3), 12000).unref();

const server = http2.createSecureServer({
  ca: read('root.pem'), cert: read('server.pem'), key: read('server.key'),
  requestCert: true, rejectUnauthorized: true, allowHTTP1: false, minVersion: 'TLSv1.3',
});
server.on('stream', (stream, headers) => {
  const peer = stream.session.socket.getPeerCertificate();
  if (peer.subjectaltname !== `URI:${clientId}`) {
    stream.respond({ ':status': 401 }, { endStream: true });
    return;
  }
  if (headers[':method'] !== 'CONNECT' || headers[':authority'] !== '198.18.0.5:8080') {
    stream.respond({ ':status': 503 }, { endStream: true });
    return;
  }
  stream.respond({ ':status': 200 });
  stream.pipe(stream);  // echo; our END_STREAM ends the echo too
});
server.on('sessionError', (e) => console.error(`session error ${e.message}`));
server.listen(0, '127.0.0.1', () => console.log(`PORT ${server.address().port}`));
