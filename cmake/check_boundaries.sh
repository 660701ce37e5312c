#!/bin/sh
# SPDX-License-Identifier: MIT
# The protocol cores are sans-IO: time comes in as an argument, randomness
# from the injected kp_rng_t, bytes in and out through the caller. This
# fails the build when one of their archives reaches for libuv, a clock, the
# system's randomness, a socket, a file or the process's standard streams.
#
#   check_boundaries.sh libkp_common.a libkp_dht.a ...
set -eu
forbidden='^(uv_.*|clock_gettime|clock_getres|gettimeofday|time|times|ftime|timespec_get'
forbidden="$forbidden|randombytes_.*|getrandom|getentropy|arc4random.*|rand|random|srand|srandom"
forbidden="$forbidden|kp_rng_system|crypto_(sign|box|kx)_keypair"
forbidden="$forbidden|socket|bind|connect|accept|listen|send|sendto|sendmsg|sendmmsg|recv|recvfrom|recvmsg|recvmmsg"
forbidden="$forbidden|open|open64|openat|fopen|fopen64|read|write|close|poll|ppoll|epoll_.*|select"
forbidden="$forbidden|printf|fprintf|vfprintf|puts|fputs|fwrite|perror|getenv|stdin|stdout|stderr)$"
status=0
for archive in "$@"; do
  bad=$(nm -u "$archive" | awk '{print $NF}' | sed 's/@.*//' | grep -E "$forbidden" | sort -u | tr '\n' ' ')
  if [ -n "$bad" ]; then
    echo "$(basename "$archive"): a protocol core calls $bad(glue belongs in a uv/ folder or the node layer)" >&2
    status=1
  fi
done
exit $status
