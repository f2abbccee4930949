#!/usr/bin/python3
"""Debian's httpbin on werkzeug's threaded server, for asyncrun's tests.

Listens on 127.0.0.1 on a free port and prints "PORT PID" on one line of
standard output. Serves until killed, until the process that started it
exits, or after LIFETIME seconds (first argument, default 300), so a test
that dies cannot leave it behind.
"""
import os
import sys
import threading
import time


def watchdog(lifetime, parent):
    deadline = time.monotonic() + lifetime
    while time.monotonic() < deadline and os.getppid() == parent:
        time.sleep(0.2)
    os._exit(0)


def main():
    lifetime = float(sys.argv[1]) if len(sys.argv) > 1 else 300.0
    parent = os.getppid()
    import httpbin
    from werkzeug.serving import WSGIRequestHandler, make_server

    class QuietHandler(WSGIRequestHandler):
        def log(self, *args, **kwargs):
            pass

    server = make_server("127.0.0.1", 0, httpbin.app, threaded=True,
                         request_handler=QuietHandler)
    # Keep-alive needs HTTP/1.1, which werkzeug only turns on by itself for
    # some server kinds.
    QuietHandler.protocol_version = "HTTP/1.1"
    threading.Thread(target=watchdog, args=(lifetime, parent), daemon=True).start()
    sys.stdout.write("%d %d\n" % (server.server_port, os.getpid()))
    sys.stdout.flush()
    # Nothing else goes to the pipe: the reader stops after one line.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    server.serve_forever()


if __name__ == "__main__":
    main()
