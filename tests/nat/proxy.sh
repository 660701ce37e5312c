#!/bin/sh
# SPDX-License-Identifier: MIT
# Proxies in the NAT lab (ctest nat.proxy_client, nat.proxy_server,
# nat.proxy_privacy, nat.proxy_upgrade, nat.proxy_failover, nat.proxy_lost). The public side
# runs DHT nodes and a proxy (`kadpunch proxy` on 203.0.113.14), and no relay
# but in `lost`.
#
#   client    random <-> random (no direct path between them); the client
#             speaks through the proxy; a 100 MB echo byte-exact
#   server    random <-> random; the server speaks through the proxy
#             (`serve --proxy`), the client plain; a 100 MB echo. Then a
#             client whose UDP is blocked (site 3), given the proxy's
#             plain address, finds UDP silent and reaches the same proxied
#             server through the proxy over TCP by itself; a 20 MB echo;
#             and `kadpunch connect --proxy` there does the same
#   privacy   consistent <-> consistent. The server is proxied and
#             private (--private): the client's host sees no packet to or
#             from the server's own addresses (its router's public
#             address, its LAN address), and no datagram it receives
#             carries either in the clear. Then the client is proxied and
#             private and the server's host is watched the same way for
#             the client's addresses. 10 MB each.
#   upgrade   consistent <-> consistent, where punching works. The client
#             is proxied (not private): mid-transfer its connection moves
#             direct, with no gap over 1 s, byte-exact; then the same with
#             the server proxied; then a proxied client behind a random
#             NAT and a server with none (its own socket's probes reach it).
#   failover  random <-> random; the client speaks through a list of two
#             proxies (--private: it stays proxied); 20 MB into a 40 MB
#             echo the first is killed (SIGKILL): the client moves to the second
#             and the connection resumes there, byte-exact, with no gap
#             over 10 s.
#   lost      random <-> random, a relay on the public side. First a
#             private client through the proxy: 10 MB into a 20 MB echo
#             its router starts dropping all UDP; the client goes over
#             TCP to the proxy by itself and the connection carries on,
#             byte-exact, with no gap over 20 s. Then the client speaks
#             through its only proxy (not private); 20 MB into a 40 MB
#             echo the proxy is killed (SIGKILL): the client speaks from
#             its own address and the connection moves to the relay,
#             byte-exact, with no gap over 15 s.
#
#   tests/nat/proxy.sh SCENARIO [build-dir]      (as root)
#   KP_PROXY_BYTES=400000000 tests/nat/proxy.sh client
#
# Exit: 0 passed, 1 failed, 2 usage or not built, 77 the lab cannot run
# here (said plainly).
set -eu
scenario=${1:-}
case $scenario in
  client | server | privacy | upgrade | failover | lost) ;;
  *)
    echo "usage: proxy.sh client|server|privacy|upgrade|failover|lost [build-dir]"
    exit 2
    ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${2:-$here/../../build}" && pwd)
LAB=${LAB:-kpx$$}
. "$here/lab.sh"
kadpunch=$build/node/kadpunch
probe=$build/tests/nat_probe
xfer=$build/tests/nat_xfer
lab_need "proxy_$scenario" "$kadpunch" "$probe" "$xfer"
PROXY=$PUBLIC_NET.14:49737
PROXY2=$PUBLIC_NET.15:49737

json_field() { # json name
  printf '%s' "$1" | sed -n "s/.*\"$2\":\"\{0,1\}\([^\",}]*\).*/\1/p"
}

fail() {
  echo "proxy_$scenario: FAILED: $*"
  for f in xfer.err serve.log proxy.log; do
    echo "--- $f"
    grep -v '^progress' "$LAB_LOG/$f" 2>/dev/null | sed 's/^/  | /' | head -n 30
  done
  exit 1
}

# The public side without a relay: reflectors, three DHT nodes, the proxy.
start_public() {
  ip -n "$LAB-pub" addr add $PUBLIC_NET.14/24 dev eth0
  lab_spawn pub "$LAB_LOG/reflect.log" "$probe" reflect $REFLECT_A $REFLECT_B
  lab_spawn pub "$LAB_LOG/dht10.log" "$kadpunch" dht-node --bind $BOOTSTRAP --member --log warn
  for a in 11 12; do
    lab_spawn pub "$LAB_LOG/dht$a.log" "$kadpunch" dht-node --bind $PUBLIC_NET.$a:49737 \
      --bootstrap $BOOTSTRAP --member --stable-ms 0 --log warn
  done
  lab_spawn pub "$LAB_LOG/proxy.log" "$kadpunch" proxy --bind $PROXY --bootstrap $BOOTSTRAP \
    --every 1
  proxy_pid=$LAB_LAST_PID
  if [ "$scenario" = failover ]; then
    ip -n "$LAB-pub" addr add $PUBLIC_NET.15/24 dev eth0
    lab_spawn pub "$LAB_LOG/proxy2.log" "$kadpunch" proxy --bind $PROXY2 \
      --bootstrap $BOOTSTRAP --every 1
  fi
  if [ "$scenario" = lost ]; then
    lab_spawn pub "$LAB_LOG/relay.log" "$kadpunch" relay --bind $RELAY --bootstrap $BOOTSTRAP
    lab_wait_relays "$kadpunch" 1 || fail "the relay was not announced"
  fi
  sleep 2 # the public DHT nodes find each other
}

# serve in site 1 (through the proxy with "proxied", and never direct
# with "private"), then an echo of $3 bytes from site $4 (default 2;
# through the proxy with "proxied" or "private", or "blocked": from where
# UDP is blocked, left to find TCP by itself, or "cut": private, its
# router dropping UDP from 10 MB on);
# OUT: its JSON. The server keeps running with "keep".
run_echo() { # server-mode client-mode bytes [client-site] [keep]
  local px="" i got site=${4:-2}
  [ "$1" = proxied ] && px="--proxy $PROXY"
  [ "$1" = private ] && px="--proxy $PROXY --private"
  lab_server_key "$kadpunch"
  # shellcheck disable=SC2086
  lab_spawn h1 "$LAB_LOG/serve.log" "$kadpunch" serve --key "$key" --bootstrap $BOOTSTRAP $px
  serve_pid=$LAB_LAST_PID
  lab_wait_serving 150
  px=""
  [ "$2" = proxied ] && px="KP_XFER_PROXY=$PROXY"
  [ "$2" = private ] && px="KP_XFER_PROXY=$PROXY KP_XFER_PRIVATE=1"
  [ "$2" = two ] && px="KP_XFER_PROXY=$PROXY,$PROXY2 KP_XFER_PRIVATE=1 ${KP_XFER_DEBUG:+KP_XFER_DEBUG=1}"
  [ "$2" = lost ] && px="KP_XFER_PROXY=$PROXY"
  [ "$2" = cut ] && px="KP_XFER_PROXY=$PROXY KP_XFER_PRIVATE=1"
  [ "$2" = blocked ] && px="KP_XFER_PROXY=$PROXY"
  rm -f "$LAB_LOG/xfer.err" # LAB_LOG may hold an earlier run's
  lab_spawn "h$site" "$LAB_LOG/xfer.out" sh -c \
    "$px '$xfer' $pk $BOOTSTRAP $3 2>'$LAB_LOG/xfer.err'"
  xfer_pid=$LAB_LAST_PID
  # Bounded: 1400 x 0.1 s (nat_xfer gives up after 120 s). With "two"
  # or "lost", the first proxy dies once 20 MB have come back; with
  # "cut", the client's router starts dropping all UDP at 10 MB.
  i=0
  killed=
  while kill -0 "$xfer_pid" 2>/dev/null && [ $i -lt 1400 ]; do
    got=$(awk '$1 == "progress" {n = $2} END {print n + 0}' "$LAB_LOG/xfer.err" 2>/dev/null) || got=0
    if { [ "$2" = two ] || [ "$2" = lost ]; } && [ -z "$killed" ] && [ "${got:-0}" -ge 20000000 ]; then
      kill -9 "$proxy_pid"
      killed=$i
    fi
    if [ "$2" = cut ] && [ -z "$killed" ] && [ "${got:-0}" -ge 10000000 ]; then
      ip netns exec "$LAB-r$site" iptables -I FORWARD 1 -p udp -j DROP
      killed=$i
    fi
    sleep 0.1
    i=$((i + 1))
  done
  OUT=$(cat "$LAB_LOG/xfer.out")
  [ "${5:-}" = keep ] || lab_kill "$serve_pid"
}

# The echo just run ($bytes each way) started proxied if the proxied side
# was the client, moved direct mid-transfer, and never stalled over 1 s.
check_moved() { # what proxied-side
  local stall
  check_echo "$1"
  [ "$2" = server ] || [ "$(json_field "$OUT" strategy)" = proxied ] ||
    fail "$1: did not start proxied: $OUT"
  [ "$(json_field "$OUT" direct_moves)" -ge 1 ] || fail "$1: the connection never moved direct: $OUT"
  stall=$(json_field "$OUT" max_stall_ms)
  [ "$stall" -le 1000 ] || fail "$1: a gap of $stall ms: $OUT"
  grep '^path' "$LAB_LOG/xfer.err" | head -n 3 | sed 's/^/  /'
  echo "proxy_upgrade: $1: $bytes bytes each way, byte-exact, in" \
    "$(json_field "$OUT" seconds) s, moved direct mid-transfer, longest gap $stall ms"
}

check_echo() { # what
  [ "$(json_field "$OUT" ok)" = true ] || fail "$1: the echo was not complete and exact: $OUT"
}

# Counts, in namespace ns, packets to or from ip and datagrams carrying
# its 4 bytes in the clear: iptables rules with counters, read at the end.
watch_start() { # ns ip...
  local ns=$1 ip hex
  shift
  for ip in "$@"; do
    hex=$(printf '%02x%02x%02x%02x' $(echo "$ip" | tr . ' '))
    ip netns exec "$LAB-$ns" iptables -A INPUT -s "$ip" -j ACCEPT
    ip netns exec "$LAB-$ns" iptables -A OUTPUT -d "$ip" -j ACCEPT
    ip netns exec "$LAB-$ns" iptables -A INPUT -p udp -m string --algo bm --hex-string "|$hex|" \
      -j ACCEPT
  done
  # A positive control: what comes from the proxy is seen.
  ip netns exec "$LAB-$ns" iptables -A INPUT -s $PUBLIC_NET.14 -j ACCEPT
}

watch_count() { # ns: packets matched by every rule but the control; then the control's
  ip netns exec "$LAB-$1" iptables -nvxL INPUT | awk 'NR > 2 {print $1, $8}' >"$LAB_LOG/watch.in"
  ip netns exec "$LAB-$1" iptables -nvxL OUTPUT | awk 'NR > 2 {print $1}' >"$LAB_LOG/watch.out"
  seen=$(awk -v px=$PUBLIC_NET.14 '$2 != px {s += $1} END {print s + 0}' "$LAB_LOG/watch.in")
  seen=$((seen + $(awk '{s += $1} END {print s + 0}' "$LAB_LOG/watch.out")))
  control=$(awk -v px=$PUBLIC_NET.14 '$2 == px {s += $1} END {print s + 0}' "$LAB_LOG/watch.in")
  ip netns exec "$LAB-$1" iptables -F INPUT
  ip netns exec "$LAB-$1" iptables -F OUTPUT
}

lab_init
start_public
case $scenario in
  client | server)
    lab_site 1 random
    lab_site 2 random
    lab_selfcheck 1 random "$probe"
    lab_selfcheck 2 random "$probe"
    bytes=${KP_PROXY_BYTES:-100000000}
    if [ "$scenario" = client ]; then
      run_echo plain proxied "$bytes"
      [ "$(json_field "$OUT" strategy)" = proxied ] || fail "not proxied: $OUT"
      [ "$(json_field "$OUT" proxy)" = "$PROXY" ] || fail "not through $PROXY: $OUT"
    else
      run_echo proxied plain "$bytes"
      grep -q "proxied via $PROXY" "$LAB_LOG/serve.log" || fail "the server did not say it is proxied"
    fi
    check_echo "$scenario"
    echo "proxy_$scenario: $bytes bytes each way, byte-exact, in $(json_field "$OUT" seconds) s" \
      "($(json_field "$OUT" strategy)), longest gap $(json_field "$OUT" max_stall_ms) ms"
    if [ "$scenario" = server ]; then
      lab_site 3 blocked
      lab_selfcheck 3 blocked "$probe"
      bytes=${KP_PROXY_TCP_BYTES:-20000000}
      run_echo proxied blocked "$bytes" 3 keep
      check_echo "UDP-blocked client over TCP"
      [ "$(json_field "$OUT" strategy)" = proxied ] || fail "not proxied: $OUT"
      grep -q "no proxy answered over UDP: trying proxy $PROXY over TCP" "$LAB_LOG/xfer.err" ||
        fail "the client did not go over TCP by itself"
      echo "proxy_server: a UDP-blocked client through the proxy over TCP: $bytes bytes each" \
        "way, byte-exact, in $(json_field "$OUT" seconds) s"
      # The program: the same.
      ip netns exec "$LAB-h3" timeout 60 "$kadpunch" connect "$pk" --proxy $PROXY \
        --bootstrap $BOOTSTRAP --json >"$LAB_LOG/connect.out" 2>"$LAB_LOG/connect.err" ||
        fail "connect --proxy from the UDP-blocked site: $(cat "$LAB_LOG/connect.err")"
      grep -q "no proxy answered over UDP: trying proxy $PROXY over TCP" "$LAB_LOG/connect.err" ||
        fail "connect did not fall back to TCP"
      OUT=$(cat "$LAB_LOG/connect.out")
      [ "$(json_field "$OUT" strategy)" = proxied ] || fail "connect: not proxied: $OUT"
      echo "proxy_server: kadpunch connect --proxy from the UDP-blocked site: over TCP, echoed"
      lab_kill "$serve_pid"
    fi
    ;;
  privacy)
    lab_site 1 consistent
    lab_site 2 consistent
    lab_selfcheck 1 consistent "$probe"
    lab_selfcheck 2 consistent "$probe"
    bytes=${KP_PROXY_BYTES:-10000000}
    # The server proxied, watched from the client's host.
    watch_start h2 $PUBLIC_NET.21 10.1.0.2
    run_echo private plain "$bytes"
    watch_count h2
    check_echo "proxied server"
    [ "$control" -gt 0 ] || fail "the watch saw nothing from the proxy (broken watch)"
    [ "$seen" -eq 0 ] || fail "the client saw the proxied server's addresses $seen times"
    echo "proxy_privacy: proxied server: the client saw $control packets from the proxy," \
      "none to, from or naming the server's own addresses"
    # The client proxied, watched from the server's host.
    watch_start h1 $PUBLIC_NET.22 10.2.0.2
    run_echo plain private "$bytes"
    watch_count h1
    check_echo "proxied client"
    [ "$(json_field "$OUT" strategy)" = proxied ] || fail "not proxied: $OUT"
    [ "$control" -gt 0 ] || fail "the watch saw nothing from the proxy (broken watch)"
    [ "$seen" -eq 0 ] || fail "the server saw the proxied client's addresses $seen times"
    echo "proxy_privacy: proxied client: the server saw $control packets from the proxy," \
      "none to, from or naming the client's own addresses"
    ;;
  failover)
    lab_site 1 random
    lab_site 2 random
    lab_selfcheck 1 random "$probe"
    lab_selfcheck 2 random "$probe"
    bytes=${KP_PROXY_BYTES:-40000000}
    run_echo plain two "$bytes"
    [ -n "$killed" ] || fail "the transfer ended before the first proxy was killed: $OUT"
    check_echo "failover"
    [ "$(json_field "$OUT" proxy)" = "$PROXY" ] || fail "did not connect through $PROXY: $OUT"
    [ "$(json_field "$OUT" moves)" -ge 1 ] || fail "the connection never moved: $OUT"
    grep -q "moving to proxy $PROXY2" "$LAB_LOG/xfer.err" || fail "the client never moved to $PROXY2"
    stall=$(json_field "$OUT" max_stall_ms)
    [ "$stall" -le 10000 ] || fail "a gap of $stall ms: $OUT"
    grep '^path' "$LAB_LOG/xfer.err" | head -n 3 | sed 's/^/  /'
    echo "proxy_failover: $bytes bytes each way, byte-exact, in $(json_field "$OUT" seconds) s;" \
      "the first proxy killed at 20 MB, the connection moved to the second; longest gap" \
      "$stall ms"
    ;;
  lost)
    lab_site 1 random
    lab_site 2 random
    lab_selfcheck 1 random "$probe"
    lab_selfcheck 2 random "$probe"
    # UDP cut at the client's router mid-transfer (the network starts to
    # block it): the proxy falls silent over UDP, a trial over TCP is
    # welcomed, and the connection carries on over TCP.
    bytes=${KP_PROXY_CUT_BYTES:-20000000}
    run_echo plain cut "$bytes"
    [ -n "$killed" ] || fail "the transfer ended before UDP was cut: $OUT"
    check_echo "UDP cut"
    grep -q "is silent over UDP but welcomes us over TCP" "$LAB_LOG/xfer.err" ||
      fail "the client never went over TCP"
    stall=$(json_field "$OUT" max_stall_ms)
    [ "$stall" -le 20000 ] || fail "UDP cut: a gap of $stall ms: $OUT"
    echo "proxy_lost: UDP cut at the client's router at 10 MB: $bytes bytes each way, byte-exact," \
      "in $(json_field "$OUT" seconds) s, on over TCP; longest gap $stall ms"
    ip netns exec "$LAB-r2" iptables -D FORWARD -p udp -j DROP
    # The only proxy killed mid-transfer.
    bytes=${KP_PROXY_BYTES:-40000000}
    run_echo plain lost "$bytes"
    [ -n "$killed" ] || fail "the transfer ended before the proxy was killed: $OUT"
    check_echo "proxy lost"
    [ "$(json_field "$OUT" proxy)" = "$PROXY" ] || fail "did not connect through $PROXY: $OUT"
    grep -q "every proxy is silent: speaking from this host's own address" "$LAB_LOG/xfer.err" ||
      fail "the client never spoke from its own address"
    grep -q "^path relay $RELAY" "$LAB_LOG/xfer.err" || fail "the connection never moved to the relay"
    stall=$(json_field "$OUT" max_stall_ms)
    [ "$stall" -le 15000 ] || fail "a gap of $stall ms: $OUT"
    grep '^path' "$LAB_LOG/xfer.err" | head -n 3 | sed 's/^/  /'
    echo "proxy_lost: $bytes bytes each way, byte-exact, in $(json_field "$OUT" seconds) s;" \
      "the only proxy killed at 20 MB, the connection moved to the relay; longest gap $stall ms"
    ;;
  upgrade)
    lab_site 1 consistent
    lab_site 2 consistent
    lab_selfcheck 1 consistent "$probe"
    lab_selfcheck 2 consistent "$probe"
    bytes=${KP_PROXY_BYTES:-100000000}
    for side in client server; do
      if [ $side = client ]; then
        run_echo plain proxied "$bytes"
      else
        run_echo proxied plain "$bytes"
      fi
      check_moved "proxied $side" $side
    done
    # A proxied client behind a NAT that maps each destination anew, and a
    # server with no NAT: probes from the client's own socket reach it.
    lab_site_down 1
    lab_site 1 open
    lab_site 3 random
    lab_selfcheck 1 open "$probe"
    lab_selfcheck 3 random "$probe"
    bytes=${KP_PROXY_RANDOM_BYTES:-40000000}
    run_echo plain proxied "$bytes" 3
    check_moved "proxied client behind a random NAT, server with none" client
    ;;
esac
echo "proxy_$scenario: passed"
