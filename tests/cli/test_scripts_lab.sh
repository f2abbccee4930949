#!/usr/bin/env bash
# scripts/lab.lua: the whole lab at its real timings (about 35 s with seed 131),
# against a real httpbin until asyncrun has its own server; then its command
# line.
# usage: test_scripts_lab.sh path/to/asyncrun
. "$(dirname "$0")/scripts_lib.sh"

exec 3< <(exec /usr/bin/python3 "$AR_TEST_DIR/helpers/httpbin_server.py" 110)
read -r HB_PORT HB_PID <&3 || { echo "cannot start httpbin"; exit 1; }
BG_PIDS+=("$HB_PID")

start lab -- "$AR" "$SCRIPTS/lab.lua" --seed 131 --quiet --base-url "http://127.0.0.1:$HB_PORT"

# Meanwhile, the command line.
usage_checks lab
"$AR" "$SCRIPTS/lab.lua" --only retry,nope > /dev/null 2> err.txt
[ $? = 2 ] && grep -q "^lab.lua: no demo named 'nope' (demos: simple_tasks, web_requests, " err.txt \
  && ok "lab: --only with an unknown demo exits 2" || bad "lab: --only nope" "$(cat err.txt)"
"$AR" "$SCRIPTS/lab.lua" --base-url localhost:8080 > /dev/null 2> err.txt
[ $? = 2 ] && grep -q "base-url wants an http:// or https:// URL" err.txt \
  && ok "lab: a bad --base-url exits 2 before any demo runs" || bad "lab: bad --base-url" "$(cat err.txt)"
if ! "$AR" -e 'os.exit(type(require("async.http").serve) == "function" and 0 or 1, true)'; then
  "$AR" "$SCRIPTS/lab.lua" --only web_requests,retry --retries 1 > only.out 2> only.err; rc=$?
  [ $rc = 2 ] && ok "lab: options of one demo are not the lab's (exit 2)" || bad "lab: --retries" "exit $rc"
  "$AR" "$SCRIPTS/lab.lua" --only web_requests --quiet > only.out 2> only.err; rc=$?
  [ $rc = 1 ] && ok "lab without a server or --base-url: exit 1" || bad "lab without a server: exit 1" "exit $rc"
  has "lab without a server: web_requests is named as failed" only.out "^failed: web_requests$"
  has "lab without a server: the total time is still printed" only.out "^Total execution time: [0-9.]+ s$"
  has "lab without a server: one line says to pass --base-url" only.err "pass --base-url URL"
fi

finish lab
status_is lab 0
has "lab: names the demos and the seed" lab.out \
  "^The asyncrun lab: simple_tasks, web_requests, error_handling, retry, timeouts, patterns \(seed 131\)$"
order=$(grep -E "^=== " lab.out | sed -E 's/^=== (.*) \(seed 131\) ===$/\1/' | paste -sd, -)
[ "$order" = "Simple tasks,Web requests,Error handling,Retry with backoff,Timeouts and cancellation,Async patterns" ] \
  && ok "lab: every demo, in order, with the lab's seed" || bad "lab: demo order" "$order"
# Each demo behaves as it does alone with the same seed.
has "lab: simple_tasks" lab.out "^sequential: [0-9.]+ s \(the sum of the sleeps is 3\.69 s\)$"
count_is "lab: web_requests fetched twelve times" lab.out "^  GET /(delay/[123]|json|uuid|headers) +[0-9]{3} in " 12
has "lab: error_handling" lab.out '^task 5: "result of task 5" after 3 attempt\(s\)$'
has "lab: retry gives up on the service that stays down" lab.out "^  gave up after 5 attempt\(s\)"
count_is "lab: timeouts" lab.out "^task [345]: cancelled$" 3
has "lab: patterns" lab.out "^6 calls in [0-9.]+ s$"
between "lab: the total time is the demos' sum" "$(field lab.out '^Total execution time: ')" 28 60
count_is "lab: --quiet hides the step-by-step lines" lab.out "task [0-9] starts, will sleep" 0
empty "lab: nothing on stderr" lab.err

done_tests
