/* SPDX-License-Identifier: MIT */
/* Fuzz target: a blind relay's input (relay/relay.h). The input is a
 * script of datagrams from a handful of addresses at a growing clock:
 * [source 0-7][ms step][length][bytes]..., run through one relay with small
 * tables, so pairing, forwarding, refusals and expiry all happen. Whatever
 * comes, the relay answers only what it may: a reply the size of a control
 * datagram, a forward only between two addresses that paired. */
#include <string.h>

#include "relay/relay.h"
#include "tests/fuzz/fuzz.h"

static void source(uint8_t i, kp_addr_t *a) {
  kp_addr_set_v4(a, 0xcb007100u + (i % 4), (uint16_t)(1000 + i)); /* two ports per IP */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kp_relay_config_t cfg;
  kp_relay_config_defaults(&cfg);
  cfg.max_sessions = 3;
  cfg.max_pending = 4;
  cfg.sessions_per_ip = 2;
  cfg.pending_per_ip = 2;
  cfg.idle_ms = 500;
  cfg.pending_ms = 300;
  cfg.session_rate = 4000;
  kp_relay_t *r;
  kp_rng_t rng = {0};
  if (kp_relay_new(&cfg, &rng, &r)) return 0;
  uint64_t now = 1;
  size_t at = 0;
  while (at + 3 <= size) {
    uint8_t src = data[at] & 7, step = data[at + 1];
    size_t len = data[at + 2];
    at += 3;
    if (len > size - at) len = size - at;
    kp_addr_t from, to, other;
    source(src, &from);
    now += step;
    uint8_t reply[KP_RELAY_CTRL_LEN];
    kp_relay_action_t act = kp_relay_input(r, &from, data + at, len, now, &to, &other, reply);
    if (act == KP_RELAY_REPLY || act == KP_RELAY_REPLY_BOTH) {
      kp_relay_ctrl_t c;
      KP_FUZZ_ASSERT(kp_relay_ctrl_decode(reply, sizeof(reply), &c) == 0);
      KP_FUZZ_ASSERT(kp_addr_eq(&to, &from));
    }
    if (act == KP_RELAY_FORWARD) KP_FUZZ_ASSERT(!kp_addr_eq(&to, &from));
    at += len;
    if (step > 200) kp_relay_tick(r, now);
  }
  kp_relay_stats_t st;
  kp_relay_stats(r, &st);
  KP_FUZZ_ASSERT(st.sessions <= 3 && st.pending <= 4);
  kp_relay_free(r);
  return 0;
}

size_t kp_fuzz_seeds(kp_fuzz_seed_t *seeds, size_t cap) {
  /* Two peers pairing, then data both ways. */
  static uint8_t buf[4 * (3 + KP_RELAY_CTRL_LEN) + 2 * (3 + 40)];
  uint8_t secret[64] = {5};
  kp_relay_pair_t pair;
  kp_relay_pair_derive(secret, &pair);
  size_t n = 0;
  for (uint8_t role = 0; role < 2; role++)
    for (int again = 0; again < 2; again++) {
      kp_relay_ctrl_t c;
      buf[n++] = role, buf[n++] = 10, buf[n++] = KP_RELAY_CTRL_LEN;
      kp_relay_pair_request(&pair, role, &c);
      kp_relay_ctrl_encode(&c, buf + n);
      n += KP_RELAY_CTRL_LEN;
    }
  for (uint8_t s = 0; s < 2; s++) {
    buf[n++] = s, buf[n++] = 5, buf[n++] = 40;
    memset(buf + n, 0x41, 40);
    n += 40;
  }
  if (!cap) return 0;
  seeds[0] = (kp_fuzz_seed_t){buf, n};
  return 1;
}
