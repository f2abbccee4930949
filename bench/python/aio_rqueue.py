"""rqueue: the same distributed queue with redis.asyncio: a Redis stream
and a consumer group, 1 producer (this process, 16 tasks putting 1..N with
XADD) and 3 worker processes (16 tasks each: XREADGROUP COUNT 64, then
XACK each item). The producer closes the queue with a key; a worker stops
when it is set, nothing is left undelivered and nothing is pending. Prints
sum=<total>."""
import asyncio
import json
import os
import random
import subprocess
import sys
import time

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

import benchloop

WORKERS, CONCURRENCY, BATCH = 3, 16, 64


async def drained(r, name, group):
    if not await r.exists(name + ":closed"):
        return False
    if (await r.xpending(name, group))["pending"] > 0:
        return False
    info = await r.xinfo_stream(name)
    groups = {g["name"].decode(): g for g in await r.xinfo_groups(name)}
    return groups[group]["last-delivered-id"] == info["last-generated-id"]


async def worker(url, name, wid):
    r = aioredis.from_url(url)
    group, consumer = "workers", f"w{wid}"
    buf = []
    done = False
    lock = asyncio.Lock()

    async def take():
        nonlocal done
        while True:
            if buf:
                return buf.pop(0)
            if done:
                return None
            async with lock:
                if buf or done:
                    continue
                got = await r.xreadgroup(group, consumer, {name: ">"}, count=BATCH)
                if not got:
                    if await drained(r, name, group):
                        done = True
                        continue
                    got = await r.xreadgroup(group, consumer, {name: ">"},
                                             count=BATCH, block=200)
                for _, entries in got or []:
                    buf.extend(entries)

    async def task():
        total = 0
        while True:
            e = await take()
            if e is None:
                return total
            eid, fields = e
            total += json.loads(fields[b"v"])
            await r.xack(name, group, eid)

    totals = await asyncio.gather(*(task() for _ in range(CONCURRENCY)))
    await r.close()
    print(sum(totals))


async def main(n, url="redis://127.0.0.1:6379/0", name=None, wid=None):
    if name is not None:
        return await worker(url, name, wid)
    name = f"bench:rqpy:{int(time.time())}:{random.getrandbits(30)}"
    r = aioredis.from_url(url)
    try:
        await r.xgroup_create(name, "workers", id="0", mkstream=True)
    except ResponseError:
        pass
    procs = [subprocess.Popen([sys.executable] + sys.argv[:1] + [str(n), url, name, str(w)]
                              + [a for a in sys.argv[1:] if a.startswith("--")],
                              stdout=subprocess.PIPE) for w in range(1, WORKERS + 1)]
    it = iter(range(1, n + 1))

    async def producer():
        for v in it:
            await r.xadd(name, {"v": json.dumps(v)})

    await asyncio.gather(*(producer() for _ in range(16)))
    await r.set(name + ":closed", 1)
    total = 0
    for p in procs:
        out, _ = await asyncio.get_running_loop().run_in_executor(None, p.communicate)
        total += int(out)
    await r.delete(name, name + ":closed")
    await r.close()
    print(f"sum={total}")


benchloop.run(main, 100_000)
