#!/bin/sh
# SPDX-License-Identifier: MIT
# Streams on emulated WAN paths (docs/benchmarks.md): kadpunch's goodput
# next to the kernel's TCP with CUBIC and with BBR, through the same
# emulated path (tools/wan/wanem.c between two namespaces), and the time a
# `kadpunch connect --stdio` session takes to connect and to read its
# first byte.
#
#   tools/wan/bench_wan.sh [options] [build-dir]          (as root)
#
#   --quick            80 ms x 0/1/5% x 100 Mbit/s, 5 s per flow (about 3 minutes)
#   --seconds N        goodput measured over N s from the first byte (default 10)
#   --rtt "LIST"       round trips in ms (default "20 80 200")
#   --loss "LIST"      random loss in % (default "0 0.1 1 5")
#   --rate "LIST"      bottleneck in Mbit/s (default "100 1000")
#   --queue-ms N       bottleneck queue in ms at the rate (default: one round trip)
#   --jitter MS        jitter each way (default 0; with --reorder frames overtake)
#   --reorder
#   --cipher aes|chacha  kadpunch's cipher (default: what this machine prefers)
#   --no-connect       skip the connect --stdio column
#   --no-tcp           skip the TCP columns
#   --verbose          each flow's sender statistics on stderr
#
# The full matrix (24 paths, 3 flows each, plus connects) takes about 20
# minutes. Each flow gets a freshly started emulator with the same seed, so
# the three see the same path from an empty queue. Loss is applied both
# ways. Goodput: what the receiving application read in the N seconds after
# its first byte, slow start included (wan_flow). The link column is the
# bottleneck's rate; a frame carries at most 1448 bytes of TCP payload or
# about 1430 of kadpunch stream data for its 1514 bytes, so about 95% of the
# link is the ceiling for either.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
seconds=10 rtts="20 80 200" losses="0 0.1 1 5" rates="100 1000" queue_ms="" jitter=0 reorder=""
cipher="" connect=1 tcp=1 verbose=""
while [ $# -gt 0 ]; do
  case $1 in
    --quick) rtts=80 losses="0 1 5" rates=100 seconds=5 ;;
    --seconds) seconds=$2; shift ;;
    --rtt) rtts=$2; shift ;;
    --loss) losses=$2; shift ;;
    --rate) rates=$2; shift ;;
    --queue-ms) queue_ms=$2; shift ;;
    --jitter) jitter=$2; shift ;;
    --reorder) reorder=--reorder ;;
    --cipher) cipher="--cipher $2"; shift ;;
    --no-connect) connect="" ;;
    --no-tcp) tcp="" ;;
    --verbose) verbose=--verbose ;;
    -*) echo "bench_wan: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
  shift
done
build=$(cd "${1:-$root/build}" && pwd)
KP_NAT_DIR=$root/tests/nat
WANEM=$build/tools/wan/wanem
flow=$build/tools/wan/wan_flow
kadpunch=$build/node/kadpunch
. "$KP_NAT_DIR/wan_lab.sh"
lab_need bench_wan "$WANEM" "$flow" "$kadpunch"
lab_require

# TCP BBR: built in, or a module to load.
available=$(cat /proc/sys/net/ipv4/tcp_available_congestion_control)
case " $available " in
  *" bbr "*) bbr_note="tcp_bbr built in" ;;
  *)
    if command -v modprobe >/dev/null && modprobe tcp_bbr 2>/dev/null; then
      bbr_note="tcp_bbr loaded"
    else
      bbr_note="tcp_bbr NOT AVAILABLE (modprobe tcp_bbr failed): the BBR column is empty"
    fi
    ;;
esac

wan_init
max=$((seconds + 30))

# One flow A -> B through a fresh path; sets result to Mbit/s or "-". (No
# command substitution around these: the state they keep - the processes
# started, the server - must stay in this shell.)
measure() { # kind (kp|cubic|bbr), wanem options...
  local kind=$1 sink i=0 out
  shift
  wan_path "$@"
  rm -f "$LAB_LOG/sink.out"
  if [ "$kind" = kp ]; then
    # shellcheck disable=SC2086
    lab_spawn b "$LAB_LOG/sink.out" "$flow" kp-sink $WAN_B:7100 --peer $WAN_A:7100 \
      --seconds "$seconds" --max-seconds "$max" $cipher $verbose
    sink=$LAB_LAST_PID
    wan_wait_listening "$LAB_LOG/sink.out"
    # shellcheck disable=SC2086
    ip netns exec "$LAB-a" "$flow" kp-send $WAN_A:7100 --peer $WAN_B:7100 --max-seconds "$max" \
      $cipher $verbose 2>>"$LAB_LOG/flows.err" || true
  else
    lab_spawn b "$LAB_LOG/sink.out" "$flow" tcp-sink $WAN_B:7101 --seconds "$seconds" \
      --max-seconds "$max"
    sink=$LAB_LAST_PID
    wan_wait_listening "$LAB_LOG/sink.out"
    ip netns exec "$LAB-a" "$flow" tcp-send $WAN_B:7101 --cc "$kind" --max-seconds "$max" \
      2>>"$LAB_LOG/flows.err" || true
  fi
  until ! kill -0 "$sink" 2>/dev/null || [ $i -ge 100 ]; do sleep 0.1; i=$((i + 1)); done
  lab_kill "$sink"
  wan_stop
  if [ -n "$verbose" ]; then
    grep -h "sender\|receiver\|^tcp" "$LAB_LOG/flows.err" "$LAB_LOG/sink.out" 2>/dev/null | tail -n 2 |
      sed "s/^/  [$kind] /" >&2
    : >"$LAB_LOG/flows.err"
    printf '  [%s] path: %s\n' "$kind" "$(tr '\n' ' ' <"$LAB_LOG/wanem.stats")" >&2
  fi
  if [ "$(wan_stat ab socket_drops)" != 0 ] || [ "$(wan_stat ab pool_drops)" != 0 ]; then
    emulator_overrun=1
  fi
  out=$(wan_field "$(grep mbit "$LAB_LOG/sink.out" 2>/dev/null || true)" mbit)
  result=${out:--}
}

# connect --stdio to a server in B (DHT node there too), from A: result is
# the median of three connects, "connect_ms/ttfb_ms".
server_up=""
connect_times() { # wanem options...
  local i runs="" c t
  if [ -z "$server_up" ]; then
    wan_path "$@"
    lab_spawn b "$LAB_LOG/dht.log" "$kadpunch" dht-node --bind $WAN_B:49737 --member --log warn
    lab_spawn b "$LAB_LOG/banner.log" "$flow" banner 127.0.0.1:7022 --max-seconds 100000
    lab_server_key "$kadpunch"
    lab_spawn b "$LAB_LOG/serve.log" "$kadpunch" serve --key "$key" --bootstrap $WAN_B:49737 \
      --forward ssh=127.0.0.1:7022
    lab_wait_serving 100
    server_up=1
  fi
  wan_path "$@"
  for i in 1 2 3; do
    out=$(ip netns exec "$LAB-a" "$flow" ttfb --max-seconds 30 -- "$kadpunch" connect "$pk" \
      --stdio --verbose --bootstrap $WAN_B:49737 2>/dev/null || true)
    c=$(wan_field "$out" connect_ms)
    t=$(wan_field "$out" ttfb_ms)
    runs="$runs${c:--} ${t:--}
"
  done
  wan_stop
  result=$(printf '%s' "$runs" | sort -n | sed -n 2p | awk '{printf "%s/%s", $1, $2}')
}

pct() { # a b: a as % of b
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.0f%%", 100 * a / b }'
}

# What the lab itself forwards: UDP at 2 Gbit/s offered through a path with
# no limit (the emulator and the hosts' stacks on this machine's CPUs).
ceiling() {
  local i=0
  wan_path --delay 1
  rm -f "$LAB_LOG/sink.out"
  lab_spawn b "$LAB_LOG/sink.out" "$flow" udp-sink $WAN_B:7102 --idle-ms 1000 --max-seconds 30
  wan_wait_listening "$LAB_LOG/sink.out"
  ip netns exec "$LAB-a" "$flow" udp-blast $WAN_B:7102 --mbit 2000 --seconds 2 >/dev/null
  until ! grep -q listening "$LAB_LOG/sink.out" || grep -q received "$LAB_LOG/sink.out" ||
    [ $i -ge 50 ]; do
    sleep 0.1
    i=$((i + 1))
  done
  wan_stop
  result=$(awk '/received/ { for (i = 1; i < NF; i++) if ($i == "mbit") printf "%.0f", $(i + 1) * 1514 / 1472 }' \
    "$LAB_LOG/sink.out")
}

emulator_overrun=0
ceiling
echo "kadpunch streams on emulated WAN paths: wanem between two namespaces, loss both ways"
echo "goodput in Mbit/s over ${seconds} s from the first byte; queue: ${queue_ms:-one round trip} ms at the rate"
echo "kernel $(uname -r), $bbr_note; $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "the lab's ceiling on this machine: ${result:-?} Mbit/s of UDP frames through the emulator (2 Gbit/s offered)"
[ "$jitter" != 0 ] && echo "jitter 0..$jitter ms each way${reorder:+, reordering}"
echo
printf '%6s %5s %5s | %9s %9s %9s | %7s %6s %6s %6s | %s\n' link rtt loss kadpunch "tcp cubic" \
  "tcp bbr" kp/0% kp/lnk kp/cub kp/bbr "connect/ttfb ms"
for rate in $rates; do
  for rtt in $rtts; do
    base=""
    for loss in $losses; do
      q=${queue_ms:-$rtt}
      path="--delay $(awk -v r="$rtt" 'BEGIN{print r / 2}') --rate $rate --queue-ms $q --loss $loss"
      path="$path --seed $((rtt + rate))"
      [ "$jitter" != 0 ] && path="$path --jitter $jitter $reorder"
      # shellcheck disable=SC2086
      measure kp $path
      kp=$result cubic=- bbr=-
      if [ -n "$tcp" ]; then
        # shellcheck disable=SC2086
        measure cubic $path
        cubic=$result
        case $bbr_note in *NOT*) ;; *)
          # shellcheck disable=SC2086
          measure bbr $path
          bbr=$result ;;
        esac
      fi
      [ "$loss" = 0 ] && base=$kp
      ct=-
      if [ -n "$connect" ]; then
        # shellcheck disable=SC2086
        connect_times $path
        ct=$result
      fi
      printf '%6s %5s %5s | %9s %9s %9s | %7s %6s %6s %6s | %s\n' "$rate" "$rtt" "$loss%" "$kp" \
        "$cubic" "$bbr" "$(pct "$kp" "${base:--}")" "$(pct "$kp" "$rate")" "$(pct "$kp" "$cubic")" \
        "$(pct "$kp" "$bbr")" "$ct"
    done
  done
done
echo
echo "link and rtt: the emulated bottleneck (Mbit/s) and round trip (ms); kp/0%: kadpunch against"
echo "its own no-loss figure on the same link and round trip; kp/lnk: against the link;"
echo "connect/ttfb: kadpunch connect --stdio from start to connected, and to the first byte of"
echo "the service behind kadpunch serve --forward (a fresh client: DHT join, lookup, handshake)"
[ "$emulator_overrun" = 0 ] || echo "WARNING: the emulator dropped frames it could not take (socket or pool): a row ran the emulator past what this machine gives it"
echo "load after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
