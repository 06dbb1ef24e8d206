#!/bin/sh
# The image's entry point: runs celer-worker with its flags taken from the
# environment, so a container is configured by its environment alone.
#
#   CELER_WORKER_MODULES   comma-separated modules, each one --module
#   CELER_WORKER_<FLAG>    --<flag>, for each flag in WORKER_FLAGS below:
#                          CELER_WORKER_QUEUES=users:3,default:1 gives
#                          --queues users:3,default:1
#
# The worker reads CELER_BROKER_URL, CELER_BROKER_PASSWORD_FILE,
# CELER_NAMESPACE, CELER_LOG_FORMAT, CELER_LOG_LEVEL and CELER_CONFIG
# itself; the modules read their own (CELER_USERS_DB, CELER_NOTIFY_LOG).
# An empty variable adds no flag. Arguments starting with "-" are further
# worker flags; they come last, so they win over the environment. Any other
# first argument is a command run as given (`taskctl queues`, `sh`).
set -eu

# The worker's flags that take one value (celer-worker --help). The
# deploy test checks each against the binary's --help.
WORKER_FLAGS="queues concurrency prefetch lease max-redeliveries time-limit
max-tasks-per-child max-memory-per-child shutdown-timeout metrics-addr name
log-file"

case "${1:-}" in
  "" | -*) ;;
  *) exec "$@" ;;
esac

given=$#
old_ifs=$IFS
IFS=,
for module in ${CELER_WORKER_MODULES:-}; do
  if [ -n "$module" ]; then set -- "$@" --module "$module"; fi
done
IFS=$old_ifs
for flag in $WORKER_FLAGS; do
  var="CELER_WORKER_$(printf '%s' "$flag" | tr 'a-z-' 'A-Z_')"
  eval "value=\${$var:-}"
  if [ -n "$value" ]; then set -- "$@" "--$flag" "$value"; fi
done
# Move the arguments we were given behind the ones made from the
# environment.
while [ "$given" -gt 0 ]; do
  set -- "$@" "$1"
  shift
  given=$((given - 1))
done
exec celer-worker "$@"
