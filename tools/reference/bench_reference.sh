#!/bin/sh
# SPDX-License-Identifier: MIT
# The JavaScript reference (hyperdht's udx-native + secret-stream) on this
# machine, for side-by-side figures with tools/bench_stream (see
# docs/benchmarks.md). Installs the packages from the npm registry into a
# scratch directory (once), then prints one table like bench_stream's.
#
#   tools/reference/bench_reference.sh [MiB]       (default 1024)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
mib=${1:-1024}
scratch=${KP_REFERENCE_DIR:-${TMPDIR:-/tmp}/kadpunch-reference}
command -v node >/dev/null && command -v npm >/dev/null || {
  echo "bench_reference: needs node and npm (apt-get install nodejs npm)" >&2
  exit 1
}
if [ ! -d "$scratch/node_modules/udx-native" ]; then
  mkdir -p "$scratch"
  (cd "$scratch" && npm install --no-audit --no-fund --loglevel=error \
    hyperdht udx-native @hyperswarm/secret-stream >/dev/null)
fi
export NODE_PATH="$scratch/node_modules"
version=$(node -p "require('$scratch/node_modules/hyperdht/package.json').version")

row() { # name, encryption, then bench.js arguments
  name=$1 enc=$2
  shift 2
  out=$("$@" 2>/dev/null) || { printf '%-26s %-22s %9s\n' "$name" "$enc" failed; return; }
  node -e '
    const r = JSON.parse(process.argv[1])
    console.log(process.argv[2].padEnd(26) + " " + process.argv[3].padEnd(22) + " " +
      r.mbps.toFixed(0).padStart(9) + " " + r.sendCpuPerGb.toFixed(2).padStart(13) + " " +
      r.recvCpuPerGb.toFixed(2).padStart(13))' "$out" "$name" "$enc"
}

# Loss as in bench_stream: a namespace whose loopback splits GSO batches
# and drops a share of UDP datagrams.
lossy() {
  loss=$1
  shift
  unshare -n sh -c "ip link set lo up && ip link set dev lo gso_max_segs 1 &&
    iptables -A INPUT -i lo -p udp -m statistic --mode random --probability $loss -j DROP &&
    exec \"\$@\"" sh "$@"
}

echo "hyperdht $version (udx-native, secret-stream), node $(node --version), $mib MiB per row"
echo
printf '%-26s %-22s %9s %13s %13s\n' transport encryption MB/s "send CPU s/GB" "recv CPU s/GB"
row "udx + secret-stream" "XChaCha20-Poly1305" node "$here/bench.js" --mib "$mib"
row "udx" "none" node "$here/bench.js" --mib "$mib" --plain
if [ "$(id -u)" = 0 ]; then
  row "udx + secret-stream, netns" "XChaCha20-Poly1305" lossy 0 node "$here/bench.js" --mib "$mib"
  row "udx + secret-stream, 1%" "XChaCha20-Poly1305" lossy 0.01 node "$here/bench.js" --mib "$mib"
fi
