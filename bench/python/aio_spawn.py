"""spawn: N tasks that each yield once and return their index; gather."""
import asyncio

import benchloop


async def task(i):
    await asyncio.sleep(0)
    return i


async def main(n):
    tasks = [asyncio.create_task(task(i)) for i in range(1, n + 1)]
    results = await asyncio.gather(*tasks)
    print(f"sum={sum(results)}")


benchloop.run(main, 100_000)
