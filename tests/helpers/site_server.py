#!/usr/bin/python3
"""A small web site for scripts/scraper.lua's test, on a threaded server.

Listens on 127.0.0.1 on a free port and prints "PORT PID" on one line of
standard output. Every answer waits DELAY seconds (second argument, default
0.05) so that requests overlap; GET /_stats answers "peak N total M": the
most requests it ever had in progress at once, and how many it served
(/_stats itself excluded). Serves until killed, until the process that
started it exits, or after LIFETIME seconds (first argument, default 100).

The site (depth from /):
  0  /                  links: /a.html, b.html, /docs/, /missing.html,
                               http://elsewhere.invalid/x, mailto:x@y.z, #top
  1  /a.html            links: /, /a.html#frag, /deep/c.html, /broken/500
  1  /b.html            links: ./a.html, /docs/../b.html, /style.css
  1  /docs/             links: intro.html, ../a.html, /docs/gone.html
  1  /missing.html      404
  2  /deep/c.html       links: /deep/d.html
  2  /broken/500        500
  2  /style.css         text/css (not searched for links)
  2  /docs/intro.html   links: /deep/e.html
  2  /docs/gone.html    404
  3  /deep/d.html, /deep/e.html
"""
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAGES = {
    "/": ['/a.html', 'b.html', '/docs/', '/missing.html', 'http://elsewhere.invalid/x',
          'mailto:x@y.z', '#top'],
    "/a.html": ['/', '/a.html#frag', '/deep/c.html', '/broken/500'],
    "/b.html": ['./a.html', '/docs/../b.html', '/style.css'],
    "/docs/": ['intro.html', '../a.html', '/docs/gone.html'],
    "/deep/c.html": ['/deep/d.html'],
    "/docs/intro.html": ['/deep/e.html'],
    "/deep/d.html": [],
    "/deep/e.html": [],
}

lock = threading.Lock()
state = {"active": 0, "peak": 0, "total": 0}
delay = 0.05


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, ctype, body):
        body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/_stats":
            with lock:
                s = "peak %d total %d\n" % (state["peak"], state["total"])
            return self.answer(200, "text/plain", s)
        with lock:
            state["active"] += 1
            state["total"] += 1
            state["peak"] = max(state["peak"], state["active"])
        try:
            time.sleep(delay)
            if self.path in PAGES:
                links = "".join('<li><a class="x" href="%s">link</a></li>\n' % h
                                for h in PAGES[self.path])
                self.answer(200, "text/html; charset=utf-8",
                            "<html><body><ul>\n%s</ul></body></html>\n" % links)
            elif self.path == "/style.css":
                self.answer(200, "text/css", 'a { background: url("/not-a-link.png") }\n'
                            '<a href="/css-is-not-html.html">\n')
            elif self.path == "/broken/500":
                self.answer(500, "text/plain", "internal error\n")
            else:
                self.answer(404, "text/html", "<p>not found</p>\n")
        finally:
            with lock:
                state["active"] -= 1


def watchdog(lifetime, parent):
    deadline = time.monotonic() + lifetime
    while time.monotonic() < deadline and os.getppid() == parent:
        time.sleep(0.2)
    os._exit(0)


def main():
    global delay
    lifetime = float(sys.argv[1]) if len(sys.argv) > 1 else 100.0
    delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0.05
    parent = os.getppid()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=watchdog, args=(lifetime, parent), daemon=True).start()
    sys.stdout.write("%d %d\n" % (server.server_port, os.getpid()))
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    server.serve_forever()


if __name__ == "__main__":
    main()
