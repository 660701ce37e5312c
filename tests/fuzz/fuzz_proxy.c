/* SPDX-License-Identifier: MIT */
/* Fuzz target: the proxy's codec and both ends of a session
 * (proxy/proxy_msg.h, proxy.h, proxy_client.h). Each input runs one proxy
 * with small tables and one client that has shaken hands with it, then a
 * script of steps [kind][arg][length][bytes]...:
 *   0  raw datagram to the proxy from source arg (the client's address is 0)
 *   1  the client sends the bytes from channel arg%4 to an address (arg)
 *   2  a datagram at allocation slot arg%8 from an address (arg)
 *   3  raw datagram to the client
 *   4  the clock moves on arg*50 ms (both tick)
 *   5  the bytes as a body and as a datagram: what decodes encodes the same
 * The seeds: a session's first exchanges, and a connection that gets a
 * binding (PASS both ways), for the mutations to start from.
 * Whatever comes: the proxy answers an outsider with no more bytes than
 * it got, only to it; allocations send only to addresses in scope; the
 * tables hold their caps. */
#include <string.h>

#include "proxy/proxy.h"
#include "proxy/proxy_client.h"
#include "tests/fuzz/fuzz.h"

typedef struct fz_s {
  kp_proxy_t *px;
  kp_proxy_client_t *cl;
  kp_addr_t proxy, client;
  uint64_t now;
  size_t in_outsider, out_outsider;
  bool open[8];
  /* the client's datagrams wait here (delivered after each step, not
   * from inside the proxy's own calls) */
  uint8_t q[8][1500];
  size_t qlen[8];
  unsigned qn;
} fz_t;

static fz_t F;

static void source(uint8_t i, kp_addr_t *a) {
  kp_addr_set_v4(a, 0xc6336400u + (i % 4), (uint16_t)(5000 + i % 8)); /* 198.51.100.x */
}

static void px_send(void *ctx, const kp_addr_t *to, const uint8_t *data, size_t len) {
  (void)ctx;
  KP_FUZZ_ASSERT(len <= 1500);
  if (kp_addr_eq(to, &F.client)) {
    kp_proxy_client_input(F.cl, data, len, F.now);
  } else {
    F.out_outsider += len;
  }
}

static int px_open(void *ctx, unsigned slot, uint8_t family, kp_addr_t *bound) {
  (void)ctx;
  /* One family here: an OPEN for the other is refused before this. */
  KP_FUZZ_ASSERT(slot < 8 && !F.open[slot] && family == F.proxy.family);
  F.open[slot] = true;
  *bound = F.proxy;
  bound->port = (uint16_t)(40000 + slot);
  return 0;
}

static void px_alloc_send(void *ctx, unsigned slot, const kp_addr_t *to, const uint8_t *data,
                          size_t len) {
  (void)ctx, (void)data;
  KP_FUZZ_ASSERT(slot < 8 && F.open[slot] && len <= KP_PROXY_MAX_PAYLOAD);
  KP_FUZZ_ASSERT(kp_proxy_in_scope(&F.proxy, to));
}

static void px_close(void *ctx, unsigned slot) {
  (void)ctx;
  KP_FUZZ_ASSERT(slot < 8 && F.open[slot]);
  F.open[slot] = false;
}

static void cl_send(void *ctx, const uint8_t *data, size_t len) {
  (void)ctx;
  if (F.qn < 8) {
    memcpy(F.q[F.qn], data, len);
    F.qlen[F.qn++] = len;
  }
}

static void flush(void) {
  for (unsigned round = 0; round < 4 && F.qn; round++) {
    unsigned n = F.qn;
    uint8_t q[8][1500];
    size_t qlen[8];
    memcpy(q, F.q, sizeof(q));
    memcpy(qlen, F.qlen, sizeof(qlen));
    F.qn = 0;
    for (unsigned i = 0; i < n; i++) kp_proxy_input(F.px, &F.client, q[i], qlen[i], F.now);
  }
}

static void on_opened(void *ctx, unsigned ch, const kp_addr_t *a) {
  (void)ctx, (void)ch, (void)a;
}
static void on_recv(void *ctx, unsigned ch, const kp_addr_t *from, const uint8_t *d, size_t n) {
  (void)ctx, (void)from, (void)d;
  KP_FUZZ_ASSERT(ch < KP_PROXY_CHANNELS && n <= KP_PROXY_MAX_PAYLOAD);
}
static void on_closed(void *ctx, unsigned ch, uint8_t reason) {
  (void)ctx, (void)ch;
  KP_FUZZ_ASSERT(reason <= KP_PROXY_REASON_MAX);
}
static void on_down(void *ctx, uint8_t reason) {
  (void)ctx, (void)reason;
}

static void fill(void *ctx, void *buf, size_t len) {
  uint8_t *b = buf;
  uint64_t *s = ctx;
  for (size_t i = 0; i < len; i++) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    b[i] = (uint8_t)(*s >> 56);
  }
}

static void codec_roundtrip(const uint8_t *data, size_t len) {
  kp_proxy_body_t b;
  uint8_t out[1500];
  if (kp_proxy_body_decode(data, len, &b) == 0) {
    size_t n = kp_proxy_body_encode(&b, out, sizeof(out));
    KP_FUZZ_ASSERT(n == len && !memcmp(out, data, n));
  }
  kp_proxy_dgram_t d;
  if (kp_proxy_dgram_decode(data, len, &d) == 0 && d.type == KP_PROXY_REFUSED) {
    kp_proxy_refused_encode(d.receiver, d.reason, out);
    KP_FUZZ_ASSERT(!memcmp(out, data, KP_PROXY_REFUSED_LEN));
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  memset(&F, 0, sizeof(F));
  uint64_t seed = 1;
  kp_rng_t rng = {fill, &seed};
  kp_proxy_config_t cfg;
  kp_proxy_config_defaults(&cfg);
  cfg.max_sessions = 4;
  cfg.max_allocs = 8;
  cfg.permits = 4;
  cfg.proven = 2;
  cfg.lifetime_s = 2;
  cfg.max_lifetime_s = 5;
  cfg.alloc_quota = 20000;
  cfg.idle_ms = 3000;
  cfg.half_open_ms = 1000;
  kp_addr_parse(&F.proxy, "203.0.113.1:4000");
  F.client = (kp_addr_t){0};
  source(0, &F.client);
  F.now = 1;
  static kp_keypair_t pk, ck;
  if (!pk.public_key[0] && !pk.public_key[1]) {
    uint8_t s1[32] = {1}, s2[32] = {2};
    kp_keypair_from_seed(&pk, s1);
    kp_keypair_from_seed(&ck, s2);
  }
  kp_proxy_io_t io = {NULL, px_send, px_open, px_alloc_send, px_close, NULL};
  if (kp_proxy_new(&cfg, &pk, &rng, &io, &F.px)) return 0;
  kp_proxy_set_local(F.px, &F.proxy, NULL);
  kp_proxy_client_io_t cio = {NULL, cl_send, on_opened, on_recv, on_closed, on_down, NULL};
  if (kp_proxy_client_new(&ck, pk.public_key, &rng, &cio, F.now, &F.cl)) {
    kp_proxy_free(F.px);
    return 0;
  }
  kp_proxy_client_tick(F.cl, F.now);
  flush();
  for (unsigned ch = 0; ch < 4; ch++) kp_proxy_client_open(F.cl, ch, KP_AF_INET, F.now);
  flush();

  size_t at = 0;
  while (at + 3 <= size) {
    uint8_t kind = data[at] % 6, arg = data[at + 1];
    size_t len = data[at + 2] * 8u;
    at += 3;
    if (len > size - at) len = size - at;
    const uint8_t *p = data + at;
    kp_addr_t a;
    source(arg, &a);
    switch (kind) {
      case 0:
        if (!kp_addr_eq(&a, &F.client)) F.in_outsider += len;
        kp_proxy_input(F.px, &a, p, len, F.now);
        break;
      case 1:
        kp_addr_set_v4(&a, 0xc6336400u + (arg & 15), (uint16_t)(7000 + (arg >> 4)));
        if (arg & 0x80) kp_addr_set_v4(&a, 0x0a000001u, 53); /* private: out of scope */
        kp_proxy_client_send(F.cl, arg % 4, &a, p, len, F.now);
        break;
      case 2:
        kp_addr_set_v4(&a, 0xc6336400u + (arg & 15), (uint16_t)(7000 + (arg >> 4)));
        if (len) kp_proxy_alloc_input(F.px, arg % 8, &a, p, len, F.now);
        break;
      case 3: kp_proxy_client_input(F.cl, p, len, F.now); break;
      case 4:
        F.now += arg * 50u;
        kp_proxy_tick(F.px, F.now);
        kp_proxy_client_tick(F.cl, F.now);
        break;
      default: codec_roundtrip(p, len); break;
    }
    flush();
    at += len;
  }
  KP_FUZZ_ASSERT(F.out_outsider <= F.in_outsider);
  kp_proxy_stats_t st;
  kp_proxy_stats(F.px, &st);
  KP_FUZZ_ASSERT(st.sessions + st.half_open <= 4 && st.allocs <= 8);
  kp_proxy_client_free(F.cl);
  kp_proxy_free(F.px);
  for (unsigned i = 0; i < 8; i++) KP_FUZZ_ASSERT(!F.open[i]);
  return 0;
}

size_t kp_fuzz_seeds(kp_fuzz_seed_t *seeds, size_t cap) {
  /* A probe out, its answer back, data both ways, a tick, a KEY?, bodies. */
  static uint8_t buf[1024];
  size_t n = 0;
  buf[n++] = 1, buf[n++] = 0x10, buf[n++] = 8;
  memset(buf + n, 0x50, 64), n += 64;
  buf[n++] = 2, buf[n++] = 0x10, buf[n++] = 8;
  memset(buf + n, 0x50, 64), n += 64;
  buf[n++] = 1, buf[n++] = 0x10, buf[n++] = 40;
  memset(buf + n, 0x41, 320), n += 320;
  buf[n++] = 4, buf[n++] = 30, buf[n++] = 0;
  buf[n++] = 0, buf[n++] = 3, buf[n++] = 8;
  kp_proxy_key_req_encode(buf + n), n += 64;
  buf[n++] = 5, buf[n++] = 0, buf[n++] = 1;
  static const uint8_t body[8] = {KP_PROXY_OP_SEND, 1, 6, 198, 51, 100, 1, 0};
  memcpy(buf + n, body, 8), n += 8;
  if (!cap) return 0;
  seeds[0] = (kp_fuzz_seed_t){buf, n};
  if (cap < 2) return 1;
  /* A connection: a probe and its answer, then stream packets both ways
   * until the address is bound and they go as PASS. */
  static uint8_t conn[512];
  size_t m = 0;
  conn[m++] = 1, conn[m++] = 0x10, conn[m++] = 8;
  memset(conn + m, 0x50, 8), m += 8;
  conn[m++] = 2, conn[m++] = 0x10, conn[m++] = 8;
  memset(conn + m, 0x50, 8), m += 8;
  for (int k = 0; k < 12; k++) {
    conn[m++] = 2, conn[m++] = 0x10, conn[m++] = 1;
    memset(conn + m, 0x41, 8), m += 8;
    conn[m++] = 1, conn[m++] = 0x10, conn[m++] = 1;
    memset(conn + m, 0x41, 8), m += 8;
  }
  seeds[1] = (kp_fuzz_seed_t){conn, m};
  return 2;
}
