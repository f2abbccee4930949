'use strict';
// queue: 1 producer, 4 consumers, N integers through a bounded queue of
// 1000. Node has no async queue built in; this is the usual promise-based
// one (waiters resolved in FIFO order). The producer ends each consumer
// with a sentinel.
const CONSUMERS = 4;

class AsyncQueue {
  constructor(maxsize) {
    this.maxsize = maxsize;
    this.items = [];
    this.head = 0;
    this.getters = [];
    this.putters = [];
  }

  get size() { return this.items.length - this.head; }

  async put(v) {
    while (this.size >= this.maxsize) await new Promise((r) => this.putters.push(r));
    this.items.push(v);
    if (this.getters.length) this.getters.shift()();
  }

  async get() {
    while (this.size === 0) await new Promise((r) => this.getters.push(r));
    const v = this.items[this.head++];
    // Drop the consumed prefix now and then rather than shift() each time.
    if (this.head >= 4096) { this.items = this.items.slice(this.head); this.head = 0; }
    if (this.putters.length) this.putters.shift()();
    return v;
  }
}

async function producer(q, n) {
  for (let i = 1; i <= n; i++) await q.put(i);
  for (let c = 0; c < CONSUMERS; c++) await q.put(null);
}

async function consumer(q) {
  let total = 0;
  for (;;) {
    const item = await q.get();
    if (item === null) return total;
    total += item;
  }
}

async function main(n) {
  const q = new AsyncQueue(1000);
  const consumers = [];
  for (let c = 0; c < CONSUMERS; c++) consumers.push(consumer(q));
  await producer(q, n);
  const totals = await Promise.all(consumers);
  console.log(`sum=${totals.reduce((a, b) => a + b, 0)}`);
}

main(Number(process.argv[2] || 1000000));
