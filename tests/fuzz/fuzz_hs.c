/* SPDX-License-Identifier: MIT */
/* Fuzz target: what a handshake and a holepunch round carry off the wire
 * (holepunch/hs_msg.h): the routed envelope, the hello and welcome inside
 * Noise, a round's plaintext inside its AEAD, and probes. The first byte
 * picks the decoder. Anything that decodes must encode again and decode to
 * the same thing. */
#include <sodium.h>
#include <string.h>

#include "holepunch/hs_msg.h"
#include "tests/fuzz/fuzz.h"

static const uint8_t key[32] = {1, 2, 3};

static void envelope(const uint8_t *data, size_t size) {
  kp_hs_wire_t w, again;
  if (kp_hs_wire_decode(data, size, &w)) return;
  uint8_t buf[1024];
  size_t len;
  KP_FUZZ_ASSERT(kp_hs_wire_encode(&w, buf, sizeof(buf), &len) == 0);
  KP_FUZZ_ASSERT(kp_hs_wire_decode(buf, len, &again) == 0);
  KP_FUZZ_ASSERT(again.mode == w.mode && again.len == w.len && again.session == w.session);
  KP_FUZZ_ASSERT(!w.len || !memcmp(again.data, w.data, w.len));
  KP_FUZZ_ASSERT(again.has_peer == w.has_peer && (!w.has_peer || kp_addr_eq(&again.peer, &w.peer)));
}

static void hello(const uint8_t *data, size_t size) {
  kp_hs_hello_t h, again;
  if (kp_hs_hello_decode(data, size, &h)) return;
  uint8_t buf[KP_HS_PAYLOAD_MAX * 2];
  size_t len;
  KP_FUZZ_ASSERT(kp_hs_hello_encode(&h, buf, sizeof(buf), &len) == 0);
  KP_FUZZ_ASSERT(kp_hs_hello_decode(buf, len, &again) == 0);
  KP_FUZZ_ASSERT(again.conn_id == h.conn_id && again.addr_count == h.addr_count &&
                 again.invite_id == h.invite_id && !strcmp(again.service, h.service));
}

static void welcome(const uint8_t *data, size_t size) {
  kp_hs_welcome_t w, again;
  if (kp_hs_welcome_decode(data, size, &w)) return;
  uint8_t buf[KP_HS_PAYLOAD_MAX * 2];
  size_t len;
  KP_FUZZ_ASSERT(kp_hs_welcome_encode(&w, buf, sizeof(buf), &len) == 0);
  KP_FUZZ_ASSERT(kp_hs_welcome_decode(buf, len, &again) == 0);
  KP_FUZZ_ASSERT(again.session == w.session && again.relay_count == w.relay_count &&
                 again.has_info == w.has_info && again.info.service_count == w.info.service_count);
}

/* The round's parser sits behind its AEAD: seal the input as the
 * plaintext, as a peer could, and open it. */
static void round_plain(const uint8_t *data, size_t size) {
  uint8_t sealed[4 + 512 + 16], nonce[12] = {1};
  if (size > 512) return;
  uint32_t round = size ? data[0] : 0;
  for (int i = 0; i < 4; i++) sealed[i] = (uint8_t)(round >> (8 * (3 - i)));
  for (int i = 0; i < 4; i++) nonce[8 + i] = sealed[i];
  unsigned long long clen;
  crypto_aead_chacha20poly1305_ietf_encrypt(sealed + 4, &clen, data, size, sealed, 4, NULL, nonce,
                                            key);
  kp_hp_round_t r, again;
  if (kp_hp_round_open(sealed, 4 + (size_t)clen, key, true, &r)) return;
  uint8_t buf[512];
  size_t len;
  KP_FUZZ_ASSERT(kp_hp_round_seal(&r, key, true, buf, sizeof(buf), &len) == 0);
  KP_FUZZ_ASSERT(kp_hp_round_open(buf, len, key, true, &again) == 0);
  KP_FUZZ_ASSERT(again.round == r.round && again.punch == r.punch &&
                 again.addr_count == r.addr_count && again.has_relay == r.has_relay);
}

static void probe(const uint8_t *data, size_t size) {
  kp_probe_t p, again;
  uint64_t id;
  uint8_t flags;
  kp_hp_round_t r;
  (void)kp_probe_peek(data, size, &id, &flags);
  (void)kp_hp_round_open(data, size, key, false, &r); /* the AEAD path itself */
  /* Authenticate the input under the key, then decode it. */
  if (size != KP_PROBE_LEN) return;
  uint8_t buf[KP_PROBE_LEN];
  memcpy(buf, data, size);
  buf[0] = KP_PROBE_FIRST_BYTE;
  crypto_generichash(buf + 45, 16, buf, 45, key, 32);
  if (kp_probe_decode(buf, sizeof(buf), key, &p)) return;
  uint8_t out[KP_PROBE_LEN];
  kp_probe_encode(&p, key, out);
  KP_FUZZ_ASSERT(kp_probe_decode(out, sizeof(out), key, &again) == 0);
  KP_FUZZ_ASSERT(again.conn_id == p.conn_id && again.flags == p.flags &&
                 again.has_observed == p.has_observed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!size) return 0;
  switch (data[0] % 5) {
    case 0: envelope(data + 1, size - 1); break;
    case 1: hello(data + 1, size - 1); break;
    case 2: welcome(data + 1, size - 1); break;
    case 3: round_plain(data + 1, size - 1); break;
    default: probe(data + 1, size - 1); break;
  }
  return 0;
}

size_t kp_fuzz_seeds(kp_fuzz_seed_t *seeds, size_t cap) {
  static uint8_t bufs[6][1024];
  size_t n = 0, len;
  kp_hs_wire_t w = {.mode = KP_HS_FROM_RELAY,
                    .data = (const uint8_t *)"abc",
                    .len = 3,
                    .has_peer = true,
                    .session = 9};
  kp_addr_parse(&w.peer, "198.51.100.7:9");
  bufs[0][0] = 0;
  if (!kp_hs_wire_encode(&w, bufs[0] + 1, 1000, &len))
    seeds[n++] = (kp_fuzz_seed_t){bufs[0], len + 1};
  kp_hs_hello_t h = {.version = KP_HS_VERSION,
                     .nat = KP_NAT_RANDOM,
                     .conn_id = 5,
                     .addr_count = 2,
                     .invite_id = 7,
                     .want_info = true};
  kp_addr_parse(&h.addrs[0], "203.0.113.9:4000");
  kp_addr_parse(&h.addrs[1], "[2001:db8::1]:4000");
  strcpy(h.service, "ssh");
  bufs[1][0] = 1;
  if (!kp_hs_hello_encode(&h, bufs[1] + 1, 1000, &len))
    seeds[n++] = (kp_fuzz_seed_t){bufs[1], len + 1};
  kp_hs_welcome_t wl = {
      .version = KP_HS_VERSION, .refusal = 2, .session = 3, .relay_count = 1, .has_info = true};
  kp_addr_parse(&wl.relays[0], "198.51.100.13:49737");
  strcpy(wl.info.name, "box");
  wl.info.service_count = 1;
  strcpy(wl.info.services[0], "web");
  bufs[2][0] = 2;
  if (!kp_hs_welcome_encode(&wl, bufs[2] + 1, 1000, &len))
    seeds[n++] = (kp_fuzz_seed_t){bufs[2], len + 1};
  /* A round's plaintext: [round, nat, punch, delay, [relay], [addrs]]. */
  static const uint8_t plain[] = {0x03, 0x96, 0x07, 0x02, 0xc3, 0x14, 0x90, 0x91,
                                  0xc4, 0x06, 203,  0,    113,  9,    0x0f, 0xa0};
  bufs[3][0] = 3;
  memcpy(bufs[3] + 1, plain, sizeof(plain));
  seeds[n++] = (kp_fuzz_seed_t){bufs[3], sizeof(plain) + 1};
  kp_probe_t p = {.flags = 3, .conn_id = 77, .nonce = {1}, .echo = {2}, .has_observed = true};
  kp_addr_parse(&p.observed, "[2001:db8::5]:7000");
  bufs[4][0] = 4;
  kp_probe_encode(&p, key, bufs[4] + 1);
  seeds[n++] = (kp_fuzz_seed_t){bufs[4], KP_PROBE_LEN + 1};
  return n < cap ? n : cap;
}
