// HBONE client for hbone_node_interop_test: Node's own http2 + TLS stack
// sends CONNECT to our HboneServerConn, pushes bytes through the tunnel,
// half-closes, and checks that exactly the same bytes come back.
// Usage: node node_hbone_client.js <port> <dir with root.pem client.pem client.key> <bytes> <server spiffe id>
'use strict';
const http2 = require('http2');
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

const [port, dir, bytesArg, serverId] = process.argv.slice(2);
const total = Number(bytesArg);
const read = (f) => fs.readFileSync(path.join(dir, f));
setTimeout(() => { console.log('TIMEOUT'); process.exit(3); }, 10000).unref();

const client = http2.connect(`https://127.0.0.1:${port}`, {
  ca: read('root.pem'), cert: read('client.pem'), key: read('client.key'),
  ALPNProtocols: ['h2'], minVersion: 'TLSv1.3', servername: '',
  // The server is named by its SPIFFE ID (a URI SAN), not a host name.
  checkServerIdentity: (host, cert) => {
    if (cert.subjectaltname !== `URI:${serverId}`) return new Error(`unexpected server ${cert.subjectaltname}`);
    return undefined;
  },
});
client.on('error', (e) => { console.log(`ERROR ${e.message}`); process.exit(2); });

const payload = crypto.createHash('sha256');  // deterministic bytes: counter-mode sha256 blocks
const data = Buffer.alloc(total);
for (let i = 0; i < total; i += 32) {
  const block = crypto.createHash('sha256').update(String(i)).digest();
  block.copy(data, i, 0, Math.min(32, total - i));
}
payload.update(data);
const want = payload.digest('hex');

// Refusals first: a plain GET and a CONNECT to an address the server does not serve.
const statusOf = (headers) => new Promise((resolve) => {
  const r = client.request(headers);
  r.on('response', (h) => resolve(h[':status']));
  r.on('error', (e) => resolve(`error:${e.code}`));
  r.resume();
  r.end();
});
// A refused CONNECT whose request side stays open: the answer comes first, then
// RST_STREAM(NO_ERROR) (RFC 9113 8.1); the reset must not swallow the answer.
const statusOfOpen = (headers) => new Promise((resolve) => {
  const r = client.request(headers, { endStream: false });
  r.on('response', (h) => resolve(h[':status']));
  r.on('close', () => resolve(`closed:${r.rstCode}`));
  r.on('error', (e) => resolve(`error:${e.code}`));
  r.resume();
});
const refusals = Promise.all([
  statusOf({ ':method': 'GET', ':path': '/' }),
  statusOf({ ':method': 'CONNECT', ':authority': '198.18.0.9:8080' }),
  statusOfOpen({ ':method': 'CONNECT', ':authority': '198.18.0.9:8080' }),
]);

const req = client.request({ ':method': 'CONNECT', ':authority': '198.18.0.5:8080' }, { endStream: false });
req.on('response', (headers) => {
  if (headers[':status'] !== 200) { console.log(`STATUS ${headers[':status']}`); process.exit(4); }
  req.end(data);  // write everything, then END_STREAM (half close)
});
const got = crypto.createHash('sha256');
let n = 0;
req.on('data', (chunk) => { got.update(chunk); n += chunk.length; });
req.on('end', () => {
  const have = got.digest('hex');
  refusals.then(([get, other, open]) => {
    console.log(have === want && n === total ? `ECHO_OK ${n} GET=${get} OTHER=${other} OPEN=${open}` : `ECHO_BAD ${n} ${have} ${want}`);
    client.close(() => process.exit(have === want ? 0 : 5));
  });
});
req.on('error', (e) => { console.log(`STREAM_ERROR ${e.message}`); process.exit(6); });
