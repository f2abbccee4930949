#!/usr/bin/env bash
# scripts/file_processor.lua (counts and CRC-32 checked against Python's,
# whatever the chunk size; the progress bar; bad arguments) and the command
# tasks of scripts/scheduler.lua (async.process).
# usage: test_scripts_ext_files.sh path/to/asyncrun
. "$(dirname "$0")/scripts_lib.sh"

# has_line NAME FILE LINE: the file has exactly this line (no pattern).
has_line() {
  if grep -Fxq -- "$3" "$2"; then ok "$1"; else bad "$1" "no line '$3' in $2: $(head -20 "$2")"; fi
}

# ---- file_processor
# A 3 MB text from a fixed seed, without a final newline, and Python's view
# of it: lines, words ([A-Za-z0-9']+, lower case), distinct, top 5, CRC-32.
/usr/bin/python3 - <<'EOF'
import collections, random, re, zlib
random.seed(7)
words = ["the", "Quick", "brown", "fox", "don't", "jumps", "over", "lazy", "dog", "x1", "\u00e9t\u00e9", "42"]
with open("big.txt", "w", encoding="utf-8") as f:
    for i in range(100000):
        f.write(" ".join(random.choice(words) for _ in range(random.randint(0, 12))))
        if i < 99999:
            f.write("\n" if i % 7 else "\r\n")
with open("small.txt", "w") as f:
    f.write("It's a test; it's only a test.\nA TEST of words split across chunks: abcdefghij\n\nlast line")
for name in ("big.txt", "small.txt"):
    d = open(name, "rb").read()
    ws = [w.lower() for w in re.findall(rb"[A-Za-z0-9']+", d)]
    c = collections.Counter(ws)
    top = sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    lines = d.count(b"\n") + (1 if d and not d.endswith(b"\n") else 0)
    with open(name + ".want", "w") as out:
        out.write("lines: %d\n" % lines)
        out.write("words: %d (%d distinct)\n" % (len(ws), len(c)))
        out.write("most frequent: %s\n" % ", ".join("%s %d" % (w.decode(), n) for w, n in top))
        out.write("crc32: %08x\n" % zlib.crc32(d))
EOF
: > empty.txt

start fbig -- "$AR" "$SCRIPTS/file_processor.lua" big.txt --top 5 --seed 1
start fbig7 -- "$AR" "$SCRIPTS/file_processor.lua" big.txt --top 5 --chunk-size 4093 --quiet --progress
finish fbig
status_is fbig 0
while read -r line; do has_line "file_processor: big file: $line" fbig.out "$line"; done < big.txt.want
has "file_processor: the size and the chunks" fbig.out "^file: big\.txt, $(stat -c %s big.txt) bytes in 4[0-9] chunks$"
has "file_processor: reads with async.fs" fbig.out "with async\.fs$"
empty "file_processor: no progress bar when stderr is not a terminal" fbig.err
finish fbig7
status_is fbig7 0
while read -r line; do has_line "file_processor: chunks of 4093 bytes: $line" fbig7.out "$line"; done < big.txt.want
# The bar is redrawn every 0.1 s by its own task while the counter runs:
# the counting does not block the loop. A run of t seconds draws about 10t.
secs=$(field fbig7.out '^time: ')
draws=$(tr '\r' '\n' < fbig7.err | grep -c '^\[[#.]\{30\}\] ')
between "file_processor: the bar is redrawn while counting (draws vs 10/s x ${secs} s)" "$draws" \
  "$(awk -v s="$secs" 'BEGIN { print int(s * 10 * 0.3) }')" "$(awk -v s="$secs" 'BEGIN { print int(s * 10 + 5) }')"
has "file_processor: the bar ends at 100%" fbig7.err "\] 100%  "

for cs in 1 3 65536; do
  "$AR" "$SCRIPTS/file_processor.lua" small.txt --top 5 --chunk-size $cs --quiet > s$cs.out 2> s$cs.err
  [ $? = 0 ] && ok "file_processor: small file, chunks of $cs exits 0" || bad "small $cs" "$(cat s$cs.err)"
  while read -r line; do has_line "file_processor: chunks of $cs bytes (words cut by chunks): $line" s$cs.out "$line"; done < small.txt.want
done

"$AR" "$SCRIPTS/file_processor.lua" empty.txt --quiet > e.out 2> e.err
[ $? = 0 ] && ok "file_processor: an empty file exits 0" || bad "empty file" "$(cat e.err)"
has "file_processor: empty: no lines" e.out "^lines: 0$"
has "file_processor: empty: no words" e.out "^words: 0 \(0 distinct\)$"
has "file_processor: empty: the CRC-32 of nothing" e.out "^crc32: 00000000$"
has "file_processor: empty: no words to show" e.out "^most frequent: \(no words\)$"

# On a terminal (script(1) gives it one), the bar appears by itself.
if command -v script > /dev/null; then
  script -qec "$AR $SCRIPTS/file_processor.lua small.txt --quiet" /dev/null > tty.out 2>&1
  has "file_processor: a terminal gets the progress bar" tty.out "\] 100%  "
  "$AR" "$SCRIPTS/file_processor.lua" small.txt --quiet --no-progress > np.out 2> np.err
  script -qec "$AR $SCRIPTS/file_processor.lua small.txt --quiet --no-progress" /dev/null > tty2.out 2>&1
  count_is "file_processor: --no-progress hides it" tty2.out "100%" 0
fi

usage_checks file_processor takes_args
"$AR" "$SCRIPTS/file_processor.lua" > /dev/null 2> err.txt
[ $? = 2 ] && grep -q "missing argument FILE" err.txt && ok "file_processor: no FILE exits 2" || bad "file_processor: no FILE" "$(cat err.txt)"
"$AR" "$SCRIPTS/file_processor.lua" a b > /dev/null 2> err.txt
[ $? = 2 ] && grep -q "unexpected argument 'b'" err.txt && ok "file_processor: two files exit 2" || bad "two files" "$(cat err.txt)"
"$AR" "$SCRIPTS/file_processor.lua" no/such.txt > out.txt 2> err.txt; rc=$?
[ $rc = 2 ] && [ "$(wc -l < err.txt)" = 1 ] && grep -q "^file_processor.lua: cannot read no/such.txt: .*ENOENT\|No such file" err.txt \
  && ok "file_processor: a missing file exits 2 with one line" || bad "missing file" "exit $rc; $(cat err.txt)"
"$AR" "$SCRIPTS/file_processor.lua" . > out.txt 2> err.txt; rc=$?
[ $rc = 2 ] && grep -q "^file_processor.lua: cannot read \.: it is a directory$" err.txt \
  && ok "file_processor: a directory exits 2" || bad "directory" "exit $rc; $(cat err.txt)"
"$AR" "$SCRIPTS/file_processor.lua" small.txt --chunk-size 0 > /dev/null 2> err.txt
[ $? = 2 ] && grep -q "option '--chunk-size' must be at least 1" err.txt && ok "file_processor: --chunk-size 0 exits 2" \
  || bad "--chunk-size 0" "$(cat err.txt)"
"$AR" "$SCRIPTS/file_processor.lua" small.txt --progress --no-progress > /dev/null 2> err.txt
[ $? = 2 ] && grep -q "exclude each other" err.txt && ok "file_processor: --progress with --no-progress exits 2" \
  || bad "--progress --no-progress" "$(cat err.txt)"

# ---- scheduler: command tasks (async.process)
if "$AR" -e 'os.exit(pcall(require, "async.process") and 0 or 1, true)'; then
  start cmds -- "$AR" "$SCRIPTS/scheduler.lua" "$SCRIPTS/dags/commands.json"
  cat > argv.json <<'EOF'
{ "tasks": [
  { "name": "lit", "command": ["printf", "%s", "$(echo not run); *"] },
  { "name": "env", "after": ["lit"], "command": ["sh", "-c", "printf '%s' \"$IN_LIT\""] },
  { "name": "missing", "command": ["/no/such/program"] }
] }
EOF
  start argv -- "$AR" "$SCRIPTS/scheduler.lua" argv.json --quiet
  finish cmds
  status_is cmds 1
  has "scheduler: a shell command's output is its result" cmds.out "^\[\+[0-9.]+s\] ok    count \([0-9.]+ s\) -> 3$"
  has "scheduler: a command as a list (no shell)" cmds.out "^\[\+[0-9.]+s\] ok    words \([0-9.]+ s\) -> 4$"
  has "scheduler: results reach the commands after them (IN_<NAME>)" cmds.out "^\[\+[0-9.]+s\] ok    total \([0-9.]+ s\) -> 7$"
  has "scheduler: ... and Lua tasks" cmds.out "^\[\+[0-9.]+s\] ok    check \([0-9.]+ s\) -> 70$"
  has "scheduler: a failing command: its status and last stderr line" cmds.out "FAIL  broken \([0-9.]+ s\): exit 3: no such input file$"
  has "scheduler: its dependant is skipped" cmds.out "skip  after_broken \(broken failed\)$"
  has "scheduler: a command over its timeout is stopped" cmds.out "FAIL  slow \(0\.[3-9][0-9]* s\): timeout: timed out after 0\.3 s$"
  has "scheduler: commands summary" cmds.out "^4 ok, 2 failed, 1 skipped in [0-9.]+ s \(at most 2 at once\)$"
  between "scheduler: the stopped command did not run its 5 s" "$(field cmds.out '^4 ok, 2 failed, 1 skipped in ')" 0.3 3
  finish argv
  status_is argv 1
  has "scheduler: a list is passed as it is, no shell" argv.out 'ok    lit \([0-9.]+ s\) -> \$\(echo not run\); \*$'
  has "scheduler: IN_<NAME> holds the result" argv.out 'ok    env \([0-9.]+ s\) -> \$\(echo not run\); \*$'
  has "scheduler: a program that cannot start fails its task" argv.out "FAIL  missing \([0-9.]+ s\): spawn: .*no/such/program"
  echo '{"tasks": [{"name":"a","command":[]},{"name":"b","command":5},{"name":"c","command":"true","lua":"return 1"}]}' > badcmd.json
  "$AR" "$SCRIPTS/scheduler.lua" badcmd.json > out.txt 2> err.txt; rc=$?
  [ $rc = 2 ] && grep -q "task 'a': command must be a shell line or a non-empty list" err.txt \
    && grep -q "task 'b': command must be" err.txt && grep -q "task 'c' needs exactly one of" err.txt \
    && ok "scheduler: bad commands are rejected, each named" || bad "scheduler: bad commands" "exit $rc; $(cat err.txt)"
else
  echo '{"tasks": [{"name":"build","command":"make"}]}' > cmd.json
  "$AR" "$SCRIPTS/scheduler.lua" cmd.json > /dev/null 2> err.txt
  [ $? = 2 ] && grep -q "task 'build': command tasks need async.process" err.txt \
    && ok "scheduler: without async.process, command tasks are rejected" || bad "no process" "$(cat err.txt)"
fi

done_tests
