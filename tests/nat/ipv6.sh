#!/bin/bash
# SPDX-License-Identifier: MIT
# The NAT lab over IPv6: an IPv6-only internet (one bridge, 2001:db8::/32
# on-link, each host in a /64 of its own: a DHT node counts every address
# of one /64 as one reporter, as it would one IPv4 address), public DHT
# nodes and a relay on it, and sites that are open (a public address) or
# behind a stateful ip6tables firewall (no NAT: IPv6 needs none, but
# unsolicited UDP is dropped, as a home router's default is), or behind a
# NAT66 router, consistent or random. Every pair connects by key over IPv6
# and must end direct where physics allows (simultaneous authenticated
# probes open both firewalls; a birthday finds a random side), through the
# relay where it does not (random with random) (docs/nat-lab.md, "IPv6").
#
#   tests/nat/ipv6.sh [build-dir]      (root)
#
# Each cell runs KP_NAT_TRIALS connects (3) and prints the strategy and the
# path the client reports. Exits non-zero if any connect does not end as
# expected on the expected IPv6 address.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../../build}" && pwd)
. "$here/lab.sh"
kadpunch=$build/node/kadpunch
lab_need ipv6 "$kadpunch"
trials=${KP_NAT_TRIALS:-3}
start=$(date +%s)

BOOT6="[2001:db8:10::1]:49737"
RELAY6="[2001:db8:13::1]:49737"

lab_require
trap 'lab_cleanup' EXIT
trap 'lab_cleanup; exit 130' INT TERM HUP PIPE
mkdir -p "$LAB_LOG"

# An address on a veth into the internet bridge, without duplicate address
# detection (no one else could have it, and DAD would hold it for a second),
# and the whole documentation prefix on-link.
wire6() { # ns ifname addr/len
  local peer
  peer=$(lab_peer_name "$1" "$2")
  ip -n "$LAB-$1" link add "$2" type veth peer name "$peer" netns "$LAB-net"
  ip -n "$LAB-net" link set "$peer" master br0 up
  ip -n "$LAB-$1" addr add "$3" dev "$2" nodad
  ip -n "$LAB-$1" link set "$2" up
  ip -n "$LAB-$1" route add 2001:db8::/32 dev "$2"
}

lab_ns net
ip -n "$LAB-net" link add br0 type bridge
ip -n "$LAB-net" link set br0 up
lab_ns pub
wire6 pub eth0 2001:db8:10::1/64
for a in 11 12 13; do ip -n "$LAB-pub" addr add 2001:db8:$a::1/64 dev eth0 nodad; done
lab_spawn pub "$LAB_LOG/dht10.log" "$kadpunch" dht-node --bind "$BOOT6" --member --log warn
for a in 11 12; do
  lab_spawn pub "$LAB_LOG/dht$a.log" "$kadpunch" dht-node --bind "[2001:db8:$a::1]:49737" \
    --bootstrap "$BOOT6" --member --stable-ms 0 --log warn
done
lab_spawn pub "$LAB_LOG/relay.log" "$kadpunch" relay --bind "$RELAY6" --bootstrap "$BOOT6"
sleep 2

# open, firewalled: the host on the internet (2001:db8:3<id>::1). consistent,
# random: the host in fd00:<id>::/64 behind a router (WAN 2001:db8:2<id>::1)
# doing NAT66 (ip6tables MASQUERADE, port-preserving or --random-fully),
# which some networks do; the lab's IPv4 kinds over IPv6.
site6() { # id kind
  local random=""
  case $2 in
    open | firewalled)
      lab_ns "h$1"
      wire6 "h$1" eth0 2001:db8:$((30 + $1))::1/64
      if [ "$2" = firewalled ]; then
        ip netns exec "$LAB-h$1" ip6tables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED \
          -j ACCEPT
        ip netns exec "$LAB-h$1" ip6tables -A INPUT -p ipv6-icmp -j ACCEPT
        ip netns exec "$LAB-h$1" ip6tables -A INPUT -p udp -j DROP
      fi
      ;;
    consistent | random)
      lab_ns "r$1"
      ip netns exec "$LAB-r$1" sysctl -qw net.ipv6.conf.all.forwarding=1
      wire6 "r$1" wan 2001:db8:$((20 + $1))::1/64
      ip -n "$LAB-r$1" link add lan0 type bridge
      ip -n "$LAB-r$1" addr add "fd00:$1::1/64" dev lan0 nodad
      ip -n "$LAB-r$1" link set lan0 up
      [ "$2" = random ] && random=--random-fully
      ip netns exec "$LAB-r$1" ip6tables -t nat -A POSTROUTING -o wan -j MASQUERADE $random
      ip netns exec "$LAB-r$1" ip6tables -P FORWARD DROP
      ip netns exec "$LAB-r$1" ip6tables -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED \
        -j ACCEPT
      ip netns exec "$LAB-r$1" ip6tables -A FORWARD -i lan0 -j ACCEPT
      ip netns exec "$LAB-r$1" ip6tables -A INPUT -i wan -p udp -m conntrack --ctstate NEW -j DROP
      lab_ns "h$1"
      local peer
      peer=$(lab_peer_name "h$1" eth0)
      ip -n "$LAB-h$1" link add eth0 type veth peer name "$peer" netns "$LAB-r$1"
      ip -n "$LAB-r$1" link set "$peer" master lan0 up
      ip -n "$LAB-h$1" addr add "fd00:$1::2/64" dev eth0 nodad
      ip -n "$LAB-h$1" link set eth0 up
      ip -n "$LAB-h$1" route add default via "fd00:$1::1"
      ;;
  esac
}

site6_down() { # id
  local peer
  for peer in "$(lab_peer_name "h$1" eth0)" "$(lab_peer_name "r$1" wan)"; do
    ip -n "$LAB-net" link del "$peer" 2>/dev/null || true
  done
  ip netns del "$LAB-h$1" 2>/dev/null || true
  ip netns del "$LAB-r$1" 2>/dev/null || true
}

# What each pair must end on: random with random has no direct path (the
# relay, over IPv6); a random side against a consistent or open one is
# found by the birthday punch.
expect6() { # client-kind server-kind
  case "$1/$2" in
    random/random) echo relayed ;;
    random/consistent | random/firewalled | consistent/random | firewalled/random) echo birthday ;;
    *) echo direct ;;
  esac
}

# The address a path to the server has: its own, or its router's.
server6() { # kind
  case $1 in
    open | firewalled) echo "[2001:db8:31::1]:" ;;
    *) echo "[2001:db8:21::1]:" ;;
  esac
}

json_field() { # json name
  printf '%s' "$1" | sed -n "s/.*\"$2\":\"\{0,1\}\([^\",}]*\).*/\1/p"
}

failures=0
printf '%-11s %-11s %-8s %-7s %s\n' client server expected result "paths seen"
cell() { # client-kind server-kind
  local ck=$1 sk=$2 t=0 ok=0 out r path paths="" want where hold="--wait-direct 10"
  want=$(expect6 "$ck" "$sk")
  where=$(server6 "$sk")
  [ "$want" = relayed ] && hold=""
  local also=-
  [ "$want" = birthday ] && also=upgraded # a birthday that missed its first 3 s
  site6 1 "$sk"
  site6 2 "$ck"
  lab_server_key "$kadpunch"
  lab_spawn h1 "$LAB_LOG/serve.log" "$kadpunch" serve --key "$key" --bootstrap "$BOOT6" \
    --relay "$RELAY6"
  serve_pid=$LAB_LAST_PID
  lab_wait_serving 200
  while [ $t -lt "$trials" ]; do
    # shellcheck disable=SC2086
    out=$(ip netns exec "$LAB-h2" timeout 50 "$kadpunch" connect "$pk" --json \
      --bootstrap "$BOOT6" --relay "$RELAY6" $hold 2>"$LAB_LOG/connect.err" || true)
    r=$(json_field "$out" strategy)
    [ "$(json_field "$out" ok)" = true ] || r="error:$(json_field "$out" error)"
    [ -n "$(json_field "$out" upgraded_ms)" ] && r=upgraded
    path=$(json_field "$out" path)
    # Direct: a path to the server's address (as kp_addr_format writes it);
    # relayed: through the relay's IPv6 address.
    case "$want:$r:$path" in
      *:relayed:* | *:error:* | *:) [ "$want:$r" = relayed:relayed ] &&
        case $path in "[2001:db8:13::1]:"*) ok=$((ok + 1)) ;; esac ;;
      direct:*:"$where"* | "$want:$want:$where"* | "$want:$also:$where"*) ok=$((ok + 1)) ;;
    esac
    [ "$ok" -gt $t ] || { echo "== $ck/$sk trial $t: $out"; cat "$LAB_LOG/connect.err"; } \
      >>"$LAB_LOG/failures.log"
    paths="$paths $r@${path:--}"
    t=$((t + 1))
  done
  result="$ok/$trials"
  [ "$ok" = "$trials" ] || { failures=$((failures + 1)); result="$result FAIL"; }
  printf '%-11s %-11s %-8s %-7s %s\n' "$ck" "$sk" "$want" "$result" "$paths"
  lab_kill "$serve_pid"
  site6_down 1
  site6_down 2
}

kinds=${KP_NAT_KINDS:-open firewalled consistent random}
for ck in $kinds; do
  for sk in $kinds; do
    cell "$ck" "$sk"
  done
done
lab_show_failures ipv6
echo "ipv6: $failures cell(s) not as expected, $(($(date +%s) - start)) s"
[ "$failures" = 0 ]
