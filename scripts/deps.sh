#!/bin/sh
# Installs the Debian packages Celer builds, tests and runs with. Silent
# and quick when everything is present; uses sudo when not root.
set -eu
# What the built programs and modules need at run time, and no more: with
# --runtime only these are installed (the Docker image's runtime stage).
# curl is the image's HEALTHCHECK client; ca-certificates lets notify reach
# https webhooks. tests/deploy checks that this list covers every library
# the installed programs load.
RUNTIME_PACKAGES="libhiredis0.14 libev4 libjansson4 libjwt0 libsqlite3-0 libcurl4
ca-certificates curl"
# python3-yaml and systemd: tests/deploy parses docker-compose.yml and runs
# systemd-analyze verify on the installed unit. openssl makes the signing
# tests' keys; clang and libclang-rt-14-dev (libFuzzer) build `make fuzz`;
# cppcheck is `make lint`.
PACKAGES="build-essential cmake pkg-config libhiredis-dev libev-dev libjansson-dev
libjwt-dev libcmocka-dev libsqlite3-dev libcurl4-openssl-dev redis-server redis-tools curl
python3-yaml systemd tmux $RUNTIME_PACKAGES
openssl clang libclang-rt-14-dev cppcheck"
if [ "${1:-}" = --runtime ]; then
  PACKAGES=$RUNTIME_PACKAGES
fi

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
