/* SPDX-License-Identifier: MIT */
/* dht/: the codec, routing table, tokens, NAT bookkeeping and RPC layer as
 * units; the whole state machine on the simulator is in test_dht_sim.c. */
#include <sodium.h>

#include "common/rng.h"
#include "dht/dht_id.h"
#include "dht/dht_msg.h"
#include "dht/dht_nat.h"
#include "dht/dht_rpc.h"
#include "dht/dht_table.h"
#include "dht/dht_token.h"
#include "tests/harness/test.h"
#include "tests/unit/test_dht.h"

/* ---- Codec --------------------------------------------------------------- */

static void fill_request(kp_dht_msg_t *m, uint8_t *value_buf) {
  memset(m, 0, sizeof(*m));
  m->type = KP_DHT_REQUEST;
  m->tid = 0xbeef;
  kp_addr_parse(&m->to, "198.51.100.7:49737");
  m->has_id = true;
  memset(m->id, 0x11, sizeof(m->id));
  m->has_token = true;
  memset(m->token, 0x22, sizeof(m->token));
  m->command = KP_DHT_CMD_FIND_NODE;
  m->has_target = true;
  memset(m->target, 0x33, sizeof(m->target));
  memset(value_buf, 0x44, 100);
  m->value = value_buf;
  m->value_len = 100;
}

static void check_same(const kp_dht_msg_t *a, const kp_dht_msg_t *b) {
  KP_CHECK_EQ(a->type, b->type);
  KP_CHECK_EQ(a->tid, b->tid);
  KP_CHECK(kp_addr_eq(&a->to, &b->to));
  KP_CHECK_EQ(a->has_id, b->has_id);
  if (a->has_id) KP_CHECK_MEM(a->id, b->id, KP_ID_LEN);
  KP_CHECK_EQ(a->has_token, b->has_token);
  if (a->has_token) KP_CHECK_MEM(a->token, b->token, 32);
  KP_CHECK_EQ(a->command, b->command);
  KP_CHECK_EQ(a->has_target, b->has_target);
  if (a->has_target) KP_CHECK_MEM(a->target, b->target, KP_ID_LEN);
  KP_CHECK_EQ(a->nodes_len, b->nodes_len);
  if (a->nodes_len) KP_CHECK_MEM(a->nodes, b->nodes, a->nodes_len);
  KP_CHECK_EQ(a->value == NULL, b->value == NULL);
  KP_CHECK_EQ(a->value_len, b->value_len);
  if (a->value_len) KP_CHECK_MEM(a->value, b->value, a->value_len);
  KP_CHECK_EQ(a->error, b->error);
}

static void test_msg_roundtrip(void) {
  uint8_t buf[KP_DHT_MAX_DATAGRAM], value[100], nodes[20 * 18];
  size_t len;
  kp_dht_msg_t m, d;
  fill_request(&m, value);
  KP_CHECK_OK(kp_dht_msg_encode(&m, buf, sizeof(buf), &len));
  KP_CHECK_OK(kp_dht_msg_decode(buf, len, KP_AF_INET, &d));
  check_same(&m, &d);

  /* A response with 20 IPv6 nodes, an empty value and an error code. */
  memset(&m, 0, sizeof(m));
  m.type = KP_DHT_RESPONSE;
  m.tid = 1;
  kp_addr_parse(&m.to, "[2001:db8::5]:7");
  for (int i = 0; i < 20 * 18; i++) nodes[i] = (uint8_t)i;
  m.nodes = nodes;
  m.nodes_len = 20 * 18;
  m.value = value;
  m.value_len = 0;
  m.error = KP_DHT_ERR_BAD_TOKEN;
  m.command = 200;
  KP_CHECK_OK(kp_dht_msg_encode(&m, buf, sizeof(buf), &len));
  KP_CHECK_OK(kp_dht_msg_decode(buf, len, KP_AF_INET6, &d));
  check_same(&m, &d);
  /* The same bytes received on an IPv4 socket: the addresses do not fit. */
  KP_CHECK_EQ(kp_dht_msg_decode(buf, len, KP_AF_INET, &d), KP_EFIELD);
}

static void test_msg_golden(void) {
  /* A PING from an ephemeral node to 198.51.100.7:49737, tid 0x1234
   * (docs/protocol.md shows the same bytes). */
  static const uint8_t golden[] = {0x9b,                                     /* array of 11 */
                                   0x01,                                     /* version 1 */
                                   0x00,                                     /* request */
                                   0xcd, 0x12, 0x34,                         /* tid */
                                   0xc4, 0x06, 198,  51, 100, 7, 0xc2, 0x49, /* to */
                                   0xc0,                                     /* id: none */
                                   0xc0,                                     /* token: none */
                                   0x00,                                     /* command PING */
                                   0xc0, 0xc0, 0xc0, /* target, nodes, value */
                                   0x00};            /* error */
  kp_dht_msg_t m = {0};
  m.type = KP_DHT_REQUEST;
  m.tid = 0x1234;
  kp_addr_parse(&m.to, "198.51.100.7:49737");
  m.command = KP_DHT_CMD_PING;
  uint8_t buf[64];
  size_t len;
  KP_CHECK_OK(kp_dht_msg_encode(&m, buf, sizeof(buf), &len));
  KP_CHECK_EQ(len, sizeof(golden));
  KP_CHECK_MEM(buf, golden, sizeof(golden));
  kp_dht_msg_t d;
  KP_CHECK_OK(kp_dht_msg_decode(golden, sizeof(golden), KP_AF_INET, &d));
  check_same(&m, &d);
  KP_CHECK(kp_dht_msg_is_control(golden, sizeof(golden)));
}

static void test_msg_truncations(void) {
  uint8_t buf[KP_DHT_MAX_DATAGRAM + 8], value[100];
  size_t len;
  kp_dht_msg_t m, d;
  fill_request(&m, value);
  KP_CHECK_OK(kp_dht_msg_encode(&m, buf, sizeof(buf), &len));
  for (size_t i = 0; i < len; i++) {
    int err = kp_dht_msg_decode(buf, i, KP_AF_INET, &d);
    KP_CHECK_MSG(err == KP_ETRUNCATED, "prefix of %zu bytes: %s", i, kp_err_name(err));
  }
  buf[len] = 0x00;
  KP_CHECK_EQ(kp_dht_msg_decode(buf, len + 1, KP_AF_INET, &d), KP_EMALFORMED);
  /* The encoder refuses every buffer too small, writing nothing past it. */
  for (size_t cap = 0; cap < len; cap++) {
    memset(buf, 0xaa, sizeof(buf));
    size_t out = 99;
    KP_CHECK_EQ(kp_dht_msg_encode(&m, buf, cap, &out), KP_ETOOBIG);
    KP_CHECK_EQ(out, 0);
    KP_CHECK(buf[cap] == 0xaa);
  }
}

static void test_msg_rejects(void) {
  uint8_t buf[2048], value[KP_DHT_MAX_VALUE + 1];
  size_t len;
  kp_dht_msg_t m, d;
  fill_request(&m, value);

  /* Over the datagram limit. */
  memset(buf, 0x90, sizeof(buf));
  KP_CHECK_EQ(kp_dht_msg_decode(buf, KP_DHT_MAX_DATAGRAM + 1, KP_AF_INET, &d), KP_ETOOBIG);
  m.value_len = KP_DHT_MAX_VALUE + 1;
  KP_CHECK_EQ(kp_dht_msg_encode(&m, buf, sizeof(buf), &len), KP_ETOOBIG);
  m.value_len = 100;

  /* Hand-built variants, each wrong in one way. */
  static const struct {
    const char *why;
    uint8_t bytes[32];
    size_t len;
    int err;
  } bad[] = {
      {"version 2",
       {0x9b, 2, 0, 1, 0xc4, 6, 1, 2, 3, 4, 0, 1, 0xc0, 0xc0, 0, 0xc0, 0xc0, 0xc0, 0},
       19,
       KP_EVERSION},
      {"10 fields",
       {0x9a, 1, 0, 1, 0xc4, 6, 1, 2, 3, 4, 0, 1, 0xc0, 0xc0, 0, 0xc0, 0xc0, 0xc0},
       18,
       KP_EMALFORMED},
      {"type 2",
       {0x9b, 1, 2, 1, 0xc4, 6, 1, 2, 3, 4, 0, 1, 0xc0, 0xc0, 0, 0xc0, 0xc0, 0xc0, 0},
       19,
       KP_EFIELD},
      {"to of 5 bytes",
       {0x9b, 1, 0, 1, 0xc4, 5, 1, 2, 3, 4, 0, 0xc0, 0xc0, 0, 0xc0, 0xc0, 0xc0, 0},
       18,
       KP_EFIELD},
      {"tid too big",
       {0x9b, 1, 0, 0xce, 0,    1,    0, 0,    0xc4, 6,    1, 2,
        3,    4, 0, 1,    0xc0, 0xc0, 0, 0xc0, 0xc0, 0xc0, 0},
       23,
       KP_EFIELD},
      {"id of 3 bytes",
       {0x9b, 1, 0, 1, 0xc4, 6, 1, 2, 3, 4, 0, 1, 0xc4, 3, 1, 2, 3, 0xc0, 0, 0xc0, 0xc0, 0xc0, 0},
       23,
       KP_EFIELD},
      {"nodes of 7 bytes",
       {0x9b, 1,    1,    1, 0xc4, 6, 1, 2, 3, 4, 0, 1,    0xc0, 0xc0,
        0,    0xc0, 0xc4, 7, 1,    2, 3, 4, 5, 6, 7, 0xc0, 0},
       27,
       KP_EFIELD},
      {"error in a request",
       {0x9b, 1, 0, 1, 0xc4, 6, 1, 2, 3, 4, 0, 1, 0xc0, 0xc0, 0, 0xc0, 0xc0, 0xc0, 5},
       19,
       KP_EFIELD},
      {"padding on a response",
       {0x9c, 1, 1, 1, 0xc4, 6, 1, 2, 3, 4, 0, 1, 0xc0, 0xc0, 0, 0xc0, 0xc0, 0xc0, 0, 0xc4, 1, 0},
       22,
       KP_EFIELD},
      {"a map", {0x81, 0, 0}, 3, KP_EMALFORMED},
      {"nested array",
       {0x9b, 1, 0, 0x91, 1, 0xc4, 6, 1, 2, 3, 4, 0, 1, 0xc0, 0xc0, 0, 0xc0, 0xc0, 0xc0, 0},
       20,
       KP_EMALFORMED},
      {"empty array", {0x90}, 1, KP_EMALFORMED},
      {"version is a string", {0x9b, 0xa1, 'x'}, 3, KP_ETRUNCATED},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    int err = kp_dht_msg_decode(bad[i].bytes, bad[i].len, KP_AF_INET, &d);
    KP_CHECK_MSG(err == bad[i].err, "%s: expected %s, got %s", bad[i].why, kp_err_name(bad[i].err),
                 kp_err_name(err));
  }
}

static void test_msg_random(void) {
  /* Random datagrams and mutations of valid ones: never a crash; every
   * rejection is one of the documented reasons. */
  kp_rng_seeded_t st;
  kp_rng_seeded_init(&st, 1);
  kp_rng_t rng = kp_rng_seeded(&st);
  uint8_t valid[KP_DHT_MAX_DATAGRAM], buf[KP_DHT_MAX_DATAGRAM], value[100];
  size_t vlen;
  kp_dht_msg_t m, d;
  fill_request(&m, value);
  KP_CHECK_OK(kp_dht_msg_encode(&m, valid, sizeof(valid), &vlen));
  unsigned accepted = 0;
  for (int i = 0; i < 300000; i++) {
    size_t len;
    if (i & 1) {
      len = kp_rng_below(&rng, 300);
      kp_rng_fill(&rng, buf, len);
      if (len) buf[0] = (uint8_t)(0x9b + (i % 3 == 0));
    } else {
      len = vlen;
      memcpy(buf, valid, vlen);
      for (unsigned f = 1 + kp_rng_below(&rng, 3); f; f--)
        buf[kp_rng_below(&rng, (uint32_t)vlen)] ^= (uint8_t)(1 + kp_rng_below(&rng, 255));
    }
    int err = kp_dht_msg_decode(buf, len, KP_AF_INET, &d);
    KP_CHECK_MSG(err == 0 || err == KP_EMALFORMED || err == KP_ETRUNCATED || err == KP_EFIELD ||
                     err == KP_EVERSION || err == KP_ETOOBIG,
                 "unexpected %s", kp_err_name(err));
    accepted += err == 0;
  }
  KP_CHECK(accepted > 0); /* some mutations stay valid: the test reaches the fields */
}

static void test_msg_padding(void) {
  uint8_t buf[KP_DHT_MAX_DATAGRAM];
  kp_dht_msg_t m = {0}, d;
  m.type = KP_DHT_REQUEST;
  kp_addr_parse(&m.to, "10.0.0.1:1");
  m.command = KP_DHT_CMD_PING;
  size_t base;
  KP_CHECK_OK(kp_dht_msg_encode(&m, buf, sizeof(buf), &base));
  for (size_t want = 0; want <= KP_DHT_MAX_DATAGRAM; want++) {
    size_t len;
    KP_CHECK_OK(kp_dht_msg_encode_min(&m, want, buf, sizeof(buf), &len));
    if (want <= base) {
      KP_CHECK_EQ(len, base);
      continue;
    }
    KP_CHECK_MSG(len >= want && len <= want + 3, "want %zu got %zu", want, len);
    KP_CHECK_OK(kp_dht_msg_decode(buf, len, KP_AF_INET, &d));
    KP_CHECK(d.padding > 0);
  }
  /* The reply bound really bounds a full reply. */
  kp_dht_msg_t r = {0};
  uint8_t nodes[20 * 18] = {0};
  r.type = KP_DHT_RESPONSE;
  r.tid = 65535;
  kp_addr_parse(&r.to, "[2001:db8::1]:65535");
  r.has_id = r.has_token = true;
  r.command = 255;
  r.nodes = nodes;
  r.nodes_len = sizeof(nodes);
  r.error = 255;
  size_t len;
  KP_CHECK_OK(kp_dht_msg_encode(&r, buf, sizeof(buf), &len));
  KP_CHECK(len <= kp_dht_msg_reply_bound(KP_AF_INET6, 20, 0));
}

/* ---- Routing table ------------------------------------------------------- */

static void random_id(kp_rng_t *rng, uint8_t id[KP_ID_LEN]) {
  kp_rng_fill(rng, id, KP_ID_LEN);
}

/* An address whose id falls in bucket b of a table with id self. */
static void addr_in_bucket(const uint8_t self[KP_ID_LEN], unsigned b, uint32_t *next,
                           kp_addr_t *out, uint8_t id[KP_ID_LEN]) {
  for (;;) {
    uint32_t n = (*next)++;
    kp_addr_set_v4(out, (10u << 24) | (n >> 16), (uint16_t)n);
    kp_dht_id_from_addr(out, id);
    if (kp_dht_id_prefix_len(self, id) == b) return;
  }
}

static void test_table_buckets(void) {
  kp_rng_seeded_t st;
  kp_rng_seeded_init(&st, 3);
  kp_rng_t rng = kp_rng_seeded(&st);
  uint8_t self[KP_ID_LEN], id[KP_ID_LEN];
  random_id(&rng, self);
  kp_dht_table_t t;
  kp_dht_table_init(&t, self, 4, KP_AF_INET);
  KP_CHECK_EQ(t.stride, 20); /* an IPv4 entry: 8 bytes of id, the address, age, flags */
  kp_addr_t a, addrs[4];
  uint32_t next = 1;

  /* Ids in bucket 5 share exactly 5 leading bits with self. */
  for (int i = 0; i < 4; i++) {
    addr_in_bucket(self, 5, &next, &addrs[i], id);
    KP_CHECK_EQ(kp_dht_table_bucket_of(&t, id), 5);
    KP_CHECK_EQ(kp_dht_table_add(&t, id, &addrs[i], (uint32_t)(10 + i), NULL), KP_DHT_TABLE_ADDED);
    kp_dht_entry_t *e = kp_dht_table_find(&t, id);
    KP_CHECK(e && kp_dht_entry_is(&t, e, &addrs[i]));
    kp_dht_entry_addr(&t, e, &a);
    KP_CHECK(kp_addr_eq(&a, &addrs[i]));
    uint8_t back[KP_ID_LEN];
    kp_dht_entry_id(&t, e, back);
    KP_CHECK_MEM(back, id, KP_ID_LEN);
  }
  KP_CHECK_EQ(t.bucket_count[5], 4);
  /* A fifth: the bucket is full and the least recently seen is offered. */
  uint8_t extra[KP_ID_LEN];
  kp_addr_t extra_addr;
  addr_in_bucket(self, 5, &next, &extra_addr, extra);
  kp_dht_entry_t *lru;
  KP_CHECK_EQ(kp_dht_table_add(&t, extra, &extra_addr, 20, &lru), KP_DHT_TABLE_FULL);
  KP_CHECK(lru != NULL && lru->last_seen == 10 && kp_dht_entry_is(&t, lru, &addrs[0]));
  KP_CHECK(kp_dht_table_find(&t, extra) == NULL);
  /* Seeing it again refreshes it; the next least recent is offered. */
  kp_dht_id_from_addr(&addrs[0], id);
  KP_CHECK_EQ(kp_dht_table_add(&t, id, &addrs[0], 30, NULL), KP_DHT_TABLE_UPDATED);
  KP_CHECK_EQ(kp_dht_table_add(&t, extra, &extra_addr, 31, &lru), KP_DHT_TABLE_FULL);
  KP_CHECK_EQ(lru->last_seen, 11);
  /* Evicting it makes room. */
  kp_dht_entry_id(&t, lru, id);
  KP_CHECK(kp_dht_table_remove(&t, id));
  KP_CHECK(!kp_dht_table_remove(&t, id));
  KP_CHECK_EQ(kp_dht_table_add(&t, extra, &extra_addr, 32, NULL), KP_DHT_TABLE_ADDED);
  /* Our own id never goes in. */
  KP_CHECK_EQ(kp_dht_table_add(&t, self, &extra_addr, 1, NULL), KP_DHT_TABLE_SELF);
  /* Other buckets are independent. */
  addr_in_bucket(self, 0, &next, &a, id);
  KP_CHECK_EQ(kp_dht_table_add(&t, id, &a, 1, NULL), KP_DHT_TABLE_ADDED);
  KP_CHECK_EQ(kp_dht_table_depth(&t), 5);
  KP_CHECK_EQ(t.count, 5);
  kp_dht_entry_t *old = kp_dht_table_oldest(&t, 1000);
  KP_CHECK(old && old->last_seen == 1);
  KP_CHECK(kp_dht_table_oldest(&t, 1) == NULL);
  kp_dht_table_destroy(&t);

  /* IPv6 entries hold the longer address. */
  kp_dht_table_init(&t, self, 4, KP_AF_INET6);
  KP_CHECK_EQ(t.stride, 32);
  kp_addr_parse(&a, "[2001:db8::7]:4000");
  kp_dht_id_from_addr(&a, id);
  KP_CHECK_EQ(kp_dht_table_add(&t, id, &a, 1, NULL), KP_DHT_TABLE_ADDED);
  kp_addr_t back;
  kp_dht_entry_addr(&t, kp_dht_table_find(&t, id), &back);
  KP_CHECK(kp_addr_eq(&back, &a));
  kp_dht_table_destroy(&t);
}

/* An address whose id is in bucket 0 of a table with id self: IPv4 `ip`
 * with the n-th port tried, or the IPv6 `ip` prefix ("2001:db8:1::") with
 * the n-th last group. */
static void addr_in_bucket0(const uint8_t self[KP_ID_LEN], const char *ip, unsigned *n,
                            kp_addr_t *out, uint8_t id[KP_ID_LEN]) {
  char text[80];
  for (;;) {
    if (strchr(ip, ':'))
      snprintf(text, sizeof(text), "[%s%x]:4000", ip, (*n)++);
    else
      snprintf(text, sizeof(text), "%s:%u", ip, (*n)++);
    kp_addr_parse(out, text);
    kp_dht_id_from_addr(out, id);
    if (kp_dht_id_prefix_len(self, id) == 0) return;
  }
}

/* A bucket holds at most 2 ids of one IPv4 /24 or IPv6 /48, and 4 of one
 * IPv6 /32 (docs/protocol.md, "Eclipse limits"); a newcomer of a full
 * prefix is offered that prefix's least recently seen entry to ping, like a
 * full bucket's. Loopback and private addresses are exempt. */
static void test_table_prefix_limits(void) {
  uint8_t self[KP_ID_LEN], id[KP_ID_LEN];
  memset(self, 0x42, sizeof(self));
  kp_dht_table_t t;
  kp_dht_entry_t *lru;
  kp_addr_t a, first;
  unsigned n = 1;
  kp_dht_table_init(&t, self, KP_DHT_K, KP_AF_INET);
  for (int i = 0; i < 2; i++) {
    addr_in_bucket0(self, "203.0.113.7", &n, &a, id);
    if (i == 0) first = a;
    KP_CHECK_EQ(kp_dht_table_add(&t, id, &a, (uint32_t)(10 + i), NULL), KP_DHT_TABLE_ADDED);
  }
  addr_in_bucket0(self, "203.0.113.99", &n, &a, id); /* same /24, another IP */
  KP_CHECK_EQ(kp_dht_table_add(&t, id, &a, 20, &lru), KP_DHT_TABLE_FULL);
  KP_CHECK(lru && kp_dht_entry_is(&t, lru, &first));
  KP_CHECK_EQ(kp_dht_table_would_add(&t, id, &a, NULL), KP_DHT_TABLE_FULL);
  n = 1;
  addr_in_bucket0(self, "203.0.114.7", &n, &a, id); /* the next /24 */
  KP_CHECK_EQ(kp_dht_table_add(&t, id, &a, 21, NULL), KP_DHT_TABLE_ADDED);
  /* The prefix's slot frees when its entry goes. */
  kp_dht_id_from_addr(&first, id);
  KP_CHECK(kp_dht_table_remove(&t, id));
  n = 1;
  addr_in_bucket0(self, "203.0.113.99", &n, &a, id);
  KP_CHECK_EQ(kp_dht_table_add(&t, id, &a, 22, NULL), KP_DHT_TABLE_ADDED);
  /* A LAN (or a testnet on loopback) fills a bucket from one /24. */
  for (int i = 0; i < 5; i++) {
    addr_in_bucket0(self, "192.168.1.5", &n, &a, id);
    KP_CHECK_EQ(kp_dht_table_add(&t, id, &a, 30, NULL), KP_DHT_TABLE_ADDED);
    addr_in_bucket0(self, "127.0.0.1", &n, &a, id);
    KP_CHECK_EQ(kp_dht_table_add(&t, id, &a, 30, NULL), KP_DHT_TABLE_ADDED);
  }
  kp_dht_table_destroy(&t);

  /* IPv6: 2 per /48, and 4 per /32 however many /48s it spans. */
  kp_dht_table_init(&t, self, KP_DHT_K, KP_AF_INET6);
  n = 1;
  for (int i = 0; i < 2; i++) {
    addr_in_bucket0(self, "2001:db8:1::", &n, &a, id);
    KP_CHECK_EQ(kp_dht_table_add(&t, id, &a, 10, NULL), KP_DHT_TABLE_ADDED);
  }
  addr_in_bucket0(self, "2001:db8:1::", &n, &a, id);
  KP_CHECK_EQ(kp_dht_table_add(&t, id, &a, 10, &lru), KP_DHT_TABLE_FULL);
  for (int i = 0; i < 2; i++) {
    addr_in_bucket0(self, i ? "2001:db8:3::" : "2001:db8:2::", &n, &a, id);
    KP_CHECK_EQ(kp_dht_table_add(&t, id, &a, 10, NULL), KP_DHT_TABLE_ADDED);
  }
  addr_in_bucket0(self, "2001:db8:4::", &n, &a, id); /* a fifth in 2001:db8::/32 */
  KP_CHECK_EQ(kp_dht_table_add(&t, id, &a, 10, &lru), KP_DHT_TABLE_FULL);
  addr_in_bucket0(self, "2001:db9:4::", &n, &a, id); /* another /32 */
  KP_CHECK_EQ(kp_dht_table_add(&t, id, &a, 10, NULL), KP_DHT_TABLE_ADDED);
  kp_dht_table_destroy(&t);
}

typedef struct {
  uint8_t id[KP_ID_LEN];
  kp_addr_t addr;
} known_t;

static const uint8_t *sort_target;
static int by_distance(const void *a, const void *b) {
  return kp_dht_id_cmp(sort_target, ((const known_t *)a)->id, ((const known_t *)b)->id);
}

static void test_table_closest(void) {
  kp_rng_seeded_t st;
  kp_rng_seeded_init(&st, 9);
  kp_rng_t rng = kp_rng_seeded(&st);
  uint8_t self[KP_ID_LEN];
  random_id(&rng, self);
  kp_dht_table_t t;
  kp_dht_table_init(&t, self, KP_DHT_K, KP_AF_INET);
  uint32_t next = 1;
  for (int i = 0; i < 5000; i++) {
    uint8_t id[KP_ID_LEN];
    kp_addr_t a;
    /* Spread some deep, as a real table has. */
    if (i % 4 == 0) {
      addr_in_bucket(self, 1 + kp_rng_below(&rng, 10), &next, &a, id);
    } else {
      kp_addr_set_v4(&a, (11u << 24) | (uint32_t)i, 4000);
      kp_dht_id_from_addr(&a, id);
    }
    kp_dht_table_add(&t, id, &a, (uint32_t)i, NULL);
  }
  KP_CHECK(t.count > 100);
  known_t *all = malloc(t.count * sizeof(*all));
  for (int q = 0; q < 300; q++) {
    uint8_t target[KP_ID_LEN];
    random_id(&rng, target);
    if (q % 3 == 0) kp_dht_entry_id(&t, kp_dht_table_at(&t, (uint32_t)q % t.count), target);
    const kp_dht_entry_t *got[KP_DHT_K];
    size_t n = kp_dht_table_closest(&t, target, NULL, got, KP_DHT_K);
    KP_CHECK_EQ(n, KP_DHT_K);
    for (uint32_t i = 0; i < t.count; i++) {
      kp_dht_entry_addr(&t, kp_dht_table_at(&t, i), &all[i].addr);
      kp_dht_id_from_addr(&all[i].addr, all[i].id);
    }
    sort_target = target;
    qsort(all, t.count, sizeof(*all), by_distance);
    for (size_t i = 0; i < n; i++) KP_CHECK(kp_dht_entry_is(&t, got[i], &all[i].addr));
    /* Excluding the closest by address drops exactly it. */
    n = kp_dht_table_closest(&t, target, &all[0].addr, got, KP_DHT_K);
    for (size_t i = 0; i < n; i++) KP_CHECK(kp_dht_entry_is(&t, got[i], &all[i + 1].addr));
  }
  free(all);
  /* Re-filing under a new id keeps every bucket within k. */
  uint8_t other[KP_ID_LEN];
  random_id(&rng, other);
  kp_dht_table_set_self(&t, other);
  for (unsigned b = 0; b < KP_DHT_BUCKETS; b++) KP_CHECK(t.bucket_count[b] <= KP_DHT_K);
  for (uint32_t i = 0; i < t.count; i++) {
    uint8_t id[KP_ID_LEN];
    kp_dht_entry_id(&t, kp_dht_table_at(&t, i), id);
    KP_CHECK_EQ(kp_dht_entry_bucket(&t, kp_dht_table_at(&t, i)), kp_dht_id_prefix_len(other, id));
  }
  kp_dht_table_destroy(&t);
}

static void test_id_metric(void) {
  uint8_t a[KP_ID_LEN] = {0}, b[KP_ID_LEN] = {0}, t[KP_ID_LEN] = {0};
  b[0] = 0x80;
  KP_CHECK_EQ(kp_dht_id_prefix_len(a, b), 0);
  b[0] = 0x01;
  KP_CHECK_EQ(kp_dht_id_prefix_len(a, b), 7);
  b[0] = 0;
  b[31] = 1;
  KP_CHECK_EQ(kp_dht_id_prefix_len(a, b), 255);
  KP_CHECK_EQ(kp_dht_id_prefix_len(a, a), 256);
  KP_CHECK(kp_dht_id_cmp(t, a, b) < 0);
  KP_CHECK(kp_dht_id_cmp(t, b, a) > 0);
  KP_CHECK_EQ(kp_dht_id_cmp(t, a, a), 0);
  /* The id of an address is BLAKE2b-256 of its compact form. */
  kp_addr_t addr;
  kp_addr_parse(&addr, "127.0.0.1:4000");
  uint8_t id[KP_ID_LEN], expect[KP_ID_LEN], compact[6] = {127, 0, 0, 1, 0x0f, 0xa0};
  kp_dht_id_from_addr(&addr, id);
  crypto_generichash(expect, sizeof(expect), compact, sizeof(compact), NULL, 0);
  KP_CHECK_MEM(id, expect, KP_ID_LEN);
}

/* ---- Tokens ----------------------------------------------------------- */

static void test_token_rotation(void) {
  kp_rng_seeded_t st;
  kp_rng_seeded_init(&st, 5);
  kp_rng_t rng = kp_rng_seeded(&st);
  kp_dht_tokens_t t;
  kp_dht_tokens_init(&t, &rng, 0);
  kp_addr_t a, b;
  kp_addr_parse(&a, "198.51.100.1:1000");
  kp_addr_parse(&b, "198.51.100.1:1001");
  uint8_t tok[32];
  kp_dht_token_make(&t, &a, tok);
  KP_CHECK_EQ(kp_dht_token_check(&t, &a, tok), KP_DHT_TOKEN_CURRENT);
  KP_CHECK(!kp_dht_token_check(&t, &b, tok)); /* bound to the address */
  KP_CHECK_EQ(kp_dht_tokens_tick(&t, &rng, KP_DHT_TOKEN_ROTATE_MS - 1), KP_DHT_TOKEN_ROTATE_MS);
  KP_CHECK(kp_dht_token_check(&t, &a, tok));
  kp_dht_tokens_tick(&t, &rng, KP_DHT_TOKEN_ROTATE_MS);                /* first rotation */
  KP_CHECK_EQ(kp_dht_token_check(&t, &a, tok), KP_DHT_TOKEN_PREVIOUS); /* still valid */
  uint8_t fresh[32];
  kp_dht_token_make(&t, &a, fresh);
  KP_CHECK(memcmp(fresh, tok, 32) != 0);
  kp_dht_tokens_tick(&t, &rng, 2 * KP_DHT_TOKEN_ROTATE_MS); /* second rotation */
  KP_CHECK(!kp_dht_token_check(&t, &a, tok));               /* stale */
  KP_CHECK(kp_dht_token_check(&t, &a, fresh));
  tok[0] ^= 1;
  KP_CHECK(!kp_dht_token_check(&t, &a, tok));
  kp_dht_tokens_destroy(&t);
}

/* ---- NAT bookkeeping ---------------------------------------------------- */

static void test_nat_classify(void) {
  kp_dht_nat_t nat;
  kp_dht_nat_init(&nat);
  kp_addr_t r1, r2, r3, seen, seen2, seen3;
  kp_addr_parse(&r1, "198.51.100.1:1");
  kp_addr_parse(&r2, "198.51.100.2:1");
  kp_addr_parse(&r3, "198.51.100.3:1");
  kp_addr_parse(&seen, "203.0.113.9:5000");
  kp_addr_parse(&seen2, "203.0.113.9:5001");
  kp_addr_parse(&seen3, "203.0.113.9:5002");

  KP_CHECK(kp_dht_nat_add_sample(&nat, &r1, &seen, 100));
  KP_CHECK_EQ(nat.type, KP_NAT_UNKNOWN); /* one reporter proves nothing */
  KP_CHECK(!kp_dht_nat_add_sample(&nat, &r2, &seen, 200));
  KP_CHECK_EQ(nat.type, KP_NAT_CONSISTENT);
  KP_CHECK(kp_addr_eq(&nat.public_addr, &seen));
  KP_CHECK_EQ(nat.public_since, 100);

  KP_CHECK(!kp_dht_nat_reach_result(&nat, &r1, true));
  KP_CHECK(kp_dht_nat_reach_result(&nat, &r2, true));
  KP_CHECK_EQ(nat.type, KP_NAT_OPEN);
  KP_CHECK(!kp_dht_nat_reach_result(&nat, &r1, false));
  KP_CHECK(kp_dht_nat_reach_result(&nat, &r1, false)); /* two failures: unreachable */
  KP_CHECK_EQ(nat.type, KP_NAT_CONSISTENT);

  /* A different port per destination. */
  kp_dht_nat_init(&nat);
  kp_dht_nat_add_sample(&nat, &r1, &seen, 1);
  kp_dht_nat_add_sample(&nat, &r2, &seen2, 2);
  KP_CHECK_EQ(nat.type, KP_NAT_RANDOM);
  kp_dht_nat_add_sample(&nat, &r3, &seen3, 3);
  KP_CHECK_EQ(nat.type, KP_NAT_RANDOM);

  /* A consistent mapping that moves (NAT rebinding): one dissenter does not
   * move us (it might be lying); once the two newest reporters agree on the
   * new address it wins and older samples are dropped. */
  kp_dht_nat_init(&nat);
  kp_dht_nat_add_sample(&nat, &r1, &seen, 1);
  kp_dht_nat_add_sample(&nat, &r2, &seen, 2);
  KP_CHECK(!kp_dht_nat_add_sample(&nat, &r3, &seen2, 3));
  KP_CHECK_EQ(nat.type, KP_NAT_CONSISTENT);
  KP_CHECK(kp_addr_eq(&nat.public_addr, &seen));
  KP_CHECK(kp_dht_nat_add_sample(&nat, &r1, &seen2, 4));
  KP_CHECK_EQ(nat.type, KP_NAT_CONSISTENT);
  KP_CHECK(kp_addr_eq(&nat.public_addr, &seen2));
  KP_CHECK_EQ(nat.public_since, 4);
  KP_CHECK_EQ(nat.count, 2);
}

/* A port mapping at the gateway: a random NAT whose flows started before
 * the mapping still show random ports, but the mapped address is ours and
 * the NAT open while reporters see the gateway's IP; a gateway whose
 * "public" address nobody sees (behind carrier-grade NAT) changes nothing;
 * withdrawn, the samples decide again. */
static void test_nat_port_mapping(void) {
  kp_dht_nat_t nat;
  kp_dht_nat_init(&nat);
  kp_addr_t r1, r2, seen, seen2, mapped, cgn;
  kp_addr_parse(&r1, "198.51.100.1:1");
  kp_addr_parse(&r2, "198.51.100.2:1");
  kp_addr_parse(&seen, "203.0.113.9:5000");
  kp_addr_parse(&seen2, "203.0.113.9:5001");
  kp_addr_parse(&mapped, "203.0.113.9:40000");
  kp_addr_parse(&cgn, "100.64.0.9:40000");
  kp_dht_nat_add_sample(&nat, &r1, &seen, 1);
  kp_dht_nat_add_sample(&nat, &r2, &seen2, 2);
  KP_CHECK_EQ(nat.type, KP_NAT_RANDOM);

  KP_CHECK(kp_dht_nat_set_mapped(&nat, &mapped, 3));
  KP_CHECK_EQ(nat.type, KP_NAT_OPEN);
  KP_CHECK(kp_addr_eq(&nat.public_addr, &mapped));
  KP_CHECK(!nat.reachable); /* a claim: witnesses still have to prove it */
  /* New samples and failed PING_NATs do not undo it. */
  kp_dht_nat_add_sample(&nat, &r1, &seen2, 4);
  KP_CHECK(!kp_dht_nat_reach_result(&nat, &r1, false));
  kp_dht_nat_reach_result(&nat, &r2, false);
  KP_CHECK_EQ(nat.type, KP_NAT_OPEN);
  KP_CHECK(kp_addr_eq(&nat.public_addr, &mapped));
  /* A reset (a network change) keeps the claim for its owner to withdraw. */
  kp_dht_nat_reset(&nat);
  KP_CHECK(nat.has_mapped);

  KP_CHECK(!kp_dht_nat_set_mapped(&nat, NULL, 5));
  kp_dht_nat_add_sample(&nat, &r1, &seen, 6);
  kp_dht_nat_add_sample(&nat, &r2, &seen2, 7);
  KP_CHECK_EQ(nat.type, KP_NAT_RANDOM);
  KP_CHECK(!kp_addr_eq(&nat.public_addr, &mapped));

  /* The gateway's own address is not what reporters see: no effect. */
  kp_dht_nat_set_mapped(&nat, &cgn, 8);
  KP_CHECK_EQ(nat.type, KP_NAT_RANDOM);
  KP_CHECK(!kp_addr_eq(&nat.public_addr, &cgn));
}

/* Reports count per host (IPv4 address, IPv6 /64), not per socket: two
 * ports of one address are one reporter (docs/protocol.md, "Membership"). */
static void test_nat_reporters_by_ip(void) {
  kp_dht_nat_t nat;
  kp_addr_t a, b, x1, x2, y1, y2, self, fake, fake2;
  kp_addr_parse(&a, "198.51.100.1:4000");
  kp_addr_parse(&b, "198.51.100.2:4000");
  kp_addr_parse(&x1, "192.0.2.66:4000"); /* one attacker, two ports */
  kp_addr_parse(&x2, "192.0.2.66:5000");
  kp_addr_parse(&y1, "[2001:db8:1:2::1]:4000"); /* two addresses of one IPv6 /64 */
  kp_addr_parse(&y2, "[2001:db8:1:2::2]:4000");
  kp_addr_parse(&self, "203.0.113.9:5000");
  kp_addr_parse(&fake, "203.0.113.66:1");
  kp_addr_parse(&fake2, "203.0.113.66:2");
  KP_CHECK(kp_dht_nat_same_host(&x1, &x2));
  KP_CHECK(kp_dht_nat_same_host(&y1, &y2));
  KP_CHECK(!kp_dht_nat_same_host(&a, &b));

  /* Two honest reporters agree; the attacker's two ports agree on another
   * address, last. They are one reporter, and one dissenter moves nothing. */
  kp_dht_nat_init(&nat);
  kp_dht_nat_add_sample(&nat, &a, &self, 1);
  kp_dht_nat_add_sample(&nat, &b, &self, 2);
  KP_CHECK(!kp_dht_nat_add_sample(&nat, &x1, &fake, 3));
  KP_CHECK(!kp_dht_nat_add_sample(&nat, &x2, &fake, 4));
  KP_CHECK(kp_addr_eq(&nat.public_addr, &self));
  KP_CHECK_EQ(nat.type, KP_NAT_CONSISTENT);
  KP_CHECK_EQ(nat.public_since, 1); /* it never moved */

  /* Two ports reporting two mappings do not make the NAT look RANDOM. */
  kp_dht_nat_init(&nat);
  kp_dht_nat_add_sample(&nat, &a, &self, 1);
  kp_dht_nat_add_sample(&nat, &b, &self, 2);
  kp_dht_nat_add_sample(&nat, &x1, &fake, 3);
  kp_dht_nat_add_sample(&nat, &x2, &fake2, 4);
  KP_CHECK_EQ(nat.type, KP_NAT_CONSISTENT);
  KP_CHECK(kp_addr_eq(&nat.public_addr, &self));

  /* Nor can one host alone settle an address: its second port is no second
   * witness, so the type stays unknown. */
  kp_dht_nat_init(&nat);
  kp_dht_nat_add_sample(&nat, &x1, &fake, 1);
  kp_dht_nat_add_sample(&nat, &x2, &fake, 2);
  KP_CHECK_EQ(nat.count, 1);
  KP_CHECK_EQ(nat.type, KP_NAT_UNKNOWN);

  /* PING_NAT answers: two ports of one host are one witness, so they
   * cannot make us reachable (OPEN). */
  kp_dht_nat_init(&nat);
  kp_dht_nat_add_sample(&nat, &a, &self, 1);
  kp_dht_nat_add_sample(&nat, &b, &self, 2);
  kp_dht_nat_reach_result(&nat, &x1, true);
  kp_dht_nat_reach_result(&nat, &x2, true);
  KP_CHECK(!nat.reachable);
  KP_CHECK_EQ(nat.type, KP_NAT_CONSISTENT);
  KP_CHECK(kp_dht_nat_reach_confirmed_by(&nat, &x2));
  kp_dht_nat_reach_result(&nat, &y1, true);
  KP_CHECK(nat.reachable); /* a second host does */
  KP_CHECK_EQ(nat.type, KP_NAT_OPEN);

  /* On loopback every node of a testnet shares the address: there a port
   * is a host. */
  kp_addr_t l1, l2;
  kp_addr_parse(&l1, "127.0.0.1:4000");
  kp_addr_parse(&l2, "127.0.0.1:4002");
  KP_CHECK(!kp_dht_nat_same_host(&l1, &l2));
}

/* ---- RPC on a virtual clock -------------------------------------------------- */

typedef struct {
  unsigned sent;
  kp_addr_t last_to;
  uint8_t last[KP_DHT_MAX_DATAGRAM];
  size_t last_len;
} wire_t;

static void wire_send(void *ctx, const kp_addr_t *to, const uint8_t *data, size_t len) {
  wire_t *w = ctx;
  w->sent++;
  w->last_to = *to;
  memcpy(w->last, data, len);
  w->last_len = len;
}

typedef struct {
  int calls;
  int status;
  uint64_t at;
} outcome_t;

static void on_outcome(void *arg, kp_dht_req_t *req, int status, const kp_dht_msg_t *resp,
                       const kp_addr_t *from, uint64_t now) {
  outcome_t *o = arg;
  (void)req;
  (void)resp;
  (void)from;
  o->calls++;
  o->status = status;
  o->at = now;
}

static kp_dht_msg_t ping_to(const kp_addr_t *to) {
  kp_dht_msg_t m = {0};
  m.to = *to;
  m.command = KP_DHT_CMD_PING;
  return m;
}

static kp_dht_msg_t response_for(const wire_t *w) {
  kp_dht_msg_t req, resp = {0};
  kp_dht_msg_decode(w->last, w->last_len, KP_AF_INET, &req);
  resp.type = KP_DHT_RESPONSE;
  resp.tid = req.tid;
  resp.command = req.command;
  return resp;
}

static void test_rpc_timeout_retry(void) {
  wire_t w = {0};
  kp_dht_rpc_t rpc;
  kp_dht_rpc_config_t cfg;
  kp_dht_rpc_config_defaults(&cfg);
  cfg.timeout_ms = 500;
  cfg.retries = 2;
  kp_rng_seeded_t st;
  kp_rng_seeded_init(&st, 1);
  kp_rng_t rng = kp_rng_seeded(&st);
  kp_dht_rpc_init(&rpc, &cfg, wire_send, &w, &rng, 0);
  kp_addr_t to, other;
  kp_addr_parse(&to, "10.0.0.2:4000");
  kp_addr_parse(&other, "10.0.0.3:4000");

  outcome_t o = {0};
  kp_dht_msg_t m = ping_to(&to);
  KP_CHECK_OK(kp_dht_rpc_request(&rpc, &m, &to, NULL, on_outcome, &o, 0, NULL));
  KP_CHECK_EQ(w.sent, 1);
  KP_CHECK_EQ(o.calls, 0); /* never from inside the call */
  /* Each try waits the timeout plus up to a quarter of it in jitter. */
  uint64_t t = 0, first = kp_dht_rpc_next_deadline(&rpc);
  KP_CHECK(first >= 500 && first <= 625);
  kp_dht_rpc_tick(&rpc, first - 1);
  KP_CHECK_EQ(w.sent, 1);
  for (unsigned tries = 1; tries <= 3; tries++) {
    uint64_t d = kp_dht_rpc_next_deadline(&rpc);
    KP_CHECK_MSG(d >= t + 500 && d <= t + 625, "try %u due at %" PRIu64 " after %" PRIu64, tries, d,
                 t);
    KP_CHECK_EQ(w.sent, tries); /* same bytes resent at each deadline */
    KP_CHECK_EQ(o.calls, 0);
    kp_dht_rpc_tick(&rpc, d);
    t = d;
  }
  KP_CHECK_EQ(w.sent, 3);
  KP_CHECK_EQ(o.calls, 1);
  KP_CHECK_EQ(o.status, KP_ETIMEDOUT);
  KP_CHECK_EQ(o.at, t);
  KP_CHECK_EQ(rpc.stats.timeouts, 1);
  KP_CHECK_EQ(kp_dht_rpc_next_deadline(&rpc), UINT64_MAX);

  /* A response matches on tid AND address AND command. */
  outcome_t o2 = {0};
  m = ping_to(&to);
  KP_CHECK_OK(kp_dht_rpc_request(&rpc, &m, &to, NULL, on_outcome, &o2, 2000, NULL));
  kp_dht_msg_t resp = response_for(&w);
  KP_CHECK(kp_dht_rpc_take(&rpc, &resp, &other) == NULL);
  resp.tid++;
  KP_CHECK(kp_dht_rpc_take(&rpc, &resp, &to) == NULL);
  resp.tid--;
  resp.command = KP_DHT_CMD_FIND_NODE;
  KP_CHECK(kp_dht_rpc_take(&rpc, &resp, &to) == NULL);
  resp.command = KP_DHT_CMD_PING;
  kp_dht_req_t *r = kp_dht_rpc_take(&rpc, &resp, &to);
  KP_CHECK(r != NULL);
  kp_dht_rpc_finish(&rpc, r, &resp, &to, 2010);
  KP_CHECK_EQ(o2.calls, 1);
  KP_CHECK_EQ(o2.status, 0);
  KP_CHECK_EQ(rpc.stats.unmatched, 3);
  /* A duplicate of the response finds nothing. */
  KP_CHECK(kp_dht_rpc_take(&rpc, &resp, &to) == NULL);

  /* PING_NAT: the answer must come from another port of the same IP. */
  outcome_t o3 = {0};
  m = ping_to(&to);
  m.command = KP_DHT_CMD_PING_NAT;
  kp_dht_req_opts_t any = {.retries = 0, .any_port = true};
  KP_CHECK_OK(kp_dht_rpc_request(&rpc, &m, &to, &any, on_outcome, &o3, 3000, NULL));
  resp = response_for(&w);
  KP_CHECK(kp_dht_rpc_take(&rpc, &resp, &to) == NULL); /* same port: not proof */
  kp_addr_t alt = to;
  alt.port++;
  KP_CHECK(kp_dht_rpc_take(&rpc, &resp, &other) == NULL);
  r = kp_dht_rpc_take(&rpc, &resp, &alt);
  KP_CHECK(r != NULL);
  kp_dht_rpc_finish(&rpc, r, &resp, &alt, 3001);
  KP_CHECK_EQ(o3.status, 0);

  /* Shutdown cancels what is left. */
  outcome_t o4 = {0};
  m = ping_to(&to);
  KP_CHECK_OK(kp_dht_rpc_request(&rpc, &m, &to, NULL, on_outcome, &o4, 4000, NULL));
  kp_dht_rpc_destroy(&rpc, 4001);
  KP_CHECK_EQ(o4.calls, 1);
  KP_CHECK_EQ(o4.status, KP_ECANCELED);
}

static void test_rpc_adaptive_timeout(void) {
  wire_t w = {0};
  kp_dht_rpc_t rpc;
  kp_dht_rpc_config_t cfg;
  kp_dht_rpc_config_defaults(&cfg); /* 1000 ms cap, 100 ms floor, 2 retries */
  kp_rng_seeded_t st;
  kp_rng_seeded_init(&st, 3);
  kp_rng_t rng = kp_rng_seeded(&st);
  kp_dht_rpc_init(&rpc, &cfg, wire_send, &w, &rng, 0);
  KP_CHECK_EQ(kp_dht_rpc_rto(&rpc), 1000); /* nothing measured yet */
  kp_addr_t to;
  kp_addr_parse(&to, "10.0.0.2:4000");

  /* Answers after 40 ms, first try: RTO = SRTT + 4 RTTVAR converges down. */
  uint64_t now = 0;
  for (int i = 0; i < 20; i++) {
    outcome_t o = {0};
    kp_dht_msg_t m = ping_to(&to);
    KP_CHECK_OK(kp_dht_rpc_request(&rpc, &m, &to, NULL, on_outcome, &o, now, NULL));
    now += 40;
    kp_dht_msg_t resp = response_for(&w);
    kp_dht_req_t *r = kp_dht_rpc_take(&rpc, &resp, &to);
    KP_CHECK(r != NULL);
    kp_dht_rpc_finish(&rpc, r, &resp, &to, now);
  }
  unsigned rto = kp_dht_rpc_rto(&rpc);
  KP_CHECK_MSG(rto >= 100 && rto < 150, "rto %u", rto);
  /* A dead peer: each retry waits twice the last (plus jitter), so it is
   * given up on in well under the fixed 3 s. */
  outcome_t o = {0};
  kp_dht_msg_t m = ping_to(&to);
  KP_CHECK_OK(kp_dht_rpc_request(&rpc, &m, &to, NULL, on_outcome, &o, now, NULL));
  uint64_t start = now, prev = now;
  for (unsigned tries = 0; o.calls == 0 && tries < 10; tries++) {
    uint64_t d = kp_dht_rpc_next_deadline(&rpc);
    uint64_t wait = d - prev, expect = (uint64_t)rto << tries;
    KP_CHECK_MSG(wait >= expect && wait <= expect + expect / 4 + 1, "try %u waited %" PRIu64, tries,
                 wait);
    kp_dht_rpc_tick(&rpc, d);
    prev = d;
  }
  KP_CHECK_EQ(o.status, KP_ETIMEDOUT);
  KP_CHECK(prev - start < 7 * 150);
  /* A retried request's late answer does not feed the estimator (Karn). */
  outcome_t o2 = {0};
  m = ping_to(&to);
  KP_CHECK_OK(kp_dht_rpc_request(&rpc, &m, &to, NULL, on_outcome, &o2, prev, NULL));
  kp_dht_rpc_tick(&rpc, kp_dht_rpc_next_deadline(&rpc));
  kp_dht_msg_t resp = response_for(&w);
  kp_dht_req_t *r = kp_dht_rpc_take(&rpc, &resp, &to);
  double srtt = rpc.srtt_us;
  kp_dht_rpc_finish(&rpc, r, &resp, &to, prev + 900);
  KP_CHECK(rpc.srtt_us == srtt);
  kp_dht_rpc_destroy(&rpc, prev + 900);
}

/* Transaction ids come from the injected rng: unpredictable to an
 * off-path forger, the same from the same seed. */
static void test_rpc_random_tids(void) {
  uint16_t tids[2][200];
  for (int run = 0; run < 2; run++) {
    wire_t w = {0};
    kp_dht_rpc_t rpc;
    kp_dht_rpc_config_t cfg;
    kp_dht_rpc_config_defaults(&cfg);
    cfg.max_queued = 1000;
    kp_rng_seeded_t st;
    kp_rng_seeded_init(&st, 17);
    kp_rng_t rng = kp_rng_seeded(&st);
    kp_dht_rpc_init(&rpc, &cfg, wire_send, &w, &rng, 0);
    kp_addr_t to;
    kp_addr_parse(&to, "198.51.100.2:4000");
    outcome_t sink = {0};
    for (int i = 0; i < 200; i++) {
      kp_dht_msg_t m = ping_to(&to);
      kp_dht_req_t *r;
      KP_CHECK_OK(kp_dht_rpc_request(&rpc, &m, &to, NULL, on_outcome, &sink, 0, &r));
      tids[run][i] = r->tid;
    }
    kp_dht_rpc_destroy(&rpc, 1);
  }
  KP_CHECK_MEM(tids[0], tids[1], sizeof(tids[0]));
  unsigned next = 0, same = 0;
  for (int i = 1; i < 200; i++) {
    next += tids[0][i] == (uint16_t)(tids[0][i - 1] + 1);
    for (int j = 0; j < i; j++) same += tids[0][i] == tids[0][j];
  }
  /* 199 pairs at 1/65536 each: a successor by chance is already unlikely. */
  KP_CHECK_MSG(next <= 1, "%u of 199 tids follow the one before", next);
  KP_CHECK_EQ(same, 0); /* in flight together to one node: never the same */
}

static void test_rpc_caps(void) {
  wire_t w = {0};
  kp_dht_rpc_t rpc;
  kp_dht_rpc_config_t cfg;
  kp_dht_rpc_config_defaults(&cfg);
  cfg.max_inflight = 2;
  cfg.max_queued = 3;
  cfg.rate = 1000;
  kp_rng_seeded_t st;
  kp_rng_seeded_init(&st, 2);
  kp_rng_t rng = kp_rng_seeded(&st);
  kp_dht_rpc_init(&rpc, &cfg, wire_send, &w, &rng, 0);
  kp_addr_t to;
  kp_addr_parse(&to, "10.0.0.2:4000");
  outcome_t o[6] = {{0}};
  kp_dht_req_t *reqs[6];
  for (int i = 0; i < 5; i++) {
    kp_dht_msg_t m = ping_to(&to);
    KP_CHECK_OK(kp_dht_rpc_request(&rpc, &m, &to, NULL, on_outcome, &o[i], 0, &reqs[i]));
  }
  KP_CHECK_EQ(w.sent, 2); /* two in flight, three queued */
  kp_dht_msg_t m = ping_to(&to);
  KP_CHECK_EQ(kp_dht_rpc_request(&rpc, &m, &to, NULL, on_outcome, &o[5], 0, NULL), KP_ELIMIT);
  KP_CHECK_EQ(rpc.stats.rejected, 1);
  /* A response frees a slot: the first queued request leaves at once. */
  kp_dht_msg_t resp = {0};
  resp.type = KP_DHT_RESPONSE;
  resp.tid = reqs[0]->tid;
  resp.command = KP_DHT_CMD_PING;
  kp_dht_req_t *r = kp_dht_rpc_take(&rpc, &resp, &to);
  KP_CHECK(r == reqs[0]);
  kp_dht_rpc_finish(&rpc, r, &resp, &to, 1);
  KP_CHECK_EQ(w.sent, 3);
  /* Abandoning a queued request frees its place without a callback. */
  kp_dht_rpc_abandon(&rpc, reqs[4]);
  KP_CHECK_EQ(rpc.queue.count, 1);
  kp_dht_rpc_destroy(&rpc, 2);
  KP_CHECK_EQ(o[4].calls, 0);
  for (int i = 0; i < 4; i++) KP_CHECK_EQ(o[i].calls, 1);

  /* The rate cap spreads a burst over time. */
  wire_t w2 = {0};
  cfg.max_inflight = 1000;
  cfg.max_queued = 1000;
  cfg.rate = 100; /* burst: 25 */
  kp_dht_rpc_init(&rpc, &cfg, wire_send, &w2, &rng, 0);
  outcome_t sink = {0};
  for (int i = 0; i < 100; i++) {
    m = ping_to(&to);
    KP_CHECK_OK(kp_dht_rpc_request(&rpc, &m, &to, NULL, on_outcome, &sink, 0, NULL));
  }
  KP_CHECK_EQ(w2.sent, 25);
  uint64_t now = 0;
  while (w2.sent < 100 && now < 10000) {
    now = kp_dht_rpc_next_deadline(&rpc);
    kp_dht_rpc_tick(&rpc, now);
  }
  KP_CHECK_EQ(w2.sent, 100);
  KP_CHECK_MSG(now >= 740 && now <= 800, "75 more at 100/s took until %" PRIu64, now);
  kp_dht_rpc_destroy(&rpc, now);
}

static const kp_test_case_t cases[] = {
    KP_CASE(msg_roundtrip, unit, 10),
    KP_CASE(msg_golden, unit, 10),
    KP_CASE(msg_truncations, unit, 10),
    KP_CASE(msg_rejects, unit, 10),
    KP_CASE(msg_random, unit, 60),
    KP_CASE(msg_padding, unit, 10),
    KP_CASE(table_buckets, unit, 10),
    KP_CASE(table_closest, unit, 60),
    KP_CASE(table_prefix_limits, unit, 10),
    KP_CASE(id_metric, unit, 10),
    KP_CASE(token_rotation, unit, 10),
    KP_CASE(nat_classify, unit, 10),
    KP_CASE(nat_port_mapping, unit, 10),
    KP_CASE(nat_reporters_by_ip, unit, 10),
    KP_CASE(rpc_timeout_retry, unit, 10),
    KP_CASE(rpc_caps, unit, 10),
    KP_CASE(rpc_adaptive_timeout, unit, 10),
    KP_CASE(rpc_random_tids, unit, 10),
    KP_CASE(record_codec, unit, 10),
    KP_CASE(record_mutable, unit, 10),
    KP_CASE(store_announce_seq_expiry, unit, 10),
    KP_CASE(store_mutable_cas, unit, 10),
    KP_CASE(store_flood, unit, 30),
    KP_CASE(store_bytes_bound, unit, 30),
    KP_CASE(sim_lookup_accuracy, sim, 120),
    KP_CASE(sim_membership_firewall, sim, 60),
    KP_CASE(sim_nat_second_reporter, sim, 60),
    KP_CASE(sim_membership_moves, sim, 60),
    KP_CASE(sim_member_keeps_nat_open, sim, 60),
    KP_CASE(sim_suspend, sim, 60),
    KP_CASE(sim_full_bucket, sim, 60),
    KP_CASE(sim_no_amplification, sim, 60),
    KP_CASE(sim_down_hint, sim, 60),
    KP_CASE(sim_bootstrap_retry, sim, 60),
    KP_CASE(sim_bad_input_counted, sim, 60),
    KP_CASE(sim_requester_proves_address, sim, 60),
    KP_CASE(sim_extension_commit, sim, 60),
    KP_CASE(sim_loss, sim, 120),
    KP_CASE(eclipse_one_prefix, sim, 300),
    KP_CASE(sim_10k, sim, 300),
    KP_CASE(swarm_announce_lookup, sim, 60),
    KP_CASE(swarm_young_network_announce, sim, 60),
    KP_CASE(swarm_expiry_refresh, sim, 60),
    KP_CASE(swarm_unannounce, sim, 60),
    KP_CASE(swarm_relay_replacement, sim, 60),
    KP_CASE(swarm_forged_records, sim, 60),
    KP_CASE(record_origin_not_rehomed, sim, 60),
    KP_CASE(swarm_mutable, sim, 60),
    KP_CASE(swarm_immutable, sim, 60),

};

KP_TEST_MAIN(cases)
