#!/bin/sh
# SPDX-License-Identifier: MIT
# The path emulator's self-test (ctest nat.wanem): wanem between two
# namespaces does what it is told. Round trips, random and bursty loss,
# jitter with and without reordering, and the bottleneck's rate, each
# measured from the hosts with UDP, then TCP through the same path.
#
#   tests/nat/wanem.sh [build-dir]        (as root; about 30 s)
#
# Tolerances are wide against what the counts allow (the loss rates are
# measured over 20000 datagrams: 1% absolute is over six standard
# deviations), so a run on a busy machine does not fail by chance.
# Exit: 0 passed, 1 failed, 77 the lab cannot run here (said plainly).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../../build}" && pwd)
KP_NAT_DIR=$here
WANEM=$build/tools/wan/wanem
flow=$build/tools/wan/wan_flow
. "$here/wan_lab.sh"
lab_need wanem "$WANEM" "$flow"
lab_require
wan_init
failures=0

check() { # description, awk condition over the variables given after it
  local what=$1 cond=$2
  shift 2
  if awk "BEGIN { $* ; exit !($cond) }"; then
    printf '  ok    %s\n' "$what"
  else
    printf '  FAIL  %s  (%s; %s)\n' "$what" "$cond" "$*"
    failures=$((failures + 1))
  fi
}

# Numbered datagrams from A to B: the blaster's and the sink's lines.
blast() { # mbit seconds
  rm -f "$LAB_LOG/sink.out"
  lab_spawn b "$LAB_LOG/sink.out" "$flow" udp-sink $WAN_B:7001 --idle-ms 1000 --max-seconds 30
  local sink=$LAB_LAST_PID i=0
  wan_wait_listening "$LAB_LOG/sink.out"
  sent_line=$(ip netns exec "$LAB-a" "$flow" udp-blast $WAN_B:7001 --mbit "$1" --seconds "$2")
  until ! kill -0 "$sink" 2>/dev/null || [ $i -ge 50 ]; do sleep 0.1; i=$((i + 1)); done
  recv_line=$(grep received "$LAB_LOG/sink.out" 2>/dev/null || true)
  sent=$(wan_field "$sent_line" sent)
  received=$(wan_field "$recv_line" received)
}

ping_rtt() { # count
  ping_line=$(ip netns exec "$LAB-a" "$flow" udp-ping $WAN_B:7000 --count "$1" --interval-ms 10)
  rtt_min=$(wan_field "$ping_line" rtt_min_us)
  rtt_p50=$(wan_field "$ping_line" rtt_p50_us)
  rtt_p90=$(wan_field "$ping_line" rtt_p90_us)
}

lab_spawn b "$LAB_LOG/echo.out" "$flow" udp-echo $WAN_B:7000 --max-seconds 120
wan_wait_listening "$LAB_LOG/echo.out"

echo "delay 25 ms each way"
wan_path --delay 25
ping_rtt 100
check "round trip at least 50 ms ($rtt_min us)" "m >= 50000 && m <= 53000" "m = $rtt_min"
check "median round trip near 50 ms ($rtt_p50 us)" "m <= 56000" "m = $rtt_p50"

echo "delay 25 ms + jitter 0..10 ms each way, order kept"
wan_path --delay 25 --jitter 10
ping_rtt 200
check "round trips spread by the jitter (min $rtt_min, median $rtt_p50, p90 $rtt_p90 us)" \
  "lo >= 50000 && mid >= 54000 && mid <= 67000 && hi >= 60000 && hi <= 80000" \
  "lo = $rtt_min; mid = $rtt_p50; hi = $rtt_p90"
blast 50 1
check "no datagram overtakes another without --reorder" "r == 0" \
  "r = $(wan_field "$recv_line" reordered)"

echo "delay 5 ms + jitter 0..5 ms, reordering"
wan_path --delay 5 --jitter 5 --reorder
blast 50 1
check "datagrams overtake each other ($(wan_field "$recv_line" reordered) of $received)" \
  "r >= 100" "r = $(wan_field "$recv_line" reordered)"

echo "random loss 5%"
wan_path --delay 5 --loss 5 --seed 1
blast 100 2.4
wan_stop
check "5% lost ($sent sent, $received received)" "l >= 0.04 && l <= 0.06" \
  "l = ($sent - $received) / $sent"
check "the emulator dropped nothing else" "q + p + s == 0" \
  "q = $(wan_stat ab queue_drops); p = $(wan_stat ab pool_drops); s = $(wan_stat ab socket_drops)"

echo "bursty loss: Gilbert-Elliott, 1% into bursts of 4 on average (3.8% lost)"
wan_path --delay 5 --gilbert 1,25,100,0 --seed 2
blast 100 2.4
gaps=$(wan_field "$recv_line" gaps)
check "3.8% lost ($sent sent, $received received)" "l >= 0.025 && l <= 0.055" \
  "l = ($sent - $received) / $sent"
check "in bursts ($gaps of them: $(awk "BEGIN{printf \"%.1f\", ($sent - $received) / ($gaps + 1)}") lost each)" \
  "b >= 2.5 && b <= 6" "b = ($sent - $received) / ($gaps + 1)"

echo "bottleneck 50 Mbit/s, 200 kB queue, offered 100 Mbit/s"
wan_path --delay 5 --rate 50 --queue 200000
blast 100 3
wan_stop
# The rate counts frames: a 1472-byte datagram is a 1514-byte frame.
mbit=$(wan_field "$recv_line" mbit)
check "delivered at 50 Mbit/s of frames ($mbit Mbit/s of payload)" "r >= 47 && r <= 52" \
  "r = $mbit * 1514 / 1472"
check "the excess was dropped at the queue ($(wan_stat ab queue_drops) drops)" \
  "q > 0 && m <= 200000" "q = $(wan_stat ab queue_drops); m = $(wan_stat ab max_queue_bytes)"

echo "TCP through the same path: 50 Mbit/s, 20 ms round trips, 1% loss"
wan_path --delay 10 --rate 50 --queue-ms 20 --loss 1 --seed 3
rm -f "$LAB_LOG/tcp.out"
lab_spawn b "$LAB_LOG/tcp.out" "$flow" tcp-sink $WAN_B:7002 --seconds 4 --max-seconds 30
tcp_sink=$LAB_LAST_PID
wan_wait_listening "$LAB_LOG/tcp.out"
ip netns exec "$LAB-a" "$flow" tcp-send $WAN_B:7002 --cc cubic --max-seconds 20 2>/dev/null || true
i=0
until ! kill -0 "$tcp_sink" 2>/dev/null || [ $i -ge 50 ]; do sleep 0.1; i=$((i + 1)); done
wan_stop
tcp_mbit=$(wan_field "$(grep mbit "$LAB_LOG/tcp.out" 2>/dev/null || true)" mbit)
check "TCP gets through, below the rate (${tcp_mbit:-none} Mbit/s)" "t > 1 && t <= 50" "t = ${tcp_mbit:-0}"
check "and loses its share on the way ($(wan_stat ab losses) of $(wan_stat ab frames_in) frames)" \
  "l > 0.002 && l < 0.03" "l = $(wan_stat ab losses) / $(wan_stat ab frames_in)"

echo "wanem: $failures failure(s)"
[ "$failures" = 0 ]
