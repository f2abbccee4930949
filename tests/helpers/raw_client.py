#!/usr/bin/env python3
"""Raw-socket HTTP/1.1 clients for the server tests (loopback only).

    raw_client.py SCENARIO PORT [ARGS...]

Prints one JSON object on stdout and exits. Every socket has a timeout, so
a scenario never outlives its test by much.

Scenarios:
  malformed          a bad request line, then garbage bytes, each on its own
                     connection: the status line received (or "" if none)
  pipeline           three requests in one write; the responses in order
  half SECONDS       half a request, then silence: what came back and when
                     the server closed
  drop N             N connections each sending part of a request, then
                     dropped (half of them with a reset)
  slowread PATH SECONDS
                     reads 64 KiB of PATH's response, stalls SECONDS, then
                     reads the rest: the byte count
"""
import json
import socket
import struct
import sys
import time

HOST = "127.0.0.1"


def connect(port, timeout=10.0):
    s = socket.create_connection((HOST, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_all(s):
    chunks = []
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    except (socket.timeout, ConnectionResetError):
        pass
    return b"".join(chunks)


def status_line(data):
    return data.split(b"\r\n", 1)[0].decode("latin-1") if data else ""


def malformed(port):
    out = []
    for payload in (b"BLAH BLAH\r\n\r\n",
                    b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
                    bytes(range(1, 250)) * 2):
        s = connect(port)
        s.sendall(payload)
        out.append(status_line(read_all(s)))
        s.close()
    return {"statuses": out}


def pipeline(port):
    s = connect(port)
    reqs = b"".join(
        b"GET /echo/%d HTTP/1.1\r\nHost: x\r\n%s\r\n" %
        (i, b"Connection: close\r\n" if i == 3 else b"") for i in (1, 2, 3))
    s.sendall(reqs)
    data = read_all(s)
    s.close()
    bodies = []
    rest = data
    while rest:
        head, _, rest = rest.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        bodies.append([status_line(head), rest[:length].decode()])
        rest = rest[length:]
    return {"responses": bodies}


def half(port, seconds):
    s = connect(port, timeout=seconds)
    t0 = time.monotonic()
    s.sendall(b"GET /half HTTP/1.1\r\nHost: x\r\nX-Partial: ye")
    data = read_all(s)
    return {"closed_after": time.monotonic() - t0,
            "status": status_line(data)}


def drop(port, n):
    socks = []
    partial = (b"GET /drop HTTP/1.1\r\nHost: x\r\n",
               b"POST /drop HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123",
               b"GET /dr")
    for i in range(n):
        s = connect(port)
        s.sendall(partial[i % 3])
        socks.append(s)
    for i, s in enumerate(socks):
        if i % 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                         struct.pack("ii", 1, 0))
        s.close()
    return {"dropped": n}


def slowread(port, path, seconds):
    s = connect(port, timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" %
              path.encode())
    got = 0
    while got < 65536:
        b = s.recv(65536)
        if not b:
            break
        got += len(b)
    time.sleep(seconds)
    got += len(read_all(s))
    return {"bytes": got}


def main():
    scenario, port = sys.argv[1], int(sys.argv[2])
    args = sys.argv[3:]
    if scenario == "malformed":
        r = malformed(port)
    elif scenario == "pipeline":
        r = pipeline(port)
    elif scenario == "half":
        r = half(port, float(args[0]))
    elif scenario == "drop":
        r = drop(port, int(args[0]))
    elif scenario == "slowread":
        r = slowread(port, args[0], float(args[1]))
    else:
        sys.exit("unknown scenario " + scenario)
    print(json.dumps(r))


if __name__ == "__main__":
    main()
