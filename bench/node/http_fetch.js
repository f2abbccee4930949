'use strict';
// http with the built-in fetch (undici; its global dispatcher keeps
// connections alive): N GETs, 64 workers, each body read with res.json().
// URL i is BASE + (i % 100) + '.json'; prints the sum of the "n" fields.
const CONCURRENCY = 64;

async function main(n, base) {
  let next = 1;
  let total = 0;
  async function worker() {
    while (next <= n) {
      const i = next++;
      const res = await fetch(`${base}${i % 100}.json`);
      if (res.status !== 200) throw new Error(`status ${res.status}`);
      const doc = await res.json();
      total += doc.n;
    }
  }
  const workers = [];
  for (let w = 0; w < CONCURRENCY; w++) workers.push(worker());
  await Promise.all(workers);
  console.log(`sum=${total}`);
}

main(Number(process.argv[2] || 20000), process.argv[3]).catch((e) => {
  console.error(e);
  process.exit(1);
});
