"""map: N items, at most 100 in flight, each yields once and returns item*2.

Bounded concurrency the way the asyncio docs' queue example does it: a fixed
pool of worker tasks pulling from one shared iterator; results in order.
"""
import asyncio

import benchloop

CONCURRENCY = 100


async def double(x):
    await asyncio.sleep(0)
    return x * 2


async def amap(fn, items, concurrency):
    results = [None] * len(items)
    work = iter(enumerate(items))

    async def worker():
        for i, x in work:
            results[i] = await fn(x)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


async def main(n):
    results = await amap(double, range(1, n + 1), CONCURRENCY)
    print(f"sum={sum(results)}")


benchloop.run(main, 100_000)
