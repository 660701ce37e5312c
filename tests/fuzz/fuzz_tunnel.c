/* SPDX-License-Identifier: MIT */
/* Fuzz target: relay tunnel frames (relay/uv/tunnel.h) as a TCP peer sends
 * them: a byte stream cut into frames. A frame decodes whole or asks for
 * more or is refused; never reads past what it was given; every frame that
 * decodes encodes to the same bytes. */
#include <string.h>

#include "relay/tunnel_frame.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  size_t at = 0;
  while (at < size) {
    kp_tunnel_frame_t f;
    size_t used = 0;
    int r = kp_tunnel_frame_decode(data + at, size - at, &f, &used);
    if (r <= 0) break;
    KP_FUZZ_ASSERT(used >= KP_TUNNEL_FRAME_HEAD && used <= size - at);
    KP_FUZZ_ASSERT(f.channel < KP_TUNNEL_CHANNELS);
    uint8_t out[KP_TUNNEL_FRAME_MAX];
    size_t n = kp_tunnel_frame_encode(&f, out);
    if (f.type == KP_TUNNEL_DATA || f.type == KP_TUNNEL_OPENED) {
      KP_FUZZ_ASSERT(n == used && !memcmp(out, data + at, n));
    }
    at += used;
  }
  return 0;
}

size_t kp_fuzz_seeds(kp_fuzz_seed_t *seeds, size_t cap) {
  static uint8_t buf[4 * KP_TUNNEL_FRAME_MAX];
  size_t n = 0;
  kp_tunnel_frame_t f = {.type = KP_TUNNEL_OPEN, .channel = 1};
  n += kp_tunnel_frame_encode(&f, buf + n);
  f = (kp_tunnel_frame_t){.type = KP_TUNNEL_OPENED, .channel = 1};
  kp_addr_parse(&f.addr, "198.51.100.13:40000");
  n += kp_tunnel_frame_encode(&f, buf + n);
  static const uint8_t dgram[] = {0x93, 1, 2, 3};
  f = (kp_tunnel_frame_t){.type = KP_TUNNEL_DATA, .channel = 1, .data = dgram, .len = 4};
  kp_addr_parse(&f.addr, "[2001:db8::1]:443");
  n += kp_tunnel_frame_encode(&f, buf + n);
  f = (kp_tunnel_frame_t){.type = KP_TUNNEL_CLOSE, .channel = 1};
  n += kp_tunnel_frame_encode(&f, buf + n);
  if (!cap) return 0;
  seeds[0] = (kp_fuzz_seed_t){buf, n};
  return 1;
}
