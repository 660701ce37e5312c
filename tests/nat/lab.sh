# SPDX-License-Identifier: MIT
# The NAT lab (sourced by matrix.sh and selfcheck.sh): network namespaces
# joined by veth pairs into a small internet, with real kernel NATs.
#
#   $LAB-net            the internet: one bridge, 203.0.113.0/24
#   $LAB-pub            public hosts: 203.0.113.10-13 (DHT nodes, .13 a relay; reflectors)
#   $LAB-h<id>[b]       a site's hosts; behind a NAT they sit on
#   $LAB-r<id>          its router (WAN 203.0.113.<20+id>, LAN 10.<id>.0.0/24)
#
# Site kinds: open (the host has a public address), consistent (MASQUERADE:
# port-preserving, endpoint-independent mapping, address-and-port-dependent
# filtering), random (MASQUERADE --random-fully: a new port per
# destination), firewalled (a public address, unsolicited UDP dropped),
# blocked (all UDP dropped, TCP allowed), lan (two hosts behind one
# consistent router; like every router here it does not hairpin).
#
# Safety: nothing is added to the root namespace (every link is made inside
# a lab namespace, no address or route is set outside them); every process
# started is recorded by PID and killed, every namespace deleted, on exit,
# error or signal (lab_cleanup, installed as a trap by lab_init).

LAB=${LAB:-kpl$$}
LAB_PIDS=""
LAB_SITES=""
LAB_LOG=${LAB_LOG:-/tmp/$LAB}
PUBLIC_NET=203.0.113
REFLECT_A=$PUBLIC_NET.10:3478
REFLECT_B=$PUBLIC_NET.11:3478
BOOTSTRAP=$PUBLIC_NET.10:49737
RELAY=$PUBLIC_NET.13:49737

lab_say() { printf '%s\n' "$*" >&2; }

# The failed trials' stderr, on stderr (the log directory goes with the
# lab, and a CI log is all there is to read later): the last 200 lines.
lab_show_failures() { # script-name
  [ -s "$LAB_LOG/failures.log" ] || return 0
  lab_say "$1: the failed trials' stderr ($LAB_LOG/failures.log):"
  tail -n 200 "$LAB_LOG/failures.log" >&2
}

# Exits 2 unless every program is built.
lab_need() { # script-name programs...
  local name=$1 f
  shift
  for f in "$@"; do
    [ -x "$f" ] || { echo "$name: build first ($f is missing)"; exit 2; }
  done
}

# A fresh server key pair: key (the file) and pk (its public key) are set.
lab_server_key() { # kadpunch
  key=$LAB_LOG/server.key
  rm -f "$key"
  "$1" keygen -o "$key" >"$LAB_LOG/keygen.out" 2>/dev/null
  pk=$(head -c 52 "$LAB_LOG/keygen.out")
}

# Bounded: 40 lookups (about 0.2 s each, plus 0.25 s between) until the
# relay topic holds at least N records, so a server started next finds a
# relay on its first lookup. The public nodes find each other meanwhile.
lab_wait_relays() { # kadpunch N
  local i=0 found=0
  while [ $i -lt 40 ]; do
    found=$(ip netns exec "$LAB-pub" "$1" lookup kadpunch/relays/v1 --topic --json \
      --bootstrap $BOOTSTRAP 2>/dev/null | sed -n 's/.*"found":\([0-9]*\).*/\1/p')
    [ "${found:-0}" -ge "$2" ] && return 0
    sleep 0.25
    i=$((i + 1))
  done
  lab_say "lab: only ${found:-0} of $2 relay(s) announced after 40 lookups"
  return 1
}

# Bounded: tenths x 0.1 s for `kadpunch serve` to say so, then 1 s for its
# announcement to land on the public nodes.
lab_wait_serving() { # tenths
  local i=0
  until grep -q serving "$LAB_LOG/serve.log" 2>/dev/null || [ $i -ge "$1" ]; do
    sleep 0.1
    i=$((i + 1))
  done
  sleep 1
}

# Exits 77 (ctest: skipped) with a plain reason when namespaces cannot be made.
lab_require() {
  if [ "$(id -u)" != 0 ]; then
    echo "SKIPPED: the NAT lab needs root (network namespaces, iptables)"
    exit 77
  fi
  for tool in ip iptables; do
    command -v $tool >/dev/null || { echo "SKIPPED: the NAT lab needs $tool"; exit 77; }
  done
  if ! ip netns add "$LAB-probe" 2>/dev/null; then
    echo "SKIPPED: cannot create network namespaces here (ip netns add failed)"
    exit 77
  fi
  if ! ip netns exec "$LAB-probe" iptables -t nat -A POSTROUTING -o lo -j MASQUERADE --random-fully \
    2>/dev/null; then
    ip netns del "$LAB-probe"
    echo "SKIPPED: iptables NAT does not work in a namespace here"
    exit 77
  fi
  ip netns del "$LAB-probe"
}

lab_cleanup() {
  local pid i alive ns
  set +e # a cleanup that stops half way leaves namespaces behind
  # What we spawned, and anything still running inside our namespaces
  # (which only we started): by PID.
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$LAB-"); do
    LAB_PIDS="$LAB_PIDS $(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')"
  done
  for pid in $LAB_PIDS; do kill "$pid" 2>/dev/null || true; done
  # Bounded: 20 x 0.1 s for them to go, then SIGKILL.
  i=0
  while [ $i -lt 20 ]; do
    alive=""
    for pid in $LAB_PIDS; do kill -0 "$pid" 2>/dev/null && alive="$alive $pid"; done
    [ -z "$alive" ] && break
    sleep 0.1
    i=$((i + 1))
  done
  for pid in $LAB_PIDS; do kill -9 "$pid" 2>/dev/null || true; done
  LAB_PIDS=""
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$LAB-" || true); do
    ip netns del "$ns" 2>/dev/null || true
  done
}

lab_ns() { # name
  ip netns add "$LAB-$1"
  ip -n "$LAB-$1" link set lo up
}

# Runs a command in a namespace in the background; its PID is recorded.
lab_spawn() { # ns logfile command...
  local ns=$1 log=$2
  shift 2
  # Emptied here, not by the background job's redirection, which may come
  # later: a wait for the log to say something must not read what the
  # last process there said (a cell's checks once raced the server's start
  # that way, and the server was not up yet).
  : >"$log"
  ip netns exec "$LAB-$ns" "$@" >>"$log" 2>&1 &
  LAB_PIDS="$LAB_PIDS $!"
  LAB_LAST_PID=$!
}

lab_kill() { # pid
  local i=0
  kill "$1" 2>/dev/null || true
  while kill -0 "$1" 2>/dev/null && [ $i -lt 30 ]; do sleep 0.1; i=$((i + 1)); done
  kill -9 "$1" 2>/dev/null || true
  LAB_PIDS=$(echo "$LAB_PIDS" | tr ' ' '\n' | grep -vx "$1" | tr '\n' ' ')
}

# A veth from namespace ns (interface ifname, address addr/len) to a bridge
# in namespace bridge_ns.
lab_peer_name() { # ns ifname: the veth's other end
  echo "v$(echo "$1$2" | cksum | cut -d" " -f1)"
}

lab_wire() { # ns ifname addr bridge_ns bridge
  local ns=$1 ifname=$2 addr=$3 bns=$4 br=$5 peer
  peer=$(lab_peer_name "$ns" "$ifname")
  ip -n "$LAB-$ns" link add "$ifname" type veth peer name "$peer" netns "$LAB-$bns"
  ip -n "$LAB-$bns" link set "$peer" master "$br" up
  ip -n "$LAB-$ns" addr add "$addr" dev "$ifname"
  ip -n "$LAB-$ns" link set "$ifname" up
}

lab_init() {
  lab_require
  trap 'lab_cleanup' EXIT
  trap 'lab_cleanup; exit 130' INT TERM HUP PIPE
  mkdir -p "$LAB_LOG"
  lab_ns net
  ip -n "$LAB-net" link add br0 type bridge
  ip -n "$LAB-net" link set br0 up
  lab_ns pub
  lab_wire pub eth0 $PUBLIC_NET.10/24 net br0
  for a in 11 12 13; do ip -n "$LAB-pub" addr add $PUBLIC_NET.$a/24 dev eth0; done
}

# The public side: reflectors for the self-check and four DHT nodes.
lab_start_public() { # kadpunch nat_probe
  lab_spawn pub "$LAB_LOG/reflect.log" "$2" reflect $REFLECT_A $REFLECT_B
  lab_spawn pub "$LAB_LOG/dht10.log" "$1" dht-node --bind $BOOTSTRAP --member --log warn
  for a in 11 12; do
    lab_spawn pub "$LAB_LOG/dht$a.log" "$1" dht-node --bind $PUBLIC_NET.$a:49737 \
      --bootstrap $BOOTSTRAP --member --stable-ms 0 --log warn
  done
  # .13 is a DHT node that also relays (it announces itself).
  lab_spawn pub "$LAB_LOG/relay.log" "$1" relay --bind $PUBLIC_NET.13:49737 --bootstrap $BOOTSTRAP
}

# A site: its host namespace(s) are h<id> (and h<id>b for the LAN pair).
lab_site() { # id kind
  local id=$1 kind=$2 random hosts h n
  case $kind in
    open | firewalled)
      lab_ns "h$id"
      lab_wire "h$id" eth0 $PUBLIC_NET.$((30 + id))/24 net br0
      if [ "$kind" = firewalled ]; then
        ip netns exec "$LAB-h$id" iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
        ip netns exec "$LAB-h$id" iptables -A INPUT -p udp -j DROP
      fi
      ;;
    consistent | random | blocked | lan)
      lab_ns "r$id"
      ip netns exec "$LAB-r$id" sysctl -qw net.ipv4.ip_forward=1
      lab_wire "r$id" wan $PUBLIC_NET.$((20 + id))/24 net br0
      ip -n "$LAB-r$id" link add lan0 type bridge
      ip -n "$LAB-r$id" addr add 10.$id.0.1/24 dev lan0
      ip -n "$LAB-r$id" link set lan0 up
      random=""
      [ "$kind" = random ] && random=--random-fully
      ip netns exec "$LAB-r$id" iptables -t nat -A POSTROUTING -o wan -j MASQUERADE $random
      ip netns exec "$LAB-r$id" iptables -P FORWARD DROP
      ip netns exec "$LAB-r$id" iptables -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
      if [ "$kind" = blocked ]; then
        ip netns exec "$LAB-r$id" iptables -A FORWARD -p udp -j DROP
      fi
      ip netns exec "$LAB-r$id" iptables -A FORWARD -i lan0 -j ACCEPT
      # Like home routers, it firewalls its own WAN side. Without this, a
      # peer's probe that arrives before the host's own first packet leaves
      # a conntrack entry for the router itself, and the host's packet to
      # that peer then gets a new source port (docs/nat-lab.md).
      ip netns exec "$LAB-r$id" iptables -A INPUT -i wan -m conntrack --ctstate NEW -j DROP
      hosts="h$id"
      [ "$kind" = lan ] && hosts="h$id h${id}b"
      n=2
      for h in $hosts; do
        lab_ns "$h"
        lab_wire "$h" eth0 10.$id.0.$n/24 "r$id" lan0
        ip -n "$LAB-$h" route add default via 10.$id.0.1
        n=$((n + 1))
      done
      ;;
    portmap)
      lab_site_portmap "$id" || return 1
      ;;
    *)
      lab_say "lab: unknown site kind $kind"
      return 1
      ;;
  esac
  LAB_SITES="$LAB_SITES $id"
}

# A random NAT whose router runs miniupnpd (NAT-PMP, PCP, UPnP-IGD): a
# host that asks gets a port forwarded, and what it sends from that port
# leaves from it. miniupnpd drives iptables through the legacy tables, so
# this router's rules are all there. It refuses to map for a router whose
# WAN address is private or reserved (all documentation ranges are) unless
# STUN shows the WAN side unfiltered and unNATed: stund on the public side
# answers its check, and the router lets those answers in. Its own traffic
# is not masqueraded (miniupnpd's STUN check needs its real ports).
lab_site_portmap() { # id
  local id=$1 ipt
  command -v miniupnpd >/dev/null && command -v stund >/dev/null && command -v iptables-legacy >/dev/null ||
    { lab_say "lab: a portmap site needs miniupnpd, stund and iptables-legacy"; return 1; }
  ipt="ip netns exec $LAB-r$id iptables-legacy"
  lab_ns "r$id"
  ip netns exec "$LAB-r$id" sysctl -qw net.ipv4.ip_forward=1
  lab_wire "r$id" wan $PUBLIC_NET.$((20 + id))/24 net br0
  ip -n "$LAB-r$id" link add lan0 type bridge
  ip -n "$LAB-r$id" addr add 10.$id.0.1/24 dev lan0
  ip -n "$LAB-r$id" link set lan0 up
  $ipt -t nat -N MINIUPNPD
  $ipt -t nat -A PREROUTING -i wan -j MINIUPNPD
  $ipt -t nat -N MINIUPNPD-POSTROUTING
  $ipt -t nat -A POSTROUTING -o wan -j MINIUPNPD-POSTROUTING
  $ipt -t nat -A POSTROUTING -s 10.$id.0.0/24 -o wan -j MASQUERADE --random-fully
  $ipt -N MINIUPNPD
  $ipt -P FORWARD DROP
  $ipt -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
  $ipt -A FORWARD -i wan ! -o wan -j MINIUPNPD
  $ipt -A FORWARD -i lan0 -j ACCEPT
  $ipt -A INPUT -i wan -p udp -s $PUBLIC_NET.10/31 --sport 3480:3481 -j ACCEPT
  $ipt -A INPUT -i wan -m conntrack --ctstate NEW -j DROP
  lab_ns "h$id"
  lab_wire "h$id" eth0 10.$id.0.2/24 "r$id" lan0
  ip -n "$LAB-h$id" route add default via 10.$id.0.1
  if [ -z "${LAB_STUND:-}" ]; then
    lab_spawn pub "$LAB_LOG/stund.log" stund -h $PUBLIC_NET.10 -a $PUBLIC_NET.11 -p 3480 -o 3481
    LAB_STUND=$LAB_LAST_PID
  fi
  sleep 0.2 # stund binds
  rm -f "$LAB_LOG/miniupnpd$id.leases" # a mapping an earlier lab left must not come back
  lab_portmap_start "$id" yes
}

# (Re)starts miniupnpd on a portmap site's router; with natpmp "no" it
# answers UPnP-IGD only, as most home routers do. A running one is stopped
# first (it deletes its mappings as it goes).
lab_portmap_start() { # id yes|no
  local id=$1 i=0 pid ready="Listening for NAT-PMP"
  [ "$2" = no ] && ready="HTTP listening"
  if [ -s "$LAB_LOG/miniupnpd$id.pid" ]; then
    pid=$(cat "$LAB_LOG/miniupnpd$id.pid")
    kill "$pid" 2>/dev/null || true
    # Bounded: 50 x 0.1 s for it to go.
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do
      sleep 0.1
      i=$((i + 1))
    done
    rm -f "$LAB_LOG/miniupnpd$id.pid"
    i=0
  fi
  cat >"$LAB_LOG/miniupnpd$id.conf" <<EOF_CONF
ext_ifname=wan
listening_ip=lan0
enable_natpmp=$2
enable_upnp=yes
ext_perform_stun=yes
ext_stun_host=$PUBLIC_NET.10
ext_stun_port=3480
lease_file=$LAB_LOG/miniupnpd$id.leases
secure_mode=yes
system_uptime=no
min_lifetime=120
max_lifetime=86400
allow 1024-65535 10.$id.0.0/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
EOF_CONF
  lab_spawn "r$id" "$LAB_LOG/miniupnpd$id.log" miniupnpd -d -f "$LAB_LOG/miniupnpd$id.conf" \
    -P "$LAB_LOG/miniupnpd$id.pid"
  # Bounded: 100 x 0.1 s for its STUN check (about 10 ms here) and its
  # last socket.
  until grep -q "$ready" "$LAB_LOG/miniupnpd$id.log" 2>/dev/null || [ $i -ge 100 ]; do
    sleep 0.1
    i=$((i + 1))
  done
  sleep 0.3 # the SSDP socket, opened after the line
  grep -q "Port forwarding is now enabled" "$LAB_LOG/miniupnpd$id.log" ||
    { lab_say "lab: miniupnpd on r$id does not forward: $(tail -n 3 "$LAB_LOG/miniupnpd$id.log")"; return 1; }
}

# The port mappings miniupnpd holds on a portmap site's router, one rule
# per line (nothing when it holds none).
lab_portmap_rules() { # id
  ip netns exec "$LAB-r$1" iptables-legacy -t nat -S MINIUPNPD | grep -- '-j DNAT' || true
}

# Drops pct% of the site's packets both ways (on its router, or its host).
lab_loss() { # id pct
  local p
  p=$(awk "BEGIN{print $2 / 100}")
  if ip netns list | grep -q "^$LAB-r$1 "; then
    ip netns exec "$LAB-r$1" iptables -I FORWARD -m statistic --mode random --probability "$p" -j DROP
  else
    ip netns exec "$LAB-h$1" iptables -I INPUT -m statistic --mode random --probability "$p" -j DROP
    ip netns exec "$LAB-h$1" iptables -I OUTPUT -m statistic --mode random --probability "$p" -j DROP
  fi
}

lab_site_down() { # id
  local ns peer
  # The ends on the internet bridge go now: deleting a namespace frees its
  # links asynchronously, and the next site reuses these names.
  for peer in "$(lab_peer_name "r$1" wan)" "$(lab_peer_name "h$1" eth0)"; do
    ip -n "$LAB-net" link del "$peer" 2>/dev/null || true
  done
  for ns in "h$1" "h${1}b" "r$1"; do
    ip netns list | grep -q "^$LAB-$ns\( \|$\)" && ip netns del "$LAB-$ns"
  done
  return 0
}

# What nat_probe must see from a site's host for each kind (RFC 4787).
lab_expected_behaviour() { # kind
  case $1 in
    open) echo "mapping=none filtering=open" ;;
    consistent | lan) echo "mapping=consistent filtering=closed" ;;
    random | portmap) echo "mapping=random filtering=closed" ;;
    firewalled) echo "mapping=none filtering=closed" ;;
    blocked) echo "udp=blocked" ;;
  esac
}

# Checks a site's router really is its kind (LAB_SEEN: what it saw).
lab_selfcheck() { # id kind nat_probe
  local want
  LAB_SEEN=$(ip netns exec "$LAB-h$1" timeout 10 "$3" check $REFLECT_A $REFLECT_B || true)
  want=$(lab_expected_behaviour "$2")
  case "$LAB_SEEN" in
    "$want"*) return 0 ;;
  esac
  lab_say "lab: site $1 is not a $2 NAT: nat_probe saw '$LAB_SEEN', wanted '$want'"
  return 1
}
