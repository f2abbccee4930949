"""startup: the smallest asyncio program, an empty main run by asyncio.run."""
import benchloop


async def main(n):
    pass


benchloop.run(main, 0)
