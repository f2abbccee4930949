#!/usr/bin/env bash
# The server answers a keep-alive request with a read and a writev, and
# no epoll_ctl (bindings/lserver_sock.c takes the place of h2o's read
# start/stop and write): over N requests on one connection, epoll_ctl is
# called for a few of them only, where h2o's own functions make it two
# per request (a stop and a start) and libuv's write drain one more. A
# check that the replacements are in effect: if the library's link or
# symbol visibility changes so that libh2o no longer finds them, this
# fails. Skipped when strace is not installed.
# usage: test_server_syscalls.sh path/to/asyncrun
set -u
AR=${1:?usage: test_server_syscalls.sh path/to/asyncrun}
command -v strace > /dev/null || { echo "skip: strace is not installed"; exit 0; }
TMP=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$TMP"' EXIT
cd "$TMP"
N=300

cat > serve.lua <<'LUA'
local http = require "async.http"
local srv = http.serve{handler = function(req, res) res:send("hello\n") end}
print(srv.port)
io.stdout:flush()
srv:wait()
LUA

strace -f -qq -c -e trace=epoll_ctl,read,writev -o strace.txt "$AR" serve.lua > port.txt 2> err.txt &
pid=$!
for _ in $(seq 100); do [ -s port.txt ] && break; sleep 0.05; done
port=$(head -1 port.txt)
[ -n "$port" ] || { echo "FAIL server starts: $(cat err.txt)"; exit 1; }
urls=()
for _ in $(seq $N); do urls+=("http://127.0.0.1:$port/"); done
got=$(curl -s -m 30 "${urls[@]}" | grep -c '^hello$')
# SIGTERM to the server itself: strace writes its summary when it exits.
kill -TERM $(pgrep -P "$pid") 2>/dev/null
wait "$pid"
pid=
calls() { awk -v s="$1" '$NF == s { print $4 }' strace.txt; }
ctl=$(calls epoll_ctl) writes=$(calls writev)
echo "requests answered: $got, writev: $writes, epoll_ctl: $ctl"
fail=0
[ "$got" = "$N" ] || { echo "FAIL all $N requests answered on one connection"; fail=1; }
[ "${writes:-0}" -ge "$N" ] || { echo "FAIL strace saw the writes: $(cat strace.txt)"; fail=1; }
if [ "${ctl:-0}" -le $((N / 10)) ]; then
  echo "ok   epoll_ctl for few requests ($ctl for $N)"
else
  echo "FAIL epoll_ctl $ctl times for $N requests (h2o's own read start/stop or write in use?)"
  fail=1
fi
exit $fail
