#!/usr/bin/env bash
# The lab's demos that need no network (scripts/simple_tasks, error_handling,
# retry, timeouts, patterns), run at their real timings, all at once (they
# mostly sleep), with fixed seeds; then their command lines.
# usage: test_scripts_demos.sh path/to/asyncrun
. "$(dirname "$0")/scripts_lib.sh"

start simple -- "$AR" "$SCRIPTS/simple_tasks.lua" --seed 3
start errors -- "$AR" "$SCRIPTS/error_handling.lua" --seed 3
start retry -- "$AR" "$SCRIPTS/retry.lua" --seed 7
start timeouts -- "$AR" "$SCRIPTS/timeouts.lua" --seed 7
start patterns -- "$AR" "$SCRIPTS/patterns.lua" --seed 7 --quiet
# From the scripts' own directory, by a relative path: scripts/lib is found.
(cd "$SCRIPTS" && timeout 20 "$AR" retry.lua --seed 7 --quiet --retries 1 --delay 0.01 > "$TMP/retry_rel.out" 2>&1)
rel=$?
[ $rel = 0 ] && ok "a script runs from its own directory by a relative path" \
  || bad "a script runs from its own directory" "exit $rel: $(cat retry_rel.out)"
has "... with the options it was given" retry_rel.out "^  gave up after 2 attempt\(s\)"
# When require does search the script's directory (as the engine will), the
# scripts still find scripts/lib, once.
LUA_PATH_5_4="$SCRIPTS/?.lua;$SCRIPTS/lib/?.lua;;" "$AR" "$SCRIPTS/retry.lua" --help > help_path.out 2>&1 \
  && grep -q "^usage: asyncrun scripts/retry.lua" help_path.out \
  && ok "scripts/lib already on package.path is fine" || bad "scripts/lib on package.path" "$(cat help_path.out)"

# simple_tasks, seed 3: sleeps of 2.89, 1.19, 0.67, 1.31 and 1.29 s.
finish simple
status_is simple 0
has "simple_tasks: the seed fixes the sleeps" simple.out "sequential: [0-9.]+ s \(the sum of the sleeps is 7\.34 s\)$"
between "simple_tasks: one after another takes the sum" "$(field simple.out '^sequential: ')" 7.33 9
between "simple_tasks: all at once takes the longest" "$(field simple.out '^concurrent: ')" 2.88 3.8
between "simple_tasks: the speed-up" "$(field simple.out '^speed-up: ')" 1.8 2.6
count_is "simple_tasks: five starts in each run" simple.out "task [1-5] starts, will sleep" 10
empty "simple_tasks: nothing on stderr" simple.err

finish errors
status_is errors 0
has "error_handling: the task's error is caught from await" errors.out \
  "^task 1: caught invalid_value error: the service returned a value out of range$"
has "error_handling: gather returns an error as a value" errors.out \
  "^task 2: failed, connection: the connection was reset by the peer$"
has "error_handling: ... and the other results" errors.out '^task 3: succeeded, "result of task 3"$'
has "error_handling: retry succeeds on the second attempt" errors.out '^task 5: "result of task 5" after 2 attempt\(s\)$'
between "error_handling: the first retry waits 0.5 s plus up to 10%" \
  "$(field errors.out 'attempt 1 failed \(invalid_value\), retrying in ')" 0.5 0.55
empty "error_handling: nothing on stderr" errors.err

# retry, seed 7: the first service fails 3 times.
finish retry
status_is retry 0
has "retry: the recovering service succeeds on attempt 4" retry.out "^  succeeded after 4 attempt\(s\) in [0-9.]+ s: billing answered on call 4$"
count_is "retry: every failed attempt shows its error and wait" retry.out "^  attempt [0-9] failed \((unavailable|timeout|connection): .*\), next in [0-9.]+ s$" 7
between "retry: first wait 0.25 s + up to 20% jitter" "$(field retry.out '^  attempt 1 failed .*next in ')" 0.25 0.3
between "retry: waits double (attempt 3)" "$(grep -E '^  attempt 3 failed' retry.out | head -1 | sed -E 's/.*next in ([0-9.]+) s/\1/')" 1.0 1.2
between "retry: waits double (attempt 4)" "$(grep -E '^  attempt 4 failed' retry.out | head -1 | sed -E 's/.*next in ([0-9.]+) s/\1/')" 2.0 2.4
has "retry: the service that stays down is given up after 5 attempts" retry.out "^  gave up after 5 attempt\(s\) in [0-9.]+ s; last error (unavailable|timeout|connection): "
between "retry: giving up takes the waits (3.75-4.5 s) and the calls" \
  "$(field retry.out '^  gave up after 5 attempt\(s\) in ')" 4.0 6.0
has "retry: retry_if gives up at once" retry.out "^  gave up after 1 attempt\(s\) in 0\.[0-9]+ s; last error bad_request: "
has "retry: attempts are shown with their time" retry.out "^[0-9:.]+ \+[0-9.]+s attempt 5$"

finish timeouts
status_is timeouts 0
has "timeouts: task 1 cleans up when wait_for cancels it" timeouts.out "^[0-9:.]+ \+2\.[0-9]+s task 1 cancelled after [34] of 10 steps: cleaning up$"
between "timeouts: ... at 2.0 s" "$(grep -E 'task 1 timed out \(timeout: ' timeouts.out | sed -E 's/^[0-9:.]+ \+([0-9.]+)s.*/\1/')" 2.0 2.7
has "timeouts: task 2 cleans up when cancelled" timeouts.out "task 2 cancelled after [56] of 20 steps: cleaning up$"
between "timeouts: ... after 3 s" "$(grep -E 'task 2 was cancelled \(awaiting it raised "cancelled"\)' timeouts.out | sed -E 's/^[0-9:.]+ \+([0-9.]+)s.*/\1/')" 3.0 3.7
count_is "timeouts: the three workers clean up" timeouts.out "task [345] cancelled after [34] of [0-9]+ steps: cleaning up$" 3
count_is "timeouts: ... and gather reports them cancelled" timeouts.out "^task [345]: cancelled$" 3
between "timeouts: shutdown after 2 s" "$(grep -E 'shutdown complete$' timeouts.out | sed -E 's/^[0-9:.]+ \+([0-9.]+)s.*/\1/')" 2.0 2.7
has "timeouts: progress is shown" timeouts.out "task 1 progress: 10%$"
empty "timeouts: nothing on stderr" timeouts.err

finish patterns
status_is patterns 0
count_is "patterns: 10 jobs start" patterns.out "job +[0-9]+ starts \([0-9.]+ s\), [1-3] running$" 10
count_is "patterns: never more than 3 at once" patterns.out "job +[0-9]+ starts .*, [4-9] running$" 0
has "patterns: the bounded map reports 3 at a time" patterns.out "^10 jobs done in [0-9.]+ s, at most 3 at a time$"
count_is "patterns: each of the 10 items finished once" patterns.out "consumer [1-3]: finished item ([1-9]|10)$" 10
for i in 1 2 3 4 5 6 7 8 9 10; do
  [ "$(grep -Ec "finished item $i\$" patterns.out)" = 1 ] || bad "patterns: item $i finished once" "$(grep "item $i\$" patterns.out)"
done
has "patterns: the consumers' counts add up" patterns.out "^consumers handled [0-9]+, [0-9]+ and [0-9]+ items \(10 in all\)"
# 2 calls per second: calls 1-2 at once, 3-4 after 1 s, 5-6 after 2 s.
for i in 1 2 3 4 5 6; do
  t=$(grep -E " call $i runs\$" patterns.out | sed -E 's/^[0-9:.]+ \+([0-9.]+)s.*/\1/')
  lo=$(( (i - 1) / 2 ))
  between "patterns: rate-limited call $i" "$t" "$lo" "$lo.6"
done
between "patterns: 6 calls at 2 per second take about 2.1 s" "$(field patterns.out '^6 calls in ')" 2.05 3.0
empty "patterns: nothing on stderr" patterns.err

for s in simple_tasks error_handling retry timeouts patterns; do usage_checks "$s"; done
"$AR" "$SCRIPTS/retry.lua" --retries -1 > /dev/null 2> err.txt
[ $? = 2 ] && grep -q "option '--retries' must be at least 0" err.txt && ok "retry: a negative --retries exits 2" \
  || bad "retry: a negative --retries" "$(cat err.txt)"

done_tests
