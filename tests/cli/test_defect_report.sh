#!/usr/bin/env bash
# Issue 10, defect 9 and the new user's asks: failures are never lost from
# the report, the exit status says a failure was reported, an awaited
# failure keeps the task's own traceback, require finds modules next to the
# script, and the deadlock report names each task and what it waits on.
# usage: test_defect_report.sh path/to/asyncrun
set -u
AR=${1:?usage: test_defect_report.sh path/to/asyncrun}
AR=$(cd "$(dirname "$AR")" && pwd)/$(basename "$AR")
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cd "$TMP"
unset LUA_PATH LUA_PATH_5_4 LUA_INIT LUA_INIT_5_4
pass=0 fail=0

ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1: $2"; }

# run SCRIPT [ARGS]: sets STATUS, OUT, ERR (bounded by a timeout).
run() {
  timeout -k 2 20 "$AR" "$@" > out.txt 2> err.txt; STATUS=$?
  OUT=$(cat out.txt); ERR=$(cat err.txt)
}

# Defect 9: an error object whose __tostring raises.
cat > weird.lua <<'LUA'
local async = require "async"
local t = async.spawn(function()
  error(setmetatable({}, { __tostring = function() error("tostring exploded") end }))
end)
t.name = "weird"
print("id", t.id)
async.sleep(0.01)
print("main ends")
LUA
run weird.lua
id=$(awk -F'\t' '/^id/ { print $2 }' out.txt)
if grep -Eq "task $id \(weird\) failed" err.txt; then ok "a failure whose __tostring raises is still reported"
else bad "a failure whose __tostring raises is still reported" "exit $STATUS; stderr: $ERR"; fi
[ "$STATUS" = 1 ] && grep -q "^main ends$" out.txt && ok "... and the exit status is 1" \
  || bad "... and the exit status is 1" "exit $STATUS; stdout: $OUT"

cat > weird_gc.lua <<'LUA'
local async = require "async"
do
  local t = async.spawn(function()
    error(setmetatable({}, { __tostring = function() error("tostring exploded") end }))
  end)
  t.name = "weird"
  async.sleep(0.01)
end
collectgarbage(); collectgarbage() -- the handle is collected: reported now
print("main ends")
LUA
run weird_gc.lua
if grep -Eq "task [0-9]+ \(weird\) failed" err.txt && [ "$STATUS" = 1 ]; then ok "a collected failure whose __tostring raises is reported, exit 1"
else bad "a collected failure whose __tostring raises is reported, exit 1" "exit $STATUS; stderr: $ERR"; fi

# Exit status 1 when a failure was reported as never retrieved.
cat > unawaited.lua <<'LUA'
local async = require "async"
local t = async.spawn(function() error("lost failure") end)
t.name = "fetcher"
async.sleep(0.01)
print("main goes on")
LUA
run unawaited.lua
if [ "$STATUS" = 1 ] && grep -q "^main goes on$" out.txt && grep -Eq "task [0-9]+ \(fetcher\) failed: unawaited.lua:2: lost failure" err.txt
then ok "a never-retrieved failure is reported and the exit status is 1"
else bad "a never-retrieved failure is reported and the exit status is 1" "exit $STATUS; stdout: $OUT; stderr: $ERR"; fi

cat > retrieved.lua <<'LUA'
local async = require "async"
local t = async.spawn(function() error("seen failure") end)
print(pcall(t.await, t) == false)
LUA
run retrieved.lua
[ "$STATUS" = 0 ] && [ "$OUT" = true ] && [ -z "$ERR" ] && ok "a retrieved failure is not reported, exit 0" \
  || bad "a retrieved failure is not reported, exit 0" "exit $STATUS; stderr: $ERR"

# An awaited failure keeps the task's own traceback: the report shows the
# frames inside the task, then where it was awaited.
cat > awaited.lua <<'LUA'
local async = require "async"
local function deep_inside_the_task()
  async.sleep(0.01)
  error("disk on fire")
end
local t = async.spawn(function() deep_inside_the_task() end)
t.name = "writer"
t:await()
LUA
run awaited.lua
inner=$(grep -n "deep_inside_the_task" err.txt | head -1 | cut -d: -f1)
outer=$(grep -n "awaited.lua:8: in main chunk" err.txt | head -1 | cut -d: -f1)
if [ "$STATUS" = 1 ] && grep -q "awaited.lua:4: disk on fire" err.txt && [ -n "$inner" ] && [ -n "$outer" ] && [ "$inner" -lt "$outer" ]
then ok "an awaited failure's report shows the task's frames, then the await"
else bad "an awaited failure's report shows the task's frames, then the await" "exit $STATUS; stderr: $ERR"; fi
grep -q "writer" err.txt && ok "... and names the task" || bad "... and names the task" "stderr: $ERR"

cat > gathered.lua <<'LUA'
local async = require "async"
local function deep_inside_the_task() async.sleep(0.01); error("gathered failure") end
async.gather({ function() deep_inside_the_task() end })
LUA
run gathered.lua
grep -q "deep_inside_the_task" err.txt && [ "$STATUS" = 1 ] && ok "a gathered failure's report shows the task's frames" \
  || bad "a gathered failure's report shows the task's frames" "exit $STATUS; stderr: $ERR"

# require finds modules next to the script, from any working directory.
mkdir -p proj elsewhere
echo 'return { answer = 42 }' > proj/util.lua
printf 'local util = require "util"\nprint("answer", util.answer)\n' > proj/main.lua
run proj/main.lua
[ "$STATUS" = 0 ] && [ "$OUT" = "$(printf 'answer\t42')" ] && ok "asyncrun proj/main.lua requires proj/util.lua" \
  || bad "asyncrun proj/main.lua requires proj/util.lua" "exit $STATUS; stderr: $ERR"
(cd elsewhere && timeout -k 2 20 "$AR" "$TMP/proj/main.lua" > ../out.txt 2> ../err.txt); STATUS=$?
[ "$STATUS" = 0 ] && [ "$(cat out.txt)" = "$(printf 'answer\t42')" ] && ok "... from another directory, by absolute path" \
  || bad "... from another directory, by absolute path" "exit $STATUS; stderr: $(cat err.txt)"

# The deadlock report names each task and what it waits on.
cat > deadlock.lua <<'LUA'
local async = require "async"
local ev = async.event()
local a = async.spawn(function() ev:wait() end); a.name = "waiter"
local b = async.spawn(function() a:await() end); b.name = "chained"
print("ids", a.id, b.id, async.current().id)
async.sleep(0.01)
local q = async.queue()
q:get()
LUA
run deadlock.lua
read -r _ aid bid mid < <(tr '\t' ' ' < out.txt)
if [ "$STATUS" = 1 ] && grep -q "deadlock" err.txt; then ok "a deadlock still exits 1"; else bad "a deadlock still exits 1" "exit $STATUS"; fi
grep -Ei "task $aid \(waiter\).*event" err.txt >/dev/null && ok "the deadlock report names the waiter and its event" \
  || bad "the deadlock report names the waiter and its event" "stderr: $ERR"
grep -Ei "task $bid \(chained\).*task $aid" err.txt >/dev/null && ok "the deadlock report names the chained task and the task it awaits" \
  || bad "the deadlock report names the chained task and the task it awaits" "stderr: $ERR"
grep -Ei "task $mid.*queue" err.txt >/dev/null && ok "the deadlock report names the main task and its queue" \
  || bad "the deadlock report names the main task and its queue" "stderr: $ERR"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
