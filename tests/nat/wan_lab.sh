# SPDX-License-Identifier: MIT
# The emulated WAN path (sourced by wanem.sh and tools/wan/bench_wan.sh,
# which set KP_NAT_DIR to this directory and WANEM to the emulator):
# two hosts joined through a third namespace where wanem plays the path.
#
#   $LAB-a   host A, eth0 198.51.100.1/24
#   $LAB-b   host B, eth0 198.51.100.2/24
#   $LAB-m   the path: legs la (to A's eth0) and lb (to B's eth0), no
#            addresses; wanem forwards frames between them
#
# One L2 segment: A and B reach each other directly (ARP crosses wanem
# untouched), so whatever A sends B - UDP, TCP, anything - takes the same
# emulated path. The hosts' eth0 hand over single frames (gso_max_segs 1:
# TCP segments and UDP GSO batches are cut to MTU-sized frames before the
# wire, as on a real NIC), and their TCP may grow windows to 128 MiB so it
# is never limited by buffers on a long fat path. IPv6 is off (no router
# or neighbour chatter on the legs). Every veth end spreads its receive
# processing over all CPUs (RPS): a frame sent into a veth is otherwise
# received, up through the host's TCP or UDP, on the sender's CPU.
#
# Safety as in lab.sh (sourced from it): every namespace is ours ($LAB-*,
# with the PID in $LAB), nothing is added to the root namespace, every
# process is recorded and killed and every namespace deleted on exit, error
# or signal.

LAB=${LAB:-kpw$$}
. "${KP_NAT_DIR:?the directory of lab.sh}/lab.sh"

WAN_A=198.51.100.1
WAN_B=198.51.100.2
WAN_PID=""

WAN_RPS=$(printf '%x' $(( (1 << $(nproc)) - 1 )))

wan_rps() { # ns ifname
  ip netns exec "$LAB-$1" sh -c "echo $WAN_RPS > /sys/class/net/$2/queues/rx-0/rps_cpus" 2>/dev/null ||
    true
}

wan_host() { # name addr peer-leg
  lab_ns "$1"
  ip -n "$LAB-$1" link add eth0 type veth peer name "$3" netns "$LAB-m"
  ip netns exec "$LAB-$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
  ip -n "$LAB-$1" link set eth0 gso_max_segs 1
  ip -n "$LAB-$1" addr add "$2/24" dev eth0
  ip -n "$LAB-$1" link set eth0 up
  ip netns exec "$LAB-$1" sysctl -qw net.ipv4.tcp_rmem="4096 131072 134217728" \
    net.ipv4.tcp_wmem="4096 16384 134217728"
}

# Builds the three namespaces (after lab_require).
wan_init() {
  trap 'lab_cleanup' EXIT
  trap 'lab_cleanup; exit 130' INT TERM HUP PIPE
  mkdir -p "$LAB_LOG"
  lab_ns m
  ip netns exec "$LAB-m" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
  wan_host a $WAN_A la
  wan_host b $WAN_B lb
  ip -n "$LAB-m" link set la up
  ip -n "$LAB-m" link set lb up
  wan_rps a eth0
  wan_rps b eth0
  wan_rps m la
  wan_rps m lb
}

# (Re)starts the path with these wanem options; the old one's counters go
# to $LAB_LOG/wanem.stats. Waits until it runs (bounded: 30 s; opening
# its packet sockets can wait on the kernel's RCU on a busy machine).
wan_path() { # wanem options...
  local i=0
  wan_stop
  # The spawn truncates the log in the background: a stale "ready" from the
  # last run must not be read before that.
  rm -f "$LAB_LOG/wanem.log"
  lab_spawn m "$LAB_LOG/wanem.log" "$WANEM" --leg-a la --leg-b lb --stats "$LAB_LOG/wanem.stats" "$@"
  WAN_PID=$LAB_LAST_PID
  until grep -q ready "$LAB_LOG/wanem.log" 2>/dev/null || [ $i -ge 300 ]; do
    sleep 0.1
    i=$((i + 1))
  done
  grep -q ready "$LAB_LOG/wanem.log" && return 0
  lab_say "wan: wanem did not start ($(kill -0 "$WAN_PID" 2>/dev/null && echo running || echo exited))"
  cat "$LAB_LOG/wanem.log" >&2
  ps -o pid,stat,etime,wchan:30,cmd --ppid "$WAN_PID" -p "$WAN_PID" >&2 || true
  return 1
}

# Stops the path; its counters are then in $LAB_LOG/wanem.stats.
wan_stop() {
  [ -n "$WAN_PID" ] || return 0
  lab_kill "$WAN_PID"
  WAN_PID=""
}

# A counter of one direction from the last stopped path: ab (A to B) or ba.
wan_stat() { # ab|ba name
  local dir
  [ "$1" = ab ] && dir="la->lb" || dir="lb->la"
  awk -v d="$dir" -v k="$2" '$2 == d { for (i = 3; i < NF; i += 2) if ($i == k) print $(i + 1) }' \
    "$LAB_LOG/wanem.stats"
}

# Waits (bounded: 30 s) for a receiver started with lab_spawn to listen.
wan_wait_listening() { # log
  local i=0
  until grep -q listening "$1" 2>/dev/null || [ $i -ge 300 ]; do
    sleep 0.1
    i=$((i + 1))
  done
}

# A field of a `key value` line.
wan_field() { # line key
  echo "$1" | awk -v k="$2" '{ for (i = 1; i < NF; i++) if ($i == k) { print $(i + 1); exit } }'
}
