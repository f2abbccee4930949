#!/usr/bin/env bash
# scripts/pipeline.lua and scripts/scheduler.lua: results, timings, exit
# statuses and command lines.
# usage: test_scripts_tools.sh path/to/asyncrun
. "$(dirname "$0")/scripts_lib.sh"

# ---- pipeline
start p1 -- "$AR" "$SCRIPTS/pipeline.lua" --seed 1 --quiet
start p16 -- "$AR" "$SCRIPTS/pipeline.lua" --seed 1 --quiet --workers 16 --queue-size 7
printf 'GET / 200 5\nnot a log line\nPOST /api/orders 503 100\nGET / 404 7\n\nGET /health 200 3\nDELETE /api/users 204 9\n' > in.log
start pfile -- "$AR" "$SCRIPTS/pipeline.lua" in.log --quiet
start pfast -- "$AR" "$SCRIPTS/pipeline.lua" --seed 2 --quiet --records 20000 --work-ms 0

finish p1
status_is p1 0
has "pipeline: the seed fixes the data" p1.out "^status: 2xx 2682, 3xx 580, 4xx 1147, 5xx 591$"
has "pipeline: busiest paths" p1.out "^busiest paths: /health 649, /api/orders/42 638, /static/app.js 638$"
has "pipeline: latency percentiles" p1.out "^latency: p50 13 ms, p95 217 ms, max 418 ms$"
for st in read transform aggregate; do
  has "pipeline: $st handled 5000 items" p1.out "^$st +5000 +[0-9.]+s +[0-9]+ "
done
has "pipeline: back-pressure fills the first queue" p1.out "^peak queue depth: read->transform 100/100, "
between "pipeline: the reader waits on the full queue (back-pressure)" \
  "$(grep -E '^read ' p1.out | awk '{print $NF}' | tr -d s)" 0.3 30
# 5000 records x 1 ms of lookup / 8 workers: at least 0.625 s.
# (No tight upper bound: a sanitizer build spends most of its time in Lua.)
between "pipeline: the run takes the lookups' time" "$(field p1.out '^records: 5000 \(0 malformed\) in ')" 0.62 30
empty "pipeline: nothing on stderr" p1.err

finish p16
status_is p16 0
for pat in "^status: 2xx 2682, 3xx 580, 4xx 1147, 5xx 591$" "^latency: p50 13 ms, p95 217 ms, max 418 ms$"; do
  has "pipeline: 16 workers give the same results" p16.out "$pat"
done
has "pipeline: no queue grows past its bound" p16.out "^peak queue depth: read->transform [0-7]/7, transform->aggregate [0-7]/7$"
between "pipeline: 16 workers: at least 5000 x 1 ms / 16" "$(field p16.out '^records: 5000 \(0 malformed\) in ')" 0.31 30

finish pfile
status_is pfile 0
has "pipeline: a file is read line by line" pfile.out "^input: in\.log; "
has "pipeline: malformed lines are counted" pfile.out "^records: 7 \(2 malformed\) in "
has "pipeline: file statuses" pfile.out "^status: 2xx 3, 4xx 1, 5xx 1$"
has "pipeline: file paths" pfile.out "^busiest paths: / 2, /api/orders 1, /api/users 1$"
has "pipeline: file latencies" pfile.out "^latency: p50 7 ms, p95 100 ms, max 100 ms$"

finish pfast
status_is pfast 0
has "pipeline: 20000 records without lookups" pfast.out "^records: 20000 \(0 malformed\) in "

usage_checks pipeline takes_args
"$AR" "$SCRIPTS/pipeline.lua" a b > /dev/null 2> err.txt
[ $? = 2 ] && grep -q "unexpected argument 'b'" err.txt && ok "pipeline: two files exit 2" || bad "pipeline: two files" "$(cat err.txt)"
"$AR" "$SCRIPTS/pipeline.lua" no/such.log > /dev/null 2> err.txt
[ $? = 2 ] && [ "$(cat err.txt)" = "pipeline.lua: cannot read no/such.log: No such file or directory" ] \
  && ok "pipeline: an unreadable file exits 2 with one line" || bad "pipeline: unreadable file" "$(cat err.txt)"
"$AR" "$SCRIPTS/pipeline.lua" --workers 0 > /dev/null 2> err.txt
[ $? = 2 ] && grep -q "option '--workers' must be at least 1" err.txt && ok "pipeline: --workers 0 exits 2" \
  || bad "pipeline: --workers 0" "$(cat err.txt)"

# ---- scheduler
start release -- "$AR" "$SCRIPTS/scheduler.lua" "$SCRIPTS/dags/release.lua"
start serial -- "$AR" "$SCRIPTS/scheduler.lua" "$SCRIPTS/dags/release.lua" --parallel 1 --quiet
start report -- "$AR" "$SCRIPTS/scheduler.lua" "$SCRIPTS/dags/report.json"
cat > flaky.json <<'EOF'
{ "tasks": [
  { "name": "flaky", "retries": 2, "lua": "calls = (calls or 0) + 1; if calls < 3 then error('not yet', 0) end; return calls" },
  { "name": "slow", "timeout": 0.2, "lua": "async.sleep(5)" },
  { "name": "after_slow", "after": ["slow"], "lua": "return 1" },
  { "name": "after_that", "after": ["after_slow", "flaky"], "lua": "return 2" },
  { "name": "independent", "lua": "return 'still runs'" }
] }
EOF
start flaky -- "$AR" "$SCRIPTS/scheduler.lua" flaky.json

finish release
status_is release 1
has "scheduler: a task's result is passed on" release.out "^\[\+0\.[0-9]+s\] ok    compile \(0\.[0-9]+ s\) -> 40$"
has "scheduler: a failure is reported" release.out "^\[\+0\.[0-9]+s\] FAIL  lint \(0\.[0-9]+ s\): lint: 3 warnings treated as errors$"
has "scheduler: its dependant is skipped" release.out "^\[\+0\.[0-9]+s\] skip  package \(lint failed\)$"
has "scheduler: ... and the dependant's dependant" release.out "^\[\+0\.[0-9]+s\] skip  publish \(lint failed\)$"
has "scheduler: a task that does not depend on the failure runs (a lua chunk)" release.out "^\[\+0\.[0-9]+s\] ok    test \(0\.[0-9]+ s\) -> 42$"
has "scheduler: summary" release.out "^4 ok, 1 failed, 2 skipped in 0\.[0-9]+ s \(at most 2 at once\)$"
# compile starts as soon as fetch (0.3 s) is done; test as soon as compile is.
between "scheduler: compile starts when fetch ends" "$(grep -E 'start compile$' release.out | sed -E 's/^\[\+([0-9.]+)s\].*/\1/')" 0.3 0.6
between "scheduler: test starts when compile ends" "$(grep -E 'start test$' release.out | sed -E 's/^\[\+([0-9.]+)s\].*/\1/')" 0.5 0.9
[ "$(grep -nE 'ok    fetch' release.out | cut -d: -f1)" -lt "$(grep -nE 'start compile' release.out | cut -d: -f1)" ] \
  && ok "scheduler: compile starts after fetch succeeded" || bad "scheduler: order" "$(cat release.out)"
between "scheduler: the whole graph in about 0.7 s" "$(field release.out '^4 ok, 1 failed, 2 skipped in ')" 0.7 1.3

finish serial
status_is serial 1
has "scheduler: --parallel 1 runs one at a time" serial.out "^4 ok, 1 failed, 2 skipped in [0-9.]+ s \(at most 1 at once\)$"
between "scheduler: ... so the times add up (0.9 s)" "$(field serial.out '^4 ok, 1 failed, 2 skipped in ')" 0.9 1.6

finish report
status_is report 0
has "scheduler: JSON tasks get their inputs" report.out "^\[\+0\.[0-9]+s\] ok    report \(0\.[0-9]+ s\) -> 120 users, revenue 4380$"
has "scheduler: the file's parallel limit" report.out "^5 tasks from .*report\.json, at most 3 at once$"
has "scheduler: JSON summary" report.out "^5 ok, 0 failed, 0 skipped in 0\.[0-9]+ s \(at most 3 at once\)$"
between "scheduler: revenue starts when orders (0.3 s) ends" "$(grep -E 'start revenue$' report.out | sed -E 's/^\[\+([0-9.]+)s\].*/\1/')" 0.3 0.6

finish flaky
status_is flaky 1
has "scheduler: retries" flaky.out "ok    flaky \([0-9.]+ s\) -> 3$"
has "scheduler: timeout" flaky.out "FAIL  slow \(0\.2[0-9]* s\): timeout: timed out after 0\.2 s$"
has "scheduler: skipped after a timeout" flaky.out "skip  after_slow \(slow failed\)$"
has "scheduler: skipped transitively" flaky.out "skip  after_that \(slow failed\)$"
has "scheduler: the independent task ran" flaky.out "ok    independent \([0-9.]+ s\) -> still runs$"
has "scheduler: flaky summary" flaky.out "^2 ok, 1 failed, 2 skipped in "

# Descriptions that cannot run: exit 2, nothing runs, one line per problem.
reject() {
  local name=$1 file=$2 want=$3
  "$AR" "$SCRIPTS/scheduler.lua" "$file" > out.txt 2> err.txt; local rc=$?
  if [ $rc = 2 ] && grep -Eq -- "$want" err.txt && ! grep -q "start\|ok  " out.txt; then ok "scheduler: $name"
  else bad "scheduler: $name" "exit $rc; stdout: $(cat out.txt); stderr: $(cat err.txt)"; fi
}
echo '{"tasks": [{"name":"a","lua":"return 1","after":["c"]},{"name":"b","lua":"return 2","after":["a"]},{"name":"c","lua":"return 3","after":["b"]},{"name":"d","lua":"return 4"}]}' > cycle.json
reject "a cycle is rejected, named" cycle.json "^scheduler.lua: cycle.json: dependency cycle: a -> b -> c -> a$"
echo 'return { tasks = { { name = "x", after = { "x" }, run = function() end } } }' > self.lua
reject "a task after itself is a cycle" self.lua "task 'x' comes after itself \(cycle: x -> x\)"
# (Command tasks: tests/cli/test_scripts_ext_files.sh.)
echo '{"tasks": [{"name":"a","lua":"return 1","after":["zz"]},{"name":"a","lua":"return 2"}]}' > names.json
reject "an unknown dependency is named" names.json "task 'a' comes after 'zz', which is not a task"
reject "a duplicate name is named" names.json "two tasks are named 'a'"
echo '{"tasks": [' > broken.json
reject "bad JSON" broken.json "^scheduler.lua: broken.json: not valid JSON: "
echo '{"tasks": [{"name":"a","lua":"return +"}]}' > syntax.json
reject "a Lua chunk that does not compile" syntax.json "task 'a': \[string \"a\"\]|task 'a': a:1:"
echo '{"tasks": [{"name":"a","run":"x"}]}' > run.json
reject "run must be a function" run.json "task 'a': run must be a function"
reject "a missing file" no-such.lua "^scheduler.lua: no-such.lua: cannot read: no-such.lua: No such file or directory$"

"$AR" "$SCRIPTS/scheduler.lua" "$SCRIPTS/dags/release.lua" --dry-run --quiet > dry.out 2>&1
[ $? = 0 ] && ok "scheduler: --dry-run exits 0" || bad "scheduler: --dry-run" "$(cat dry.out)"
has "scheduler: --dry-run shows the levels" dry.out "^level 0: fetch, configure$"
has "scheduler: --dry-run level 3" dry.out "^level 3: package$"
count_is "scheduler: --dry-run runs nothing" dry.out "start |ok  " 0

usage_checks scheduler takes_args
"$AR" "$SCRIPTS/scheduler.lua" > /dev/null 2> err.txt
[ $? = 2 ] && grep -q "missing argument FILE" err.txt && ok "scheduler: no FILE exits 2" || bad "scheduler: no FILE" "$(cat err.txt)"

done_tests
