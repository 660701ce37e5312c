#!/bin/sh
# SPDX-License-Identifier: MIT
# The main job: installs what is missing, builds, and runs a local network on
# loopback (see `kadpunch demo --help`). Extra arguments go to the demo.
#
#   scripts/demo.sh --nat     then, as root, the same through two real NATs
#                             built from network namespaces (tests/nat/forward.sh)
set -eu
cd "$(dirname "$0")/.."
nat=false
for a in "$@"; do [ "$a" = --nat ] && nat=true; done
scripts/setup.sh
if [ "$nat" = false ]; then exec build/node/kadpunch demo "$@"; fi
# --nat is ours, not the demo's.
args=""
for a in "$@"; do [ "$a" = --nat ] || args="$args $a"; done
# shellcheck disable=SC2086
build/node/kadpunch demo $args
echo
echo "kadpunch demo --nat: an ssh-like service behind one NAT, reached by key from behind another"
echo "(network namespaces with real kernel NATs; needs root):"
exec tests/nat/forward.sh build
