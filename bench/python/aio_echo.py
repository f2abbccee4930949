"""echo: a TCP echo server and 64 clients in one process over loopback
(asyncio streams: start_server, open_connection); each client makes N round
trips of a 64-byte message. Sum of the bytes echoed."""
import asyncio

import benchloop

CONNECTIONS = 64
MSG = b"x" * 64


async def handle(reader, writer):
    while True:
        data = await reader.read(65536)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    writer.close()


async def client(port, n):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    echoed = 0
    for _ in range(n):
        writer.write(MSG)
        await writer.drain()
        echoed += len(await reader.readexactly(64))
    writer.close()
    await writer.wait_closed()
    return echoed


async def main(n):
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    results = await asyncio.gather(*(client(port, n) for _ in range(CONNECTIONS)))
    server.close()
    print(f"sum={sum(results)}")


benchloop.run(main, 10_000)
