#!/bin/sh
# Installs the Debian packages Celer builds, tests and runs with. Silent
# and quick when everything is present; uses sudo when not root.
set -eu
PACKAGES="build-essential cmake pkg-config libhiredis-dev libev-dev libjansson-dev
libjwt-dev libcmocka-dev libsqlite3-dev libcurl4-openssl-dev redis-server redis-tools curl"

missing=""
for p in $PACKAGES; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
else
  echo "deps: missing packages:$missing; run as root or install sudo" >&2
  exit 1
fi
echo "deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
