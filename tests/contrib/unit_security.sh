#!/bin/sh
# SPDX-License-Identifier: MIT
# contrib/kadpunch.service stays hardened: systemd-analyze security (offline:
# the unit need not be installed, nor systemd running) rates it at most 2.5.
# Skipped (77) where systemd-analyze is missing or too old for --offline.
set -eu
unit="$(cd "$(dirname "$0")/../../contrib" && pwd)/kadpunch.service"
command -v systemd-analyze >/dev/null 2>&1 || { echo "no systemd-analyze: skipped"; exit 77; }
if ! out=$(systemd-analyze security --offline=true "$unit" 2>&1); then
  case "$out" in
    *"unrecognized option"*|*"Unknown option"*) echo "systemd-analyze without --offline: skipped"; exit 77 ;;
  esac
fi
score=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for kadpunch.service: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || { printf '%s\n' "$out"; echo "no score in the output"; exit 1; }
echo "systemd-analyze security: kadpunch.service exposure $score (at most 2.5)"
awk -v s="$score" 'BEGIN { exit !(s <= 2.5) }' || { printf '%s\n' "$out" | grep '✗'; exit 1; }
