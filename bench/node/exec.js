'use strict';
// exec: N runs of `true`, at most 50 at a time, with child_process.execFile
// (which captures stdout and stderr, as asyncrun's process.exec does).
// Sum of i over the runs that exited 0.
const { execFile } = require('node:child_process');
const CONCURRENCY = 50;

function run(i) {
  return new Promise((resolve) => {
    execFile('true', (err) => resolve(err ? 0 : i));
  });
}

async function main(n) {
  let next = 1;
  let sum = 0;
  async function worker() {
    while (next <= n) {
      const i = next++;
      const r = await run(i);
      sum += r;
    }
  }
  const workers = [];
  for (let w = 0; w < CONCURRENCY; w++) workers.push(worker());
  await Promise.all(workers);
  console.log(`sum=${sum}`);
}

main(Number(process.argv[2] || 1000));
