#!/bin/sh
# SPDX-License-Identifier: MIT
# ssh-like use through real NATs (ctest nat.forward): a TCP echo service in
# one site behind `kadpunch serve --forward`, reached from another site by
# `kadpunch connect KEY --stdio` (what ssh's ProxyCommand runs), 16 MB in and
# the same 16 MB back, byte-exact; for consistent <-> random (the birthday
# punch) and random <-> random (through the lab's relay).
#
#   tests/nat/forward.sh [build-dir]        (as root)
#
# Exit: 0 passed, 1 failed, 77 the lab cannot run here (said plainly).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../../build}" && pwd)
. "$here/lab.sh"
kadpunch=$build/node/kadpunch
probe=$build/tests/nat_probe
echo_srv=$build/tests/tcp_echo
lab_need forward "$kadpunch" "$probe" "$echo_srv"

lab_init
lab_start_public "$kadpunch" "$probe"
sleep 2
head -c 16000000 /dev/urandom >"$LAB_LOG/in"
failures=0
printf '%-11s %-11s %-8s %-10s %8s\n' client server result path seconds

cell() { # client-kind server-kind
  lab_site 1 "$2"
  lab_site 2 "$1"
  lab_selfcheck 1 "$2" "$probe" && lab_selfcheck 2 "$1" "$probe" || {
    failures=$((failures + 1))
    lab_site_down 1
    lab_site_down 2
    return 0
  }
  lab_spawn h1 "$LAB_LOG/echo.log" "$echo_srv" 127.0.0.1:7007
  echo_pid=$LAB_LAST_PID
  lab_server_key "$kadpunch"
  lab_spawn h1 "$LAB_LOG/serve.log" "$kadpunch" serve --key "$key" --bootstrap $BOOTSTRAP \
    --relay $RELAY --forward ssh=127.0.0.1:7007
  serve_pid=$LAB_LAST_PID
  lab_wait_serving 100
  start=$(date +%s.%N)
  rm -f "$LAB_LOG/out"
  ip netns exec "$LAB-h2" timeout 60 "$kadpunch" connect "$pk" --stdio --verbose \
    --bootstrap $BOOTSTRAP --relay $RELAY <"$LAB_LOG/in" >"$LAB_LOG/out" 2>"$LAB_LOG/client.err" ||
    true
  secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e - s}')
  path=$(sed -n 's/^ *path *\([a-z]*\).*/\1/p' "$LAB_LOG/client.err" | head -n 1)
  if cmp -s "$LAB_LOG/in" "$LAB_LOG/out"; then r=ok; else r=FAIL; failures=$((failures + 1)); fi
  printf '%-11s %-11s %-8s %-10s %8s\n' "$1" "$2" "$r" "${path:--}" "$secs"
  [ $r = ok ] || sed 's/^/  | /' "$LAB_LOG/client.err" | head -n 20
  lab_kill "$serve_pid"
  lab_kill "$echo_pid"
  lab_site_down 1
  lab_site_down 2
}

cell consistent random
cell random random
echo "forward: $failures failure(s)"
[ "$failures" = 0 ]
