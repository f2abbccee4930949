#!/usr/bin/python3
"""Watches an element of a page in headless Chromium change, for asyncrun's
tests (scripts/dashboard.lua). Standard library only: it speaks the Chrome
DevTools Protocol over a WebSocket it frames itself.

usage: cdp_watch.py URL ELEMENT_IDS BEFORE COMMAND AFTER [SECONDS]

Opens URL in headless Chromium, waits until the text of each element whose
id is in ELEMENT_IDS (comma-separated) is BEFORE, runs COMMAND with /bin/sh,
then waits until each one's text is AFTER, in the same page (the page's window.loadId must not change: the
page was not reloaded). Prints what it saw, one fact per line:
  before: <text> (summary: ...)
  after: <text> in <s> s (summary: ...)
  reloaded: no
  screenshot: <bytes> bytes
and exits 0; on a timeout (SECONDS in all, default 40) it prints what the
page showed last and exits 1. Chromium runs as root in CI, hence
--no-sandbox.
"""
import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request


class WebSocket:
    """A minimal RFC 6455 client: masked text frames out, frames in."""

    def __init__(self, url, timeout):
        assert url.startswith("ws://")
        hostport, _, path = url[5:].partition("/")
        host, _, port = hostport.partition(":")
        self.sock = socket.create_connection((host, int(port or 80)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(("GET /%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n" % (path, hostport, key)).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise IOError("websocket handshake: connection closed")
            head += chunk
        head, _, self.buf = head.partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise IOError("websocket handshake refused: %r" % head[:200])

    def send(self, text):
        data = text.encode()
        n = len(data)
        if n < 126:
            hdr = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            hdr = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        mask = os.urandom(4)
        self.sock.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise IOError("websocket closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self):
        """The next whole text message (fragments joined; others skipped)."""
        parts = []
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            payload = self._read(n)
            op = b0 & 0x0F
            if op in (0x1, 0x0):
                parts.append(payload)
                if b0 & 0x80:
                    return b"".join(parts).decode()
            elif op == 0x8:
                raise IOError("websocket closed by the browser")


class Page:
    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise IOError("%s: %s" % (method, msg["error"]))
                return msg["result"]

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        return r.get("result", {}).get("value")


PROBE = """JSON.stringify({
  load: window.loadId || null,
  text: %s.map((id) => (document.getElementById(id) || {}).textContent || "?").join(","),
  summary: (document.getElementById("summary") || {}).textContent || "",
  conn: (document.getElementById("conn") || {}).textContent || ""
})"""


def main():
    if len(sys.argv) < 6:
        sys.stderr.write(__doc__)
        return 2
    url, elems, before, command, after = sys.argv[1:6]
    elems = elems.split(",")
    before, after = ",".join([before] * len(elems)), ",".join([after] * len(elems))
    budget = float(sys.argv[6]) if len(sys.argv) > 6 else 40.0
    deadline = time.monotonic() + budget
    profile = tempfile.mkdtemp(prefix="cdp-watch-")
    browser = subprocess.Popen(
        ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--no-default-browser-check", "--disable-extensions",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
         "--user-data-dir=" + profile, "--window-size=1000,600", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    last = {}
    try:
        portfile = os.path.join(profile, "DevToolsActivePort")
        while not (os.path.exists(portfile) and open(portfile).read().strip()):
            if time.monotonic() > deadline or browser.poll() is not None:
                print("chromium did not start (exit %s)" % browser.poll())
                return 1
            time.sleep(0.1)
        port = int(open(portfile).read().split()[0])
        target = None
        while target is None:
            with urllib.request.urlopen("http://127.0.0.1:%d/json/list" % port, timeout=5) as r:
                for t in json.load(r):
                    if t.get("type") == "page" and t.get("url", "").startswith(url.rstrip("/")):
                        target = t
            if target is None:
                if time.monotonic() > deadline:
                    print("no page for %s in chromium" % url)
                    return 1
                time.sleep(0.1)
        page = Page(WebSocket(target["webSocketDebuggerUrl"], timeout=10))
        probe = PROBE % json.dumps(elems)

        def wait_for(want):
            nonlocal last
            while time.monotonic() < deadline:
                v = page.eval(probe)
                if v:
                    last = json.loads(v)
                    if last.get("text") == want:
                        return True
                time.sleep(0.1)
            return False

        if not wait_for(before):
            print("timed out waiting for %r; the page showed %r" % (before, last))
            return 1
        load = last["load"]
        print("before: %s (summary: %s; %s)" % (last["text"], last["summary"], last["conn"]))
        sys.stdout.flush()
        t0 = time.monotonic()
        subprocess.run(["/bin/sh", "-c", command], timeout=max(1, deadline - time.monotonic()))
        if not wait_for(after):
            print("timed out waiting for %r; the page showed %r" % (after, last))
            return 1
        print("after: %s in %.1f s (summary: %s; %s)" % (last["text"], time.monotonic() - t0,
                                                          last["summary"], last["conn"]))
        print("reloaded: %s" % ("no" if last["load"] == load and load else "yes"))
        shot = page.call("Page.captureScreenshot", format="png")
        png = base64.b64decode(shot["data"])
        print("screenshot: %d bytes" % len(png))
        if os.environ.get("CDP_SCREENSHOT"):
            with open(os.environ["CDP_SCREENSHOT"], "wb") as f:
                f.write(png)
        return 0
    finally:
        try:
            os.killpg(browser.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        browser.wait()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
