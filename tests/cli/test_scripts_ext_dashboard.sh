#!/usr/bin/env bash
# scripts/dashboard.lua: an HTTP check and a command check, the JSON status
# and the event stream, and in a real browser (headless Chromium, driven
# through the DevTools protocol by tests/helpers/cdp_watch.py) the statuses
# on screen turning from UP to DOWN when the checked service stops and the
# checked file goes, without the page being reloaded. Bad arguments too.
# usage: test_scripts_ext_dashboard.sh path/to/asyncrun
. "$(dirname "$0")/scripts_lib.sh"

if ! "$AR" -e 'os.exit(type(require("async.http").serve) == "function" and 0 or 1, true)'; then
  "$AR" "$SCRIPTS/dashboard.lua" http://127.0.0.1:1/ > out.txt 2> err.txt; rc=$?
  [ $rc = 2 ] && grep -q "^dashboard.lua: this asyncrun has no HTTP server" err.txt \
    && ok "no server in this asyncrun: exit 2 and one line" || bad "no server" "exit $rc; $(cat err.txt)"
  done_tests
  exit
fi

# The checked service: a small site (tests/helpers/site_server.py).
exec 3< <(exec /usr/bin/python3 "$AR_TEST_DIR/helpers/site_server.py" 100 0)
read -r SITE_PORT SITE_PID <&3 || { echo "cannot start the site"; exit 1; }
exec 3<&-
BG_PIDS+=("$SITE_PID")
SITE=http://127.0.0.1:$SITE_PORT
touch flag

timeout --foreground -s INT 100 "$AR" "$SCRIPTS/dashboard.lua" "web=$SITE/" "flag=cmd:test -e $TMP/flag && echo present" \
  --interval 0.3 --timeout 2 --seed 1 > dash.out 2> dash.err &
DASH_PID=$!
BG_PIDS+=("$DASH_PID")
for _ in $(seq 200); do grep -q "^dashboard at " dash.out 2> /dev/null && break; sleep 0.1; done
DASH=$(grep -Eo 'http://127\.0\.0\.1:[0-9]+' dash.out | head -1)
[ -n "$DASH" ] && ok "dashboard: serves its page ($DASH)" || { bad "dashboard: no address" "$(cat dash.out dash.err)"; done_tests; exit; }

for _ in $(seq 100); do
  curl -s "$DASH/api/status" > status.json
  grep -q '"status":"UP".*"status":"UP"' status.json && break
  sleep 0.1
done
/usr/bin/python3 - status.json <<'EOF' > status.txt
import json, sys
for c in json.load(open(sys.argv[1]))["checks"]:
    print("%s %s %s %s" % (c["name"], c["kind"], c["status"], c["detail"]))
EOF
has "dashboard: /api/status: the HTTP check is up" status.txt "^web http UP HTTP 200 in [0-9]+ ms$"
has "dashboard: /api/status: the command check is up, with its output" status.txt "^flag cmd UP exit 0 in [0-9]+ ms: present$"
curl -s "$DASH/" > page.html
has "dashboard: the page listens to the event stream" page.html 'new EventSource\("/events"\)'
curl -sN --max-time 1.5 "$DASH/events" > events.txt
n=$(grep -c '^event: status$' events.txt)
# Two checks every 0.3 s: about 10 updates in 1.5 s, the first at once.
between "dashboard: /events streams an update per check run" "$n" 3 14
has "dashboard: an event carries the state as JSON" events.txt '^data: \{.*"checks":\['
curl -s -o /dev/null -w '%{http_code} %{content_type}\n' --max-time 1 "$DASH/events" > ctype.txt
has "dashboard: /events is text/event-stream" ctype.txt "text/event-stream"

# The browser: both statuses UP on screen, then the site stops and the flag
# goes, and the same page shows both DOWN.
if command -v chromium > /dev/null; then
  timeout 55 /usr/bin/python3 "$AR_TEST_DIR/helpers/cdp_watch.py" "$DASH/" status-web,status-flag UP \
    "kill $SITE_PID; rm -f $TMP/flag" DOWN 50 > cdp.out 2> cdp.err; rc=$?
  [ $rc = 0 ] && ok "dashboard: the browser saw the change" || bad "dashboard: browser" "exit $rc; $(cat cdp.out cdp.err | tail -5)"
  has "dashboard: the browser showed UP first" cdp.out "^before: UP,UP \(summary: 2 of 2 up "
  has "dashboard: then DOWN, pushed by the server" cdp.out "^after: DOWN,DOWN in [0-9.]+ s \(summary: 0 of 2 up "
  has "dashboard: the page was not reloaded" cdp.out "^reloaded: no$"
  has "dashboard: the page renders (a screenshot)" cdp.out "^screenshot: [0-9]{4,} bytes$"
  between "dashboard: the change reached the screen within a few check intervals" \
    "$(field cdp.out '^after: DOWN,DOWN in ')" 0 6
else
  bad "dashboard: the browser test" "chromium is not installed (apt-get install chromium: .ci/packages.txt)"
  kill "$SITE_PID"; rm -f flag
fi
for _ in $(seq 100); do grep -q "flag: UP -> DOWN" dash.out && grep -q "web: UP -> DOWN" dash.out && break; sleep 0.1; done
has "dashboard: the HTTP check came up" dash.out "^\[[0-9:]{8}\] web: PENDING -> UP \(HTTP 200 in [0-9]+ ms\)$"
# Refused, or (when the kill lands while a check is in flight on a kept
# connection) cut with no answer: curl's empty reply, kind protocol.
has "dashboard: ... and went down" dash.out "^\[[0-9:]{8}\] web: UP -> DOWN \(no answer: (connect|protocol)\)$"
has "dashboard: the command check went down, with its exit status" dash.out "^\[[0-9:]{8}\] flag: UP -> DOWN \(exit 1 in [0-9]+ ms\)$"
kill -INT "$DASH_PID"
wait "$DASH_PID"; rc=$?
[ $rc = 0 ] || [ $rc = 130 ] && ok "dashboard: Ctrl-C ends it (exit $rc)" || bad "dashboard: Ctrl-C" "exit $rc"
empty "dashboard: nothing on stderr" dash.err

# --file, --duration, a check that times out.
printf '# checks\n\nup=cmd:true\n  slow=cmd:exec sleep 5\n' > checks.txt
"$AR" "$SCRIPTS/dashboard.lua" --file checks.txt "dead=http://127.0.0.1:1/" --interval 0.2 --timeout 0.3 \
  --duration 1 --quiet > dur.out 2> dur.err; rc=$?
[ $rc = 0 ] && ok "dashboard: --duration ends it with exit 0" || bad "dashboard: --duration" "exit $rc; $(cat dur.err)"
has "dashboard: checks from the file and the command line" dur.out "\(3 checks, every 0\.2 s\)$"
has "dashboard: a command over its timeout is down" dur.out "slow: PENDING -> DOWN \(timeout: "
has "dashboard: the summary" dur.out "^stopped after 1\.[0-9] s: [0-9]+ check runs, 0 changes of status, 1 of 3 up$"

usage_checks dashboard takes_args
bad_args() {
  local want=$1; shift
  "$AR" "$SCRIPTS/dashboard.lua" "$@" > out.txt 2> err.txt; local rc=$?
  if [ $rc = 2 ] && grep -q -- "$want" err.txt && [ ! -s out.txt ]; then ok "dashboard: $* exits 2"
  else bad "dashboard: $*" "exit $rc; $(cat out.txt err.txt)"; fi
}
bad_args "no check given (CHECK arguments or --file FILE)"
bad_args "not a check: 'ftp://x' (want URL, NAME=URL or NAME=cmd:COMMAND)" ftp://x
bad_args "a command check needs a name (NAME=cmd:...): 'cmd:true'" cmd:true
bad_args "two checks are named 'a'" a=cmd:true a=http://127.0.0.1:1/
bad_args "check 'e' has an empty command" "e=cmd: "
bad_args "cannot read no/such.txt" --file no/such.txt
bad_args "option '--interval' must be at least 0.05" --interval 0 http://127.0.0.1:1/

done_tests
