"""bench serve: aiohttp's web server answering every request with "hello".

Usage: aio_serve.py PORT [--uvloop]; prints "port=N" once listening."""
import asyncio
import sys

from aiohttp import web


async def hello(request):
    return web.Response(text="hello")


async def main(port):
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(f"port={site._server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    if "--uvloop" in sys.argv:
        import uvloop
        uvloop.install()
    ports = [a for a in sys.argv[1:] if not a.startswith("--")]
    asyncio.run(main(int(ports[0]) if ports else 0))
