"""exec: N runs of `true`, at most 50 at a time, stdout and stderr captured
(as asyncrun's process.exec and Node's execFile do): the documented
create_subprocess_exec + communicate(), bounded by a semaphore. Sum of i
over the runs that exited 0."""
import asyncio

import benchloop

CONCURRENCY = 50


async def run(i, sem):
    async with sem:
        p = await asyncio.create_subprocess_exec(
            "true", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        await p.communicate()
        return i if p.returncode == 0 else 0


async def main(n):
    sem = asyncio.Semaphore(CONCURRENCY)
    results = await asyncio.gather(*(run(i, sem) for i in range(1, n + 1)))
    print(f"sum={sum(results)}")


benchloop.run(main, 1000)
