#!/bin/sh
# SPDX-License-Identifier: MIT
# SOCKS and UDP services on loopback, next to what they stand in for:
#
#   - a 1 GB HTTP download (curl) through `connect --socks` / `serve --socks`,
#     next to the same through `connect --listen` / `serve --forward`, and
#     straight from the web server;
#   - datagrams (200 bytes) echoed through `connect --listen-udp` / `serve
#     --forward-udp`, next to the same echo reached directly: the rate with
#     256 in flight, and the round trip with one at a time.
#
#   tools/bench_socks.sh [build-dir]        (RUNS=3 by default: the median)
#
# Everything runs on 127.0.0.1: a DHT node, the servers, the clients; each
# process started here is stopped by its PID at the end. Prints a table.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../build}" && pwd)
kadpunch=$build/node/kadpunch
httpd=$build/tests/lan_httpd
echo_udp=$build/tests/udp_echo
pump=$build/tests/udp_pump
runs=${RUNS:-3}
bytes=${BYTES:-1000000000}
for f in "$kadpunch" "$httpd" "$echo_udp" "$pump"; do
  [ -x "$f" ] || { echo "bench_socks: build first ($f is missing)"; exit 2; }
done
command -v curl >/dev/null || { echo "bench_socks: needs curl"; exit 2; }
out=$(mktemp -d /tmp/kp-bench-socks.XXXXXX)
pids=""
cleanup() {
  for p in $pids; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in $pids; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$out"
}
trap cleanup EXIT INT TERM

port() { # a free port of kind tcp|udp on 127.0.0.1
  python3 -c "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_STREAM if sys.argv[1]=='tcp' else socket.SOCK_DGRAM); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])" "$1"
}
spawn() { # log command...
  log=$1
  shift
  "$@" >"$out/$log" 2>&1 &
  pids="$pids $!"
}
wait_for() { # log text: bounded, 10 s
  i=0
  until grep -q "$2" "$out/$1" 2>/dev/null || [ $i -ge 100 ]; do sleep 0.1; i=$((i + 1)); done
  grep -q "$2" "$out/$1" || { echo "bench_socks: $1 never said '$2'"; cat "$out/$1"; exit 1; }
}
listening_port() { # log prefix: the port printed after prefix
  sed -n "s/.*$2\([0-9]*\).*/\1/p" "$out/$1" | head -n 1
}
median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

dht=$(port udp)
web=$(port tcp)
echo_port=$(port udp)
boot=127.0.0.1:$dht
spawn dht.log "$kadpunch" dht-node --bind "$boot" --member
spawn web.log "$httpd" 127.0.0.1:"$web" bench "$bytes"
spawn echo.log "$echo_udp" 127.0.0.1:"$echo_port"
"$kadpunch" keygen -o "$out/key" >"$out/keygen.out" 2>/dev/null
pk=$(head -c 52 "$out/keygen.out")
sleep 1
spawn serve.log "$kadpunch" serve --key "$out/key" --bootstrap "$boot" \
  --forward web=127.0.0.1:"$web" --forward-udp echo=127.0.0.1:"$echo_port" \
  --socks --socks-allow 127.0.0.1:"$web"
wait_for serve.log serving
sleep 1
spawn socks.log "$kadpunch" connect "$pk" --bootstrap "$boot" --socks 127.0.0.1:0
spawn listen.log "$kadpunch" connect "$pk" --bootstrap "$boot" --service web --listen 127.0.0.1:0
spawn udp.log "$kadpunch" connect "$pk" --bootstrap "$boot" --service echo --listen-udp 127.0.0.1:0
for l in socks.log listen.log udp.log; do wait_for $l "connected to"; done
socks=$(listening_port socks.log "socks on 127.0.0.1:")
listen=$(listening_port listen.log "listening on 127.0.0.1:")
udp=$(listening_port udp.log "listening on udp 127.0.0.1:")

download() { # curl options...: MB/s, the median of the runs
  i=0
  while [ $i -lt "$runs" ]; do
    i=$((i + 1))
    curl -s -o /dev/null -m 120 -w '%{speed_download}\n' "$@"
  done | median | awk '{printf "%.0f", $1 / 1e6}'
}
echo_stat() { # port window field: from udp_pump's line
  "$pump" 127.0.0.1:"$1" 20000 200 "$2" 60000 | awk -v f="$3" '{for (i = 1; i < NF; i++) if ($i == f) print $(i + 1)}'
}
rtt() { # port: p50 and p99 round trips, one datagram at a time
  "$pump" 127.0.0.1:"$1" 2000 200 1 60000 | awk '{for (i = 1; i < NF; i++) {if ($i == "p50") a = $(i + 1); if ($i == "p99") b = $(i + 1)}} END {print a " / " b}'
}

mb=$((bytes / 1000000))
printf '%-44s %16s %16s\n' "loopback, $runs runs (median)" "through kadpunch" "next to it"
printf '%-44s %13s MB/s %13s MB/s\n' "HTTP download, $mb MB: socks | --listen" \
  "$(download --socks5-hostname 127.0.0.1:"$socks" http://127.0.0.1:"$web"/)" \
  "$(download http://127.0.0.1:"$listen"/)"
printf '%-44s %13s MB/s\n' "HTTP download, $mb MB: direct" "$(download http://127.0.0.1:"$web"/)"
printf '%-44s %14s/s %14s/s\n' "UDP echo, 200 B, 256 in flight: --listen-udp | direct" \
  "$(echo_stat "$udp" 256 rate | tr -d '/s')" "$(echo_stat "$echo_port" 256 rate | tr -d '/s')"
printf '%-44s %16s %16s\n' "UDP round trip p50 / p99 (us): --listen-udp | direct" "$(rtt "$udp")" \
  "$(rtt "$echo_port")"
