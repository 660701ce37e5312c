#!/bin/sh
# SPDX-License-Identifier: MIT
# dissector.decodes_capture: contrib/wireshark/kadpunch.lua names every
# packet of a loopback capture of `kadpunch demo` (a DHT, announces and
# lookups, connects by key with their handshakes and holepunch rounds,
# probes, a service reached direct and through a blind relay, stream
# packets) and of a connect through a proxy (its session datagrams: KEY?,
# KEY, HELLO, WELCOME, DATA, and PASS once the proxy binds the server's
# address), and reports no malformed packet. (A plain
# REFUSED is sent only to a HELLO over its IP's rate: not in the capture;
# the allow list's refusal rides inside the encrypted WELCOME.)
#
# The capture runs in a network namespace of its own (unshare -n, as
# root): its loopback carries the demo's packets and nobody else's.
# Skipped (77) without tshark/dumpcap (Debian: tshark) or namespaces.
#   tests/contrib/dissector.sh BUILD_DIR
set -eu
here="$(cd "$(dirname "$0")/../.." && pwd)"
lua="$here/contrib/wireshark/kadpunch.lua"
kp="$(cd "$1" && pwd)/node/kadpunch"
for t in tshark dumpcap unshare ip; do
  command -v "$t" >/dev/null 2>&1 || { echo "no $t: skipped"; exit 77; }
done
unshare -n true 2>/dev/null || { echo "cannot make a network namespace (not root?): skipped"; exit 77; }
dir=$(mktemp -d /tmp/kp-dissect-XXXXXX)
trap 'rm -rf "$dir"' EXIT
cap="$dir/demo.pcapng"

# In the namespace: loopback up, dumpcap on it, the demo, dumpcap stopped.
unshare -n sh -c '
  set -e
  ip link set lo up
  dumpcap -q -i lo -f udp -w "$1" >"$2/dumpcap.log" 2>&1 &
  cap_pid=$!
  for i in $(seq 50); do [ -s "$1" ] && break; sleep 0.1; done
  export KADPUNCH_CONFIG=/dev/null
  "$3" demo --nodes 20 --lookups 2 --connects 2 >"$2/demo.log" 2>&1
  sh "$4" "$3" "$2" >"$2/proxied.log" 2>&1
  sleep 0.5
  kill $cap_pid
  wait $cap_pid || true
' sh "$cap" "$dir" "$kp" "$here/tests/contrib/proxied_connect.sh" ||
  { cat "$dir/demo.log" "$dir/proxied.log" "$dir/dumpcap.log" 2>/dev/null; exit 1; }

# The payload last, in hex: a packet the dissector misses shows its bytes.
tshark -n -r "$cap" -X lua_script:"$lua" -T fields -e frame.number -e _ws.col.Protocol \
  -e _ws.col.Info -e udp.payload >"$dir/packets.txt" 2>"$dir/tshark.log" ||
  { cat "$dir/tshark.log"; exit 1; }
total=$(wc -l <"$dir/packets.txt")
fail=0
# Every packet is ours and decoded.
others=$(awk -F'\t' '$2 != "KADPUNCH"' "$dir/packets.txt" | wc -l)
[ "$others" = 0 ] || { echo "$others of $total packets not decoded:"; awk -F'\t' '$2 != "KADPUNCH"' "$dir/packets.txt" | head; fail=1; }
# Each kind of packet is named.
for kind in "DHT PING request" "DHT PING response" "DHT PING_NAT" "DHT FIND_NODE" "DHT ANNOUNCE" \
    "DHT LOOKUP" "DHT PEER_HANDSHAKE" "DHT PEER_HOLEPUNCH" "FROM_CLIENT" "FROM_RELAY" \
    "FROM_SERVER" "REPLY" " round " "message 1 (hello)" "message 2 (welcome)" "Probe" \
    "Relay PAIR (client)" "Relay PAIR (server)" "Relay PAIRED" "Stream pn=" " ack=" \
    "Proxy KEY?" "Proxy KEY version 1" "Proxy HELLO" "Proxy WELCOME" "Proxy DATA" "Proxy PASS"; do
  n=$(grep -cF -- "$kind" "$dir/packets.txt" || true)
  printf '  %-22s %6s\n' "$kind" "$n"
  [ "$n" -gt 0 ] || { echo "nothing named '$kind'"; fail=1; }
done
# No malformed packet, no dissector error.
tshark -n -r "$cap" -X lua_script:"$lua" \
  -Y '_ws.malformed || kadpunch.malformed || _ws.expert.severity >= 8388608' -T fields \
  -e frame.number -e _ws.col.Info >"$dir/bad.txt" 2>"$dir/tshark.log" || { cat "$dir/tshark.log"; exit 1; }
bad=$(wc -l <"$dir/bad.txt")
[ "$bad" = 0 ] || { echo "$bad malformed packets or dissector errors:"; head "$dir/bad.txt"; fail=1; }
if grep -q "Lua Error" "$dir/packets.txt" "$dir/tshark.log"; then echo "Lua errors"; fail=1; fi
# A GSO batch whose last segment is shorter or as long, and of another
# kind (a probe, then a small stream packet to the same address), reaches
# a loopback capture as one packet: made here from two of the capture's
# own payloads, it must be dissected as both. The as-long stream packet is
# the short one grown to 61 bytes with zeros before its tag.
probe_hex=$(awk -F'\t' '$4 ~ /^50/ && length($4) == 122 {print $4; exit}' "$dir/packets.txt")
stream_hex=$(awk -F'\t' '$4 ~ /^41/ && length($4) < 122 {print $4; exit}' "$dir/packets.txt")
gso_batch() { # NAME HEX: the batch of a probe and HEX, dissected as both
  printf '000000 %s\n' "$(echo "$probe_hex$2" | sed 's/../& /g')" >"$dir/gso.txt"
  text2pcap -q -u 39894,40003 "$dir/gso.txt" "$dir/gso.pcap" >/dev/null 2>&1
  got=$(tshark -n -r "$dir/gso.pcap" -X lua_script:"$lua" -T fields -e _ws.col.Info 2>/dev/null)
  case "$got" in
    Probe*"; Stream pn="*) echo "  a probe and a $1 stream packet in one GSO batch: $got" ;;
    *) echo "a GSO batch of a probe and a $1 stream packet: '$got'"; fail=1 ;;
  esac
}
if [ -n "$probe_hex" ] && [ -n "$stream_hex" ]; then
  gso_batch shorter "$stream_hex"
  cut=$((${#stream_hex} - 32))
  zeros=$(printf "%$((122 - ${#stream_hex}))s" "" | tr ' ' 0)
  gso_batch "61-byte" "$(echo "$stream_hex" | cut -c1-$cut)$zeros$(echo "$stream_hex" | cut -c$((cut + 1))-)"
else
  echo "no probe or short stream packet in the capture"
  fail=1
fi
[ "$fail" = 0 ] && echo "dissector: $total packets, every one decoded and named, none malformed"
exit "$fail"
