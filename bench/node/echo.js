'use strict';
// echo: a TCP echo server and 64 clients in one process over loopback
// (node:net, the event style Node's docs use); each client makes N round
// trips of a 64-byte message. Sum of the bytes echoed.
const net = require('node:net');
const CONNECTIONS = 64;
const MSG = Buffer.alloc(64, 'x');

function client(port, n) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let rounds = 0;
    let pending = 0;
    let echoed = 0;
    sock.on('connect', () => { sock.write(MSG); });
    sock.on('data', (d) => {
      pending += d.length;
      echoed += d.length;
      while (pending >= 64) {
        pending -= 64;
        rounds++;
        if (rounds === n) { sock.end(); resolve(echoed); return; }
        sock.write(MSG);
      }
    });
    sock.on('error', reject);
  });
}

const server = net.createServer((s) => {
  s.on('data', (d) => s.write(d));
  s.on('error', () => {});
});

server.listen(0, '127.0.0.1', async () => {
  const n = Number(process.argv[2] || 10000);
  const { port } = server.address();
  const clients = [];
  for (let c = 0; c < CONNECTIONS; c++) clients.push(client(port, n));
  const results = await Promise.all(clients);
  server.close();
  let sum = 0;
  for (const r of results) sum += r;
  console.log(`sum=${sum}`);
});
