"""redis: 100 tasks share one redis.asyncio client (its connection pool
grows to one connection per concurrent task, as redis-py does); call c
(1..N, N/100 per task) is GET bench:<c mod 100>. Prints sum=<total>."""
import asyncio

import redis.asyncio as aioredis

import benchloop

TASKS = 100


async def worker(r, t, per):
    total = 0
    for c in range(t * per + 1, (t + 1) * per + 1):
        total += int(await r.get(f"bench:{c % 100}"))
    return total


async def main(n, url="redis://127.0.0.1:6379/0"):
    r = aioredis.from_url(url)
    async with r.pipeline(transaction=False) as p:
        for k in range(100):
            p.set(f"bench:{k}", k)
        await p.execute()
    per = n // TASKS
    totals = await asyncio.gather(*(worker(r, t, per) for t in range(TASKS)))
    await r.close()
    print(f"sum={sum(totals)}")


benchloop.run(main, 100_000)
