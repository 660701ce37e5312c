#!/bin/sh
# SPDX-License-Identifier: MIT
# The whole test suite: installs what is missing, builds, runs every ctest
# case (labels: unit, sim, loopback, nat, fuzz). Extra arguments go to ctest,
# e.g. `scripts/test.sh -L unit`.
set -eu
cd "$(dirname "$0")/.."
scripts/setup.sh
build="${KP_BUILD_DIR:-build}"
exec ctest --test-dir "$build" -j"$(nproc)" --output-on-failure "$@"
