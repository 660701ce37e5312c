#!/bin/bash
# SPDX-License-Identifier: MIT
# IPv4 and IPv6 in one lab (ctest nat.ipv6_matrix): the internet bridge
# carries 203.0.113.0/24 and 2001:db8::/32; the public DHT nodes and the
# relay are dual-stack (203.0.113.10-13 and 2001:db8:10-13::1). Sites:
#
#   v4     a host behind a consistent NAT (10.<id>.0.0/24, router WAN
#          203.0.113.<20+id>), no IPv6
#   v6     a host with a global IPv6 address (2001:db8:<30+id>::1) behind
#          a stateful ip6tables firewall (unsolicited UDP dropped, as a
#          home router's default is), no IPv4
#   dual   both: IPv4 through the NAT, IPv6 through the firewall
#
# A server in one site, a client in the other, each given the bootstrap
# nodes of its families (so a dual site runs a dual-stack node). Every pair
# must connect and end as the families allow: on IPv6 direct where both
# have it (a dual-stack pair included: the client prefers IPv6), on IPv4
# direct where only IPv4 is shared, and through the dual-stack relay where
# none is (an IPv6-only client and an IPv4-only server, or the reverse:
# the relay pairs one peer on each family) (docs/architecture.md, "Dual
# stack").
#
# Then a dual-stack pair on IPv6 loses IPv6 mid-transfer (the client's
# host drops every IPv6 UDP datagram, both ways: its IPv6 network went):
# the connection must move to IPv4 (through both NATs) and the paced
# transfer end byte-exact, its longest stall under 5 s.
#
# Last, a dual-stack proxy (203.0.113.14 and 2001:db8:14::1) bridges the
# families: an IPv6-only server given it and the IPv4 bootstrap nodes
# speaks to it over IPv6 and borrows an IPv4 address (it is an IPv4 node
# through the proxy), and an IPv4-only client behind its NAT reaches it
# there by key; and the other way round (an IPv4-only server behind its
# NAT, an IPv6-only client behind its firewall).
#
#   tests/nat/ipv6_matrix.sh [build-dir]      (root)
#   KP_NAT_KINDS="v4 dual" KP_NAT_TRIALS=10 tests/nat/ipv6_matrix.sh
#
# Each cell runs KP_NAT_TRIALS connects (3). Exit: 0 when every one ended
# as expected, 1 otherwise, 2 usage, 77 skipped.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../../build}" && pwd)
. "$here/lab.sh"
kadpunch=$build/node/kadpunch
xfer=$build/tests/nat_xfer
lab_need ipv6_matrix "$kadpunch" "$xfer"
command -v ip6tables >/dev/null || { echo "SKIPPED: the IPv6 lab needs ip6tables"; exit 77; }
trials=${KP_NAT_TRIALS:-3}
start=$(date +%s)

BOOT4=$BOOTSTRAP
BOOT6="[2001:db8:10::1]:49737"
RELAY6="[2001:db8:13::1]:49737"
PROXY4=$PUBLIC_NET.14:49737
PROXY6="[2001:db8:14::1]:49737"

lab_init
rm -f "$LAB_LOG/failures.log"
# IPv6 on the same wire: the public host's addresses, the whole
# documentation prefix on-link (no duplicate address detection: nobody
# else could hold these, and DAD would hold them for a second).
ip -n "$LAB-pub" addr add 2001:db8:10::1/64 dev eth0 nodad
for a in 11 12 13; do ip -n "$LAB-pub" addr add 2001:db8:$a::1/64 dev eth0 nodad; done
ip -n "$LAB-pub" route add 2001:db8::/32 dev eth0
lab_spawn pub "$LAB_LOG/dht10.log" "$kadpunch" dht-node --bind "$BOOT4" --bind "$BOOT6" \
  --member --log warn
for a in 11 12; do
  lab_spawn pub "$LAB_LOG/dht$a.log" "$kadpunch" dht-node --bind "$PUBLIC_NET.$a:49737" \
    --bind "[2001:db8:$a::1]:49737" --bootstrap "$BOOT4,$BOOT6" --member --stable-ms 0 --log warn
done
lab_spawn pub "$LAB_LOG/relay.log" "$kadpunch" relay --bind "$RELAY" --bind "$RELAY6" \
  --bootstrap "$BOOT4,$BOOT6"
lab_wait_relays "$kadpunch" 1 || exit 1

# IPv6 for a site's host: a second link onto the internet bridge, its own
# /64, and a stateful firewall in front of its UDP.
site_v6() { # id
  local ns=h$1
  lab_ns "$ns" 2>/dev/null || true
  local peer
  peer=$(lab_peer_name "$ns" eth1)
  ip -n "$LAB-$ns" link add eth1 type veth peer name "$peer" netns "$LAB-net"
  ip -n "$LAB-net" link set "$peer" master br0 up
  ip -n "$LAB-$ns" addr add "2001:db8:$((30 + $1))::1/64" dev eth1 nodad
  ip -n "$LAB-$ns" link set eth1 up
  ip -n "$LAB-$ns" route add 2001:db8::/32 dev eth1
  ip netns exec "$LAB-$ns" ip6tables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
  ip netns exec "$LAB-$ns" ip6tables -A INPUT -p ipv6-icmp -j ACCEPT
  ip netns exec "$LAB-$ns" ip6tables -A INPUT -p udp -j DROP
}

site() { # id kind
  case $2 in
    v4) lab_site "$1" consistent ;;
    v6) site_v6 "$1" ;;
    dual)
      lab_site "$1" consistent
      site_v6 "$1"
      ;;
  esac
}

site_down() { # id
  ip -n "$LAB-net" link del "$(lab_peer_name "h$1" eth1)" 2>/dev/null || true
  lab_site_down "$1"
  ip netns list | grep -q "^$LAB-h$1\( \|$\)" && ip netns del "$LAB-h$1"
  return 0
}

# The bootstrap nodes a host of a kind is given: its families'.
boot_of() { # kind
  case $1 in
    v4) echo "$BOOT4" ;;
    v6) echo "$BOOT6" ;;
    dual) echo "$BOOT4,$BOOT6" ;;
  esac
}

# How a pair must end, and where its path must lead: the server's IPv6
# address, its router's IPv4 address, or the relay (over the client's family).
expect() { # client-kind server-kind
  case "$1/$2" in
    v4/v6) echo "relayed 203.0.113.13:" ;;
    v6/v4) echo "relayed [2001:db8:13::1]:" ;;
    v4/* | */v4) echo "direct 203.0.113.21:" ;;
    *) echo "direct [2001:db8:31::1]:" ;;
  esac
}

json_field() { # json name
  printf '%s' "$1" | sed -n "s/.*\"$2\":\"\{0,1\}\([^\",}]*\).*/\1/p"
}

# One connect from site 2 (a host of kind ck) to the server: its JSON
# (out), strategy or "error:WHY" (r) and path.
try_connect() { # ck
  out=$(ip netns exec "$LAB-h2" timeout 50 "$kadpunch" connect "$pk" --json \
    --bootstrap "$(boot_of "$1")" 2>"$LAB_LOG/connect.err" || true)
  r=$(json_field "$out" strategy)
  [ "$(json_field "$out" ok)" = true ] || r="error:$(json_field "$out" error)"
  path=$(json_field "$out" path)
}

# A trial that did not end as expected: its JSON ($out), the client's
# stderr and the tail of each log named, into the failures log.
trial_failed() { # what log...
  local what=$1 log
  shift
  {
    echo "== $what: $out"
    cat "$LAB_LOG/connect.err"
    for log in "$@"; do
      echo "-- the $log log"
      tail -n 20 "$LAB_LOG/$log.log"
    done
  } >>"$LAB_LOG/failures.log"
}

failures=0
printf '%-6s %-6s %-8s %-22s %-7s %s\n' client server expected "path" result "seen"
cell() { # client-kind server-kind
  local ck=$1 sk=$2 t=0 ok=0 i out r path seen="" want where
  read -r want where <<<"$(expect "$ck" "$sk")"
  site 1 "$sk"
  site 2 "$ck"
  lab_server_key "$kadpunch"
  lab_spawn h1 "$LAB_LOG/serve.log" "$kadpunch" serve --key "$key" --bootstrap "$(boot_of "$sk")" \
    --log info
  serve_pid=$LAB_LAST_PID
  lab_wait_serving 200
  # A client with no family in common reaches the server only through a
  # relay the server names: wait (10 s at most) until it knows one. Its
  # first lookup may go out while it is still joining (then again 1 s
  # later), and the trials start a second after "serving" (a v6 client and
  # a v4 server once failed all three in that gap: neither knew a relay).
  i=0
  until grep -q "found [0-9]* relay" "$LAB_LOG/serve.log" || [ $i -ge 100 ]; do
    sleep 0.1
    i=$((i + 1))
  done
  while [ $t -lt "$trials" ]; do
    try_connect "$ck"
    case "$want:$r:$path" in
      relayed:relayed:"$where"*) ok=$((ok + 1)) ;;
      direct:relayed:* | direct:error:*) ;;
      direct:*:"$where"*) ok=$((ok + 1)) ;;
    esac
    [ "$ok" -gt $t ] || trial_failed "$ck/$sk trial $t" serve
    seen="$seen $r@${path:--}"
    t=$((t + 1))
  done
  result="$ok/$trials"
  [ "$ok" = "$trials" ] || { failures=$((failures + 1)); result="$result FAIL"; }
  printf '%-6s %-6s %-8s %-22s %-7s %s\n' "$ck" "$sk" "$want" "$where" "$result" "$seen"
  lab_kill "$serve_pid"
  site_down 1
  site_down 2
}

kinds=${KP_NAT_KINDS:-v4 v6 dual}
for ck in $kinds; do
  for sk in $kinds; do
    cell "$ck" "$sk"
  done
done
# Bounded: 100 x 0.1 s for 8 MiB to come back, 600 x 0.1 s for the rest
# (nat_xfer gives up after 120 s of no progress).
failover() {
  local i=0 n out first moved stall
  site 1 dual
  site 2 dual
  lab_server_key "$kadpunch"
  lab_spawn h1 "$LAB_LOG/serve.log" "$kadpunch" serve --key "$key" --bootstrap "$(boot_of dual)"
  serve_pid=$LAB_LAST_PID
  lab_wait_serving 200
  rm -f "$LAB_LOG/xfer.err" # LAB_LOG may hold an earlier run's, whose progress would cut at once
  lab_spawn h2 "$LAB_LOG/xfer.out" sh -c "KP_XFER_RATE=8000000 '$xfer' $pk $(boot_of dual) \
    40000000 2>'$LAB_LOG/xfer.err'"
  xfer_pid=$LAB_LAST_PID
  while [ $i -lt 100 ]; do
    n=$(grep -c '^progress' "$LAB_LOG/xfer.err" 2>/dev/null) || n=0
    [ "$n" -lt 2 ] || break
    sleep 0.1
    i=$((i + 1))
  done
  ip netns exec "$LAB-h2" ip6tables -I INPUT -p udp -j DROP
  ip netns exec "$LAB-h2" ip6tables -I OUTPUT -p udp -j DROP
  i=0
  while kill -0 "$xfer_pid" 2>/dev/null && [ $i -lt 600 ]; do
    sleep 0.1
    i=$((i + 1))
  done
  out=$(cat "$LAB_LOG/xfer.out")
  first=$(json_field "$out" path)
  moved=$(awk '$1 == "path" && $2 == "direct" {print $3}' "$LAB_LOG/xfer.err" | tail -n 1)
  stall=$(json_field "$out" max_stall_ms)
  printf '%-6s %-6s %-8s %-22s ' dual dual "IPv6 cut" "${first:--} -> ${moved:--}"
  case "$(json_field "$out" ok):$first:$moved" in
    "true:[2001:db8:31::1]:"*":203.0.113.21:"*)
      if [ "${stall:-99999}" -lt 5000 ]; then
        echo "moved, 40 MB byte-exact, longest stall $stall ms"
      else
        echo "FAIL: stalled $stall ms"
        failures=$((failures + 1))
      fi
      ;;
    *)
      echo "FAIL: $out"
      failures=$((failures + 1))
      { echo "== failover: $out"; cat "$LAB_LOG/xfer.err"; } >>"$LAB_LOG/failures.log"
      ;;
  esac
  lab_kill "$serve_pid"
  site_down 1
  site_down 2
}
[ -n "${KP_NAT_KINDS:-}" ] || failover

# Bounded: 100 x 0.1 s for the proxy to start; each connect 50 s.
proxy_start() {
  local i=0
  ip -n "$LAB-pub" addr add "$PUBLIC_NET.14/24" dev eth0
  ip -n "$LAB-pub" addr add 2001:db8:14::1/64 dev eth0 nodad
  lab_spawn pub "$LAB_LOG/proxy.log" "$kadpunch" proxy --bind "$PROXY4" --bind "$PROXY6" \
    --bootstrap "$BOOT4,$BOOT6"
  until grep -q "proxying on" "$LAB_LOG/proxy.log" 2>/dev/null || [ $i -ge 100 ]; do
    sleep 0.1
    i=$((i + 1))
  done
}

bridge() { # server-kind (v6 or v4): the client is of the other
  local sk=$1 ck=v4 t=0 ok=0 out r path seen="" result via=$PROXY6 where="$PUBLIC_NET.14:"
  [ "$sk" = v6 ] || { ck=v6 via=$PROXY4 where="[2001:db8:14::1]:"; }
  site 1 "$sk"
  site 2 "$ck"
  lab_server_key "$kadpunch"
  lab_spawn h1 "$LAB_LOG/serve.log" "$kadpunch" serve --key "$key" --bootstrap "$(boot_of "$ck")" \
    --proxy "$via" --log info
  serve_pid=$LAB_LAST_PID
  lab_wait_serving 200
  while [ $t -lt "$trials" ]; do
    try_connect "$ck"
    case "$r:$path" in
      error:*) ;;
      *:"$where"*) ok=$((ok + 1)) ;;
    esac
    [ "$ok" -gt $t ] || trial_failed "bridge trial $t" serve proxy
    seen="$seen $r@${path:--}"
    t=$((t + 1))
  done
  result="$ok/$trials"
  [ "$ok" = "$trials" ] || { failures=$((failures + 1)); result="$result FAIL"; }
  printf '%-6s %-6s %-8s %-22s %-7s %s\n' "$ck" "$sk" proxied "$where" "$result" "$seen"
  # The server says which proxy it speaks through: the one of its family.
  grep -qF "proxied via $via" "$LAB_LOG/serve.log" || {
    echo "bridge: the server's log does not say 'proxied via $via'"
    failures=$((failures + 1))
  }
  lab_kill "$serve_pid"
  site_down 1
  site_down 2
}
if [ -z "${KP_NAT_KINDS:-}" ]; then
  proxy_start
  bridge v6
  bridge v4
fi

lab_show_failures ipv6_matrix
echo "ipv6_matrix: $failures cell(s) not as expected, $(($(date +%s) - start)) s"
[ "$failures" = 0 ]
