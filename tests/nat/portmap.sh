#!/bin/sh
# SPDX-License-Identifier: MIT
# A server behind a random NAT whose router offers port mapping (miniupnpd:
# NAT-PMP, PCP, UPnP-IGD), a client behind another random NAT (ctest
# nat.portmap). Two random NATs cannot punch: without a mapping the pair
# connects through the lab's relay. With one, the server's node asks the
# gateway for its socket's port (PCP), the gateway forwards it and
# sends from it, and the client reaches the server directly.
# Asserts, in order:
#   1. with --no-port-mapping: the router holds no mapping and the connect
#      is relayed (what the pair got before port mapping);
#   2. with it: the node reports a PCP mapping, the router holds it, and a
#      10 MB echo runs byte-exact on a direct path to the mapped address;
#   3. kadpunch-inspect nat on the server's host, with the router dropping
#      PCP (a gateway that speaks NAT-PMP only), reports a NAT-PMP mapping;
#   4. once the server has exited, the router holds no mapping;
#   5. the router restarted to answer UPnP-IGD only (most home routers):
#      the node maps its port with UPnP instead, the echo runs direct, and
#      the mapping goes when the server exits.
#
#   tests/nat/portmap.sh [build-dir]        (as root)
#
# Exit: 0 passed, 1 failed, 77 the lab cannot run here (said plainly).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../../build}" && pwd)
. "$here/lab.sh"
kadpunch=$build/node/kadpunch
inspect=$build/tools/inspect/kadpunch-inspect
probe=$build/tests/nat_probe
xfer=$build/tests/nat_xfer
lab_need portmap "$kadpunch" "$inspect" "$probe" "$xfer"
for tool in miniupnpd stund iptables-legacy; do
  command -v $tool >/dev/null || { echo "SKIPPED: the portmap lab needs $tool (miniupnpd-iptables, stun-server, iptables)"; exit 77; }
done

json_field() { # json name
  printf '%s' "$1" | sed -n "s/.*\"$2\":\"\{0,1\}\([^\",}]*\).*/\1/p"
}
fail() {
  echo "portmap: FAILED: $*"
  for f in serve.log xfer.err connect.err miniupnpd1.log; do
    [ -s "$LAB_LOG/$f" ] || continue
    echo "--- $f"
    grep -iv stun "$LAB_LOG/$f" | sed 's/^/  | /' | tail -n 30
  done
  exit 1
}

lab_init
lab_start_public "$kadpunch" "$probe"
lab_site 1 portmap || fail "the portmap site did not come up"
lab_site 2 random
lab_selfcheck 1 portmap "$probe" || fail "the server's site is not a random NAT without a mapping"
lab_selfcheck 2 random "$probe" || fail "the client's site is not a random NAT"
lab_wait_relays "$kadpunch" 1 || fail "the relay did not announce itself"
lab_server_key "$kadpunch"

# Bounded: 50 x 0.1 s for the server to exit after SIGTERM.
stop_server() {
  kill "$serve_pid" 2>/dev/null || true
  i=0
  while kill -0 "$serve_pid" 2>/dev/null && [ $i -lt 50 ]; do
    sleep 0.1
    i=$((i + 1))
  done
}

# 1. No mapping asked for: relayed, as two random NATs always were. The
# relay is named, as the matrix names it: this is about the path, not
# about finding relays.
lab_spawn h1 "$LAB_LOG/serve.log" "$kadpunch" serve --key "$key" --bootstrap $BOOTSTRAP \
  --relay $RELAY --no-port-mapping --log info
serve_pid=$LAB_LAST_PID
lab_wait_serving 200
[ -z "$(lab_portmap_rules 1)" ] || fail "the router holds a mapping nobody asked for"
out=$(ip netns exec "$LAB-h2" timeout 50 "$kadpunch" connect "$pk" --json --bootstrap $BOOTSTRAP \
  --relay $RELAY 2>"$LAB_LOG/connect.err" || true)
before=$(json_field "$out" strategy)
[ "$(json_field "$out" ok)" = true ] || fail "the connect without a mapping failed: $out"
[ "$before" = relayed ] || fail "without a mapping the pair connected '$before', not relayed"
stop_server

# Serves with a mapping and checks it: sets mapped. Bounded: 50 x 0.1 s
# for the mapping to be reported (UPnP finds the gateway in 0.5 s).
serve_mapped() { # protocol
  lab_spawn h1 "$LAB_LOG/serve.log" "$kadpunch" serve --key "$key" --bootstrap $BOOTSTRAP --log info
  serve_pid=$LAB_LAST_PID
  lab_wait_serving 200
  i=0
  until grep -q "port mapping: .*($1" "$LAB_LOG/serve.log" || [ $i -ge 50 ]; do
    sleep 0.1
    i=$((i + 1))
  done
  mapped=$(sed -n "s/.*port mapping: \([0-9.:]*\) forwards to port .*($1.*/\1/p" \
    "$LAB_LOG/serve.log" | head -n 1)
  [ -n "$mapped" ] || fail "the server reported no $1 port mapping"
  [ -n "$(lab_portmap_rules 1)" ] || fail "the router holds no mapping"
}

# A 10 MB echo that must run direct, to the mapped address: sets strategy.
echo_direct() {
  lab_spawn h2 "$LAB_LOG/xfer.out" sh -c "'$xfer' $pk $BOOTSTRAP 10000000 2>'$LAB_LOG/xfer.err'"
  xfer_pid=$LAB_LAST_PID
  # Bounded: 600 x 0.1 s (nat_xfer gives up after 120 s of no progress).
  i=0
  while kill -0 "$xfer_pid" 2>/dev/null && [ $i -lt 600 ]; do
    sleep 0.1
    i=$((i + 1))
  done
  out=$(cat "$LAB_LOG/xfer.out")
  [ "$(json_field "$out" ok)" = true ] || fail "the echo was not complete and exact: $out"
  strategy=$(json_field "$out" strategy)
  [ "$strategy" != relayed ] || fail "the connect was relayed, not direct, with the mapping"
  path=$(awk '$1 == "path" {print $2, $3}' "$LAB_LOG/xfer.err" | tail -n 1)
  first_path=$(sed -n 's/.*"path":"\([^"]*\)".*/\1/p' "$LAB_LOG/xfer.out")
  case "$first_path$path" in
    *"$mapped"*) ;;
    *) fail "the direct path ($first_path $path) is not the mapped address $mapped" ;;
  esac
}

# 2. The server asks for a mapping: the client gets a direct path to it.
serve_mapped PCP
echo_direct

# 3. What the gateway offered, as the inspector reports it, from a gateway
# that does not answer PCP (version 2 datagrams dropped): the node falls
# back to NAT-PMP.
pcp_rule="INPUT -p udp --dport 5351 -m u32 --u32 0>>22&0x3C@8>>24=2 -j DROP"
ip netns exec "$LAB-r1" iptables-legacy -I $pcp_rule
nat=$(ip netns exec "$LAB-h1" timeout 30 "$inspect" nat --bootstrap $BOOTSTRAP 2>&1 || true)
ip netns exec "$LAB-r1" iptables-legacy -D $pcp_rule
printf '%s\n' "$nat" | grep -q "port mapping *NAT-PMP at 10.1.0.1:5351 mapped 203.0.113.21:" ||
  fail "kadpunch-inspect nat did not report a NAT-PMP mapping: $nat"

# 4. The server's mapping goes with it.
stop_server
kill -0 "$serve_pid" 2>/dev/null && fail "the server did not exit"
left=$(lab_portmap_rules 1)
[ -z "$left" ] || fail "the router still holds a mapping after the server exited: $left"
pcp_mapped=$mapped pcp_strategy=$strategy

# 5. A gateway that answers UPnP-IGD only.
lab_portmap_start 1 no || fail "miniupnpd did not restart"
serve_mapped UPnP-IGD
echo_direct
stop_server
kill -0 "$serve_pid" 2>/dev/null && fail "the server did not exit"
left=$(lab_portmap_rules 1)
[ -z "$left" ] || fail "the router still holds a UPnP mapping after the server exited: $left"

printf '%-34s %s\n' "without a mapping" "$before"
printf '%-34s %s, 10 MB echoed byte-exact to %s\n' "with a PCP mapping" "$pcp_strategy" \
  "$pcp_mapped"
printf '%-34s %s, 10 MB echoed byte-exact to %s\n' "with a UPnP-IGD mapping" "$strategy" "$mapped"
printf '%-34s %s\n' "inspect nat, PCP dropped" "$(printf '%s\n' "$nat" | grep 'port mapping' | sed 's/^ *//')"
printf '%-34s %s\n' "after each server exited" "no mapping left at the gateway"
echo "portmap: passed"
