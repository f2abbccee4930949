#!/usr/bin/env bash
# scripts/pipeline.lua and scripts/scheduler.lua spread over processes with
# --redis: the same results as one process, for the same seed and file.
# Starts its own redis-server on a free loopback port (skipped without one).
# usage: test_scripts_redis.sh path/to/asyncrun
. "$(dirname "$0")/scripts_lib.sh"

if ! command -v redis-server > /dev/null || ! command -v redis-cli > /dev/null; then
  echo "skipped: no redis-server"
  exit 0
fi

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p redis
timeout -s KILL 90 redis-server --port "$PORT" --bind 127.0.0.1 --dir "$TMP/redis" --save "" \
  --appendonly no --daemonize no > redis/log 2>&1 &
REDIS_PID=$!
stop_redis() {
  redis-cli -p "$PORT" shutdown nosave > /dev/null 2>&1
  kill "$REDIS_PID" 2> /dev/null
  cleanup
}
trap stop_redis EXIT
for _ in $(seq 100); do
  [ "$(redis-cli -p "$PORT" ping 2> /dev/null)" = PONG ] && break
  sleep 0.05
done
U=redis://127.0.0.1:$PORT/0

# The lines that say what the data were (not how long it took).
results() { grep -E '^(status|busiest paths|latency):|^records:' "$1" | sed -E 's/ in [0-9.]+ s$//'; }

# ---- pipeline: one process, then one reader, two transformers, one aggregator
start plocal -- "$AR" "$SCRIPTS/pipeline.lua" --seed 7 --quiet --records 2000
start pagg -- "$AR" "$SCRIPTS/pipeline.lua" --seed 7 --quiet --records 2000 --redis "$U" --name p1 --role aggregate
start pt1 -- "$AR" "$SCRIPTS/pipeline.lua" --seed 7 --quiet --records 2000 --redis "$U" --name p1 --role transform
start pt2 -- "$AR" "$SCRIPTS/pipeline.lua" --seed 7 --quiet --records 2000 --redis "$U" --name p1 --role transform
start pread -- "$AR" "$SCRIPTS/pipeline.lua" --seed 7 --quiet --records 2000 --redis "$U" --name p1 --role read \
  --queue-size 50
start pall -- "$AR" "$SCRIPTS/pipeline.lua" --seed 7 --quiet --records 2000 --redis "$U" --name p2
for p in plocal pagg pt1 pt2 pread pall; do finish $p; status_is $p 0; done

results plocal.out > want.txt
has "pipeline: the local run aggregated 2000 records" want.txt "^records: 2000 \(0 malformed\)$"
results pagg.out > got.txt
if [ -s want.txt ] && diff want.txt got.txt > diff.txt; then ok "pipeline: 4 processes aggregate what 1 does"
else bad "pipeline: 4 processes aggregate what 1 does" "$(cat diff.txt)"; fi
results pall.out > got.txt
if diff want.txt got.txt > diff.txt; then ok "pipeline: every stage in one process on Redis: the same"
else bad "pipeline: --role all on Redis" "$(cat diff.txt)"; fi
has "pipeline: no record counted twice" pagg.out "^duplicate deliveries dropped: 0$"
has "pipeline: the reader read 2000 lines" pread.out "^read +2000 "
has "pipeline: the reader ran only its stage" pread.out "this process: read$"
n1=$(grep -E '^transform ' pt1.out | awk '{print $2}')
n2=$(grep -E '^transform ' pt2.out | awk '{print $2}')
if [ "$((${n1:-0} + ${n2:-0}))" = 2000 ] && [ "${n1:-0}" -gt 0 ] && [ "${n2:-0}" -gt 0 ]; then
  ok "pipeline: both transform processes took a share ($n1 + $n2)"
else bad "pipeline: both transform processes took a share" "$n1 + $n2"; fi
has "pipeline: the reader's queue stays near its bound" pread.out "^peak queue depth: read->transform ([0-9]|[1-5][0-9]|6[0-9])/50$"

"$AR" "$SCRIPTS/pipeline.lua" --records 10 --redis "$U" --name p1 --role read > /dev/null 2> err.txt
[ $? = 2 ] && grep -q "were used by an earlier run: give this one another --name" err.txt \
  && ok "pipeline: a run name used before exits 2" || bad "pipeline: reused name" "$(cat err.txt)"
"$AR" "$SCRIPTS/pipeline.lua" --redis "$U" --role write > /dev/null 2> err.txt
[ $? = 2 ] && grep -q "\-\-role wants read, transform, aggregate or all, got 'write'" err.txt \
  && ok "pipeline: a bad --role exits 2" || bad "pipeline: bad --role" "$(cat err.txt)"
"$AR" "$SCRIPTS/pipeline.lua" --role read > /dev/null 2> err.txt
[ $? = 2 ] && grep -q "\-\-role and --name need --redis" err.txt \
  && ok "pipeline: --role without --redis exits 2" || bad "pipeline: --role alone" "$(cat err.txt)"

# ---- scheduler: one process, then a coordinator and two workers
cat > flaky.json <<'EOF'
{ "tasks": [
  { "name": "flaky", "retries": 2, "lua": "calls = (calls or 0) + 1; if calls < 3 then error('not yet', 0) end; return calls" },
  { "name": "slow", "timeout": 0.2, "lua": "async.sleep(5)" },
  { "name": "after_slow", "after": ["slow"], "lua": "return 1" },
  { "name": "after_that", "after": ["after_slow", "flaky"], "lua": "return 2" },
  { "name": "independent", "lua": "return { n = 3 }" },
  { "name": "sum", "after": ["independent", "flaky"], "lua": "local i = ...; return i.independent.n + i.flaky" }
] }
EOF
# The outcome lines without their times.
outcomes() { grep -E '^\[' "$1" | sed -E 's/^\[\+[0-9.]+s\] //; s/ \([0-9.]+ s\)//' | sort; }
k=0
for dag in "$SCRIPTS/dags/release.lua" "$SCRIPTS/dags/report.json" flaky.json; do
  k=$((k + 1))
  start sl$k -- "$AR" "$SCRIPTS/scheduler.lua" "$dag" --quiet
  start sw$k.1 -- "$AR" "$SCRIPTS/scheduler.lua" "$dag" --redis "$U" --name s$k --role worker
  start sw$k.2 -- "$AR" "$SCRIPTS/scheduler.lua" "$dag" --redis "$U" --name s$k --role worker
  start sc$k -- "$AR" "$SCRIPTS/scheduler.lua" "$dag" --quiet --redis "$U" --name s$k --role coordinator
done
for k in 1 2 3; do
  name=$(echo release.lua report.json flaky.json | cut -d' ' -f$k)
  for p in sl$k sc$k sw$k.1 sw$k.2; do finish $p; done
  status_is sc$k "$(cat sl$k.rc)"
  status_is sw$k.1 0
  status_is sw$k.2 0
  outcomes sl$k.out > want.txt
  outcomes sc$k.out > got.txt
  if [ -s want.txt ] && diff want.txt got.txt > diff.txt; then ok "scheduler $name: workers give the same outcomes"
  else bad "scheduler $name: same outcomes" "$(cat diff.txt)"; fi
  summary=$(grep -E '^[0-9]+ ok, ' sl$k.out | sed -E 's/ in [0-9.]+ s.*//')
  has "scheduler $name: the same summary" sc$k.out "^$summary in "
  ran=$(( $(field sw$k.1.out '^worker: ') + $(field sw$k.2.out '^worker: ') \
    + $(field sw$k.1.out '^worker: [0-9]+ ok, ') + $(field sw$k.2.out '^worker: [0-9]+ ok, ') ))
  want=$(echo "$summary" | awk '{print $1 + $3}')
  if [ "$ran" = "$want" ]; then ok "scheduler $name: the workers ran each task once ($ran)"
  else bad "scheduler $name: tasks run by the workers" "$ran, want $want"; fi
done
has "scheduler: a table result crosses the queue" sc3.out "ok    sum \([0-9.]+ s\) -> 6$"

"$AR" "$SCRIPTS/scheduler.lua" "$SCRIPTS/dags/release.lua" --redis "$U" --name s1 --role coordinator > /dev/null 2> err.txt
[ $? = 2 ] && grep -q "were used by an earlier run" err.txt \
  && ok "scheduler: a run name used before exits 2" || bad "scheduler: reused name" "$(cat err.txt)"
"$AR" "$SCRIPTS/scheduler.lua" "$SCRIPTS/dags/release.lua" --redis "$U" > /dev/null 2> err.txt
[ $? = 2 ] && grep -q "\-\-redis needs --role coordinator or --role worker" err.txt \
  && ok "scheduler: --redis without --role exits 2" || bad "scheduler: --redis alone" "$(cat err.txt)"

done_tests
