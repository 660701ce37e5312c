#!/bin/sh
# SPDX-License-Identifier: MIT
# Connections that survive (ctest nat.rebind, nat.server_rebind,
# nat.relay_failover, nat.roam, nat.suspend): a TCP echo service behind
# `kadpunch serve --forward` in one site, reached from another through
# `kadpunch connect --listen`; tcp_pump sends 100 MB through the forwarded
# TCP connection, checks every byte of the echo and measures the longest
# gap between two reads. Mid-transfer, the fault:
#
#   rebind          the client's NAT (random) forgets every mapping, five
#                   times (conntrack -F: a router reboot, a mapping timeout,
#                   a CGNAT port reassignment); gap <= 3 s each time
#   server_rebind   the same at the server's NAT (consistent), which maps
#                   the server's socket to another port after each; gap <= 3 s
#   relay_failover  random <-> random through the relay the server named,
#                   a second relay up and announced; the one in use is
#                   killed; gap <= 5 s
#   roam            the client's host leaves its NAT for another one with
#                   another public address (its link goes down, its route
#                   goes through the other router); gap <= 5 s
#   suspend         the server's process is stopped (SIGSTOP) for 20 s and
#                   continued, later for 40 s (past the 30 s idle timeout);
#                   the transfer completes, data flowing again within 3 s
#                   of the server waking up each time (gap <= 43 s)
#
#   tests/nat/survive.sh SCENARIO [build-dir]      (as root)
#   KP_SURVIVE_BYTES=400000000 tests/nat/survive.sh rebind
#
# Prints one line per fault: when it struck, when data flowed again, and
# the path changes the client reported. Exit: 0 passed, 1 failed, 2 usage
# or not built, 77 the lab cannot run here (said plainly).
set -eu
scenario=${1:-}
case $scenario in
  rebind | server_rebind | relay_failover | roam | suspend) ;;
  *)
    echo "usage: survive.sh rebind|server_rebind|relay_failover|roam|suspend [build-dir]"
    exit 2
    ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${2:-$here/../../build}" && pwd)
LAB=${LAB:-kps$$}
. "$here/lab.sh"
kadpunch=$build/node/kadpunch
probe=$build/tests/nat_probe
echo_srv=$build/tests/tcp_echo
pump=$build/tests/tcp_pump
lab_need "$scenario" "$kadpunch" "$probe" "$echo_srv" "$pump"
bytes=${KP_SURVIVE_BYTES:-100000000}
rate=${KP_SURVIVE_RATE:-25} # MB/s: long enough that the faults land mid-transfer
RELAY_B=$PUBLIC_NET.14:49737

fail() {
  echo "$scenario: FAILED: $*"
  echo "--- client (connect --listen)"
  sed 's/^/  | /' "$LAB_LOG/listen.log" | head -n 40
  echo "--- server (serve --forward)"
  sed 's/^/  | /' "$LAB_LOG/serve.log" | head -n 40
  echo "--- transfer"
  grep -v '^progress' "$LAB_LOG/pump.err" 2>/dev/null | sed 's/^/  | /' | head -n 20
  cat "$LAB_LOG/pump.out" 2>/dev/null || true
  exit 1
}

lab_init
rm -f "$LAB_LOG"/pump.* "$LAB_LOG"/listen.log "$LAB_LOG"/serve.log # a LAB_LOG used before
lab_start_public "$kadpunch" "$probe"
case $scenario in
  relay_failover)
    server_kind=random client_kind=random limit_ms=5000
    ip -n "$LAB-pub" addr add $PUBLIC_NET.14/24 dev eth0
    lab_spawn pub "$LAB_LOG/relay_b.log" "$kadpunch" relay --bind $RELAY_B --bootstrap $BOOTSTRAP
    ;;
  roam) server_kind=consistent client_kind=consistent limit_ms=5000 ;;
  suspend) server_kind=consistent client_kind=random limit_ms=43000 ;;
  *) server_kind=consistent client_kind=random limit_ms=3000 ;;
esac
lab_site 1 "$server_kind"
lab_site 2 "$client_kind"
lab_selfcheck 1 "$server_kind" "$probe" || fail "the server's site is not a $server_kind NAT"
lab_selfcheck 2 "$client_kind" "$probe" || fail "the client's site is not a $client_kind NAT"
if [ "$scenario" = roam ]; then
  # The network the client roams to: another router, another public IP.
  lab_site 3 consistent
  lab_wire h2 eth1 10.3.0.5/24 r3 lan0
fi
relays=1
[ "$scenario" = relay_failover ] && relays=2
lab_wait_relays "$kadpunch" $relays || fail "the relays did not announce themselves"

lab_spawn h1 "$LAB_LOG/echo.log" "$echo_srv" 127.0.0.1:7007
lab_server_key "$kadpunch"
log=${KP_SURVIVE_LOG:+--log $KP_SURVIVE_LOG} # e.g. KP_SURVIVE_LOG=info: the links' moves too
# shellcheck disable=SC2086
lab_spawn h1 "$LAB_LOG/serve.log" "$kadpunch" serve --key "$key" --bootstrap $BOOTSTRAP \
  --forward echo=127.0.0.1:7007 $log
serve_pid=$LAB_LAST_PID
lab_wait_serving 100
# shellcheck disable=SC2086
lab_spawn h2 "$LAB_LOG/listen.log" "$kadpunch" connect "$pk" --listen 127.0.0.1:7008 \
  --bootstrap $BOOTSTRAP $log
listen_pid=$LAB_LAST_PID
# Bounded: 300 x 0.1 s for the connection.
i=0
until grep -q '^listening' "$LAB_LOG/listen.log" 2>/dev/null || [ $i -ge 300 ]; do
  sleep 0.1
  i=$((i + 1))
done
grep -q '^listening' "$LAB_LOG/listen.log" || fail "connect --listen did not connect"

lab_spawn h2 "$LAB_LOG/pump.out" sh -c "'$pump' 127.0.0.1:7008 $bytes $rate 2>'$LAB_LOG/pump.err'"
pump_pid=$LAB_LAST_PID

# Bounded: 600 x 0.1 s for `mb` megabytes to have come back.
wait_for_mb() { # mb
  local i=0 n
  while [ $i -lt 600 ]; do
    n=$(awk '$1 == "progress" {n = $2} END {print n + 0}' "$LAB_LOG/pump.err" 2>/dev/null)
    [ "${n:-0}" -ge "$(($1 * 1000000))" ] && return 0
    kill -0 "$pump_pid" 2>/dev/null || return 1
    sleep 0.1
    i=$((i + 1))
  done
  return 1
}

# The transfer's clock (ms since it began) at this moment, from its log.
fault_ms() {
  awk '$1 == "progress" {t = $3} END {print t + 0}' "$LAB_LOG/pump.err"
}

faults=""
strike() { # what [gap-limit-ms]
  faults="$faults $(fault_ms):$1:${2:-$limit_ms}"
  lab_say "fault: $1 at $(date +%H:%M:%S.%N | cut -c1-12)"
}

case $scenario in
  rebind)
    # Five times: each rebinding leaves old mappings among a path's
    # candidates, and the fifth must still find room for the newest.
    for mb in 15 30 45 60 75; do
      wait_for_mb $mb || fail "the transfer stalled before $mb MB (no fault yet)"
      ip netns exec "$LAB-r2" conntrack -F >/dev/null 2>&1
      strike "client-nat-flushed"
    done
    ;;
  server_rebind)
    # A port-preserving NAT that forgets its mappings maps the server's
    # socket to the same port again; one that reassigns ports (a CGNAT, a
    # router that rebooted with mappings in use) does not: move its range.
    for step in 30:20000-29999 65:40000-49999; do
      mb=${step%%:*} range=${step#*:}
      wait_for_mb "$mb" || fail "the transfer stalled before $mb MB (no fault yet)"
      ip netns exec "$LAB-r1" iptables -t nat -I POSTROUTING 1 -o wan -p udp -j MASQUERADE \
        --to-ports "$range"
      ip netns exec "$LAB-r1" conntrack -F >/dev/null 2>&1
      strike "server-nat-flushed-to-$range"
    done
    ;;
  relay_failover)
    wait_for_mb 20 || fail "the transfer stalled before 20 MB (no fault yet)"
    used=$(grep -o "$PUBLIC_NET\.1[34]:49737" "$LAB_LOG/listen.log" | head -n 1)
    [ -n "$used" ] || fail "the connection did not go through a relay"
    pid=$(ip netns pids "$LAB-pub" | while read -r p; do
      tr '\0' ' ' </proc/"$p"/cmdline 2>/dev/null | grep -q "relay --bind $used" && echo "$p"
    done | head -n 1)
    [ -n "$pid" ] || fail "no relay process at $used"
    kill -9 "$pid"
    strike "relay-${used%:*}-killed"
    ;;
  roam)
    wait_for_mb 30 || fail "the transfer stalled before 30 MB (no fault yet)"
    ip -n "$LAB-h2" link set eth0 down
    ip -n "$LAB-h2" route replace default via 10.3.0.1
    strike "roamed-to-$PUBLIC_NET.23"
    ;;
  suspend)
    # 20 s, then 40 s: past the 30 s idle timeout a connection without a
    # way to resume would have ended on.
    for step in 30:20 50:40; do
      mb=${step%%:*} secs=${step#*:}
      wait_for_mb "$mb" || fail "the transfer stalled before $mb MB (no fault yet)"
      kill -STOP "$serve_pid"
      strike "server-stopped-${secs}s" $((secs * 1000 + 3000))
      sleep "$secs"
      kill -CONT "$serve_pid"
    done
    ;;
esac

# Bounded: 2400 x 0.1 s for the rest (tcp_pump gives up after 240 s).
i=0
while kill -0 "$pump_pid" 2>/dev/null && [ $i -lt 2400 ]; do
  sleep 0.1
  i=$((i + 1))
done
out=$(cat "$LAB_LOG/pump.out")
json_field() { # json name
  printf '%s' "$1" | sed -n "s/.*\"$2\":\"\{0,1\}\([^\",}]*\).*/\1/p"
}
[ "$(json_field "$out" ok)" = true ] || fail "the echo was not complete and exact: $out"

# Each fault, and the first read after it that ended a gap: within its limit.
late=""
for f in $faults; do
  at=${f%%:*} rest=${f#*:}
  what=${rest%%:*} max=${rest#*:}
  gap=$(awk -v at="$at" '$1 == "gap" && $4 >= at {print $2; exit}' "$LAB_LOG/pump.err")
  printf '%-30s at %6d ms: no data for %5d ms (limit %d)\n' "$what" "$at" "${gap:-0}" "$max"
  [ "${gap:-0}" -le "$max" ] || late="$late $what"
done
lab_kill "$listen_pid" # it says what the connection went through
grep 'connection:' "$LAB_LOG/listen.log" | sed 's/^kadpunch connect: /  client /' | tail -n 1
grep 'path:' "$LAB_LOG/listen.log" | sed 's/^/  client /' | head -n 12
grep 'path:' "$LAB_LOG/serve.log" | sed 's/^/  server /' | head -n 12
stall=$(json_field "$out" max_stall_ms)
secs=$(json_field "$out" seconds)
printf '%-28s %d bytes each way, byte-exact, %s s; longest gap %d ms (limit %d)\n' \
  "$scenario" "$bytes" "$secs" "$stall" "$limit_ms"
[ "$stall" -le "$limit_ms" ] || fail "a read waited $stall ms"
[ -z "$late" ] || fail "data did not flow again in time after:$late"
case $scenario in
  relay_failover)
    grep -q 'relay lost' "$LAB_LOG/listen.log" || fail "the client never reported the relay lost"
    ;;
  rebind | roam)
    grep -q 'path:' "$LAB_LOG/listen.log" || fail "the client reported no path change"
    ;;
esac
lab_kill "$serve_pid"
echo "$scenario: passed"
