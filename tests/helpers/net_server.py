#!/usr/bin/python3
"""Loopback TCP peers that misbehave, for asyncrun's net tests.

Prints "RESET_PORT STALL_PORT PID" on one line, then serves until killed,
until its parent exits, or after LIFETIME seconds (first argument,
default 120).

  RESET_PORT  accepts, reads one line, then closes with SO_LINGER 0, so
              the kernel sends a reset (RST) instead of an orderly end
  STALL_PORT  listens with a backlog of 0 and never accepts: once its
              queue is full, further connection attempts hang (their SYNs
              are dropped), which is what a connect timeout needs
"""
import os
import socket
import struct
import sys
import threading
import time


def reset_loop(srv):
    while True:
        conn, _ = srv.accept()
        conn.settimeout(5)
        try:
            buf = b""
            while b"\n" not in buf:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                buf += chunk
        except OSError:
            pass
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()


def main():
    lifetime = float(sys.argv[1]) if len(sys.argv) > 1 else 120
    reset = socket.socket()
    reset.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reset.bind(("127.0.0.1", 0))
    reset.listen(64)
    stall = socket.socket()
    stall.bind(("127.0.0.1", 0))
    stall.listen(0)
    threading.Thread(target=reset_loop, args=(reset,), daemon=True).start()
    print(reset.getsockname()[1], stall.getsockname()[1], os.getpid(), flush=True)
    parent = os.getppid()
    deadline = time.monotonic() + lifetime
    while time.monotonic() < deadline and os.getppid() == parent:
        time.sleep(0.2)


if __name__ == "__main__":
    main()
