"""sleepers: N tasks, task i sleeping (i*7919) % 1000 ms; gather."""
import asyncio

import benchloop


async def sleeper(i):
    await asyncio.sleep((i * 7919) % 1000 / 1000)
    return i


async def main(n):
    tasks = [asyncio.create_task(sleeper(i)) for i in range(1, n + 1)]
    results = await asyncio.gather(*tasks)
    print(f"sum={sum(results)}")


benchloop.run(main, 100_000)
