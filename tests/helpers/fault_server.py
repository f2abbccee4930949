#!/usr/bin/python3
"""A misbehaving HTTP server for asyncrun's fault tests (asyncio, one thread).

Prints "PORT REFUSED_PORT PID" on one line: PORT serves the paths below,
REFUSED_PORT had a listener that is closed again, so connecting to it is
refused. Lives until killed, until its parent exits, or after LIFETIME
seconds (first argument, default 300).

  /hang         reads the request and never answers (until the client goes)
  /midbody      promises 100000 bytes, sends 1000, closes the connection
  /badjson      200 with a body that is not valid JSON
  /json         200 with {"ok": true}
  /brief        the same, then closes the connection if no other request
                comes on it within 0.1 s (a short keep-alive timeout)
  /stats        {"open": connections open now, "total": accepted so far}
  /close        200 {"ok": true} as HTTP/1.1 without "Connection: close",
                then closes the connection (the client cannot know)
  /reset        the same, then resets the connection (RST) right after
  /resetfirst   reads the request and resets the connection, no answer
  /garbage      a status line that is not HTTP ("FOO 200 yes"), then text
  /http09       a bare body with no status line at all (HTTP/0.9)
  /hugeheader   200 with one header line of 200 KB
  /slow         answers after 5 s (for killing the server under a request)
  /html404      404 with an HTML page
  /big?n=N      200 with a JSON list of N integers (N up to 10**6)
"""
import asyncio
import json
import os
import socket
import struct
import sys
import time

STATE = {"open": 0, "total": 0}


def reset(writer):
    """Closes the connection with a RST: SO_LINGER 0, then close."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def response(status, body, ctype="application/json", extra=""):
    head = ("HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n"
            % (status, ctype, len(body), extra))
    return head.encode() + body


async def read_request(reader):
    """Returns the path of one request, or None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    length = 0
    for line in lines[1:]:
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    if length:
        await reader.readexactly(length)
    return parts[1] if len(parts) > 1 else "/"


async def handle(reader, writer):
    STATE["open"] += 1
    STATE["total"] += 1
    idle = None  # seconds this connection may stay idle, None: forever
    try:
        while True:
            try:
                path = await asyncio.wait_for(read_request(reader), idle)
            except asyncio.TimeoutError:
                break
            if path is None:
                break
            if path.startswith("/hang"):
                while await reader.read(65536):
                    pass
                break
            if path.startswith("/midbody"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
                await writer.drain()
                break
            if path.startswith("/close"):
                writer.write(response("200 OK", b'{"ok": true}'))
                await writer.drain()
                break
            if path.startswith("/resetfirst"):
                reset(writer)
                return
            if path.startswith("/reset"):
                writer.write(response("200 OK", b'{"ok": true}'))
                await writer.drain()
                reset(writer)
                return
            if path.startswith("/garbage"):
                writer.write(b"FOO 200 yes\r\nContent-Length: 5\r\n\r\nhello")
                await writer.drain()
                break
            if path.startswith("/http09"):
                writer.write(b"hello, this is not a status line\n")
                await writer.drain()
                break
            if path.startswith("/slow"):
                await asyncio.sleep(5)
                writer.write(response("200 OK", b'{"ok": true}'))
            elif path.startswith("/hugeheader"):
                writer.write(response("200 OK", b"{}", extra="X-Huge: %s\r\n" % ("h" * 200000)))
            elif path.startswith("/html404"):
                writer.write(response("404 Not Found", b"<html><body>Not here</body></html>",
                                      ctype="text/html; charset=utf-8"))
            elif path.startswith("/big"):
                n = min(int(path.split("n=", 1)[1]), 10**6) if "n=" in path else 10
                writer.write(response("200 OK", json.dumps(list(range(n))).encode()))
            elif path.startswith("/badjson"):
                writer.write(response("200 OK", b'{"a": 1, "b": [1, 2,, 3]}'))
            elif path.startswith("/json"):
                writer.write(response("200 OK", b'{"ok": true}'))
            elif path.startswith("/brief"):
                writer.write(response("200 OK", b'{"ok": true}'))
                idle = 0.1
            elif path.startswith("/stats"):
                # This connection is not counted as open.
                body = json.dumps({"open": STATE["open"] - 1, "total": STATE["total"]})
                writer.write(response("200 OK", body.encode()))
            else:
                writer.write(response("404 Not Found", b"{}"))
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        STATE["open"] -= 1
        if not writer.transport.is_closing():
            writer.close()


async def watchdog(lifetime, parent):
    deadline = time.monotonic() + lifetime
    while time.monotonic() < deadline and os.getppid() == parent:
        await asyncio.sleep(0.2)
    os._exit(0)


async def main():
    lifetime = float(sys.argv[1]) if len(sys.argv) > 1 else 300.0
    parent = os.getppid()
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))
    refused_port = refused.getsockname()[1]
    refused.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write("%d %d %d\n" % (port, refused_port, os.getpid()))
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    asyncio.ensure_future(watchdog(lifetime, parent))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
