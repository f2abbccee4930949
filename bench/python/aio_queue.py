"""queue: 1 producer, 4 consumers, N integers through asyncio.Queue(1000).

Python 3.11 has no Queue.shutdown(), so the producer ends each consumer
with a sentinel, the usual way before 3.13.
"""
import asyncio

import benchloop

CONSUMERS = 4


async def producer(q, n):
    for i in range(1, n + 1):
        await q.put(i)
    for _ in range(CONSUMERS):
        await q.put(None)


async def consumer(q):
    total = 0
    while True:
        item = await q.get()
        if item is None:
            return total
        total += item


async def main(n):
    q = asyncio.Queue(maxsize=1000)
    consumers = [asyncio.create_task(consumer(q)) for _ in range(CONSUMERS)]
    await producer(q, n)
    totals = await asyncio.gather(*consumers)
    print(f"sum={sum(totals)}")


benchloop.run(main, 1_000_000)
