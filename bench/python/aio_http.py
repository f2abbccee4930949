"""http: N GETs of small JSON files, at most 64 in flight, keep-alive.

aiohttp as its documentation recommends: one ClientSession for all
requests, its connector limited to 64 connections (kept alive and reused),
64 workers, each response read with resp.json(). URL i is
BASE + (i % 100) + ".json"; the sum of the decoded "n" fields is printed.
"""
import asyncio

import aiohttp

import benchloop

CONCURRENCY = 64


async def main(n, base):
    total = 0
    work = iter(range(1, n + 1))

    async def worker(session):
        nonlocal total
        for i in work:
            async with session.get(f"{base}{i % 100}.json") as resp:
                if resp.status != 200:
                    raise RuntimeError(f"status {resp.status}")
                doc = await resp.json()
                total += doc["n"]

    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(CONCURRENCY)))
    print(f"sum={total}")


benchloop.run(main, 20_000)
