#!/usr/bin/env bash
# scripts/web_requests.lua against a real httpbin (tests/helpers/
# httpbin_server.py: Debian's, which has no /json), an endpoint the server
# lacks, an unreachable base URL, and the local service (the HTTP server of
# issue 14) or, while asyncrun has none, the one-line error that says so.
# usage: test_scripts_web.sh path/to/asyncrun
. "$(dirname "$0")/scripts_lib.sh"

exec 3< <(exec /usr/bin/python3 "$AR_TEST_DIR/helpers/httpbin_server.py" 100)
read -r HB_PORT HB_PID <&3 || { echo "cannot start httpbin"; exit 1; }
BG_PIDS+=("$HB_PID")
HB=http://127.0.0.1:$HB_PORT
# A port with nothing listening: bound, then released.
DEAD_PORT=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

start full -- "$AR" "$SCRIPTS/web_requests.lua" --base-url "$HB" --seed 1
start missing -- "$AR" "$SCRIPTS/web_requests.lua" --base-url "$HB/" --quiet --paths /delay/1,/nosuch,status/503,/uuid
start dead -- "$AR" "$SCRIPTS/web_requests.lua" --base-url "http://127.0.0.1:$DEAD_PORT" --quiet

finish dead
status_is dead 1
count_is "unreachable: one error line per request" dead.out \
  "^  GET /[a-z0-9/]+ +failed after [0-9.]+ s: connect: GET http://127\.0\.0\.1:$DEAD_PORT/[a-z0-9/]+: .*[Cc]ouldn't connect" 12
has "unreachable: the script still finishes, with a count" dead.out "^12 of 12 requests got no answer$"
count_is "unreachable: no speed-up is claimed" dead.out "speed-up" 0
empty "unreachable: nothing on stderr (no traceback)" dead.err

finish missing
status_is missing 0
count_is "a missing endpoint is reported with its status" missing.out \
  "^  GET /nosuch +404 in [0-9.]+ s \(not found: this server has no such endpoint\)$" 2
count_is "another status is reported as such" missing.out "^  GET /status/503 503 in [0-9.]+ s \(not a success status\)$" 2
count_is "... and the demo carries on" missing.out "^  GET /uuid +200 in [0-9.]+ s \(uuid [0-9a-f-]{36}\)$" 2
between "a base URL's trailing slash is harmless: /delay/1 takes 1 s" \
  "$(field missing.out '^  GET /delay/1 +200 in ')" 1.0 1.5

finish full
status_is full 0
count_is "six requests, twice" full.out "^  GET /(delay/[123]|json|uuid|headers) " 12
for n in 1 2 3; do
  count_is "/delay/$n answers 200, twice" full.out "^  GET /delay/$n +200 in " 2
  between "/delay/$n takes $n s" "$(field full.out "^  GET /delay/$n +200 in ")" "$n" "$n.8"
done
count_is "/json is either served or reported missing" full.out \
  "^  GET /json +(200 in [0-9.]+ s \(JSON|404 in [0-9.]+ s \(not found: this server has no such endpoint\))" 2
count_is "/headers shows what the server saw" full.out "^  GET /headers +200 in [0-9.]+ s \(server saw User-Agent: asyncrun/" 2
between "one after another: 1 + 2 + 3 s and a little" "$(field full.out '^sequential: ')" 6.0 8.0
between "all at once: the longest, 3 s" "$(field full.out '^concurrent: ')" 3.0 4.5
between "speed-up" "$(field full.out '^speed-up: ')" 1.4 2.6
empty "full: nothing on stderr" full.err

# Without --base-url: the local service, when asyncrun has a server.
if "$AR" -e 'os.exit(type(require("async.http").serve) == "function" and 0 or 1, true)'; then
  start local -- "$AR" "$SCRIPTS/web_requests.lua" --seed 1 --quiet
  finish local
  status_is local 0
  count_is "local: all six answer 200, twice" local.out "^  GET /(delay/[123]|json|uuid|headers) +200 in " 12
  between "local: all at once takes 3 s" "$(field local.out '^concurrent: ')" 3.0 4.0
else
  "$AR" "$SCRIPTS/web_requests.lua" > local.out 2> local.err; rc=$?
  [ $rc = 1 ] && ok "no server in this asyncrun: exit 1" || bad "no server: exit 1" "exit $rc"
  count_is "no server: one error line that says to pass --base-url" local.err \
    "^web_requests\.lua: this asyncrun has no HTTP server yet \(http\.serve\).*pass --base-url URL" 1
  [ "$(wc -l < local.err)" = 1 ] && ok "no server: nothing else on stderr" || bad "no server: one line" "$(cat local.err)"
fi

usage_checks web_requests
"$AR" "$SCRIPTS/web_requests.lua" --base-url ftp://example.org > /dev/null 2> err.txt
[ $? = 2 ] && grep -q "^web_requests.lua: --base-url wants an http:// or https:// URL, got 'ftp://example.org'" err.txt \
  && ok "a base URL that is not http exits 2" || bad "a base URL that is not http" "$(cat err.txt)"
"$AR" "$SCRIPTS/web_requests.lua" --timeout 0 > /dev/null 2> err.txt
[ $? = 2 ] && grep -q "option '--timeout' must be at least" err.txt && ok "--timeout 0 exits 2" \
  || bad "--timeout 0" "$(cat err.txt)"

done_tests
