#!/usr/bin/env bash
# Issue 10, defects 6 and 12 (and 4's SIGTERM): Ctrl-C and SIGTERM stop a
# script that computes; a task that ignores cancellation cannot keep the
# process alive; a second SIGTERM, like a second Ctrl-C, exits at once.
# usage: test_defect_signals.sh path/to/asyncrun
set -u
AR=${1:?usage: test_defect_signals.sh path/to/asyncrun}
AR=$(cd "$(dirname "$AR")" && pwd)/$(basename "$AR")
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$TMP"; }
trap cleanup EXIT
cd "$TMP"
pass=0 fail=0

ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1: $2"; }
# Microseconds since the epoch, without forking (bash 5).
us() { local t=${EPOCHREALTIME/[.,]/}; echo "$((10#$t))"; }

# start ARGS...: runs asyncrun in the background (stdout out.txt, stderr
# err.txt) and waits (at most 10 s) until it has printed "ready".
start() {
  rm -f out.txt err.txt
  "$AR" "$@" > out.txt 2> err.txt &
  PID=$!
  PIDS+=("$PID")
  for _ in $(seq 200); do grep -q '^ready$' out.txt 2>/dev/null && break; sleep 0.05; done
  sleep 0.2 # now inside the loop
}

# finish SECS: waits at most SECS for $PID to exit; sets STATUS (or
# "hang", after killing it) and TOOK.
finish() {
  local t0 deadline; t0=$(us); deadline=$((t0 + $1 * 1000000))
  while kill -0 "$PID" 2>/dev/null && [ "$(us)" -lt "$deadline" ]; do sleep 0.05; done
  if kill -0 "$PID" 2>/dev/null; then
    kill -9 "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; STATUS=hang
  else
    wait "$PID"; STATUS=$?
  fi
  TOOK_US=$(($(us) - t0))
  TOOK=$((TOOK_US / 1000000)).$(printf '%02d' $((TOOK_US / 10000 % 100)))
}

# one_signal NAME SIG WANT ARGS...: a single signal stops the run promptly.
one_signal() {
  local name=$1 sig=$2 want=$3; shift 3
  start "$@"
  kill -"$sig" "$PID"
  finish 3
  if [ "$STATUS" != "$want" ]; then bad "$name" "exit $STATUS (want $want) after ${TOOK}s; stderr: $(head -c 400 err.txt)"; return; fi
  [ "$TOOK_US" -lt 2000000 ] || { bad "$name" "took ${TOOK}s, want < 2 s"; return; }
  ok "$name"
}

# Defect 6: a script that computes.
one_signal "Ctrl-C stops -e 'while true do end' with 130" INT 130 \
  -e 'print("ready") io.stdout:flush() while true do end'
one_signal "SIGTERM stops -e 'while true do end' with 143" TERM 143 \
  -e 'print("ready") io.stdout:flush() while true do end'
printf 'print("ready") io.stdout:flush()\nlocal n = 0\nwhile true do n = n + 1 end\n' > spin.lua
one_signal "Ctrl-C stops a script that computes with 130" INT 130 spin.lua
one_signal "SIGTERM stops a script that computes with 143" TERM 143 spin.lua

cat > spin_task.lua <<'LUA'
local async = require "async"
local t = async.spawn(function() while true do end end)
print("ready"); io.stdout:flush()
t:await()
LUA
one_signal "Ctrl-C stops a task that computes with 130" INT 130 spin_task.lua

# Ctrl-C interrupts computing code with a cancellation: it can be caught
# (and cleanup runs), and the script then ends with 130.
cat > spin_catch.lua <<'LUA'
print("ready"); io.stdout:flush()
local ok, err = pcall(function() while true do end end)
print("caught", type(err) == "table" and err.kind or tostring(err)); io.stdout:flush()
LUA
start spin_catch.lua
kill -INT "$PID"; finish 5
if [ "$STATUS" = 130 ] && grep -q "^caught	cancelled$" out.txt; then ok "Ctrl-C raises cancelled inside computing code"
else bad "Ctrl-C raises cancelled inside computing code" "exit $STATUS; out: $(cat out.txt); err: $(head -c 300 err.txt)"; fi

# A script that computes and swallows the cancellation: the second Ctrl-C
# exits at once.
cat > spin_stubborn.lua <<'LUA'
print("ready"); io.stdout:flush()
while true do pcall(function() while true do end end) end
LUA
start spin_stubborn.lua
kill -INT "$PID"; sleep 0.3; kill -INT "$PID" 2>/dev/null; finish 3
[ "$STATUS" = 130 ] && ok "a second Ctrl-C exits a computing script at once" \
  || bad "a second Ctrl-C exits a computing script at once" "exit $STATUS after ${TOOK}s"

# Defect 4: a loop of bare yields cannot ignore SIGTERM.
cat > yields.lua <<'LUA'
local async = require "async"
local t = async.spawn(function() while true do coroutine.yield() end end)
print("ready"); io.stdout:flush()
t:await()
LUA
one_signal "SIGTERM stops a loop of bare yields with 143" TERM 143 yields.lua

# Defect 12: a task that catches and ignores every cancellation.
cat > stubborn_task.lua <<'LUA'
local async = require "async"
local t = async.spawn(function() while true do pcall(async.sleep, 60) end end)
t.name = "stubborn"
print("ready", t.id); io.stdout:flush()
async.sleep(0.3)
print("main ends"); io.stdout:flush()
LUA
start stubborn_task.lua
id=$(awk -F'\t' '/^ready/ { print $2 }' out.txt)
finish 6
if [ "$STATUS" = hang ]; then bad "a stubborn task does not keep the process alive" "still running after 8 s"
elif [ "$STATUS" -gt 1 ]; then bad "a stubborn task does not keep the process alive" "exit $STATUS"
elif ! grep -q "^main ends$" out.txt; then bad "a stubborn task does not keep the process alive" "main did not end: $(cat out.txt)"
else ok "a stubborn task does not keep the process alive (exit $STATUS after ${TOOK}s)"; fi
if grep -Eq "task $id \(stubborn\)" err.txt; then ok "the stubborn task is named on stderr"
else bad "the stubborn task is named on stderr" "stderr: $(head -c 400 err.txt)"; fi

cat > stubborn_sig.lua <<'LUA'
local async = require "async"
local t = async.spawn(function() while true do pcall(async.sleep, 60) end end)
t.name = "stubborn"
print("ready", t.id); io.stdout:flush()
async.sleep(60)
LUA
start stubborn_sig.lua
id=$(awk -F'\t' '/^ready/ { print $2 }' out.txt)
kill -TERM "$PID"; finish 6
[ "$STATUS" = 143 ] && ok "one SIGTERM ends a run with a stubborn task (143, ${TOOK}s)" \
  || bad "one SIGTERM ends a run with a stubborn task" "exit $STATUS after ${TOOK}s"
grep -Eq "task $id \(stubborn\)" err.txt && ok "... and names the stubborn task" \
  || bad "... and names the stubborn task" "stderr: $(head -c 400 err.txt)"

cat > stubborn_main.lua <<'LUA'
local async = require "async"
print("ready"); io.stdout:flush()
while true do pcall(async.sleep, 60) end
LUA
start stubborn_main.lua
kill -TERM "$PID"; sleep 0.3; kill -TERM "$PID" 2>/dev/null; finish 2
[ "$STATUS" = 143 ] && ok "a second SIGTERM exits at once" \
  || bad "a second SIGTERM exits at once" "exit $STATUS after ${TOOK}s"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
