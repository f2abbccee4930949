"""Shared by the asyncio peers: argument parsing and the choice of loop.

Each peer is run as `python3 aio_<workload>.py [N] [URL] [--uvloop]`. With
--uvloop the same program runs on uvloop, installed the way uvloop's own
documentation shows for the version Debian ships (0.17: uvloop.install()
before asyncio.run()).
"""
import asyncio
import sys


def run(main, default_n):
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if "--uvloop" in sys.argv[1:]:
        import uvloop
        uvloop.install()
    n = int(args[0]) if args else default_n
    asyncio.run(main(n, *args[1:]))
