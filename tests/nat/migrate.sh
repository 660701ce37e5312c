#!/bin/sh
# SPDX-License-Identifier: MIT
# A relayed connection that moves to a direct path mid-transfer (ctest
# nat.migrate). Two consistent NATs that could punch, but each router first
# drops everything from the other site: the punch fails, the client goes
# to the lab's relay after a second, and a 100 MB echo starts through it.
# Once 8 MB have come back, the test lifts the block; the connection's
# background punch finds the direct path and the stream moves onto it.
# Asserts: every byte back exact, the move happened before the end, no
# gap between two reads over 1 s. Prints relayed and direct throughput.
#
#   tests/nat/migrate.sh [build-dir]        (as root)
#   KP_MIGRATE_BYTES=300000000 tests/nat/migrate.sh
#
# Exit: 0 passed, 1 failed, 77 the lab cannot run here (said plainly).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../../build}" && pwd)
. "$here/lab.sh"
kadpunch=$build/node/kadpunch
probe=$build/tests/nat_probe
xfer=$build/tests/nat_xfer
lab_need migrate "$kadpunch" "$probe" "$xfer"
bytes=${KP_MIGRATE_BYTES:-100000000}

lab_init
lab_start_public "$kadpunch" "$probe"
lab_site 1 consistent
lab_site 2 consistent
lab_selfcheck 1 consistent "$probe"
lab_selfcheck 2 consistent "$probe"
# Each site's router drops what comes from the other: no direct path yet.
block() { # -I | -D
  ip netns exec "$LAB-r1" iptables "$1" FORWARD -s $PUBLIC_NET.22 -j DROP
  ip netns exec "$LAB-r2" iptables "$1" FORWARD -s $PUBLIC_NET.21 -j DROP
}
block -I
lab_wait_relays "$kadpunch" 1 || exit 1 # the relay announced itself

lab_server_key "$kadpunch"
lab_spawn h1 "$LAB_LOG/serve.log" "$kadpunch" serve --key "$key" --bootstrap $BOOTSTRAP
lab_wait_serving 100

lab_spawn h2 "$LAB_LOG/xfer.out" sh -c "'$xfer' $pk $BOOTSTRAP $bytes 2>'$LAB_LOG/xfer.err'"
xfer_pid=$LAB_LAST_PID
# Bounded: 600 x 0.1 s for the first 8 MB to come back through the relay.
i=0
until [ "$(cat "$LAB_LOG/xfer.err" 2>/dev/null | grep -c '^progress')" -ge 2 ] || [ $i -ge 600 ]; do
  kill -0 "$xfer_pid" 2>/dev/null || break
  sleep 0.1
  i=$((i + 1))
done
block -D
last=$(grep '^progress' "$LAB_LOG/xfer.err" | tail -n 1)
lifted=$(echo "$last" | awk '{print $2}')
lift_ms=$(echo "$last" | awk '{print $3}')
i=0
# Bounded: 1300 x 0.1 s for the rest (nat_xfer gives up after 120 s).
while kill -0 "$xfer_pid" 2>/dev/null && [ $i -lt 1300 ]; do
  sleep 0.1
  i=$((i + 1))
done
out=$(cat "$LAB_LOG/xfer.out")
err=$(cat "$LAB_LOG/xfer.err")

json_field() { # json name
  printf '%s' "$1" | sed -n "s/.*\"$2\":\"\{0,1\}\([^\",}]*\).*/\1/p"
}
fail() {
  echo "migrate: FAILED: $*"
  echo "--- transfer log"
  printf '%s\n' "$err" | grep -v '^progress' | head -20
  echo "--- result"
  printf '%s\n' "$out"
  exit 1
}

[ "$(json_field "$out" ok)" = true ] || fail "the echo was not complete and exact"
[ "$(json_field "$out" strategy)" = relayed ] || fail "it did not start relayed"
[ "$(json_field "$out" direct_moves)" -ge 1 ] || fail "it never moved to the direct path"
moved=$(printf '%s\n' "$err" | awk '$1 == "path" && $2 == "direct" {print $4, $5; exit}')
moved_bytes=${moved% *}
moved_ms=${moved#* }
[ "$moved_bytes" -lt "$bytes" ] || fail "it moved only after the transfer"
stall=$(json_field "$out" max_stall_ms)
[ "$stall" -le 1000 ] || fail "a read waited $stall ms"

# Throughput on each path, from the progress lines: relayed until the
# move, direct after it.
total_s=$(json_field "$out" seconds)
awk -v mb="$moved_bytes" -v mms="$moved_ms" -v total="$bytes" -v ts="$total_s" \
  -v lifted="$lifted" -v lms="${lift_ms:-0}" -v stall="$stall" 'BEGIN {
    printf "%-30s %d bytes each way, byte-exact, %.1f s\n", "echo through two NATs", total, ts
    printf "%-30s %.1f MB/s (the first %.1f MB)\n", "relayed", mb / (mms / 1000) / 1e6, mb / 1e6
    printf "%-30s %.1f MB/s\n", "direct, after the move", (total - mb) / (ts - mms / 1000) / 1e6
    printf "%-30s %d ms after the block was lifted (at %.1f MB)\n", "moved to direct", mms - lms,
      lifted / 1e6
    printf "%-30s %d ms\n", "longest gap between reads", stall
  }'
echo "migrate: passed"
