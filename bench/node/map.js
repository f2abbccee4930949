'use strict';
// map: N items, at most 100 in flight, each yields to the event loop once
// and returns item*2; results in order. Bounded concurrency as a fixed pool
// of async workers sharing one index.
const { setImmediate: yieldLoop } = require('node:timers/promises');
const CONCURRENCY = 100;

async function double(x) {
  await yieldLoop();
  return x * 2;
}

async function amap(fn, items, concurrency) {
  const results = new Array(items.length);
  let next = 0;
  async function worker() {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]);
    }
  }
  const workers = [];
  for (let w = 0; w < concurrency; w++) workers.push(worker());
  await Promise.all(workers);
  return results;
}

async function main(n) {
  const items = Array.from({ length: n }, (_, i) => i + 1);
  const results = await amap(double, items, CONCURRENCY);
  let sum = 0;
  for (const r of results) sum += r;
  console.log(`sum=${sum}`);
}

main(Number(process.argv[2] || 100000));
