# Helpers for the tests of scripts/ (tests/cli/test_scripts_*.sh), sourced
# by them. Not a test itself (the glob wants test_*.sh).
#   AR      the asyncrun binary (first argument of the test)
#   SCRIPTS the scripts/ directory
set -u
AR=${1:?usage: $0 path/to/asyncrun}
SCRIPTS=${AR_TEST_DIR:?AR_TEST_DIR is not set}/../scripts
SCRIPTS=$(cd "$SCRIPTS" && pwd)
ROOT=$(cd "$SCRIPTS/.." && pwd)
TMP=$(mktemp -d)
BG_PIDS=()
cleanup() {
  for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  rm -rf "$TMP"
}
trap cleanup EXIT
cd "$TMP" || exit 1
pass=0 fail=0

ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1: $2"; }

# start NAME -- command...: runs the command in the background, output in
# NAME.out and NAME.err, status in NAME.rc.
start() {
  local name=$1; shift 2
  ( timeout 110 "$@" > "$name.out" 2> "$name.err"; echo $? > "$name.rc" ) &
  BG_PIDS+=($!)
}

# finish NAME: waits for a started command.
finish() {
  while [ ! -s "$1.rc" ]; do sleep 0.1; done
}

# status_is NAME WANT
status_is() {
  local got; got=$(cat "$1.rc")
  if [ "$got" = "$2" ]; then ok "$1 exits $2"; else bad "$1 exits $2" "exit $got; stderr: $(head -5 "$1.err")"; fi
}

# has NAME FILE PATTERN: the file has a line matching the ERE.
has() {
  if grep -Eq -- "$3" "$2"; then ok "$1"; else bad "$1" "no line /$3/ in $2: $(head -40 "$2")"; fi
}

# count_is NAME FILE PATTERN N: exactly N lines match.
count_is() {
  local n; n=$(grep -Ec -- "$3" "$2")
  if [ "$n" = "$4" ]; then ok "$1"; else bad "$1" "$n lines /$3/ in $2, want $4"; fi
}

# empty NAME FILE
empty() {
  if [ ! -s "$2" ]; then ok "$1"; else bad "$1" "$2 is not empty: $(head -5 "$2")"; fi
}

# field FILE PATTERN: the first number after the ERE's match, on the first
# matching line ("sequential: 9.95 s" with pattern "^sequential: " gives 9.95).
field() {
  grep -Em1 -- "$2" "$1" | sed -E "s#.*$2##" | grep -Eo -- '-?[0-9]+(\.[0-9]+)?' | head -1
}

# between NAME VALUE LO HI: LO <= VALUE <= HI (decimals).
between() {
  if [ -n "$2" ] && awk -v v="$2" -v lo="$3" -v hi="$4" 'BEGIN { exit !(v >= lo && v <= hi) }'; then
    ok "$1 ($2 in [$3, $4])"
  else
    bad "$1" "'$2' not in [$3, $4]"
  fi
}

# usage_checks SCRIPT [takes_args]: bad arguments give a usage message on
# stderr and exit 2; --help gives it on stdout and exits 0.
usage_checks() {
  local s=$1 out err rc
  out=$("$AR" "$SCRIPTS/$s.lua" --bogus 2> err.txt); rc=$?
  if [ $rc = 2 ] && grep -q "^$s.lua: unknown option '--bogus'" err.txt \
     && grep -q "^usage: asyncrun scripts/$s.lua " err.txt && [ -z "$out" ]; then
    ok "$s: an unknown option exits 2 with a usage message on stderr"
  else bad "$s: an unknown option" "exit $rc; stdout: $out; stderr: $(cat err.txt)"; fi
  "$AR" "$SCRIPTS/$s.lua" --seed x > /dev/null 2> err.txt; rc=$?
  if [ $rc = 2 ] && grep -q "option '--seed' wants an integer, got 'x'" err.txt; then
    ok "$s: a bad --seed exits 2"
  else bad "$s: a bad --seed" "exit $rc; $(cat err.txt)"; fi
  "$AR" "$SCRIPTS/$s.lua" --seed > /dev/null 2> err.txt; rc=$?
  if [ $rc = 2 ] && grep -q "option '--seed' needs a value" err.txt; then
    ok "$s: --seed without a value exits 2"
  else bad "$s: --seed without a value" "exit $rc; $(cat err.txt)"; fi
  "$AR" "$SCRIPTS/$s.lua" --help > help.txt 2> err.txt; rc=$?
  if [ $rc = 0 ] && grep -q "^usage: asyncrun scripts/$s.lua " help.txt && grep -q -- "--seed N" help.txt \
     && grep -q -- "--quiet" help.txt && [ ! -s err.txt ]; then
    ok "$s: --help prints the usage and exits 0"
  else bad "$s: --help" "exit $rc; $(cat help.txt err.txt)"; fi
  if [ "${2:-}" != takes_args ]; then
    "$AR" "$SCRIPTS/$s.lua" stray > /dev/null 2> err.txt; rc=$?
    if [ $rc = 2 ] && grep -q "unexpected argument 'stray'" err.txt; then
      ok "$s: a stray argument exits 2"
    else bad "$s: a stray argument" "exit $rc; $(cat err.txt)"; fi
  fi
}

done_tests() {
  echo "$pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}
