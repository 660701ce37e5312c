#!/bin/sh
# The main job: installs what is missing, builds, and runs a local network on
# loopback (see `kadpunch demo --help`). Extra arguments go to the demo.
set -eu
cd "$(dirname "$0")/.."
scripts/setup.sh
exec build/node/kadpunch demo "$@"
