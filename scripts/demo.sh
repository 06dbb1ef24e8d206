#!/bin/sh
# make demo: a private Redis (unless CELER_BROKER_URL is set), one worker
# with the testing module, a few tasks and their outcomes, then everything
# it started is stopped again.
set -eu
BUILD_DIR=${1:-build}
BIN="$BUILD_DIR/bin"
DEADLINE_S=20

WORK=$(mktemp -d "${TMPDIR:-/tmp}/celer-demo-XXXXXX")
REDIS_PID=""
WORKER_PID=""
cleanup() {
  [ -n "$WORKER_PID" ] && kill -TERM "$WORKER_PID" 2>/dev/null && wait "$WORKER_PID" 2>/dev/null
  [ -n "$REDIS_PID" ] && kill -TERM "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# Polls a command until it succeeds or the deadline passes.
wait_for() {
  end=$(( $(date +%s) + DEADLINE_S ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -ge "$end" ] && return 1
    sleep 0.05
  done
}

if [ -z "${CELER_BROKER_URL:-}" ]; then
  redis-server --port 0 --unixsocket "$WORK/redis.sock" --unixsocketperm 700 \
    --save "" --appendonly no --dir "$WORK" --logfile "$WORK/redis.log" &
  REDIS_PID=$!
  CELER_BROKER_URL="unix://$WORK/redis.sock"
  wait_for redis-cli -s "$WORK/redis.sock" ping || { echo "demo: redis did not start" >&2; exit 1; }
  echo "== private redis-server (pid $REDIS_PID) at $CELER_BROKER_URL"
fi
export CELER_BROKER_URL

"$BIN/celer-worker" --module testing --queues default,reports --name demo-worker \
  2>"$WORK/worker.log" &
WORKER_PID=$!
echo "== celer-worker (pid $WORKER_PID) with the testing module"

taskctl() { "$BIN/taskctl" "$@"; }

echo
echo "== enqueue test.echo and wait for it"
taskctl enqueue test.echo --args '["hello", 42]' --kwargs '{"lang": "en"}' --wait 10

echo
echo "== a task that fails twice, retries, then succeeds"
taskctl enqueue test.fail --kwargs '{"times": 2, "delay": 0.2, "message": "flaky upstream"}' --wait 10

echo
echo "== a task that never succeeds: retried, then FAILED (exit code 1)"
taskctl enqueue test.fail --kwargs '{"message": "database is read-only", "delay": 0.1}' \
  --max-retries 1 --wait 10 || echo "(taskctl exited $?)"

echo
echo "== a countdown task on the reports queue, run half a second later"
ID=$(taskctl --json enqueue test.noop --queue reports --countdown 0.5 | sed 's/.*"id": *"\([^"]*\)".*/\1/')
taskctl result "$ID" --queue reports --wait 10 >/dev/null
taskctl task "$ID"

echo
echo "== a task no module registers: REJECTED"
taskctl enqueue no.such.task --wait 10 || echo "(taskctl exited $?)"

echo
echo "== a task that crashes its worker process once: recorded at once, retried, done"
ID=$(taskctl --json enqueue test.crash --kwargs '{"times": 1}' | sed 's/.*"id": *"\([^"]*\)".*/\1/')
taskctl result "$ID" --wait 10
taskctl task "$ID"

echo
echo "== the dead set: what failed for good or was rejected, waiting for an operator"
taskctl dead

echo
echo "== the worker's log"
cat "$WORK/worker.log"
