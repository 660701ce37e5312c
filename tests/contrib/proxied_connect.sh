#!/bin/sh
# SPDX-License-Identifier: MIT
# Part of dissector.decodes_capture, run inside its network namespace while
# the capture runs: a bootstrap node, a proxy that lets one key in, a
# server, and a connect through the proxy by address (so KEY? and KEY
# too). Everything on 127.0.0.1, ports 40001-40003.
#   proxied_connect.sh KADPUNCH WORK_DIR
set -eu
kp=$1
cd "$2"
"$kp" keygen -o px-server >/dev/null 2>&1
"$kp" keygen -o px-client >/dev/null 2>&1
spk=$("$kp" keygen --public -o px-server)
cpk=$("$kp" keygen --public -o px-client)
boot=127.0.0.1:40001
"$kp" dht-node --member --bind $boot >px-dht.log 2>&1 &
dht=$!
"$kp" proxy --bind 127.0.0.1:40002 --bootstrap $boot --allow "$cpk" >px-proxy.log 2>&1 &
proxy=$!
"$kp" serve --key px-server --bind 127.0.0.1:40003 --bootstrap $boot >px-serve.log 2>&1 &
serve=$!
for i in $(seq 50); do grep -q serving px-serve.log && grep -q proxying px-proxy.log && break; sleep 0.1; done
rc=0
# 60 kB each way: past the 16 stream packets after which the proxy binds
# the server's address and they go as PASS.
msg=$(head -c 60000 /dev/zero | tr '\0' x)
"$kp" connect "$spk" --key px-client --proxy 127.0.0.1:40002 --bootstrap $boot --message "$msg" \
  >/dev/null || rc=1
kill $serve $proxy $dht
wait $serve $proxy $dht || true
exit $rc
