'use strict';
// sleepers: N async tasks, task i sleeping (i*7919) % 1000 ms; gather.
const { setTimeout: sleep } = require('node:timers/promises');

async function sleeper(i) {
  await sleep((i * 7919) % 1000);
  return i;
}

async function main(n) {
  const tasks = [];
  for (let i = 1; i <= n; i++) tasks.push(sleeper(i));
  const results = await Promise.all(tasks);
  let sum = 0;
  for (const r of results) sum += r;
  console.log(`sum=${sum}`);
}

main(Number(process.argv[2] || 100000));
