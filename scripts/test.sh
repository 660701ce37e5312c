#!/bin/sh
# SPDX-License-Identifier: MIT
# The whole test suite: installs what is missing, builds, runs every ctest
# case (labels: unit, sim, loopback, nat, fuzz). Extra arguments go to ctest,
# e.g. `scripts/test.sh -L unit`.
set -eu
cd "$(dirname "$0")/.."
scripts/setup.sh
# What only tests use: tshark (the dissector's test), promtool (the metrics
# exposition), systemd-analyze (the unit's hardening), miniupnpd and stund
# (the port-mapping router of nat.portmap). Without root the
# tests that need them say they are skipped.
test_packages="tshark prometheus systemd miniupnpd-iptables stun-server"
missing=""
for p in $test_packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ] && [ "$(id -u)" = 0 ]; then
  echo "kadpunch tests: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
build="${KP_BUILD_DIR:-build}"
exec ctest --test-dir "$build" -j"$(nproc)" --output-on-failure "$@"
