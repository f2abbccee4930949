'use strict';
// fslines: count the lines of FILE with node:readline over a read stream,
// the documented way to read a file line by line ('line' events, which
// are faster than `for await`).
const fs = require('node:fs');
const readline = require('node:readline');

const rl = readline.createInterface({
  input: fs.createReadStream(process.argv[3]),
  crlfDelay: Infinity,
});
let n = 0;
rl.on('line', () => { n++; });
rl.on('close', () => { console.log(`sum=${n}`); });
