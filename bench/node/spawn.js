'use strict';
// spawn: N async tasks that each yield to the event loop once (the
// documented promise form of setImmediate) and return their index.
const { setImmediate: yieldLoop } = require('node:timers/promises');

async function task(i) {
  await yieldLoop();
  return i;
}

async function main(n) {
  const tasks = [];
  for (let i = 1; i <= n; i++) tasks.push(task(i));
  const results = await Promise.all(tasks);
  let sum = 0;
  for (const r of results) sum += r;
  console.log(`sum=${sum}`);
}

main(Number(process.argv[2] || 100000));
