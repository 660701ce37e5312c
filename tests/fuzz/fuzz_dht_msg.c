/* SPDX-License-Identifier: MIT */
/* Fuzz target: the DHT message codec. Anything that decodes must encode
 * again, and decode to the same message. */
#include <string.h>

#include "dht/dht_msg.h"
#include "tests/fuzz/fuzz.h"

static void same(const kp_dht_msg_t *a, const kp_dht_msg_t *b) {
  KP_FUZZ_ASSERT(a->type == b->type && a->tid == b->tid && a->command == b->command);
  KP_FUZZ_ASSERT(kp_addr_eq(&a->to, &b->to));
  KP_FUZZ_ASSERT(a->has_id == b->has_id && (!a->has_id || !memcmp(a->id, b->id, KP_ID_LEN)));
  KP_FUZZ_ASSERT(a->has_token == b->has_token &&
                 (!a->has_token || !memcmp(a->token, b->token, 32)));
  KP_FUZZ_ASSERT(a->has_target == b->has_target &&
                 (!a->has_target || !memcmp(a->target, b->target, KP_ID_LEN)));
  KP_FUZZ_ASSERT(a->nodes_len == b->nodes_len &&
                 (!a->nodes_len || !memcmp(a->nodes, b->nodes, a->nodes_len)));
  KP_FUZZ_ASSERT((a->value == NULL) == (b->value == NULL) && a->value_len == b->value_len);
  KP_FUZZ_ASSERT(!a->value_len || !memcmp(a->value, b->value, a->value_len));
  KP_FUZZ_ASSERT(a->error == b->error && a->padding == b->padding);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const int families[] = {KP_AF_INET, KP_AF_INET6};
  for (int f = 0; f < 2; f++) {
    kp_dht_msg_t m, again;
    if (kp_dht_msg_decode(data, size, families[f], &m)) continue;
    uint8_t buf[KP_DHT_MAX_DATAGRAM];
    size_t len;
    KP_FUZZ_ASSERT(kp_dht_msg_encode(&m, buf, sizeof(buf), &len) == 0);
    KP_FUZZ_ASSERT(len <= size); /* our encoding is the shortest */
    KP_FUZZ_ASSERT(kp_dht_msg_decode(buf, len, families[f], &again) == 0);
    same(&m, &again);
  }
  return 0;
}

size_t kp_fuzz_seeds(kp_fuzz_seed_t *seeds, size_t cap) {
  static uint8_t bufs[4][KP_DHT_MAX_DATAGRAM];
  static uint8_t nodes[20 * 18], value[64];
  size_t n = 0;
  for (int i = 0; i < 4 && n < cap; i++) {
    kp_dht_msg_t m = {0};
    m.type = (uint8_t)(i & 1);
    m.tid = (uint16_t)(1000 * i);
    kp_addr_parse(&m.to, i < 2 ? "198.51.100.7:49737" : "[2001:db8::1]:5");
    m.command = (uint8_t)(i * 2);
    m.has_id = m.has_token = i > 0;
    m.has_target = m.type == KP_DHT_REQUEST;
    if (m.type == KP_DHT_RESPONSE) {
      m.nodes = nodes;
      m.nodes_len = (i < 2 ? 6 : 18) * 3;
      m.value = value;
      m.value_len = sizeof(value);
      m.error = 2;
    } else {
      m.padding = 40;
    }
    size_t len;
    if (kp_dht_msg_encode(&m, bufs[i], sizeof(bufs[i]), &len) == 0)
      seeds[n++] = (kp_fuzz_seed_t){bufs[i], len};
  }
  return n;
}
