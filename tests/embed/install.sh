#!/usr/bin/env bash
# Installs the built tree into a temporary prefix and builds against it
# from outside: a CMake project using find_package(asyncrun), a plain
# `cc $(pkg-config --cflags --libs asyncrun)` compile, and the example host
# on its own. Also checks that the shared library exports only ar_ names.
#   install.sh BUILD_DIR SOURCE_DIR ["EXTRA CFLAGS"]
set -euo pipefail
build=$1 src=$2 cflags=${3:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
step() { echo "== $*"; }

step "cmake --install into a temporary prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null
pc=$(find "$prefix" -name asyncrun.pc)
libdir=$(dirname "$(dirname "$pc")")
for f in "$prefix/include/asyncrun.h" "$prefix/bin/asyncrun" "$libdir/libasyncrun.a" \
         "$libdir/libasyncrun.so" "$libdir/cmake/asyncrun/asyncrunConfig.cmake" \
         "$libdir/cmake/asyncrun/asyncrunConfigVersion.cmake"; do
  [ -e "$f" ] || { echo "missing: $f" >&2; exit 1; }
done

step "exported symbols"
# Besides ar_*, only h2o's three socket functions the server replaces
# (bindings/lserver_sock.c): libh2o must find them.
others=$(nm -D --defined-only "$libdir/libasyncrun.so" | awk '{print $3}' | grep -v '^ar_' |
  grep -vx -e h2o_socket_read_start -e h2o_socket_read_stop -e h2o_socket_write || true)
if [ -n "$others" ]; then
  echo "libasyncrun.so exports names outside ar_:" >&2
  echo "$others" >&2
  exit 1
fi
echo "$(nm -D --defined-only "$libdir/libasyncrun.so" | wc -l) symbols, all ar_*"

step "the installed CLI"
echo 'print(require("async").version)' | "$prefix/bin/asyncrun" - | grep -q '^[0-9]'

step "a CMake project with find_package(asyncrun)"
cmake -S "$src/tests/embed/consumer" -B "$tmp/cmake" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_C_FLAGS="-Wall -Werror $cflags" -DCMAKE_EXE_LINKER_FLAGS="$cflags" >/dev/null
cmake --build "$tmp/cmake" >/dev/null
"$tmp/cmake/consumer"
"$tmp/cmake/consumer_static"

step "cc \$(pkg-config --cflags --libs asyncrun)"
export PKG_CONFIG_PATH=$(dirname "$pc")
[ "$(pkg-config --modversion asyncrun)" = "$(sed -n 's/^#define AR_VERSION_STRING "\(.*\)"/\1/p' "$src/include/asyncrun.h")" ]
# shellcheck disable=SC2046,SC2086
cc -Wall -Werror $cflags -o "$tmp/pc_consumer" "$src/tests/embed/consumer/consumer.c" \
  $(pkg-config --cflags --libs asyncrun) -Wl,-rpath,"$libdir"
"$tmp/pc_consumer"

step "the example host, built on its own"
cmake -S "$src/examples/host" -B "$tmp/host" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_C_FLAGS="-Wall -Werror $cflags" -DCMAKE_EXE_LINKER_FLAGS="$cflags" >/dev/null
cmake --build "$tmp/host" >/dev/null
(cd "$tmp/host" && ./host_example >/dev/null)
echo "all good"
