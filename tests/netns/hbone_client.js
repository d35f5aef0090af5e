// An HBONE client written with Node's own http2 and TLS (not ringmesh's):
// mTLS to <host>:<port> with a client certificate, CONNECT to <target>,
// <bytes> of deterministic data up, half-close, and the echo back compared
// by SHA-256. Prints one JSON line: {"status", "bytes", "echo_ok", "error"}.
// Usage: node hbone_client.js HOST PORT CA_PEM CERT_PEM KEY_PEM TARGET BYTES EXPECTED_SERVER_ID
'use strict';
const http2 = require('http2');
const crypto = require('crypto');
const fs = require('fs');

const [host, port, caFile, certFile, keyFile, target, bytesArg, serverId] = process.argv.slice(2);
const total = Number(bytesArg);
const out = (o) => { console.log(JSON.stringify(o)); };
setTimeout(() => { out({ error: 'timeout' }); process.exit(3); }, 60000).unref();

const client = http2.connect(`https://${host}:${port}`, {
  ca: fs.readFileSync(caFile), cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile),
  ALPNProtocols: ['h2'], minVersion: 'TLSv1.3', servername: '',
  // The server is named by its SPIFFE ID (a URI SAN), not a host name.
  checkServerIdentity: (h, cert) =>
    cert.subjectaltname === `URI:${serverId}` ? undefined : new Error(`server is ${cert.subjectaltname}`),
});
client.on('error', (e) => { out({ error: e.code || e.message }); process.exit(2); });

const data = Buffer.alloc(total);
for (let i = 0; i < total; i += 32) {
  crypto.createHash('sha256').update(String(i)).digest().copy(data, i, 0, Math.min(32, total - i));
}
const want = crypto.createHash('sha256').update(data).digest('hex');

const req = client.request({ ':method': 'CONNECT', ':authority': target }, { endStream: false });
req.on('response', (headers) => {
  const status = headers[':status'];
  if (status !== 200) {
    out({ status });
    client.close(() => process.exit(0));
    return;
  }
  req.end(data);  // everything, then END_STREAM: a half close
  const got = crypto.createHash('sha256');
  let n = 0;
  req.on('data', (chunk) => { got.update(chunk); n += chunk.length; });
  req.on('end', () => {
    out({ status, bytes: n, echo_ok: n === total && got.digest('hex') === want });
    client.close(() => process.exit(0));
  });
});
req.on('error', (e) => { out({ error: e.code || e.message }); process.exit(4); });
