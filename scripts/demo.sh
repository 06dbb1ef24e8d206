#!/bin/sh
# make demo: Celer end to end. A worker with the users and notify modules
# creates users in a SQLite database and sends each a welcome notification
# as a follow-up task; one goes to a local webhook receiver that refuses the
# first delivery (503), so the retry shows. Everything runs on a private
# redis-server on a free loopback port (unless CELER_BROKER_URL is set) and
# is stopped again at the end.
#   sh scripts/demo.sh [BUILD_DIR]
set -eu
BUILD_DIR=${1:-build}
BIN="$BUILD_DIR/bin"
DEADLINE_S=20

WORK=$(mktemp -d "${TMPDIR:-/tmp}/celer-demo-XXXXXX")
REDIS_PID=""
WORKER_PID=""
SINK_PID=""
# Stops what this script started, by PID, newest first.
cleanup() {
  for pid in $WORKER_PID $SINK_PID $REDIS_PID; do
    kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Polls a command until it succeeds or the deadline passes.
wait_for() {
  end=$(( $(date +%s) + DEADLINE_S ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -ge "$end" ] && return 1
    sleep 0.05
  done
}

# The first field NAME of compact JSON text: a string's text, or a number.
field() {
  printf '%s' "$2" | grep -o "\"$1\":\(\"[^\"]*\"\|[0-9-]*\)" | head -n 1 |
    sed "s/^\"$1\"://; s/^\"//; s/\"$//"
}

taskctl() { "$BIN/taskctl" "$@"; }

echo "Celer demo: a worker creates users and welcomes them, through Redis."
echo

# ---- the broker ----
if [ -z "${CELER_BROKER_URL:-}" ]; then
  # A free loopback port: try a few at random; redis-server exits at once
  # when the port is taken.
  for try in 1 2 3 4 5 6 7 8 9 10; do
    port=$(( 20000 + $(od -An -N2 -tu2 /dev/urandom) % 40000 ))
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
      --dir "$WORK" --logfile "$WORK/redis.log" &
    REDIS_PID=$!
    if wait_for redis-cli -p "$port" ping && kill -0 "$REDIS_PID" 2>/dev/null; then break; fi
    kill "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=""
  done
  [ -n "$REDIS_PID" ] || { echo "demo: could not start redis-server" >&2; exit 1; }
  CELER_BROKER_URL="redis://127.0.0.1:$port/0"
  echo "== A private redis-server on 127.0.0.1:$port (pid $REDIS_PID)"
else
  echo "== Redis at $CELER_BROKER_URL"
fi
export CELER_BROKER_URL

# ---- the webhook receiver ----
[ -x "$BIN/celer-webhook-sink" ] || {
  echo "demo: $BIN/celer-webhook-sink is missing: it is built with the tests (CELER_BUILD_TESTS=ON)" >&2
  exit 1
}
"$BIN/celer-webhook-sink" --fail-first 1 >"$WORK/sink.out" &
SINK_PID=$!
wait_for grep -q '^listening on' "$WORK/sink.out" || { echo "demo: no webhook receiver" >&2; exit 1; }
HOOK="$(sed -n 's/^listening on \(.*\)\/$/\1/p' "$WORK/sink.out")/welcome"
echo "== A webhook receiver at $HOOK (pid $SINK_PID): answers 503 to the first"
echo "   delivery of each notification, 200 to the next"

# ---- the worker ----
export CELER_USERS_DB="$WORK/users.db" CELER_NOTIFY_LOG="$WORK/notify.log"
"$BIN/celer-worker" --module users --module notify --queues default --concurrency 2 \
  --name demo-worker 2>"$WORK/worker.log" &
WORKER_PID=$!
echo "== celer-worker --module users --module notify (pid $WORKER_PID)"
echo "   users in CELER_USERS_DB=users.db (SQLite), log channel CELER_NOTIFY_LOG=notify.log"
echo

# ---- users ----
echo "== Creating users: users.create, with \"notify\": true for a welcome follow-up"
echo "   \$ taskctl enqueue users.create --kwargs '{\"username\": \"ada\", \"email\": \"ada@example.com\","
echo "       \"notify\": true, \"notify_url\": \"$HOOK\"}' --wait 10"
IDS=""
WELCOMES=""
create() { # username email [notify_url]
  kw="{\"username\": \"$1\", \"email\": \"$2\", \"notify\": true"
  [ -n "${3:-}" ] && kw="$kw, \"notify_url\": \"$3\""
  rec=$(taskctl --json enqueue users.create --kwargs "$kw}" --wait 10 2>/dev/null || true)
  id=$(field id "$rec")
  state=$(field state "$rec")
  IDS="$IDS $id"
  if [ "$state" = SUCCEEDED ]; then
    welcome=$(field welcome "$rec")
    WELCOMES="$WELCOMES $welcome"
    how=${3:+webhook}
    printf '   %-6s %-20s %-9s  user %s, welcome %s (%s)\n' "$1" "$2" "$state" \
      "$(printf '%s' "$rec" | sed 's/.*"result":{"id":\([0-9]*\).*/\1/')" "$welcome" "${how:-log}"
  else
    printf '   %-6s %-20s %-9s  %s: %s\n' "$1" "$2" "$state" "$(field type "$rec")" \
      "$(field message "$rec")"
  fi
}
create ada ada@example.com "$HOOK"
create grace grace@example.com
create linus linus.example.com
create Ada ada@example.org
echo

# ---- notifications ----
echo "== The welcome notifications (notify.send, sent as follow-ups)"
RETRIED=""
for w in $WELCOMES; do
  rec=$(taskctl --json result "$w" --wait 10 >/dev/null; taskctl --json task "$w")
  [ "$(field attempt "$rec")" != 0 ] && RETRIED=$w
  IDS="$IDS $w"
done
echo "   the webhook receiver saw:"
sed -n 's/^webhook: /     /p' "$WORK/sink.out"
echo "   the log channel (notify.log) has:"
sed 's/^/     /' "$WORK/notify.log"
echo

# ---- taskctl ----
echo "== \$ taskctl queues"
if taskctl queues >"$WORK/queues.out" 2>&1; then
  cat "$WORK/queues.out"
else
  echo "   (this taskctl has no queues command)"
fi
echo
if [ -n "$RETRIED" ]; then
  echo "== \$ taskctl task $RETRIED    (the retried notification)"
  taskctl task "$RETRIED"
  echo
fi

# ---- summary ----
echo "== Summary"
printf '   %-13s %-36s %-9s %-8s %s\n' TASK ID STATE RETRIES OUTCOME
for id in $IDS; do
  rec=$(taskctl --json task "$id")
  state=$(field state "$rec")
  if [ "$state" = SUCCEEDED ] && [ "$(field task "$rec")" = users.create ]; then
    outcome="user $(printf '%s' "$rec" | sed 's/.*"result":{"id":\([0-9]*\).*/\1/') $(field username "$rec") <$(field email "$rec")>"
  elif [ "$state" = SUCCEEDED ] && [ "$(field channel "$rec")" = webhook ]; then
    outcome="delivered to the webhook: HTTP $(field status "$rec")"
  elif [ "$state" = SUCCEEDED ]; then
    outcome="appended to notify.log"
  else
    outcome="$(field type "$rec"): $(field message "$rec")"
  fi
  printf '   %-13s %-36s %-9s %-8s %s\n' "$(field task "$rec")" "$id" "$state" \
    "$(field attempt "$rec")" "$outcome"
done
echo
echo "Done: stopping the worker, the webhook receiver and Redis."
