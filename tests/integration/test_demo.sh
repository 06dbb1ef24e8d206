#!/bin/sh
# `make demo` cannot rot: runs scripts/demo.sh against a build tree and
# checks that it tells the whole story and leaves nothing running.
#   sh test_demo.sh SOURCE_DIR BUILD_DIR
set -u
SRC=$1
BUILD=$2
OUT=$(mktemp "${TMPDIR:-/tmp}/celer-demo-test-XXXXXX")
trap 'rm -f "$OUT"' EXIT
unset CELER_BROKER_URL
sh "$SRC/scripts/demo.sh" "$BUILD" >"$OUT" 2>&1
rc=$?
fail() { echo "demo test: $1"; echo "---- demo output:"; cat "$OUT"; exit 1; }
[ "$rc" -eq 0 ] || fail "the demo exited $rc"
expect() { grep -q -- "$1" "$OUT" || fail "no line matching: $1"; }
expect '^== A private redis-server on 127\.0\.0\.1:[0-9]* (pid [0-9]*)'
expect 'ada  *ada@example.com  *SUCCEEDED  user 1, welcome .* (webhook)'
expect 'grace  *grace@example.com  *SUCCEEDED  user 2, welcome .* (log)'
expect "linus  *linus.example.com  *FAILED  *ValidationError: kwargs.email: not a valid address: no '@'"
expect "Ada  *ada@example.org  *FAILED  *UserExists: kwargs.username: 'Ada' is already taken"
expect 'POST /welcome  Idempotency-Key .*-> 503$'
expect 'POST /welcome  Idempotency-Key .*-> 200$'
expect '"message":"Welcome, grace!"'
expect '^== \$ taskctl task .*(the retried notification)'
expect '^attempt  *1$'
expect 'HTTP 503 (Retry-After 1)'
expect 'notify.send  .* SUCCEEDED 1  *delivered to the webhook: HTTP 200'
expect '^Done'
# Everything it started is gone.
for pid in $(sed -n 's/.*(pid \([0-9]*\)).*/\1/p' "$OUT"); do
  if kill -0 "$pid" 2>/dev/null; then fail "process $pid is still running"; fi
done
exit 0
