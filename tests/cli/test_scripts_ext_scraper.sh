#!/usr/bin/env bash
# scripts/scraper.lua against a small local site (tests/helpers/
# site_server.py): the pages found level by level, status counts, broken
# links and who links to them, the depth and page limits, the concurrency
# limit (seen by the server) and the politeness delay (timed), an
# unreachable site, bad arguments.
# usage: test_scripts_ext_scraper.sh path/to/asyncrun
. "$(dirname "$0")/scripts_lib.sh"

site() { # site NAME DELAY: starts a site server; sets NAME_URL
  exec 3< <(exec /usr/bin/python3 "$AR_TEST_DIR/helpers/site_server.py" 100 "$2")
  local port pid
  read -r port pid <&3 || { echo "cannot start the site"; exit 1; }
  exec 3<&-
  BG_PIDS+=("$pid")
  eval "$1_URL=http://127.0.0.1:$port"
}
site A 0.05
site B 0.2
DEAD_PORT=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

start d2 -- "$AR" "$SCRIPTS/scraper.lua" "$A_URL" --seed 1 --delay 0
start conc -- "$AR" "$SCRIPTS/scraper.lua" "$B_URL/" --depth 2 --concurrency 2 --delay 0 --quiet
start dead -- "$AR" "$SCRIPTS/scraper.lua" "http://127.0.0.1:$DEAD_PORT/index.html" --quiet

finish d2
status_is d2 1
has "scraper: the start page" d2.out "^  \[d0\] 200 / \([0-9.]+ s, 5 links\)$"
for p in /a.html /b.html /docs/; do has "scraper: level 1 has $p" d2.out "^  \[d1\] 200 $p \("; done
has "scraper: level 1 has a 404" d2.out "^  \[d1\] 404 /missing\.html \("
for p in /deep/c.html /docs/intro.html; do has "scraper: level 2 has $p (relative links resolved)" d2.out "^  \[d2\] 200 $p \("; done
has "scraper: a non-HTML page is fetched, not searched" d2.out "^  \[d2\] 200 /style\.css \([0-9.]+ s\)$"
count_is "scraper: every page once (fragments, ./ and ../ resolved)" d2.out "^  \[d[0-9]\] " 10
count_is "scraper: the next level is not crawled" d2.out "^  \[d3\] " 0
has "scraper: pages" d2.out "^pages: 10 fetched in [0-9.]+ s, to depth 2 \(at most [1-4] requests at once\)$"
has "scraper: status counts" d2.out "^status: 200 7, 404 2, 500 1$"
has "scraper: what is not followed" d2.out "^not followed: 2 beyond the depth, 0 over the page limit, 1 on other sites$"
has "scraper: broken links" d2.out "^broken links: 3$"
has "scraper: a 500 and who links to it" d2.out "^  /broken/500 \(500\) linked from /a\.html$"
has "scraper: a 404 found through a relative link" d2.out "^  /docs/gone\.html \(404\) linked from /docs/$"
has "scraper: a 404 linked from the start page" d2.out "^  /missing\.html \(404\) linked from /$"
empty "scraper: nothing on stderr" d2.err

"$AR" "$SCRIPTS/scraper.lua" "$A_URL/" --depth 3 --delay 0 --quiet > d3.out 2> d3.err
has "scraper: depth 3 reaches every page" d3.out "^pages: 12 fetched in .* to depth 3 "
has "scraper: depth 3: nothing beyond" d3.out "^not followed: 0 beyond the depth, 0 over the page limit, 1 on other sites$"
"$AR" "$SCRIPTS/scraper.lua" "$A_URL/" --max-pages 4 --delay 0 --quiet > m4.out 2> m4.err
has "scraper: --max-pages 4" m4.out "^pages: 4 fetched in "
has "scraper: the page limit is reported" m4.out "^not followed: [0-9]+ beyond the depth, [1-9][0-9]* over the page limit, "
"$AR" "$SCRIPTS/scraper.lua" "$A_URL/a.html" --depth 0 --quiet > d0.out 2> d0.err; rc=$?
[ $rc = 0 ] && ok "scraper: no broken link: exit 0" || bad "scraper: depth 0" "exit $rc; $(cat d0.out d0.err)"
has "scraper: depth 0 fetches only the start page" d0.out "^pages: 1 fetched in .* to depth 0 "

# Politeness: one request at a time anyway, starts 0.15 s apart: the ten
# pages take at least 9 x 0.15 s.
"$AR" "$SCRIPTS/scraper.lua" "$A_URL" --delay 0.15 --quiet > pol.out 2> pol.err
has "scraper: --delay: every page" pol.out "^pages: 10 fetched in "
between "scraper: --delay 0.15 spaces the ten requests (>= 1.35 s)" "$(field pol.out '^pages: 10 fetched in ')" 1.35 8

# Concurrency: the server (0.2 s per answer) saw at most 2 at once, and 2
# at once for the four pages of level 1.
finish conc
status_is conc 1
has "scraper: --concurrency 2 as the scraper saw it" conc.out "^pages: 10 fetched in [0-9.]+ s, to depth 2 \(at most 2 requests at once\)$"
stats=$(curl -s "$B_URL/_stats")
[ "$stats" = "peak 2 total 10" ] && ok "scraper: the server saw at most 2 requests at once ($stats)" \
  || bad "scraper: server-side concurrency" "$stats"
# 1 + ceil(4/2) + ceil(5/2) rounds of 0.2 s = 1.2 s at least; serially 2 s.
between "scraper: 2 at once: about 6 rounds of 0.2 s" "$(field conc.out '^pages: 10 fetched in ')" 1.2 1.95

finish dead
status_is dead 1
has "scraper: unreachable: the start page is an error" dead.out "^status: error 1$"
has "scraper: unreachable: reported as a broken link" dead.out \
  "^  /index\.html \(connect: GET http://127\.0\.0\.1:$DEAD_PORT/index\.html: .*\) linked from \(the start URL\)$"
empty "scraper: unreachable: nothing on stderr" dead.err

usage_checks scraper takes_args
"$AR" "$SCRIPTS/scraper.lua" > /dev/null 2> err.txt
[ $? = 2 ] && grep -q "missing argument URL" err.txt && ok "scraper: no URL exits 2" || bad "scraper: no URL" "$(cat err.txt)"
"$AR" "$SCRIPTS/scraper.lua" ftp://example.org/ > /dev/null 2> err.txt
[ $? = 2 ] && grep -q "^scraper.lua: URL must be an http:// or https:// URL, got 'ftp://example.org/'" err.txt \
  && ok "scraper: an ftp URL exits 2" || bad "scraper: ftp URL" "$(cat err.txt)"
"$AR" "$SCRIPTS/scraper.lua" "$A_URL" --concurrency 0 > /dev/null 2> err.txt
[ $? = 2 ] && grep -q "option '--concurrency' must be at least 1" err.txt && ok "scraper: --concurrency 0 exits 2" \
  || bad "scraper: --concurrency 0" "$(cat err.txt)"
"$AR" "$SCRIPTS/scraper.lua" "$A_URL" --depth x > /dev/null 2> err.txt
[ $? = 2 ] && grep -q "option '--depth' wants an integer, got 'x'" err.txt && ok "scraper: --depth x exits 2" \
  || bad "scraper: --depth x" "$(cat err.txt)"

done_tests
