#!/usr/bin/env bash
# Ctrl-C on a script that serves (http.serve): the server stops accepting,
# the handler in flight is cancelled and its client gets 503, the process
# exits 130 and leaves nothing listening.
# usage: test_server_sigint.sh path/to/asyncrun
set -u
AR=${1:?usage: test_server_sigint.sh path/to/asyncrun}
TMP=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$TMP"' EXIT
cd "$TMP"
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1: $2"; }

cat > serve.lua <<'LUA'
local async = require "async"
local http = require "async.http"
local srv = http.serve{}
srv:route("GET", "/delay/:n", function(req, res)
  async.sleep(tonumber(req.params.n))
  res:send("slept")
end)
srv:route("GET", "/quick", function(req, res) res:send("quick") end)
print(srv.port)
io.stdout:flush()
srv:wait()
LUA

"$AR" serve.lua > port.txt 2> err.txt &
pid=$!
for _ in $(seq 100); do [ -s port.txt ] && break; sleep 0.05; done
port=$(head -1 port.txt)
if [ -z "$port" ]; then bad "server starts" "no port; stderr: $(cat err.txt)"; echo "$pass passed, $((fail)) failed"; exit 1; fi
url=http://127.0.0.1:$port

got=$(curl -s -m 5 "$url/quick")
[ "$got" = quick ] && ok "serves before Ctrl-C" || bad "serves before Ctrl-C" "got '$got'"

curl -s -m 10 -o slow.body -w '%{http_code}' "$url/delay/30" > slow.code &
cpid=$!
sleep 0.5
kill -INT "$pid"
wait "$pid"; status=$?
pid=
wait "$cpid"
[ "$status" = 130 ] && ok "exits 130" || bad "exits 130" "exit $status; stderr: $(cat err.txt)"
code=$(cat slow.code)
[ "$code" = 503 ] && ok "the request in flight gets 503" || bad "the request in flight gets 503" "got '$code'"
curl -s -m 2 "$url/quick" > /dev/null; c=$?
[ "$c" = 7 ] && ok "nothing listens afterwards" || bad "nothing listens afterwards" "curl exit $c"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
