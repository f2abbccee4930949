#!/usr/bin/env bash
# Ctrl-C on a script that serves (http.serve): the server stops accepting
# at once, requests in flight may finish within the grace period (serve's
# `grace`), handlers still running then are cancelled (503), the script's
# own tasks are cancelled only after that, a second Ctrl-C exits at once,
# and nothing is left listening.
# usage: test_server_sigint.sh path/to/asyncrun
set -u
AR=${1:?usage: test_server_sigint.sh path/to/asyncrun}
TMP=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$TMP"' EXIT
cd "$TMP"
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1: $2"; }
now() { date +%s.%N; }
within() { awk -v a="$1" -v lo="$2" -v hi="$3" 'BEGIN { exit !(a >= lo && a <= hi) }'; }

cat > serve.lua <<'LUA'
local async = require "async"
local http = require "async.http"
local srv = http.serve{grace = tonumber(arg[1])}
srv:route("GET", "/delay/:n", function(req, res)
  async.sleep(tonumber(req.params.n))
  res:send("slept")
end)
srv:route("GET", "/quick", function(req, res) res:send("quick") end)
print(srv.port)
io.stdout:flush()
local ok, e = pcall(srv.wait, srv)
-- The script's own task is cancelled after the handlers had their grace.
print("root", ok, e.kind)
io.stdout:flush()
error(e, 0)
LUA

# start GRACE: runs the server; sets pid and url.
start() {
  : > port.txt
  "$AR" serve.lua "$1" > port.txt 2> err.txt &
  pid=$!
  for _ in $(seq 100); do [ -s port.txt ] && break; sleep 0.05; done
  port=$(head -1 port.txt)
  url=http://127.0.0.1:$port
  [ -n "$port" ] || { bad "server starts" "no port; stderr: $(cat err.txt)"; exit 1; }
}

# 1. A request in flight finishes within the grace period.
start 5
got=$(curl -s -m 5 "$url/quick")
[ "$got" = quick ] && ok "serves before Ctrl-C" || bad "serves before Ctrl-C" "got '$got'"
curl -s -m 10 -o slow.body -w '%{http_code}' "$url/delay/1.5" > slow.code &
cpid=$!
sleep 0.5
t0=$(now)
kill -INT "$pid"
sleep 0.3
curl -s -m 2 "$url/quick" > /dev/null; c=$?
[ "$c" = 7 ] && ok "refuses new connections during the grace period" || bad "refuses new connections during the grace period" "curl exit $c"
wait "$pid"; status=$?
pid=
t=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')
wait "$cpid"
[ "$status" = 130 ] && ok "exits 130" || bad "exits 130" "exit $status; stderr: $(cat err.txt)"
code=$(cat slow.code) body=$(cat slow.body)
[ "$code/$body" = 200/slept ] && ok "the request in flight finishes" || bad "the request in flight finishes" "got '$code/$body'"
within "$t" 0.8 2.5 && ok "exits once it has ended (${t}s)" || bad "exits once it has ended" "${t}s"
grep -qx "$(printf 'root\tfalse\tcancelled')" port.txt && ok "the script's task is cancelled afterwards" || bad "the script's task is cancelled afterwards" "$(cat port.txt)"
curl -s -m 2 "$url/quick" > /dev/null; c=$?
[ "$c" = 7 ] && ok "nothing listens afterwards" || bad "nothing listens afterwards" "curl exit $c"

# 2. A handler still running when the grace period ends is cancelled: 503.
start 1
curl -s -m 10 -o slow.body -w '%{http_code}' "$url/delay/30" > slow.code &
cpid=$!
sleep 0.5
t0=$(now)
kill -INT "$pid"
wait "$pid"; status=$?
pid=
t=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')
wait "$cpid"
[ "$status" = 130 ] && ok "exits 130 after the grace period" || bad "exits 130 after the grace period" "exit $status"
code=$(cat slow.code)
[ "$code" = 503 ] && ok "the handler past its grace gets 503" || bad "the handler past its grace gets 503" "got '$code'"
within "$t" 0.8 2.5 && ok "the grace period lasts about 1 s (${t}s)" || bad "the grace period lasts about 1 s" "${t}s"

# 3. A second Ctrl-C during the grace period exits at once.
start 30
curl -s -m 10 -o /dev/null "$url/delay/30" &
cpid=$!
sleep 0.5
t0=$(now)
kill -INT "$pid"
sleep 0.3
kill -INT "$pid"
wait "$pid"; status=$?
pid=
t=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')
wait "$cpid"
[ "$status" = 130 ] && ok "a second Ctrl-C exits 130" || bad "a second Ctrl-C exits 130" "exit $status"
within "$t" 0 1.5 && ok "a second Ctrl-C does not wait (${t}s)" || bad "a second Ctrl-C does not wait" "${t}s"

# 4. grace = 0: no grace period, the handler is cancelled at once.
start 0
curl -s -m 10 -o /dev/null -w '%{http_code}' "$url/delay/30" > slow.code &
cpid=$!
sleep 0.5
kill -INT "$pid"
wait "$pid"; status=$?
pid=
wait "$cpid"
[ "$status/$(cat slow.code)" = 130/503 ] && ok "grace=0 cancels at once" || bad "grace=0 cancels at once" "$status/$(cat slow.code)"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
