#!/bin/sh
# SPDX-License-Identifier: MIT
# How fast a connection gets going again after each fault of the NAT lab's
# durability tests (tests/nat/survive.sh): for every fault, the time from
# the fault to data flowing again through the forwarded TCP connection
# (median and worst of RUNS runs; for the stopped server, from its waking),
# and the application bytes the connection sent again.
#
#   sudo tools/bench_survive.sh [build-dir]        (RUNS=5 by default)
#   RUNS=3 SCENARIOS="rebind relay_failover" sudo tools/bench_survive.sh
#
# Prints a table. A run that fails is counted and shown, never averaged in.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../build}" && pwd)
runs=${RUNS:-5}
scenarios=${SCENARIOS:-rebind server_rebind relay_failover roam suspend}
out=$(mktemp -d /tmp/kp-bench-survive.XXXXXX)
trap 'rm -rf "$out"' EXIT

median() { sort -n | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]; else print "-"}'; }
worst() { sort -n | tail -n 1; }

printf '%-15s %-32s %5s %10s %10s %14s\n' scenario fault runs "median ms" "worst ms" "resent bytes"
for sc in $scenarios; do
  : >"$out/$sc.faults"
  : >"$out/$sc.resent"
  failed=0
  i=0
  while [ $i -lt "$runs" ]; do
    i=$((i + 1))
    if ! LAB_LOG="$out/lab-$sc" "$here/../tests/nat/survive.sh" "$sc" "$build" >"$out/run.txt" 2>&1; then
      failed=$((failed + 1))
      grep 'FAILED' "$out/run.txt" | head -n 1 | sed "s/^/  run $i: /" >&2
      continue
    fi
    # "<fault> at <ms> ms: no data for <gap> ms (limit ...)"; a stopped
    # server's gap counts from its waking.
    awk '$2 == "at" && $5 == "no" {
           gap = $8; what = $1
           if (what ~ /^server-stopped-/) { s = what; gsub(/[^0-9]/, "", s); gap -= s * 1000 }
           n[what]++; print what "#" n[what], gap
         }' "$out/run.txt" >>"$out/$sc.faults"
    sed -n 's/.*client connection: .* \([0-9][0-9]*\) bytes sent again.*/\1/p' "$out/run.txt" \
      >>"$out/$sc.resent"
  done
  resent=$(median <"$out/$sc.resent")
  for f in $(awk '{print $1}' "$out/$sc.faults" | sort -u); do
    n=$(awk -v f="$f" '$1 == f' "$out/$sc.faults" | wc -l)
    med=$(awk -v f="$f" '$1 == f {print $2}' "$out/$sc.faults" | median)
    w=$(awk -v f="$f" '$1 == f {print $2}' "$out/$sc.faults" | worst)
    printf '%-15s %-32s %5s %10s %10s %14s\n' "$sc" "$f" "$n" "$med" "$w" "$resent"
  done
  [ "$failed" = 0 ] || printf '%-15s %-32s %5s\n' "$sc" "(failed runs)" "$failed"
done
