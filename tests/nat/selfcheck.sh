#!/bin/sh
# SPDX-License-Identifier: MIT
# The NAT lab's self-check (ctest nat.selfcheck): builds one site of every
# kind and checks, with nat_probe, that each behaves as its kind in RFC 4787
# terms (mapping and filtering), before the matrix trusts them.
#
#   tests/nat/selfcheck.sh [build-dir]      (as root)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../../build}" && pwd)
. "$here/lab.sh"
probe=$build/tests/nat_probe
[ -x "$probe" ] || { echo "selfcheck: build first ($probe is missing)"; exit 2; }
lab_init
lab_spawn pub "$LAB_LOG/reflect.log" "$probe" reflect $REFLECT_A $REFLECT_B
failed=0
id=1
for kind in open consistent random firewalled blocked lan; do
  lab_site $id $kind
  if lab_selfcheck $id $kind "$probe"; then
    printf '%-11s ok      %s\n' "$kind" "$LAB_SEEN"
  else
    printf '%-11s WRONG   %s\n' "$kind" "$LAB_SEEN"
    failed=1
  fi
  id=$((id + 1))
done
exit $failed
