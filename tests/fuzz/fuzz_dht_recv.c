/* SPDX-License-Identifier: MIT */
/* Fuzz target: the DHT state machine's network entry point. Each input is a
 * datagram from one peer, followed by a tick. Whatever arrives, every
 * datagram the node sends fits 1200 bytes, every reply to the fuzzer's
 * (never token-proven) address is no larger than what it sent, and the
 * node's tables and queues stay within their bounds. */
#include <string.h>

#include "dht/dht_id.h"
#include "dht/dht_internal.h"
#include "dht/dht_swarm.h"
#include "tests/fuzz/fuzz.h"

static kp_dht_t *dht;
static kp_dht_swarm_t *swarm;
static uint64_t now = 1000;
static kp_addr_t peer;
static size_t input_len;
static kp_rng_seeded_t rng_state;

static void on_send(void *ctx, int sock, const kp_addr_t *to, const uint8_t *data, size_t len) {
  (void)ctx, (void)sock;
  KP_FUZZ_ASSERT(len <= KP_DHT_MAX_DATAGRAM);
  kp_dht_msg_t m;
  KP_FUZZ_ASSERT(kp_dht_msg_decode(data, len, KP_AF_INET, &m) == 0); /* we send only valid ones */
  if (m.type == KP_DHT_RESPONSE && kp_addr_eq(to, &peer)) KP_FUZZ_ASSERT(len <= input_len);
}

static void on_user(void *ctx, kp_dht_t *d, const kp_dht_request_t *req, uint64_t t) {
  (void)ctx;
  kp_dht_reply_to_t rt;
  kp_dht_reply_to_init(&rt, req);
  static const uint8_t value[900];
  kp_dht_reply(d, &rt, value, sizeof(value), 0, t);
}

static void setup(void) {
  kp_dht_config_t c;
  kp_dht_config_defaults(&c);
  c.mode = KP_NODE_MEMBER;
  kp_addr_parse(&c.local, "10.0.0.1:4000");
  kp_rng_seeded_init(&rng_state, 1);
  c.rng = kp_rng_seeded(&rng_state);
  kp_dht_io_t io = {.send = on_send};
  if (kp_dht_new(&c, &io, now, &dht)) kp_fuzz_fail(__FILE__, __LINE__, "kp_dht_new");
  /* The swarm's handlers (16-22) are fuzzed too; command 40 is a plain one. */
  if (kp_dht_swarm_new(dht, NULL, &swarm)) kp_fuzz_fail(__FILE__, __LINE__, "kp_dht_swarm_new");
  kp_dht_register(dht, 40, on_user, NULL, 900);
  for (uint32_t i = 0; i < 60; i++) {
    kp_addr_t a;
    uint8_t id[KP_ID_LEN];
    kp_addr_set_v4(&a, (10u << 24) | (2u << 16) | i, 4000);
    kp_dht_id_from_addr(&a, id);
    kp_dht_table_add(&dht->table, id, &a, 1, NULL);
  }
  kp_addr_parse(&peer, "10.9.9.9:5000");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!dht) setup();
  input_len = size;
  kp_dht_recv(dht, &peer, data, size, now);
  now += 250;
  kp_dht_tick(dht, now);
  KP_FUZZ_ASSERT(dht->table.count <= 256u * KP_DHT_K);
  KP_FUZZ_ASSERT(dht->rpc.inflight.count <= dht->rpc.cfg.max_inflight);
  KP_FUZZ_ASSERT(dht->rpc.queue.count <= dht->rpc.cfg.max_queued);
  return 0;
}

size_t kp_fuzz_seeds(kp_fuzz_seed_t *seeds, size_t cap) {
  static uint8_t bufs[11][KP_DHT_MAX_DATAGRAM];
  static const uint8_t commands[] = {0, 1, 2, 3, 40, 18, 2, 0, 16, 19, 22};
  static uint8_t value[6] = {10, 2, 0, 5, 0x0f, 0xa0};
  size_t n = 0;
  for (int i = 0; i < 11 && n < cap; i++) {
    kp_dht_msg_t m = {0};
    m.type = i == 7 ? KP_DHT_RESPONSE : KP_DHT_REQUEST;
    m.tid = (uint16_t)i;
    kp_addr_parse(&m.to, "10.0.0.1:4000");
    m.command = commands[i];
    m.has_target = m.command == 2 || m.command >= 16;

    if (m.command == 3) {
      m.value = value;
      m.value_len = sizeof(value);
    }
    m.padding = i == 6 ? 300 : 0;
    size_t len;
    if (kp_dht_msg_encode(&m, bufs[i], sizeof(bufs[i]), &len) == 0)
      seeds[n++] = (kp_fuzz_seed_t){bufs[i], len};
  }
  return n;
}
