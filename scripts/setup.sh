#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs what is missing (Debian 12, as root) and builds kadpunch.
#
#   scripts/setup.sh                  build into ./build
#   KP_BUILD_DIR=dir KP_CMAKE_ARGS="-DKP_SANITIZE=ON" scripts/setup.sh
#
# Nothing is downloaded except Debian packages that are not installed yet.
set -eu
cd "$(dirname "$0")/.."

packages="build-essential cmake ninja-build pkg-config libuv1-dev libsodium-dev libmsgpack-dev libssl-dev libnatpmp-dev libminiupnpc-dev \
iproute2 iptables conntrack procps openssh-client curl dnsutils"
missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "kadpunch setup: missing packages:$missing (run as root to install them)" >&2
    exit 1
  fi
  echo "kadpunch setup: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

build="${KP_BUILD_DIR:-build}"
# shellcheck disable=SC2086
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE="${KP_BUILD_TYPE:-RelWithDebInfo}" \
  ${KP_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -- -j"$(nproc)"
