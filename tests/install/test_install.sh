#!/bin/sh
# make install into a DESTDIR, then: every promised file is there, a program
# builds against the installed library through pkg-config and through the
# CMake package, and the installed worker finds its modules by name.
# Usage: test_install.sh BUILD_DIR SANITIZE(0|1)
set -eu
BUILD=$1
# A sanitizer build's library needs consumers built with the same runtime.
CFLAGS=""
[ "${2:-0}" = 1 ] && CFLAGS="-fsanitize=address,undefined"
DEADLINE_S=30
TMP=$(mktemp -d "${TMPDIR:-/tmp}/celer-install-XXXXXX")
WORKER_PID=""
cleanup() {
  [ -n "$WORKER_PID" ] && kill -KILL "$WORKER_PID" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

PREFIX=/opt/celer-test
DESTDIR="$TMP/root" cmake --install "$BUILD" --prefix "$PREFIX" >/dev/null
ROOT="$TMP/root$PREFIX"
LIBDIR=$(dirname "$(find "$ROOT" -name celer.pc | head -1)")/..
for f in bin/celer-worker bin/taskctl lib/celer/modules/testing.so include/celer/client.h \
         include/celer/task.h include/celer/envelope.h share/man/man1/taskctl.1 \
         share/man/man1/celer-worker.1 share/bash-completion/completions/taskctl; do
  [ -e "$ROOT/$f" ] || fail "$f is not installed"
done
# The completion script loads in bash and registers itself for taskctl.
bash -c ". '$ROOT/share/bash-completion/completions/taskctl' && complete -p taskctl" >/dev/null ||
  fail "the bash completion of taskctl does not load"
[ -e "$LIBDIR/libceler.so" ] || fail "libceler.so is not installed"
[ -e "$LIBDIR/libceler.a" ] || fail "libceler.a is not installed"
[ -e "$LIBDIR/cmake/celer/celer-config.cmake" ] || fail "the CMake package is not installed"

# A producer built with pkg-config against the installed tree.
cat > "$TMP/producer.c" <<'C'
#include <celer/client.h>
int main(void) {
  celer_client *c = celer_client_new(NULL);
  int rc = c ? 0 : 1;
  celer_client_free(c);
  return rc || celer_valid_id("abc") != 1;
}
C
FLAGS=$(PKG_CONFIG_PATH="$LIBDIR/pkgconfig" pkg-config --cflags --libs celer)
cc $CFLAGS -o "$TMP/producer" "$TMP/producer.c" $FLAGS || fail "cannot build against celer.pc"
LD_LIBRARY_PATH="$LIBDIR" "$TMP/producer" || fail "the pkg-config producer did not run"

# The same through find_package(celer).
mkdir -p "$TMP/cm"
cp "$TMP/producer.c" "$TMP/cm/"
cat > "$TMP/cm/CMakeLists.txt" <<'C'
cmake_minimum_required(VERSION 3.18)
project(consumer C)
find_package(celer REQUIRED)
add_executable(producer producer.c)
target_link_libraries(producer PRIVATE celer::celer)
C
cmake -S "$TMP/cm" -B "$TMP/cm/build" -DCMAKE_PREFIX_PATH="$ROOT" -DCMAKE_C_FLAGS="$CFLAGS" >/dev/null ||
  fail "find_package(celer) failed"
cmake --build "$TMP/cm/build" >/dev/null || fail "cannot build against the CMake package"

# The installed worker loads `testing` by name from its own tree, then waits
# for the (absent) broker until asked to stop.
"$ROOT/bin/celer-worker" --broker "unix://$TMP/none.sock" --module testing 2>"$TMP/w.log" &
WORKER_PID=$!
end=$(( $(date +%s) + DEADLINE_S ))
until grep -q "loaded module testing" "$TMP/w.log"; do
  [ "$(date +%s)" -ge "$end" ] && fail "the installed worker did not load testing: $(cat "$TMP/w.log")"
  kill -0 "$WORKER_PID" 2>/dev/null || fail "the installed worker exited: $(cat "$TMP/w.log")"
  sleep 0.05
done
grep -q "$ROOT/bin/../lib/celer/modules/testing.so" "$TMP/w.log" ||
  fail "testing was not loaded from the install tree: $(cat "$TMP/w.log")"
kill -TERM "$WORKER_PID"
wait "$WORKER_PID" || fail "the worker did not exit 0 on SIGTERM"
WORKER_PID=""
echo "install: 1 passed, 0 failed"
