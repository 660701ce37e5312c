#!/bin/sh
# SPDX-License-Identifier: MIT
# The NAT matrix (ctest nat.matrix): kadpunch connects by key through real
# kernel NATs, client kind x server kind over every site kind of the lab
# (tests/nat/lab.sh), several trials per cell, plus a LAN pair behind one
# router and a cell with 5% loss on both uplinks. Each cell asserts its
# expected outcome and the whole matrix is printed: outcome, path, median
# time to connect, datagrams.
#
#   tests/nat/matrix.sh [build-dir]                 (as root)
#   KP_NAT_TRIALS=5 KP_NAT_KINDS="consistent random" tests/nat/matrix.sh
#   KP_NAT_TRIALS=10 tests/nat/matrix.sh            the soak: 10 trials a cell
#
# Exit: 0 every cell as expected, 1 a cell was not, 77 the lab cannot run
# here (no root, no namespaces): said plainly, never a silent pass.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../../build}" && pwd)
. "$here/lab.sh"
kadpunch=$build/node/kadpunch
probe=$build/tests/nat_probe
lab_need matrix "$kadpunch" "$probe"
trials=${KP_NAT_TRIALS:-3}
kinds=${KP_NAT_KINDS:-open consistent random firewalled blocked}
start=$(date +%s)

lab_init
lab_start_public "$kadpunch" "$probe"
lab_wait_relays "$kadpunch" 1 || exit 1 # the relay announced itself

# What a cell must end in: "direct" (any strategy, or relayed first and
# upgraded within 10 s: "direct:upgraded"), "direct:STRATEGY", or the error
# a client must see.
expect() { # client-kind server-kind
  case "$1/$2" in
    # No UDP at all: that side reaches the lab's relay over TCP, and the
    # connection runs through it. No direct path: through the relay too.
    blocked/* | */blocked | random/random) echo "relayed" ;;
    random/consistent | random/firewalled | consistent/random | firewalled/random | \
      random/lan | lan/random) echo "direct:birthday" ;;
    lan/lan) echo "direct:lan" ;;
    *) echo "direct" ;;
  esac
}

json_field() { # json name
  printf '%s' "$1" | sed -n "s/.*\"$2\":\"\{0,1\}\([^\",}]*\).*/\1/p"
}

median() { # numbers...
  printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]; else print "-"}'
}

failures=0
printf '%-11s %-14s %-17s %-7s %-36s %9s %9s\n' client server expected result path "median ms" datagrams

# One cell: a server site and a client site (or both hosts of a LAN site),
# a fresh server key, the trials, the check, one line of the table.
cell() { # client-kind server-kind [loss-pct]
  ck=$1 sk=$2 loss=${3:-0}
  want=$(expect "$ck" "$sk")
  # A birthday that missed its first 3 s ends direct by the background punch.
  also=-
  [ "$want" = direct:birthday ] && also=direct:upgraded
  hold="--wait-direct 10"
  [ "$want" = relayed ] && hold=
  [ "$loss" != 0 ] && label="$sk +${loss}%" || label=$sk
  if [ "$ck" = lan ]; then
    lab_site 1 lan
    lab_selfcheck 1 lan "$probe" || return 1
    sns=h1b cns=h1
  else
    lab_site 1 "$sk"
    lab_site 2 "$ck"
    lab_selfcheck 1 "$sk" "$probe" && lab_selfcheck 2 "$ck" "$probe" || {
      failures=$((failures + 1))
      lab_site_down 1
      lab_site_down 2
      return 0
    }
    sns=h1 cns=h2
  fi
  if [ "$loss" != 0 ]; then
    lab_loss 1 "$loss"
    lab_loss 2 "$loss"
  fi
  lab_server_key "$kadpunch"
  lab_spawn "$sns" "$LAB_LOG/serve.log" "$kadpunch" serve --key "$key" --bootstrap $BOOTSTRAP \
    --relay $RELAY
  serve_pid=$LAB_LAST_PID
  lab_wait_serving 200
  n=$trials
  results="" times="" grams="" path=""
  t=0
  while [ $t -lt "$n" ]; do
    # A connection that starts relayed is held 10 s for its upgrade: where
    # physics allows a direct path, the user gets one, at once or soon.
    # shellcheck disable=SC2086
    out=$(ip netns exec "$LAB-$cns" timeout 50 "$kadpunch" connect "$pk" --json \
      --bootstrap $BOOTSTRAP --relay $RELAY $hold 2>"$LAB_LOG/connect.err" || true)
    if [ -z "$out" ]; then
      r=no-dht
      grep -q "no DHT node answered" "$LAB_LOG/connect.err" || r="crash:$(head -c 80 "$LAB_LOG/connect.err")"
    elif [ "$(json_field "$out" ok)" = true ]; then
      r="direct:$(json_field "$out" strategy)"
      [ "$r" = direct:relayed ] && r=relayed
      [ "$r" = relayed ] && [ -n "$(json_field "$out" upgraded_ms)" ] && r=direct:upgraded
      [ "$(json_field "$out" relay_tcp)" = true ] && tcp=" tcp" || tcp=""
      times="$times $(($(json_field "$out" lookup_ms) + $(json_field "$out" handshake_ms) + $(json_field "$out" punch_ms)))"
      grams="$grams $(json_field "$out" datagrams)"
      path="$(json_field "$out" strategy)$tcp $(json_field "$out" local_nat)/$(json_field "$out" remote_nat)"
    else
      r=$(json_field "$out" error)
      path="$(json_field "$out" local_nat)/$(json_field "$out" remote_nat)"
    fi
    results="$results $r"
    case "$r" in
      "$want" | "$want":* | "$also") ;;
      *) { echo "== $ck/$label trial $t: $r"; cat "$LAB_LOG/connect.err"; } >>"$LAB_LOG/failures.log" ;;
    esac
    t=$((t + 1))
  done
  ok=0 bad=""
  for r in $results; do
    case "$r" in
      "$want" | "$want":* | "$also") ok=$((ok + 1)) ;;
      *) bad="$bad $r" ;;
    esac
  done
  result="$ok/$n"
  [ -n "$bad" ] && result="$result FAIL:$bad" && failures=$((failures + 1))
  printf '%-11s %-14s %-17s %-7s %-36s %9s %9s\n' "$ck" "$label" "$want" "$result" "${path:--}" \
    "$(median $times)" "$(median $grams)"
  lab_kill "$serve_pid"
  lab_site_down 1
  lab_site_down 2
}

for ck in $kinds; do
  for sk in $kinds; do
    cell "$ck" "$sk"
  done
done
cell lan lan
cell consistent consistent 5

lab_show_failures matrix
echo "matrix: $failures cell(s) not as expected, $(($(date +%s) - start)) s"
[ "$failures" = 0 ]
