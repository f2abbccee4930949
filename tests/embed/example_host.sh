#!/usr/bin/env bash
# The example host's output, line for line.
#   example_host.sh HOST_BINARY SCRIPT EXPECTED
set -euo pipefail
host=$1 script=$2 expected=$3
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$host" "$script" >"$out"
if ! diff -u "$expected" "$out"; then
  echo "example host output differs from $expected" >&2
  exit 1
fi
