'use strict';
// http with node:http and a keep-alive Agent limited to 64 sockets: N GETs,
// 64 workers, each body collected and JSON.parse'd. URL i is
// BASE + (i % 100) + '.json'; prints the sum of the "n" fields.
const http = require('node:http');
const CONCURRENCY = 64;

const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });

function getJSON(url) {
  return new Promise((resolve, reject) => {
    http.get(url, { agent }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        reject(new Error(`status ${res.statusCode}`));
        return;
      }
      res.setEncoding('utf8');
      let body = '';
      res.on('data', (chunk) => { body += chunk; });
      res.on('end', () => {
        try { resolve(JSON.parse(body)); } catch (e) { reject(e); }
      });
    }).on('error', reject);
  });
}

async function main(n, base) {
  let next = 1;
  let total = 0;
  async function worker() {
    while (next <= n) {
      const i = next++;
      const doc = await getJSON(`${base}${i % 100}.json`);
      total += doc.n;
    }
  }
  const workers = [];
  for (let w = 0; w < CONCURRENCY; w++) workers.push(worker());
  await Promise.all(workers);
  agent.destroy();
  console.log(`sum=${total}`);
}

main(Number(process.argv[2] || 20000), process.argv[3]).catch((e) => {
  console.error(e);
  process.exit(1);
});
