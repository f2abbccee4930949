#!/usr/bin/env bash
# `./dev run` is `asyncrun scripts/lab.lua` with no argument: the whole lab,
# offline, web_requests served by scripts/lib/httpbin_local.lua on the HTTP
# server (http.serve). It must complete with exit 0 and nothing on stderr.
# usage: test_scripts_ext_lab_offline.sh path/to/asyncrun
. "$(dirname "$0")/scripts_lib.sh"

if ! "$AR" -e 'os.exit(type(require("async.http").serve) == "function" and 0 or 1, true)'; then
  echo "this asyncrun has no http.serve: the offline lab is tested by test_scripts_lab.sh"
  done_tests
  exit
fi

# Exactly what ./dev run runs (the seed only fixes the checked numbers).
start lab -- "$AR" "$SCRIPTS/lab.lua" --seed 131
finish lab
status_is lab 0
has "offline lab: every demo" lab.out \
  "^The asyncrun lab: simple_tasks, web_requests, error_handling, retry, timeouts, patterns \(seed 131\)$"
has "offline lab: the local httpbin is served" lab.out "^serving a local httpbin at http://127\.0\.0\.1:[0-9]+$"
count_is "offline lab: the six requests answer 200, twice" lab.out "^  GET /(delay/[123]|json|uuid|headers) +200 in " 12
sed -n '/^=== Web requests/,/^=== Error handling/p' lab.out > web.out
between "offline lab: the six at once take the longest, 3 s" "$(field web.out '^concurrent: ')" 3.0 4.5
between "offline lab: one after another, 1 + 2 + 3 s" "$(field web.out '^sequential: ')" 6.0 8.0
has "offline lab: the total time" lab.out "^Total execution time: [0-9.]+ s$"
count_is "offline lab: no demo failed" lab.out "^failed: " 0
empty "offline lab: nothing on stderr" lab.err

done_tests
