#!/usr/bin/env bash
# scripts/api_client.lua against its own flaky API (429 with Retry-After,
# 503, slow answers, fixed by the seed): the same successes, retries and
# give-ups whatever the limits; Retry-After honoured; the rate and
# concurrency limits kept; --serve with --base-url from another process;
# an unreachable API; bad arguments.
# usage: test_scripts_ext_api.sh path/to/asyncrun
. "$(dirname "$0")/scripts_lib.sh"

if ! "$AR" -e 'os.exit(type(require("async.http").serve) == "function" and 0 or 1, true)'; then
  "$AR" "$SCRIPTS/api_client.lua" > out.txt 2> err.txt; rc=$?
  [ $rc = 2 ] && grep -q "^api_client.lua: this asyncrun has no HTTP server (http.serve).*pass --base-url URL" err.txt \
    && ok "no server in this asyncrun: exit 2 and one line" || bad "no server" "exit $rc; $(cat err.txt)"
  usage_checks api_client
  done_tests
  exit
fi

DEAD_PORT=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# What seed 1 gives, whatever the limits: the fates are fixed per item and
# attempt.
SUCCEEDED="^succeeded: 35 of 40$"
GAVE_UP="^gave up: 5 \(items 9, 14, 16, 19, 22\)$"
ATTEMPTS="^attempts: 71 \(31 retries: 7 after 429, 19 after 503, 5 after a timeout, 0 after a connection error\)$"

start slow -- "$AR" "$SCRIPTS/api_client.lua" --seed 1
start fast -- "$AR" "$SCRIPTS/api_client.lua" --seed 1 --quiet --rate 100 --concurrency 10
start clean -- "$AR" "$SCRIPTS/api_client.lua" --seed 3 --quiet --failure-rate 0 --rate 200 --concurrency 8
# (timeout passes the INT that ends it on to the script; --foreground: to
# the script only, not a second time through the process group.)
timeout --foreground -s INT 100 "$AR" "$SCRIPTS/api_client.lua" --serve --seed 1 > serve.out 2> serve.err &
SERVE_PID=$!
BG_PIDS+=("$SERVE_PID")
start dead -- "$AR" "$SCRIPTS/api_client.lua" --base-url "http://127.0.0.1:$DEAD_PORT" --requests 3 --retries 2 \
  --backoff 0.05 --quiet

# The served API, used from another process.
for _ in $(seq 100); do grep -q "^serving a flaky API at " serve.out 2> /dev/null && break; sleep 0.1; done
URL=$(grep -Eo 'http://127\.0\.0\.1:[0-9]+' serve.out | head -1)
"$AR" "$SCRIPTS/api_client.lua" --base-url "$URL/" --seed 1 --quiet --rate 100 --concurrency 10 > remote.out 2> remote.err; rc=$?
[ $rc = 1 ] && ok "--base-url: some gave up: exit 1" || bad "--base-url exit" "exit $rc; $(cat remote.err)"
for pat in "$SUCCEEDED" "$GAVE_UP" "$ATTEMPTS"; do has "--base-url: the served API's plan: $pat" remote.out "$pat"; done
count_is "--base-url: no local server started" remote.out "^serving" 0
kill -INT "$SERVE_PID"
wait "$SERVE_PID"; rc=$?
[ $rc = 0 ] || [ $rc = 130 ] && ok "--serve ends on Ctrl-C (exit $rc)" || bad "--serve on Ctrl-C" "exit $rc; $(cat serve.err)"

finish fast
status_is fast 1
for pat in "$SUCCEEDED" "$GAVE_UP" "$ATTEMPTS"; do has "fast: $pat" fast.out "$pat"; done
count_is "fast: one line per request given up" fast.out "^  item [0-9]+: gave up after 4 attempt\(s\): got 503$" 5
has "fast: at most 10 at once" fast.out "^limits: at most ([1-9]|10) requests at once, "
empty "fast: nothing on stderr" fast.err

finish slow
status_is slow 1
for pat in "$SUCCEEDED" "$GAVE_UP" "$ATTEMPTS"; do has "default limits: $pat" slow.out "$pat"; done
has "a 429 is retried after its Retry-After" slow.out "^  item [0-9]+: attempt [0-9] got 429 \(Retry-After: 1\), retrying in 1\.00 s \(Retry-After\)$"
has "a 503 is retried with backoff" slow.out "^  item [0-9]+: attempt 1 got 503, retrying in 0\.1[0-2][0-9]* s \(backoff\)$"
has "the backoff doubles (with jitter)" slow.out "^  item [0-9]+: attempt 2 got 503, retrying in 0\.2[0-5][0-9]* s \(backoff\)$"
has "a slow answer times out and is retried" slow.out "^  item [0-9]+: attempt [0-9] timed out after 1\.00 s, retrying in "
has "Retry-After honoured" slow.out "^Retry-After honoured: 7 waits, the shortest 1\.[0-9]+ s$"
between "Retry-After: the shortest wait is the second asked" "$(field slow.out '^Retry-After honoured: 7 waits, the shortest ')" 1.0 1.3
has "at most 4 requests at once, 10 attempts a second" slow.out "^limits: at most [1-4] requests at once, ([1-9]|10) attempts in one second$"
# 71 attempts at 10 a second: the first 10 at once, then 10 a second.
between "the rate limit paces the run (71 attempts at 10/s)" "$(field slow.out '^time: ')" 6.0 20
between "p95 latency includes retries (> 1 s)" "$(field slow.out '^latency: p50 [0-9.]+ s, p95 ')" 1.0 8
between "p50 latency: most succeed at once" "$(field slow.out '^latency: p50 ')" 0.004 1.0
empty "default limits: nothing on stderr" slow.err

finish clean
status_is clean 0
has "no failures: all succeed" clean.out "^succeeded: 40 of 40$"
has "no failures: no retries" clean.out "^attempts: 40 \(0 retries: "
count_is "no failures: nothing given up" clean.out "gave up" 0
between "no failures: p95 is an ordinary answer (< 0.5 s)" "$(field clean.out '^latency: p50 [0-9.]+ s, p95 ')" 0.004 0.5

finish dead
status_is dead 1
count_is "unreachable: one line per request" dead.out \
  "^  item [1-3]: gave up after 3 attempt\(s\): connect: GET http://127\.0\.0\.1:$DEAD_PORT/items/[1-3]: " 3
has "unreachable: connection errors are retried" dead.out "^attempts: 9 \(6 retries: 0 after 429, 0 after 503, 0 after a timeout, 6 after a connection error\)$"
has "unreachable: nothing succeeded" dead.out "^succeeded: 0 of 3$"
empty "unreachable: nothing on stderr" dead.err

usage_checks api_client
bad_args() {
  local want=$1; shift
  "$AR" "$SCRIPTS/api_client.lua" "$@" > out.txt 2> err.txt; local rc=$?
  if [ $rc = 2 ] && grep -q -- "$want" err.txt && [ ! -s out.txt ]; then ok "api_client: $* exits 2"
  else bad "api_client: $*" "exit $rc; $(cat out.txt err.txt)"; fi
}
bad_args "option '--failure-rate' must be at most 1" --failure-rate 2
bad_args "--port goes with --serve" --port 8080
bad_args "--serve and --base-url exclude each other" --serve --base-url http://127.0.0.1:1
bad_args "--base-url wants an http:// or https:// URL, got 'ftp://x'" --base-url ftp://x
bad_args "option '--requests' must be at least 1" --requests 0
bad_args "option '--rate' wants a number, got 'fast'" --rate fast

done_tests
