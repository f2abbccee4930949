#!/usr/bin/python3
"""A private nginx serving HTTPS with HTTP/2 on 127.0.0.1, for asyncrun's
TLS tests. It makes a throw-away self-signed certificate (openssl) and a
configuration in a temporary directory, picks a free port, and prints
"PORT PID" on one line. On SIGTERM, when its parent exits, or after
LIFETIME seconds (first argument, default 300) it stops nginx and removes
the directory.

Served: /small.json (a short JSON document), /big.bin (1 MiB).
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    lifetime = float(sys.argv[1]) if len(sys.argv) > 1 else 300.0
    parent = os.getppid()
    root = tempfile.mkdtemp(prefix="asyncrun-nginx-")
    # nginx workers run as an unprivileged user when started by root.
    os.chmod(root, 0o755)
    nginx = None

    def stop(*_):
        if nginx is not None and nginx.poll() is None:
            nginx.terminate()
            try:
                nginx.wait(5)
            except subprocess.TimeoutExpired:
                nginx.kill()
        shutil.rmtree(root, ignore_errors=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        www = os.path.join(root, "www")
        os.makedirs(os.path.join(root, "logs"))
        os.makedirs(www)
        with open(os.path.join(www, "small.json"), "w") as f:
            f.write('{"hello": "tls", "n": 42}')
        with open(os.path.join(www, "big.bin"), "wb") as f:
            f.write(b"b" * (1 << 20))
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
             "-subj", "/CN=localhost", "-days", "2",
             "-keyout", os.path.join(root, "key.pem"),
             "-out", os.path.join(root, "cert.pem")],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port = free_port()
        conf = os.path.join(root, "nginx.conf")
        with open(conf, "w") as f:
            f.write("""
worker_processes 1;
daemon off;
pid %(root)s/nginx.pid;
error_log %(root)s/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  default_type application/json;
  client_body_temp_path %(root)s/tmp;
  proxy_temp_path %(root)s/tmp;
  fastcgi_temp_path %(root)s/tmp;
  uwsgi_temp_path %(root)s/tmp;
  scgi_temp_path %(root)s/tmp;
  server {
    listen 127.0.0.1:%(port)d ssl http2;
    ssl_certificate %(root)s/cert.pem;
    ssl_certificate_key %(root)s/key.pem;
    root %(root)s/www;
  }
}
""" % {"root": root, "port": port})
        nginx = subprocess.Popen(["nginx", "-c", conf, "-p", root],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if nginx.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("nginx did not start")
                time.sleep(0.05)
        sys.stdout.write("%d %d\n" % (port, os.getpid()))
        sys.stdout.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        deadline = time.monotonic() + lifetime
        while time.monotonic() < deadline and os.getppid() == parent and nginx.poll() is None:
            time.sleep(0.2)
    finally:
        stop()


if __name__ == "__main__":
    main()
