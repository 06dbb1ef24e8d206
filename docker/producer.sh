#!/bin/sh
# The compose file's one-shot producer: the demo scenario, told through
# taskctl. It creates users on the `users` queue (their welcome
# notifications follow on the notify worker's queues), one of them with an
# invalid email and one a duplicate, sends a notification of its own, and
# prints the queues and the workers. It exits 0 when every task ended as
# expected, 1 otherwise.
# Environment: CELER_BROKER_URL (and the other CELER_* settings taskctl
# reads); PRODUCER_WAIT_S, how long to wait for the broker and for each
# task (default 60).
set -eu
WAIT_S=${PRODUCER_WAIT_S:-60}
# Unique names per run, so that running the producer again creates new
# users instead of failing on the ones of the last run.
RUN=$(date +%s)
failures=0

# Polls until the broker answers or WAIT_S passes.
end=$(( $(date +%s) + WAIT_S ))
until taskctl ping >/dev/null 2>&1; do
  if [ "$(date +%s)" -ge "$end" ]; then
    echo "producer: the broker did not answer within ${WAIT_S}s" >&2
    exit 1
  fi
  sleep 0.2
done

# expect STATE DESCRIPTION TASKCTL-ARGS...: runs `taskctl enqueue ... --wait`
# and checks the final state it prints and its exit code (0 for SUCCEEDED,
# 1 for any other final state).
expect() {
  want=$1
  what=$2
  shift 2
  echo "== $what (expect $want)"
  rc=0
  out=$(taskctl --json enqueue "$@" --wait "$WAIT_S") || rc=$?
  echo "$out"
  want_rc=1
  [ "$want" = SUCCEEDED ] && want_rc=0
  case "$out" in
    *"\"state\": \"$want\""* | *"\"state\":\"$want\""*) ;;
    *) rc=-1 ;;
  esac
  if [ "$rc" != "$want_rc" ]; then
    echo "producer: expected $want (taskctl exits $want_rc), taskctl exited $rc" >&2
    failures=$((failures + 1))
  fi
}

expect SUCCEEDED "create user ada-$RUN with a welcome notification" users.create --queue users \
  --kwargs "{\"username\": \"ada-$RUN\", \"email\": \"ada-$RUN@example.com\", \"notify\": true}"
# users.create's result names its welcome notification, which a notify
# worker delivers to its log.
welcome=$(printf '%s' "$out" | sed -n 's/.*"welcome": *"\([^"]*\)".*/\1/p')
if [ -n "$welcome" ]; then
  echo "== ada-$RUN's welcome notification $welcome"
  taskctl result "$welcome" --wait "$WAIT_S" || failures=$((failures + 1))
else
  echo "producer: ada-$RUN's record names no welcome notification" >&2
  failures=$((failures + 1))
fi
expect SUCCEEDED "create user grace-$RUN" users.create --queue users \
  --kwargs "{\"username\": \"grace-$RUN\", \"email\": \"grace-$RUN@example.com\", \"notify\": true}"
expect FAILED "an invalid email: FAILED at once, not retried" users.create --queue users \
  --kwargs "{\"username\": \"bob-$RUN\", \"email\": \"not-an-email\"}"
expect FAILED "ada-$RUN again: the username exists" users.create --queue users \
  --kwargs "{\"username\": \"ada-$RUN\", \"email\": \"ada2-$RUN@example.com\"}"
expect SUCCEEDED "a notification to the log" notify.send --queue notify \
  --kwargs "{\"channel\": \"log\", \"to\": \"ops@example.com\", \"message\": \"producer run $RUN done\"}"

# The overviews, where this taskctl has them.
for view in queues workers; do
  if taskctl help "$view" >/dev/null 2>&1; then
    echo "== taskctl $view"
    taskctl "$view"
  fi
done

if [ "$failures" -gt 0 ]; then
  echo "producer: $failures task(s) did not end as expected" >&2
  exit 1
fi
echo "producer: every task ended as expected"
