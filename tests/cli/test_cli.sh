#!/usr/bin/env bash
# The command line: exit codes, messages, options, signals.
# usage: test_cli.sh path/to/asyncrun
set -u
AR=${1:?usage: test_cli.sh path/to/asyncrun}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cd "$TMP"
pass=0 fail=0

ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1: $2"; }

# expect NAME WANT_STATUS PATTERN_IN_OUTPUT -- command...
expect() {
  local name=$1 want=$2 pat=$3; shift 4
  local out status
  out=$(timeout 20 "$@" 2>&1); status=$?
  if [ "$status" != "$want" ]; then bad "$name" "exit $status, want $want; output: $out"; return; fi
  if [ -n "$pat" ] && ! grep -Eq -- "$pat" <<<"$out"; then bad "$name" "output lacks /$pat/: $out"; return; fi
  ok "$name"
}

cat > good.lua <<'LUA'
local async = require "async"
async.sleep(0.01)
print("args", select("#", ...), arg[0], arg[1], ...)
LUA
expect "a good script exits 0 with its varargs and arg table" 0 "^args	2	good.lua	x	x	y$" -- "$AR" good.lua x y

cat > boom.lua <<'LUA'
local async = require "async"
local function inner() async.sleep(0); error("boom here") end
inner()
LUA
expect "an error exits 1 with file:line" 1 "^asyncrun: boom.lua:2: boom here$" -- "$AR" boom.lua
expect "an error prints a traceback" 1 "in (local|upvalue|function) 'inner'" -- "$AR" boom.lua

printf 'local x = = 1\n' > syntax.lua
expect "a syntax error exits 1 naming file and line" 1 "^asyncrun: syntax.lua:1: unexpected symbol near '='$" -- "$AR" syntax.lua

expect "a missing script exits 2 with one line naming it" 2 "^asyncrun: cannot open nosuch.lua" -- "$AR" nosuch.lua
out=$("$AR" nosuch.lua 2>&1); [ "$(wc -l <<<"$out")" = 1 ] && ok "missing script message is one line" || bad "missing script message is one line" "$out"

expect "an unknown option exits 2" 2 "unrecognized option '-z'" -- "$AR" -z good.lua
expect "-e without its argument exits 2" 2 "'-e' needs argument" -- "$AR" -e
expect "-v prints the version" 0 "^asyncrun [0-9]+\.[0-9]+\.[0-9]+ \(Lua 5\.4" -- "$AR" -v
expect "-h prints usage" 0 "usage: asyncrun" -- "$AR" -h
expect "--help prints usage" 0 "usage: asyncrun" -- "$AR" --help
expect "-e runs a chunk that may sleep" 0 "^slept$" -- "$AR" -e 'require("async").sleep(0.01) print("slept")'
expect "-e runs before the script" 0 "^args	0" -- "$AR" -e 'X=1' good.lua
expect "-l loads a module into a global" 0 "^function$" -- "$AR" -l async -e 'print(type(async.sleep))'
expect "-l g=mod names the global" 0 "^function$" -- "$AR" -l a=async -e 'print(type(a.spawn))'
expect "a failing -e exits 1" 1 "^asyncrun: \(command line\):1: nope$" -- "$AR" -e 'error("nope")'

printf '#!/usr/bin/env asyncrun\nprint("shebang ok")\n' > shebang.lua
expect "a #! first line is skipped" 0 "^shebang ok$" -- "$AR" shebang.lua

out=$(echo 'print("from stdin", ...)' | "$AR" - a 2>&1)
[ "$out" = "$(printf 'from stdin\ta')" ] && ok "- runs stdin" || bad "- runs stdin" "$out"

mkdir -p lib && echo 'return { answer = 42 }' > lib/mymod.lua
expect "LUA_PATH_5_4 is honoured" 0 "^42$" -- env LUA_PATH_5_4="$TMP/lib/?.lua;;" "$AR" -e 'print(require("mymod").answer)'
expect "LUA_INIT_5_4 runs first" 0 "^7$" -- env LUA_INIT_5_4='Y=7' "$AR" -e 'print(Y)'

cat > unawaited.lua <<'LUA'
local async = require "async"
local t = async.spawn(function() error("lost failure") end)
t.name = "fetcher"
async.sleep(0.01)
print("main goes on")
LUA
expect "an unawaited failure is reported and the run goes on (exit 1)" 1 "task [0-9]+ \(fetcher\) failed: unawaited.lua:2: lost failure" -- "$AR" unawaited.lua
expect "... and main still finishes" 1 "^main goes on$" -- "$AR" unawaited.lua

cat > leftover.lua <<'LUA'
local async = require "async"
async.spawn(function()
  local c <close> = setmetatable({}, { __close = function(_, e) print("cleanup", e.kind) end })
  async.sleep(60)
end)
async.sleep(0.01)
print("main ends")
LUA
expect "tasks left at the end are cancelled and clean up" 0 "^cleanup	cancelled$" -- "$AR" leftover.lua

cat > deadlock.lua <<'LUA'
local async = require "async"
local other
local me = async.current()
other = async.spawn(function() return me:await() end)
other:await()
LUA
expect "a deadlock is diagnosed, not a hang" 1 "deadlock: every task is waiting" -- "$AR" deadlock.lua

# Signals: the script prints "ready" once its cleanup handler is in place.
cat > sig.lua <<'LUA'
local async = require "async"
local t = async.spawn(function()
  local c <close> = setmetatable({}, { __close = function(_, e)
    io.stdout:write("task cleanup ", e and e.kind or "none", "\n"); io.stdout:flush()
  end })
  async.sleep(60)
end)
local ok, err = pcall(async.sleep, 60)
print("main caught", err.kind)
io.stdout:flush()
error(err)
LUA
signal_test() {
  local sig=$1 want=$2
  rm -f out.txt
  "$AR" sig.lua > out.txt 2>&1 &
  local pid=$!
  sleep 0.3
  kill -"$sig" "$pid"
  local t0=$SECONDS
  wait "$pid"; local status=$?
  if [ "$status" != "$want" ]; then bad "SIG$sig exits $want" "exit $status: $(cat out.txt)"; return; fi
  if ! grep -q "^main caught	cancelled$" out.txt || ! grep -q "^task cleanup cancelled$" out.txt; then
    bad "SIG$sig runs every task's cleanup" "$(cat out.txt)"; return
  fi
  [ $((SECONDS - t0)) -lt 5 ] || { bad "SIG$sig is prompt" "took $((SECONDS - t0)) s"; return; }
  ok "SIG$sig cancels every task, runs cleanup, exits $want"
}
signal_test INT 130
signal_test TERM 143

cat > stubborn.lua <<'LUA'
local async = require "async"
print("ready"); io.stdout:flush()
while true do pcall(async.sleep, 60) end
LUA
"$AR" stubborn.lua > out.txt 2>&1 &
pid=$!
sleep 0.3
kill -INT "$pid"; sleep 0.2; kill -INT "$pid" 2>/dev/null
wait "$pid"; status=$?
[ "$status" = 130 ] && ok "a second Ctrl-C exits at once" || bad "a second Ctrl-C exits at once" "exit $status"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
