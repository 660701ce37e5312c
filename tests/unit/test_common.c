/* SPDX-License-Identifier: MIT */
/* common/: errors, addresses, buffers, msgpack checks, rng, logging, the
 * allocator and the UDP socket layer. */
#include <msgpack.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/addr.h"
#include "common/alloc.h"
#include "common/buf.h"
#include "common/log.h"
#include "common/mp.h"
#include "common/ratelimit.h"
#include "common/rng.h"
#include "common/uv/udp.h"
#include "common/z32.h"
#include "tests/harness/test.h"

static void test_errors_named(void) {
  /* Every error of ours has a distinct value, a KP_ name and a message, and
   * libuv's pass through. */
  int codes[] = {
#define X(name, msg) KP_##name,
      KP_ERRNO_MAP(X)
#undef X
  };
  size_t n = sizeof(codes) / sizeof(codes[0]);
  for (size_t i = 0; i < n; i++) {
    KP_CHECK(codes[i] < KP__ERR_BASE + 1000 && codes[i] > KP__ERR_BASE);
    KP_CHECK(!strncmp(kp_err_name(codes[i]), "KP_E", 4));
    KP_CHECK(strcmp(kp_strerror(codes[i]), "unknown error") != 0);
    for (size_t j = 0; j < i; j++) KP_CHECK(codes[i] != codes[j]);
  }
  KP_CHECK(!strcmp(kp_err_name(KP_ETIMEDOUT), "ETIMEDOUT"));
  KP_CHECK(!strcmp(kp_strerror(KP_ECANCELED), uv_strerror(KP_ECANCELED)));
  KP_CHECK(!strcmp(kp_strerror(0), "success"));
  KP_CHECK(!strcmp(kp_err_name(KP__ERR_BASE - 5), "KP_EUNKNOWN"));
}

static void test_addr_parse_format(void) {
  static const struct {
    const char *in;
    int ok;
    const char *out;
  } cases[] = {
      {"1.2.3.4:5", 1, "1.2.3.4:5"},
      {"255.255.255.255:65535", 1, "255.255.255.255:65535"},
      {"[::1]:80", 1, "[::1]:80"},
      {"[2001:db8::7]:49737", 1, "[2001:db8::7]:49737"},
      {"10.0.0.1", 1, "10.0.0.1:0"},
      {"::1", 1, "[::1]:0"},
      {"1.2.3.4:65536", 0, NULL},
      {"1.2.3.4:", 0, NULL},
      {"1.2.3.4:-1", 0, NULL},
      {"1.2.3:4", 0, NULL},
      {"[::1", 0, NULL},
      {"[::1]x", 0, NULL},
      {"example.com:80", 0, NULL},
      {"", 0, NULL},
      {"1.2.3.4:5:6", 0, NULL},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    kp_addr_t a;
    char buf[KP_ADDR_STRLEN];
    int err = kp_addr_parse(&a, cases[i].in);
    KP_CHECK_MSG((err == 0) == cases[i].ok, "parse '%s': %s", cases[i].in, kp_err_name(err));
    if (!cases[i].ok) {
      KP_CHECK_EQ(err, KP_EBADADDR);
      KP_CHECK(!kp_addr_is_set(&a));
      continue;
    }
    KP_CHECK_MSG(!strcmp(kp_addr_format(&a, buf, sizeof(buf)), cases[i].out), "'%s' -> '%s'",
                 cases[i].in, buf);
  }
  kp_addr_t none = {0};
  char buf[KP_ADDR_STRLEN];
  KP_CHECK(!strcmp(kp_addr_format(&none, buf, sizeof(buf)), "(none)"));
  KP_CHECK_EQ(kp_addr_parse(&none, NULL), KP_EBADADDR);
}

static void test_addr_compact(void) {
  kp_addr_t a, b;
  uint8_t buf[KP_ADDR_COMPACT_MAX];
  KP_CHECK_OK(kp_addr_parse(&a, "198.51.100.7:49737"));
  KP_CHECK_EQ(kp_addr_encode_compact(&a, buf), 6);
  static const uint8_t golden4[] = {198, 51, 100, 7, 0xc2, 0x49};
  KP_CHECK_MEM(buf, golden4, 6);
  KP_CHECK_OK(kp_addr_decode_compact(&b, buf, 6));
  KP_CHECK(kp_addr_eq(&a, &b));

  KP_CHECK_OK(kp_addr_parse(&a, "[2001:db8::1]:1"));
  KP_CHECK_EQ(kp_addr_encode_compact(&a, buf), 18);
  KP_CHECK_EQ(buf[0], 0x20);
  KP_CHECK_EQ(buf[17], 1);
  KP_CHECK_OK(kp_addr_decode_compact(&b, buf, 18));
  KP_CHECK(kp_addr_eq(&a, &b));
  for (size_t len = 0; len < 20; len++)
    if (len != 6 && len != 18) KP_CHECK_EQ(kp_addr_decode_compact(&b, buf, len), KP_EBADADDR);
  kp_addr_t unset = {0};
  KP_CHECK_EQ(kp_addr_encode_compact(&unset, buf), 0);
}

static void test_addr_compare_hash(void) {
  kp_addr_t a, b, c, d;
  kp_addr_parse(&a, "10.0.0.1:5");
  kp_addr_parse(&b, "10.0.0.1:6");
  kp_addr_parse(&c, "10.0.0.2:5");
  kp_addr_parse(&d, "[::a00:1]:5");
  KP_CHECK(kp_addr_eq(&a, &a));
  KP_CHECK(!kp_addr_eq(&a, &b));
  KP_CHECK(kp_addr_same_ip(&a, &b));
  KP_CHECK(!kp_addr_same_ip(&a, &c));
  KP_CHECK(!kp_addr_same_ip(&a, &d));
  /* One host for per-source limits: an IPv4 address, an IPv6 /64. */
  kp_addr_t e, f, g;
  kp_addr_parse(&e, "[2001:db8:1:2::1]:5");
  kp_addr_parse(&f, "[2001:db8:1:2:ffff::9]:7");
  kp_addr_parse(&g, "[2001:db8:1:3::1]:5");
  KP_CHECK(kp_addr_same_host(&a, &b) && !kp_addr_same_host(&a, &c) && !kp_addr_same_host(&a, &d));
  KP_CHECK(kp_addr_same_host(&e, &f) && !kp_addr_same_host(&e, &g) && !kp_addr_same_host(&d, &a));
  KP_CHECK(kp_addr_cmp(&a, &b) < 0 && kp_addr_cmp(&b, &a) > 0);
  KP_CHECK(kp_addr_cmp(&b, &c) < 0);
  KP_CHECK(kp_addr_cmp(&a, &d) < 0); /* family first */
  KP_CHECK_EQ(kp_addr_cmp(&a, &a), 0);

  uint8_t k1[16] = {1}, k2[16] = {2};
  KP_CHECK(kp_addr_hash(&a, k1) == kp_addr_hash(&a, k1));
  KP_CHECK(kp_addr_hash(&a, k1) != kp_addr_hash(&b, k1));
  KP_CHECK(kp_addr_hash(&a, k1) != kp_addr_hash(&a, k2));
}

static void test_addr_classes(void) {
  static const struct {
    const char *addr;
    bool loopback, priv, any;
  } cases[] = {
      {"127.0.0.1:1", true, false, false},     {"10.1.2.3:1", false, true, false},
      {"172.16.0.1:1", false, true, false},    {"172.32.0.1:1", false, false, false},
      {"192.168.1.1:1", false, true, false},   {"100.64.0.1:1", false, true, false},
      {"198.51.100.1:1", false, false, false}, {"0.0.0.0:1", false, false, true},
      {"[::1]:1", true, false, false},         {"[fd00::1]:1", false, true, false},
      {"[fe80::1]:1", false, true, false},     {"[2001:db8::1]:1", false, false, false},
      {"[::]:1", false, false, true},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    kp_addr_t a;
    KP_CHECK_OK(kp_addr_parse(&a, cases[i].addr));
    KP_CHECK_MSG(kp_addr_is_loopback(&a) == cases[i].loopback, "%s loopback", cases[i].addr);
    KP_CHECK_MSG(kp_addr_is_private(&a) == cases[i].priv, "%s private", cases[i].addr);
    KP_CHECK_MSG(kp_addr_is_any(&a) == cases[i].any, "%s any", cases[i].addr);
  }
}

static void test_addr_sockaddr(void) {
  kp_addr_t a, b;
  struct sockaddr_storage ss;
  const char *texts[] = {"192.0.2.1:443", "[2001:db8::2]:8080"};
  for (int i = 0; i < 2; i++) {
    KP_CHECK_OK(kp_addr_parse(&a, texts[i]));
    KP_CHECK(kp_addr_to_sockaddr(&a, &ss) > 0);
    KP_CHECK_OK(kp_addr_from_sockaddr(&b, (struct sockaddr *)&ss));
    KP_CHECK(kp_addr_eq(&a, &b));
  }
  kp_addr_t unset = {0};
  KP_CHECK_EQ(kp_addr_to_sockaddr(&unset, &ss), 0);
  ss.ss_family = AF_UNIX;
  KP_CHECK_EQ(kp_addr_from_sockaddr(&b, (struct sockaddr *)&ss), KP_EBADADDR);
}

static void test_buf_bounds(void) {
  uint8_t mem[7];
  kp_wbuf_t w;
  kp_wbuf_init(&w, mem, sizeof(mem));
  kp_wbuf_put_u16(&w, 0x0102);
  kp_wbuf_put_u32(&w, 0x03040506);
  KP_CHECK(!w.overflow);
  kp_wbuf_put_u16(&w, 0x0708); /* one byte short: nothing written, flag set */
  KP_CHECK(w.overflow);
  KP_CHECK_EQ(w.len, 6);
  kp_wbuf_put_u8(&w, 9); /* later writes are ignored even if they would fit */
  KP_CHECK_EQ(w.len, 6);

  kp_rbuf_t r;
  kp_rbuf_init(&r, mem, 6);
  KP_CHECK_EQ(kp_rbuf_u16(&r), 0x0102);
  KP_CHECK_EQ(kp_rbuf_u32(&r), 0x03040506);
  KP_CHECK(!r.error);
  KP_CHECK_EQ(kp_rbuf_u8(&r), 0);
  KP_CHECK(r.error);
  KP_CHECK(kp_rbuf_take(&r, 0) == NULL); /* stays failed */

  uint8_t big[8];
  kp_wbuf_init(&w, big, sizeof(big));
  kp_wbuf_put_u64(&w, 0x1122334455667788ULL);
  kp_rbuf_init(&r, big, 8);
  KP_CHECK(kp_rbuf_u64(&r) == 0x1122334455667788ULL);
}

static size_t pack_sample(uint8_t *buf, size_t cap) {
  kp_wbuf_t w;
  msgpack_packer pk;
  kp_wbuf_init(&w, buf, cap);
  kp_mp_packer_init(&pk, &w);
  msgpack_pack_array(&pk, 4);
  msgpack_pack_uint32(&pk, 70000);
  kp_mp_pack_bin(&pk, "abc", 3);
  msgpack_pack_map(&pk, 1);
  msgpack_pack_str(&pk, 1);
  msgpack_pack_str_body(&pk, "k", 1);
  msgpack_pack_nil(&pk);
  msgpack_pack_int8(&pk, -5);
  return w.overflow ? 0 : w.len;
}

static void test_mp_check(void) {
  uint8_t buf[64];
  size_t n = pack_sample(buf, sizeof(buf));
  KP_CHECK(n > 0);
  KP_CHECK_OK(kp_mp_check(buf, n, 4));
  /* Every proper prefix is truncated; trailing bytes are malformed. */
  for (size_t i = 0; i < n; i++) KP_CHECK_EQ(kp_mp_check(buf, i, 4), KP_ETRUNCATED);
  buf[n] = 0xc0;
  KP_CHECK_EQ(kp_mp_check(buf, n + 1, 4), KP_EMALFORMED);
  /* Nesting deeper than allowed. */
  KP_CHECK_EQ(kp_mp_check(buf, n, 1), KP_EMALFORMED);

  /* The packer never writes past its buffer. */
  for (size_t cap = 0; cap < n; cap++) KP_CHECK_EQ(pack_sample(buf, cap), 0);

  /* Hostile sizes: 5 bytes that declare 4 billion elements, a bin longer
   * than the input, a reserved byte, an ext type. */
  static const uint8_t huge_array[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
  static const uint8_t huge_map[] = {0xdf, 0x10, 0x00, 0x00, 0x00, 0x01};
  static const uint8_t long_bin[] = {0xc6, 0x00, 0x01, 0x00, 0x00, 0x01};
  static const uint8_t reserved[] = {0xc1};
  static const uint8_t ext[] = {0xd4, 0x01, 0x02};
  KP_CHECK_EQ(kp_mp_check(huge_array, sizeof(huge_array), 4), KP_ETRUNCATED);
  KP_CHECK_EQ(kp_mp_check(huge_map, sizeof(huge_map), 4), KP_ETRUNCATED);
  KP_CHECK_EQ(kp_mp_check(long_bin, sizeof(long_bin), 4), KP_ETRUNCATED);
  KP_CHECK_EQ(kp_mp_check(reserved, 1, 4), KP_EMALFORMED);
  KP_CHECK_EQ(kp_mp_check(ext, 3, 4), KP_EMALFORMED);
  KP_CHECK_EQ(kp_mp_check(buf, 0, 4), KP_ETRUNCATED);

  /* After the check, the parse gives zero-copy views into the input. */
  n = pack_sample(buf, sizeof(buf));
  kp_mp_doc_t doc;
  const msgpack_object *root;
  KP_CHECK_OK(kp_mp_doc_parse(&doc, buf, n, 4, &root));
  const uint8_t *p;
  size_t plen;
  uint64_t v;
  KP_CHECK_OK(kp_mp_uint(&root->via.array.ptr[0], 70000, &v));
  KP_CHECK_EQ(v, 70000);
  KP_CHECK_EQ(kp_mp_uint(&root->via.array.ptr[0], 69999, &v), KP_EFIELD);
  KP_CHECK_OK(kp_mp_bin(&root->via.array.ptr[1], 3, 3, &p, &plen));
  KP_CHECK(p >= buf && p < buf + n);
  KP_CHECK_EQ(kp_mp_bin(&root->via.array.ptr[1], 4, 8, &p, &plen), KP_EFIELD);
  KP_CHECK_EQ(kp_mp_uint(&root->via.array.ptr[3], 100, &v), KP_EFIELD); /* negative */
  kp_mp_doc_free(&doc);
}

static void test_mp_random_input(void) {
  /* Random bytes never crash the checker or the parser; whatever passes the
   * check parses, and nothing allocates beyond a bound (ASan would say). */
  kp_rng_seeded_t st;
  kp_rng_seeded_init(&st, 42);
  kp_rng_t rng = kp_rng_seeded(&st);
  uint8_t buf[64];
  unsigned parsed = 0;
  for (int i = 0; i < 200000; i++) {
    size_t n = 1 + kp_rng_below(&rng, sizeof(buf));
    kp_rng_fill(&rng, buf, n);
    if (i % 3 == 0) buf[0] = (uint8_t)(0x90 | (buf[0] & 0x0f)); /* bias towards arrays */
    kp_mp_doc_t doc;
    const msgpack_object *root;
    int err = kp_mp_doc_parse(&doc, buf, n, 3, &root);
    if (err == 0) {
      parsed++;
      kp_mp_doc_free(&doc);
    } else {
      KP_CHECK(err == KP_ETRUNCATED || err == KP_EMALFORMED);
    }
  }
  KP_CHECK(parsed > 0);
}

static void test_rng(void) {
  kp_rng_seeded_t a, b;
  kp_rng_seeded_init(&a, 7);
  kp_rng_seeded_init(&b, 7);
  for (int i = 0; i < 100; i++) KP_CHECK(kp_rng_seeded_next(&a) == kp_rng_seeded_next(&b));
  kp_rng_seeded_init(&b, 8);
  KP_CHECK(kp_rng_seeded_next(&a) != kp_rng_seeded_next(&b));

  kp_rng_t r = kp_rng_seeded(&a);
  unsigned hist[10] = {0};
  for (int i = 0; i < 100000; i++) {
    uint32_t v = kp_rng_below(&r, 10);
    KP_CHECK(v < 10);
    hist[v]++;
  }
  for (int i = 0; i < 10; i++) KP_CHECK(hist[i] > 9000 && hist[i] < 11000);
  KP_CHECK_EQ(kp_rng_below(&r, 0), 0);
  KP_CHECK_EQ(kp_rng_below(&r, 1), 0);

  kp_rng_t sys = kp_rng_system();
  uint8_t x[32] = {0}, zero[32] = {0};
  kp_rng_fill(&sys, x, sizeof(x));
  KP_CHECK(memcmp(x, zero, 32) != 0);
}

typedef struct {
  int count;
  kp_log_level_t last_level;
  char last[256];
} log_capture_t;

static void capture(void *ctx, kp_log_level_t level, const char *line) {
  log_capture_t *c = ctx;
  c->count++;
  c->last_level = level;
  snprintf(c->last, sizeof(c->last), "%s", line);
}

static void test_log_levels(void) {
  log_capture_t cap = {0};
  kp_log_t log;
  kp_log_init(&log, KP_LOG_INFO, capture, &cap);
  log.prefix = "node";
  KP_DEBUG(&log, "hidden %d", 1);
  KP_CHECK_EQ(cap.count, 0);
  KP_INFO(&log, "shown %d", 2);
  KP_CHECK_EQ(cap.count, 1);
  KP_CHECK(!strcmp(cap.last, "node: shown 2"));
  KP_ERROR(&log, "bad");
  KP_CHECK_EQ(cap.last_level, KP_LOG_ERROR);
  kp_log_level_t lvl;
  KP_CHECK_OK(kp_log_level_parse("trace", &lvl));
  KP_CHECK_EQ(lvl, KP_LOG_TRACE);
  KP_CHECK_EQ(kp_log_level_parse("loud", &lvl), KP_ECONFIG);
}

typedef struct {
  int got;
  kp_addr_t from;
  uint8_t data[16];
  size_t len;
} udp_probe_t;

static void on_udp(kp_udp_t *udp, const kp_addr_t *from, uint8_t *data, size_t len) {
  udp_probe_t *p = udp->data;
  p->got++;
  p->from = *from;
  p->len = len < sizeof(p->data) ? len : sizeof(p->data);
  memcpy(p->data, data, p->len);
}

static void test_udp_send_recv(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_udp_t a, b;
  kp_addr_t any;
  kp_addr_parse(&any, "127.0.0.1:0");
  KP_CHECK_OK(kp_udp_init(&loop, &a, &any, NULL));
  KP_CHECK_OK(kp_udp_init(&loop, &b, &any, NULL));
  KP_CHECK(a.local.port != 0);
  udp_probe_t pb = {0};
  b.data = &pb;
  KP_CHECK_OK(kp_udp_recv_start(&b, on_udp));

  /* Batched sends leave together; an oversize datagram is refused. */
  kp_udp_batch_t batch;
  kp_udp_batch_begin(&a, &batch);
  for (int i = 0; i < KP_UDP_BATCH_DGRAMS + 8; i++)
    KP_CHECK_OK(kp_udp_send(&a, &b.local, "hello", 5));
  KP_CHECK_EQ(a.stats.packets_out, KP_UDP_BATCH_DGRAMS); /* a full batch flushed on its own */
  kp_udp_batch_end(&a, &batch);
  KP_CHECK_EQ(a.stats.packets_out, KP_UDP_BATCH_DGRAMS + 8);
  uint8_t big[KP_UDP_MAX_DATAGRAM + 1] = {0};
  KP_CHECK_EQ(kp_udp_send(&a, &b.local, big, sizeof(big)), KP_ETOOBIG);
  uint64_t t0 = kp_test_now_ms();
  while (pb.got < KP_UDP_BATCH_DGRAMS + 8 && kp_test_now_ms() - t0 < 5000)
    uv_run(&loop, UV_RUN_ONCE);
  KP_CHECK_EQ(pb.got, KP_UDP_BATCH_DGRAMS + 8);
  KP_CHECK(kp_addr_eq(&pb.from, &a.local));
  KP_CHECK_EQ(pb.len, 5);
  KP_CHECK_MEM(pb.data, "hello", 5);

  KP_CHECK_OK(kp_udp_set_ttl(&a, 2));
  KP_CHECK_OK(kp_udp_set_ttl(&a, 0));
  kp_udp_close(&a, NULL);
  kp_udp_close(&b, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  KP_CHECK_EQ(uv_loop_close(&loop), 0);
}

/* Bulk sends: runs of equal datagrams go as GSO sends, come back through
 * GRO, and are handed over one by one, in order, intact. */
typedef struct {
  unsigned got, bad;
  size_t sizes[256];
} bulk_probe_t;

static void on_bulk(kp_udp_t *udp, const kp_addr_t *from, uint8_t *data, size_t len) {
  bulk_probe_t *p = udp->data;
  (void)from;
  if (p->got < 256) p->sizes[p->got] = len;
  /* Datagram i is filled with (uint8_t)i. */
  for (size_t k = 0; k < len; k++) p->bad += data[k] != (uint8_t)p->got;
  p->got++;
}

/* Two sockets on loopback (a loop of their own), b handing what it
 * receives to on_bulk, through GRO if asked. */
static void bulk_pair(uv_loop_t *loop, kp_udp_t *a, kp_udp_t *b, bulk_probe_t *pb, bool gro) {
  uv_loop_init(loop);
  kp_addr_t any;
  kp_addr_parse(&any, "127.0.0.1:0");
  KP_CHECK_OK(kp_udp_init(loop, a, &any, NULL));
  KP_CHECK_OK(kp_udp_init(loop, b, &any, NULL));
  memset(pb, 0, sizeof(*pb));
  b->data = pb;
  if (gro) KP_CHECK_OK(kp_udp_enable_gro(b));
  KP_CHECK_OK(kp_udp_recv_start(b, on_bulk));
}

/* Runs the loop until b got `want`, then closes the pair and the loop. */
static void bulk_pair_end(uv_loop_t *loop, kp_udp_t *a, kp_udp_t *b, unsigned want) {
  bulk_probe_t *pb = b->data;
  uint64_t t0 = kp_test_now_ms();
  while (pb->got < want && kp_test_now_ms() - t0 < 5000) uv_run(loop, UV_RUN_ONCE);
  KP_CHECK_EQ(pb->got, want);
  KP_CHECK_EQ(pb->bad, 0);
  kp_udp_close(a, NULL);
  kp_udp_close(b, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  KP_CHECK_EQ(uv_loop_close(loop), 0);
}

static void test_udp_bulk(void) {
  uv_loop_t loop;
  kp_udp_t a, b;
  bulk_probe_t pb;
  bulk_pair(&loop, &a, &b, &pb, true);
  /* 100 datagrams: 60 of 1400 bytes (one GSO run... or two: 46 fit in 64
   * KiB), a short one ending the run, three odd sizes, 36 of 1200. */
  static uint8_t bufs[100][1472];
  kp_udp_out_t out[100];
  for (unsigned i = 0; i < 100; i++) {
    size_t len = i < 60 ? 1400 : i == 60 ? 700 : i < 64 ? 100 + i : 1200;
    memset(bufs[i], (int)i, len);
    out[i] = (kp_udp_out_t){b.local, bufs[i], len};
  }
  KP_CHECK_EQ(kp_udp_send_datagrams(&a, out, 100), 100);
  KP_CHECK_EQ(a.stats.packets_out, 100);
  KP_CHECK(a.stats.gso_sends >= 2);
  uint64_t t0 = kp_test_now_ms();
  while (pb.got < 100 && kp_test_now_ms() - t0 < 5000) uv_run(&loop, UV_RUN_ONCE);
  for (unsigned i = 0; i < 100 && i < pb.got; i++) KP_CHECK_EQ(pb.sizes[i], out[i].len);
  KP_CHECK(b.stats.gro_receives > 0); /* loopback passes GSO batches whole */
  bulk_pair_end(&loop, &a, &b, 100);
}

/* A batch holds two GSO sends' worth (a forwarder's burst leaves in one
 * system call), and a datagram sent in parts arrives whole. */
static void test_udp_batch_parts(void) {
  uv_loop_t loop;
  kp_udp_t a, b;
  bulk_probe_t pb;
  bulk_pair(&loop, &a, &b, &pb, false);
  /* Datagram i: a 14-byte head and a body, each filled with (uint8_t)i;
   * the last one has no body. */
  uint8_t head[14], body[1386];
  kp_udp_batch_t batch;
  kp_udp_batch_begin(&a, &batch);
  for (unsigned i = 0; i < KP_UDP_BATCH_DGRAMS; i++) {
    memset(head, (int)i, sizeof(head));
    memset(body, (int)i, sizeof(body));
    KP_CHECK_OK(kp_udp_send_parts(&a, &b.local, head, sizeof(head), body, sizeof(body)));
  }
  KP_CHECK_EQ(a.stats.packets_out, 0); /* all of them held */
  memset(head, KP_UDP_BATCH_DGRAMS, sizeof(head));
  KP_CHECK_OK(kp_udp_send_parts(&a, &b.local, head, sizeof(head), NULL, 0));
  KP_CHECK_EQ(a.stats.packets_out, KP_UDP_BATCH_DGRAMS); /* a full batch went to make room */
  KP_CHECK(a.stats.gso_sends >= 1);
  uint8_t big[KP_UDP_MAX_DATAGRAM];
  KP_CHECK_EQ(kp_udp_send_parts(&a, &b.local, head, sizeof(head), big, sizeof(big)), KP_ETOOBIG);
  kp_udp_batch_end(&a, &batch);
  KP_CHECK_EQ(a.stats.packets_out, KP_UDP_BATCH_DGRAMS + 1);
  /* Outside a batch: joined and sent at once. */
  memset(head, KP_UDP_BATCH_DGRAMS + 1, sizeof(head));
  memset(body, KP_UDP_BATCH_DGRAMS + 1, 100);
  KP_CHECK_OK(kp_udp_send_parts(&a, &b.local, head, sizeof(head), body, 100));
  KP_CHECK_EQ(a.stats.packets_out, KP_UDP_BATCH_DGRAMS + 2);
  bulk_pair_end(&loop, &a, &b, KP_UDP_BATCH_DGRAMS + 2);
  for (unsigned i = 0; i < KP_UDP_BATCH_DGRAMS; i++) KP_CHECK_EQ(pb.sizes[i], 1400);
  KP_CHECK_EQ(pb.sizes[KP_UDP_BATCH_DGRAMS], 14);
  KP_CHECK_EQ(pb.sizes[KP_UDP_BATCH_DGRAMS + 1], 114);
}

static void test_udp_bind_errors(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_udp_t a, b;
  kp_addr_t addr;
  kp_addr_parse(&addr, "127.0.0.1:0");
  KP_CHECK_OK(kp_udp_init(&loop, &a, &addr, NULL));
  KP_CHECK_EQ(kp_udp_init(&loop, &b, &a.local, NULL), KP_EADDRINUSE);
  kp_addr_parse(&addr, "192.0.2.1:0"); /* not ours */
  KP_CHECK_EQ(kp_udp_init(&loop, &b, &addr, NULL), UV_EADDRNOTAVAIL);
  kp_addr_t unset = {0};
  KP_CHECK_EQ(kp_udp_init(&loop, &b, &unset, NULL), KP_EBADADDR);
  kp_udp_close(&a, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  KP_CHECK_EQ(uv_loop_close(&loop), 0);
}

static void test_z32(void) {
  /* Vectors from an independent implementation; 0xf0bfc7 is the spec's. */
  uint8_t counting[32], ones[32], back[32];
  for (int i = 0; i < 32; i++) counting[i] = (uint8_t)i, ones[i] = 0xff;
  char text[KP_KEY_TEXT_LEN + 1];
  kp_z32_encode(counting, 32, text);
  KP_CHECK(!strcmp(text, "yyyoryarywdyqnyjbefoadeqbhebnrounoktcfaadrpbs8y7daxo"));
  kp_z32_encode(ones, 32, text);
  KP_CHECK(!strcmp(text, "999999999999999999999999999999999999999999999999999o"));
  static const uint8_t spec[3] = {0xf0, 0xbf, 0xc7};
  char small[8];
  kp_z32_encode(spec, 3, small);
  KP_CHECK(!strcmp(small, "6n9hq"));
  KP_CHECK_EQ(kp_z32_len(32), KP_KEY_TEXT_LEN);

  KP_CHECK_OK(kp_key_from_text("yyyoryarywdyqnyjbefoadeqbhebnrounoktcfaadrpbs8y7daxo", back));
  KP_CHECK_MEM(back, counting, 32);
  KP_CHECK_OK(kp_key_from_text("YYYORYARYWDYQNYJBEFOADEQBHEBNROUNOKTCFAADRPBS8Y7DAXO", back));
  KP_CHECK_MEM(back, counting, 32);
  static const char *bad[] = {
      "yyyoryarywdyqnyjbefoadeqbhebnrounoktcfaadrpbs8y7dax",   /* short */
      "yyyoryarywdyqnyjbefoadeqbhebnrounoktcfaadrpbs8y7daxoy", /* long */
      "yyyoryarywdyqnyjbefoadeqbhebnrounoktcfaadrpbs8y7dax0",  /* '0' is not in the alphabet */
      "yyyoryarywdyqnyjbefoadeqbhebnrounoktcfaadrpbs8y7daxr",  /* non-zero unused bits */
      "",
      NULL};
  for (int i = 0; i < 6; i++) KP_CHECK_EQ(kp_key_from_text(bad[i], back), KP_EKEYFORMAT);

  kp_rng_seeded_t st;
  kp_rng_seeded_init(&st, 32);
  kp_rng_t rng = kp_rng_seeded(&st);
  for (int i = 0; i < 1000; i++) {
    uint8_t k[32];
    kp_rng_fill(&rng, k, 32);
    kp_key_to_text(k, text);
    KP_CHECK_EQ(strlen(text), KP_KEY_TEXT_LEN);
    for (int j = 0; text[j]; j++)
      KP_CHECK((text[j] >= 'a' && text[j] <= 'z') || (text[j] >= '0' && text[j] <= '9'));
    KP_CHECK_OK(kp_key_from_text(text, back));
    KP_CHECK_MEM(back, k, 32);
  }
}

static void write_text(const char *path, const char *text, mode_t mode) {
  FILE *f = fopen(path, "w");
  KP_CHECK(f != NULL);
  fputs(text, f);
  fclose(f);
  KP_CHECK(chmod(path, mode) == 0);
}

static void test_key_files(void) {
  char dir[] = "/tmp/kp-keys-XXXXXX", path[256], other[256], text[1024];
  KP_CHECK(mkdtemp(dir) != NULL);
  snprintf(path, sizeof(path), "%s/id", dir);
  kp_keypair_t kp, back;
  kp_keypair_generate(&kp);
  mode_t old = umask(0); /* the file must be 0600 whatever the umask */
  KP_CHECK_OK(kp_key_file_write(path, &kp, false));
  umask(old);
  struct stat st;
  KP_CHECK(stat(path, &st) == 0);
  KP_CHECK_EQ(st.st_mode & 0777, 0600);
  KP_CHECK_OK(kp_key_file_read(path, &back));
  KP_CHECK_MEM(&back, &kp, sizeof(kp));
  /* Signing with what was read verifies under the public key. */
  uint8_t sig[64];
  crypto_sign_detached(sig, NULL, (const uint8_t *)"m", 1, back.secret_key);
  KP_CHECK(crypto_sign_verify_detached(sig, (const uint8_t *)"m", 1, kp.public_key) == 0);

  /* Never clobbered by accident; replaced on request. */
  KP_CHECK_ERR(kp_key_file_write(path, &kp, false), KP_EEXIST);
  kp_keypair_t other_kp;
  kp_keypair_generate(&other_kp);
  KP_CHECK_OK(kp_key_file_write(path, &other_kp, true));
  KP_CHECK_OK(kp_key_file_read(path, &back));
  KP_CHECK_MEM(back.public_key, other_kp.public_key, 32);
  KP_CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);

  /* Readable by group or others: refused, and nothing returned. */
  KP_CHECK(chmod(path, 0640) == 0);
  KP_CHECK_ERR(kp_key_file_read(path, &back), KP_EKEYPERM);
  uint8_t zero[sizeof(back)] = {0};
  KP_CHECK_MEM(&back, zero, sizeof(back));
  KP_CHECK(chmod(path, 0604) == 0);
  KP_CHECK_ERR(kp_key_file_read(path, &back), KP_EKEYPERM);
  KP_CHECK(chmod(path, 0400) == 0);
  KP_CHECK_OK(kp_key_file_read(path, &back));

  /* Damage of every kind. */
  FILE *f = fopen(path, "r");
  size_t n = fread(text, 1, sizeof(text) - 1, f);
  fclose(f);
  text[n] = '\0';
  snprintf(other, sizeof(other), "%s/bad", dir);
  char *seed = strstr(text, "seed ") + 5;
  char saved = seed[3];
  seed[3] = seed[3] == 'y' ? 'b' : 'y'; /* a different seed: public key no longer matches */
  write_text(other, text, 0600);
  KP_CHECK_ERR(kp_key_file_read(other, &back), KP_EKEYFORMAT);
  seed[3] = '0'; /* not z-base-32 */
  write_text(other, text, 0600);
  KP_CHECK_ERR(kp_key_file_read(other, &back), KP_EKEYFORMAT);
  seed[3] = saved;
  write_text(other, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI\n", 0600);
  KP_CHECK_ERR(kp_key_file_read(other, &back), KP_EKEYFORMAT);
  write_text(other, "", 0600);
  KP_CHECK_ERR(kp_key_file_read(other, &back), KP_EKEYFORMAT);
  write_text(other, "kadpunch secret key v1\npublic abc\n", 0600);
  KP_CHECK_ERR(kp_key_file_read(other, &back), KP_EKEYFORMAT);
  char big[6000];
  memset(big, '#', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  write_text(other, big, 0600);
  KP_CHECK_ERR(kp_key_file_read(other, &back), KP_EKEYFORMAT);
  snprintf(other, sizeof(other), "%s/missing", dir);
  KP_CHECK_ERR(kp_key_file_read(other, &back), KP_ENOENT);
  KP_CHECK_ERR(kp_key_file_read(dir, &back), KP_EISDIR);
  snprintf(other, sizeof(other), "%s/link", dir);
  KP_CHECK(symlink(path, other) == 0);
  KP_CHECK_ERR(kp_key_file_read(other, &back), KP_EKEYFORMAT);
  snprintf(other, sizeof(other), "%s/nodir/id", dir);
  KP_CHECK_ERR(kp_key_file_write(other, &kp, false), KP_ENOENT);
  char cmd[300];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  KP_CHECK_EQ(kp_test_sh("%s", cmd), 0);

  /* Seeds are deterministic; wiping clears. */
  uint8_t s32[32] = {7};
  kp_keypair_t a, b;
  kp_keypair_from_seed(&a, s32);
  kp_keypair_from_seed(&b, s32);
  KP_CHECK_MEM(&a, &b, sizeof(a));
  kp_keypair_wipe(&a);
  KP_CHECK_MEM(&a, zero, sizeof(a));
}

/* Invitations: text round trip; a proof binds the secret, the id and both
 * keys; anything else is not an invitation. */
static void test_invites(void) {
  uint8_t server[32], client[32], other[32], proof[32];
  memset(server, 1, 32), memset(client, 2, 32), memset(other, 3, 32);
  kp_invite_t inv, back;
  kp_invite_generate(server, &inv);
  KP_CHECK(inv.id != 0);
  char text[KP_INVITE_TEXT_LEN + 1];
  kp_invite_to_text(&inv, text);
  KP_CHECK_EQ(strlen(text), KP_INVITE_TEXT_LEN);
  KP_CHECK_OK(kp_invite_from_text(text, &back));
  KP_CHECK(back.id == inv.id && !memcmp(back.secret, inv.secret, 16) &&
           !memcmp(back.server_key, server, 32));
  kp_invite_proof(&inv, client, proof);
  KP_CHECK(kp_invite_check(&back, client, proof));
  KP_CHECK(!kp_invite_check(&back, other, proof)); /* another client's */
  back.id ^= 1;
  KP_CHECK(!kp_invite_check(&back, client, proof)); /* another invitation's */
  back.id ^= 1;
  back.server_key[0] ^= 1;
  KP_CHECK(!kp_invite_check(&back, client, proof)); /* another server's */
  KP_CHECK(kp_invite_from_text("short", &back) != 0);
  char key_text[KP_KEY_TEXT_LEN + 1];
  kp_key_to_text(server, key_text);
  KP_CHECK(kp_invite_from_text(key_text, &back) != 0);
  KP_CHECK(kp_service_name_ok("ssh") && kp_service_name_ok("web-2.v1_x"));
  KP_CHECK(!kp_service_name_ok("") && !kp_service_name_ok("a b") &&
           !kp_service_name_ok("seventeen-chars-x"));
}

/* Admission budgets: exact integer refill, a sender key that ignores ports
 * and spans an IPv6 /64, a table that never grows, and fairness: a flood of
 * distinct senders, or one heavy sender, never costs a well-behaved sender
 * its budget. */
static void test_ratelimit(void) {
  kp_bucket_t b;
  kp_bucket_init(&b, 20, 1000);
  for (int i = 0; i < 20; i++) KP_CHECK(kp_bucket_take(&b, 20, 20, 1, 1000));
  KP_CHECK(!kp_bucket_take(&b, 20, 20, 1, 1000));
  KP_CHECK(!kp_bucket_take(&b, 20, 20, 1, 1049)); /* 20/s: one token per 50 ms */
  KP_CHECK(kp_bucket_take(&b, 20, 20, 1, 1050));
  /* No drift: over 10 s of 1 ms steps, exactly 200 tokens. */
  unsigned got = 0;
  for (uint64_t t = 1051; t <= 11050; t++) got += kp_bucket_take(&b, 20, 20, 1, t);
  KP_CHECK_EQ(got, 200);
  /* Huge rates and gaps neither overflow nor exceed the burst. */
  kp_bucket_init(&b, 1ull << 40, 0);
  KP_CHECK(kp_bucket_take(&b, 1ull << 40, 1ull << 40, 1ull << 40, 0));
  KP_CHECK_EQ(kp_bucket_level(&b, 1ull << 40, 1ull << 40, 1000000000ull), 1ull << 40);
  /* A clock stepping back refills nothing. */
  KP_CHECK(kp_bucket_take(&b, 1, 1ull << 40, 1ull << 40, 1000000000ull));
  KP_CHECK_EQ(kp_bucket_level(&b, 1, 1ull << 40, 5), 0);

  uint8_t key[KP_RATELIMIT_KEY_LEN];
  memset(key, 7, sizeof(key));
  kp_ratelimit_t rl;
  KP_CHECK_ERR(kp_ratelimit_init(&rl, 0, 1, 1, key), KP_EINVAL);
  KP_CHECK_OK(kp_ratelimit_init(&rl, 100, 10, 10, key));
  kp_ratelimit_slot_t *slots = rl.slots;
  size_t sets = rl.set_mask + 1;
  KP_CHECK(sets * KP_RATELIMIT_WAYS >= 100);

  kp_addr_t a, a2, m, v6, v6b, v6c;
  kp_addr_parse(&a, "198.51.100.7:1000");
  kp_addr_parse(&a2, "198.51.100.7:2000");
  kp_addr_parse(&m, "[::ffff:198.51.100.7]:3000");
  kp_addr_parse(&v6, "[2001:db8:1:2:3::1]:1");
  kp_addr_parse(&v6b, "[2001:db8:1:2:ffff::9]:2");
  kp_addr_parse(&v6c, "[2001:db8:1:3::1]:1");
  KP_CHECK(kp_ratelimit_key(&rl, &a) == kp_ratelimit_key(&rl, &a2));
  KP_CHECK(kp_ratelimit_key(&rl, &a) == kp_ratelimit_key(&rl, &m));
  KP_CHECK(kp_ratelimit_key(&rl, &v6) == kp_ratelimit_key(&rl, &v6b));
  KP_CHECK(kp_ratelimit_key(&rl, &v6) != kp_ratelimit_key(&rl, &v6c));
  KP_CHECK(kp_ratelimit_key(&rl, &a) != kp_ratelimit_key(&rl, &v6));

  /* One sender: its burst, then its rate, whatever port it uses. */
  uint64_t level;
  for (int i = 0; i < 10; i++) KP_CHECK(kp_ratelimit_take(&rl, i % 2 ? &a : &a2, 1, 0, NULL));
  KP_CHECK(!kp_ratelimit_take(&rl, &m, 1, 0, &level));
  KP_CHECK_EQ(level, 0);

  /* 100,000 distinct senders in one second, each within its budget, and
   * a well-behaved sender taking 5 per second throughout: nobody who kept
   * to the rate is ever refused, and the table is the one allocated. */
  kp_addr_t good;
  kp_addr_parse(&good, "203.0.113.200:5");
  unsigned refused = 0, good_refused = 0;
  for (uint32_t i = 0; i < 100000; i++) {
    kp_addr_t x;
    kp_addr_set_v4(&x, 0x0a000000u + i, 9);
    uint64_t now = 10000 + i / 100; /* 1 s */
    refused += !kp_ratelimit_take(&rl, &x, 1, now, NULL);
    if (i % 20000 == 0) good_refused += !kp_ratelimit_take(&rl, &good, 1, now, NULL);
  }
  KP_CHECK_EQ(refused, 0);
  KP_CHECK_EQ(good_refused, 0);
  KP_CHECK(rl.slots == slots && rl.set_mask + 1 == sets);
  KP_CHECK(rl.evictions > 0);

  /* A heavy sender gets its rate and no more, over 10 s, while another
   * sender keeps its own. */
  unsigned heavy = 0, other = 0;
  kp_addr_t h;
  kp_addr_parse(&h, "198.51.100.99:1");
  for (uint64_t t = 20000; t < 30000; t++) {
    for (int k = 0; k < 100; k++) heavy += kp_ratelimit_take(&rl, &h, 1, t, NULL);
    if (t % 100 == 0) other += kp_ratelimit_take(&rl, &good, 1, t, NULL);
  }
  KP_CHECK(heavy >= 100 && heavy <= 110); /* 10 s x 10/s, plus the burst */
  KP_CHECK_EQ(other, 100);
  kp_ratelimit_destroy(&rl);
}

static const kp_test_case_t cases[] = {
    KP_CASE(errors_named, unit, 10),        KP_CASE(invites, unit, 10),
    KP_CASE(ratelimit, unit, 10),           KP_CASE(addr_parse_format, unit, 10),
    KP_CASE(addr_compact, unit, 10),        KP_CASE(addr_compare_hash, unit, 10),
    KP_CASE(addr_classes, unit, 10),        KP_CASE(addr_sockaddr, unit, 10),
    KP_CASE(buf_bounds, unit, 10),          KP_CASE(mp_check, unit, 10),
    KP_CASE(mp_random_input, unit, 60),     KP_CASE(rng, unit, 10),
    KP_CASE(log_levels, unit, 10),          KP_CASE(udp_send_recv, loopback, 20),
    KP_CASE(udp_bind_errors, loopback, 20), KP_CASE(udp_bulk, loopback, 20),
    KP_CASE(udp_batch_parts, loopback, 20), KP_CASE(z32, unit, 10),
    KP_CASE(key_files, unit, 10),
};

KP_TEST_MAIN(cases)
