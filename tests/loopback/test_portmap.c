/* SPDX-License-Identifier: MIT */
/* Port mapping against a gateway of our own on loopback (127.77.0.N:5351,
 * one address per case, so cases run side by side): PCP's MAP exchange
 * (node/pcp_msg.c, node/portmap_pcp.c), and the order a node asks in
 * (node/portmap.c): PCP, then NAT-PMP where the gateway answers version 0
 * or nothing, never where it refused. The real gateway (miniupnpd) is the
 * NAT lab's (nat.portmap). */
#include <arpa/inet.h>
#include <string.h>
#include <uv.h>

#include "common/addr.h"
#include "node/pcp_msg.h"
#include "node/portmap.h"
#include "node/portmap_pcp.h"
#include "tests/harness/test.h"

#define PORT 40123
#define GRANTED_PORT 41000
#define EXTERNAL_IP "203.0.113.7"

typedef enum gw_mode_e {
  GW_PCP,         /* maps with PCP; before its answers: a forgery (wrong nonce) to the first
                     mapping, a spoofed "version 0" to a renewal, a late mapping answer to a
                     delete */
  GW_NATPMP_ONLY, /* answers PCP with NAT-PMP's "unsupported version" */
  GW_PCP_SILENT,  /* never answers PCP; maps with NAT-PMP */
  GW_PCP_REFUSES, /* answers PCP with NOT_AUTHORIZED */
} gw_mode_t;

typedef struct gateway_s {
  uv_udp_t sock;
  gw_mode_t mode;
  unsigned pcp_maps, pcp_deletes, pcp_dropped, natpmp_requests, natpmp_deletes;
  uint8_t first_nonce[KP_PCP_NONCE_LEN];
  bool nonce_changed;
  uint8_t last_pcp[KP_PCP_MAP_LEN];
  kp_addr_t pcp_from;
  uint8_t rbuf[1500];
} gateway_t;

static void put16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v) {
  put16(p, (uint16_t)(v >> 16));
  put16(p + 2, (uint16_t)v);
}

static void gw_send(gateway_t *g, const struct sockaddr *to, const uint8_t *data, size_t len) {
  uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
  KP_CHECK(uv_udp_try_send(&g->sock, &b, 1, to) == (int)len);
}

/* A MAP response to req (written by hand, not with our encoder): the
 * request's nonce, protocol and port; the external address given. */
static void pcp_answer(gateway_t *g, const struct sockaddr *to, const uint8_t *req, uint8_t result,
                       const uint8_t nonce[KP_PCP_NONCE_LEN], uint32_t lifetime) {
  uint8_t r[KP_PCP_MAP_LEN] = {2, 0x81, 0, result};
  put32(r + 4, lifetime);
  put32(r + 8, 12345); /* epoch */
  memcpy(r + 24, nonce, KP_PCP_NONCE_LEN);
  memcpy(r + 36, req + 36, 6); /* protocol, reserved, internal port */
  put16(r + 42, GRANTED_PORT);
  r[54] = r[55] = 0xff;
  inet_pton(AF_INET, EXTERNAL_IP, r + 56);
  gw_send(g, to, r, sizeof(r));
}

static void on_pcp_request(gateway_t *g, const struct sockaddr *from, const uint8_t *req,
                           size_t len) {
  KP_CHECK_EQ(len, KP_PCP_MAP_LEN);
  uint32_t lifetime = (uint32_t)req[4] << 24 | (uint32_t)req[5] << 16 | req[6] << 8 | req[7];
  if (lifetime == 0)
    g->pcp_deletes++;
  else
    g->pcp_maps++;
  if (g->pcp_maps + g->pcp_deletes == 1)
    memcpy(g->first_nonce, req + 24, KP_PCP_NONCE_LEN);
  else if (memcmp(g->first_nonce, req + 24, KP_PCP_NONCE_LEN))
    g->nonce_changed = true;
  memcpy(g->last_pcp, req, KP_PCP_MAP_LEN);
  kp_addr_from_sockaddr(&g->pcp_from, from);
  if (g->mode == GW_NATPMP_ONLY) {
    static const uint8_t old[8] = {0, 0x81, 0, 1}; /* version 0, result 1 */
    gw_send(g, from, old, sizeof(old));
  } else if (g->mode == GW_PCP_REFUSES) {
    pcp_answer(g, from, req, KP_PCP_NOT_AUTHORIZED, req + 24, 30);
  } else if (g->mode == GW_PCP) {
    KP_CHECK_MSG(lifetime || g->pcp_maps, "a delete before any mapping");
    if (g->pcp_maps == 1 && lifetime) {
      /* Someone on the LAN answers first, with another nonce. */
      uint8_t forged[KP_PCP_NONCE_LEN];
      memcpy(forged, req + 24, sizeof(forged));
      forged[0] ^= 1;
      pcp_answer(g, from, req, KP_PCP_SUCCESS, forged, 7200);
    } else if (lifetime) {
      /* A renewal: someone says the gateway speaks NAT-PMP only. */
      static const uint8_t old[8] = {0, 0x81, 0, 1};
      gw_send(g, from, old, sizeof(old));
    } else {
      /* A delete: the answer to a mapping request, late. */
      pcp_answer(g, from, req, KP_PCP_SUCCESS, req + 24, 3600);
    }
    pcp_answer(g, from, req, KP_PCP_SUCCESS, req + 24, lifetime ? 3600 : 0);
  }
}

/* NAT-PMP (RFC 6886 section 3): the public address, and UDP mappings. */
static void on_natpmp_request(gateway_t *g, const struct sockaddr *from, const uint8_t *req,
                              size_t len) {
  g->natpmp_requests++;
  if (len == 2 && req[1] == 0) {
    uint8_t r[12] = {0, 128, 0, 0};
    inet_pton(AF_INET, EXTERNAL_IP, r + 8);
    gw_send(g, from, r, sizeof(r));
  } else if (len == 12 && req[1] == 1) {
    uint8_t r[16] = {0, 129, 0, 0};
    memcpy(r + 8, req + 4, 2);
    bool deleting = !memcmp(req + 8, "\0\0\0\0", 4);
    if (deleting) g->natpmp_deletes++;
    put16(r + 10, deleting ? 0 : GRANTED_PORT);
    put32(r + 12, deleting ? 0 : 3600);
    gw_send(g, from, r, sizeof(r));
  }
}

static void gw_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  gateway_t *g = h->data;
  (void)suggested;
  *buf = uv_buf_init((char *)g->rbuf, sizeof(g->rbuf));
}

static void gw_recv(uv_udp_t *u, ssize_t n, const uv_buf_t *buf, const struct sockaddr *from,
                    unsigned flags) {
  gateway_t *g = u->data;
  (void)flags;
  if (n <= 0 || !from) return;
  const uint8_t *d = (const uint8_t *)buf->base;
  if (d[0] == KP_PCP_VERSION) {
    if (g->mode == GW_PCP_SILENT)
      g->pcp_dropped++;
    else
      on_pcp_request(g, from, d, (size_t)n);
  } else if (d[0] == 0) {
    on_natpmp_request(g, from, d, (size_t)n);
  }
}

static void gw_start(gateway_t *g, uv_loop_t *loop, int n, gw_mode_t mode, kp_addr_t *at) {
  memset(g, 0, sizeof(*g));
  g->mode = mode;
  char ip[32];
  snprintf(ip, sizeof(ip), "127.77.0.%d", n);
  struct sockaddr_in sin;
  uv_ip4_addr(ip, KP_PCP_PORT, &sin);
  KP_CHECK_OK(uv_udp_init(loop, &g->sock));
  g->sock.data = g;
  KP_CHECK_OK(uv_udp_bind(&g->sock, (const struct sockaddr *)&sin, 0));
  KP_CHECK_OK(uv_udp_recv_start(&g->sock, gw_alloc, gw_recv));
  kp_addr_from_sockaddr(at, (const struct sockaddr *)&sin);
}

/* What the portmap told us. */
typedef struct seen_s {
  kp_port_mapping_t last;
  unsigned reports, settles;
  bool settled_asking; /* the start settled while still asking */
  bool closed;
} seen_t;

static void on_mapping(void *ctx, const kp_port_mapping_t *now, bool settled) {
  seen_t *s = ctx;
  s->last = *now;
  s->reports++;
  if (settled) {
    s->settles++;
    s->settled_asking = now->state == KP_PORT_MAPPING_ASKING;
  }
}

static void on_closed(void *ctx) {
  ((seen_t *)ctx)->closed = true;
}

/* Runs the loop until *flag or ms have passed (bounded either way). */
static void run_until(uv_loop_t *loop, const bool *flag, uint64_t ms) {
  uint64_t end = kp_test_now_ms() + ms;
  while (!*flag && kp_test_now_ms() < end) uv_run(loop, UV_RUN_ONCE);
}

typedef struct mapping_case_s {
  uv_loop_t loop;
  gateway_t gw;
  kp_addr_t gw_addr;
  kp_portmap_t *pm;
  seen_t seen;
  bool done;
  uv_timer_t poll;
} mapping_case_t;

static void check_state(uv_timer_t *t) {
  mapping_case_t *c = t->data;
  if (c->seen.last.state == KP_PORT_MAPPING_ACTIVE ||
      c->seen.last.state == KP_PORT_MAPPING_UNAVAILABLE)
    c->done = true;
}

/* Starts a portmap at a gateway in `mode` and runs until it has mapped or
 * given up (at most 5 s). */
static void map_at(mapping_case_t *c, int n, gw_mode_t mode) {
  memset(c, 0, sizeof(*c));
  KP_CHECK_OK(uv_loop_init(&c->loop));
  gw_start(&c->gw, &c->loop, n, mode, &c->gw_addr);
  KP_CHECK_OK(uv_timer_init(&c->loop, &c->poll));
  c->poll.data = c;
  KP_CHECK_OK(uv_timer_start(&c->poll, check_state, 10, 10));
  KP_CHECK_OK(kp_portmap_start(&c->loop, PORT, &c->gw_addr, NULL, on_mapping, &c->seen, &c->pm));
  run_until(&c->loop, &c->done, 5000);
  KP_CHECK_MSG(c->done, "no outcome in 5 s (state %d)", c->seen.last.state);
}

/* Closes the portmap and everything else, bounded. */
static void close_case(mapping_case_t *c) {
  kp_portmap_close(c->pm, on_closed, &c->seen);
  run_until(&c->loop, &c->seen.closed, 3000);
  KP_CHECK_MSG(c->seen.closed, "the portmap did not close in 3 s");
  uv_close((uv_handle_t *)&c->poll, NULL);
  uv_close((uv_handle_t *)&c->gw.sock, NULL);
  uv_run(&c->loop, UV_RUN_DEFAULT);
  KP_CHECK_OK(uv_loop_close(&c->loop));
}

static void check_mapped(const mapping_case_t *c, const char *protocol) {
  char text[KP_ADDR_STRLEN], want[KP_ADDR_STRLEN];
  const kp_port_mapping_t *m = &c->seen.last;
  KP_CHECK_MSG(m->state == KP_PORT_MAPPING_ACTIVE, "not mapped: %s", m->why ? m->why : "?");
  KP_CHECK_MSG(!strcmp(m->protocol, protocol), "mapped with %s, not %s", m->protocol, protocol);
  snprintf(want, sizeof(want), "%s:%u", EXTERNAL_IP, GRANTED_PORT);
  KP_CHECK_MSG(!strcmp(kp_addr_format(&m->external, text, sizeof(text)), want), "mapped %s", text);
  KP_CHECK_EQ(m->lifetime_s, 3600);
  KP_CHECK(kp_addr_eq(&m->gateway, &c->gw_addr));
  KP_CHECK_EQ(c->seen.settles, 1);
}

/* ---- The codec ------------------------------------------------------------ */

static void test_pcp_codec(void) {
  kp_pcp_map_req_t req = {.lifetime_s = 7200, .internal_port = 4242};
  memset(req.nonce, 0xab, sizeof(req.nonce));
  kp_addr_parse(&req.client, "192.168.1.20");
  req.suggested = (kp_addr_t){.family = KP_AF_INET, .port = 4242};
  uint8_t m[KP_PCP_MAP_LEN];
  kp_pcp_encode_map(&req, m);
  /* RFC 6887 figure 2 and figure 9, byte by byte. */
  static const uint8_t head[24] = {2, 1, 0, 0, 0, 0, 0x1c, 0x20, 0,   0,   0, 0,
                                   0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 1, 20};
  KP_CHECK_MEM(m, head, sizeof(head));
  KP_CHECK(m[24] == 0xab && m[35] == 0xab);
  KP_CHECK_EQ(m[36], 17);
  KP_CHECK(m[40] == 0x10 && m[41] == 0x92 && m[42] == 0x10 && m[43] == 0x92);
  static const uint8_t any_v4[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0};
  KP_CHECK_MEM(m + 44, any_v4, 16);

  /* The same bytes as a success (R bit set) read back. */
  m[1] |= 0x80;
  m[54] = m[55] = 0xff;
  m[56] = 203, m[57] = 0, m[58] = 113, m[59] = 9;
  kp_pcp_map_resp_t r;
  KP_CHECK_EQ(kp_pcp_decode(m, sizeof(m), &r), KP_PCP_MAP_ANSWER);
  KP_CHECK(r.has_map && r.result == KP_PCP_SUCCESS && r.lifetime_s == 7200);
  KP_CHECK(r.protocol == 17 && r.internal_port == 4242);
  KP_CHECK_MEM(r.nonce, req.nonce, KP_PCP_NONCE_LEN);
  char text[KP_ADDR_STRLEN];
  KP_CHECK(!strcmp(kp_addr_format(&r.external, text, sizeof(text)), "203.0.113.9:4242"));
  /* Options after the MAP data are skipped. */
  uint8_t longer[KP_PCP_MAP_LEN + 8] = {0};
  memcpy(longer, m, sizeof(m));
  KP_CHECK_EQ(kp_pcp_decode(longer, sizeof(longer), &r), KP_PCP_MAP_ANSWER);

  /* What is not an answer to a MAP request. */
  KP_CHECK_EQ(kp_pcp_decode(m, 3, &r), KP_PCP_NOT_AN_ANSWER);
  KP_CHECK_EQ(kp_pcp_decode(m, 58, &r), KP_PCP_NOT_AN_ANSWER); /* not a multiple of 4 */
  KP_CHECK_EQ(kp_pcp_decode(m, 56, &r), KP_PCP_NOT_AN_ANSWER); /* a success cut short */
  m[1] = 1;                                                    /* a request, not a response */
  KP_CHECK_EQ(kp_pcp_decode(m, sizeof(m), &r), KP_PCP_NOT_AN_ANSWER);
  m[1] = 0x82; /* PEER, not MAP */
  KP_CHECK_EQ(kp_pcp_decode(m, sizeof(m), &r), KP_PCP_NOT_AN_ANSWER);
  m[1] = 0x81;
  m[0] = 3;
  KP_CHECK_EQ(kp_pcp_decode(m, sizeof(m), &r), KP_PCP_NOT_AN_ANSWER);
  uint8_t huge[KP_PCP_MAX_LEN + 4] = {2, 0x81};
  KP_CHECK_EQ(kp_pcp_decode(huge, sizeof(huge), &r), KP_PCP_NOT_AN_ANSWER);

  /* A NAT-PMP server's "unsupported version", and a short PCP error. */
  static const uint8_t natpmp[8] = {0, 0x81, 0, 1};
  KP_CHECK_EQ(kp_pcp_decode(natpmp, sizeof(natpmp), &r), KP_PCP_OLD_VERSION);
  uint8_t err[24] = {2, 0x81, 0, KP_PCP_NO_RESOURCES, 0, 0, 0, 30};
  KP_CHECK_EQ(kp_pcp_decode(err, sizeof(err), &r), KP_PCP_MAP_ANSWER);
  KP_CHECK(!r.has_map && r.result == KP_PCP_NO_RESOURCES && r.lifetime_s == 30);
  KP_CHECK(strstr(kp_pcp_result_why(KP_PCP_NOT_AUTHORIZED), "not authorized"));
  KP_CHECK(strstr(kp_pcp_result_why(200), "PCP"));
}

/* ---- A node's portmap against each gateway ------------------------------- */

/* A PCP gateway: the mapping, its request as RFC 6887 has it, a forged
 * answer ignored, and the delete on close with the mapping's nonce. */
static void test_pcp_gateway(void) {
  mapping_case_t c;
  map_at(&c, 1, GW_PCP);
  check_mapped(&c, "PCP");
  KP_CHECK_EQ(c.gw.natpmp_requests, 0);
  KP_CHECK_EQ(c.gw.pcp_maps, 1);
  const uint8_t *q = c.gw.last_pcp;
  KP_CHECK(q[0] == 2 && q[1] == 1 && q[36] == 17);
  KP_CHECK(q[40] == PORT >> 8 && q[41] == (PORT & 0xff)); /* internal */
  KP_CHECK(q[42] == PORT >> 8 && q[43] == (PORT & 0xff)); /* suggested: the socket's own */
  KP_CHECK(q[6] == 0x1c && q[7] == 0x20);                 /* 7200 s */
  /* The client address it wrote is the one the gateway saw. */
  static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  KP_CHECK_MEM(q + 8, v4_mapped, sizeof(v4_mapped));
  KP_CHECK_MEM(q + 20, c.gw.pcp_from.ip, 4);
  close_case(&c);
  KP_CHECK_EQ(c.gw.pcp_deletes, 1);
  KP_CHECK(!c.gw.nonce_changed);
  KP_CHECK(c.gw.last_pcp[4] == 0 && c.gw.last_pcp[7] == 0); /* lifetime 0 */
  KP_CHECK_EQ(c.gw.natpmp_requests, 0);
}

/* A gateway that speaks NAT-PMP only answers PCP with version 0: the node
 * maps with NAT-PMP at once, and deletes with it. */
static void test_natpmp_fallback(void) {
  mapping_case_t c;
  map_at(&c, 2, GW_NATPMP_ONLY);
  check_mapped(&c, "NAT-PMP");
  KP_CHECK_EQ(c.gw.pcp_maps, 1);
  close_case(&c);
  KP_CHECK_EQ(c.gw.natpmp_deletes, 1);
  KP_CHECK_EQ(c.gw.pcp_deletes, 0);
}

/* A gateway that drops PCP: three tries, then NAT-PMP; the start settled
 * long before (the node does not wait for the fallback). */
static void test_pcp_silent_fallback(void) {
  mapping_case_t c;
  uint64_t t0 = kp_test_now_ms();
  map_at(&c, 3, GW_PCP_SILENT);
  uint64_t took = kp_test_now_ms() - t0;
  check_mapped(&c, "NAT-PMP");
  KP_CHECK(c.seen.settled_asking);
  KP_CHECK_EQ(c.gw.pcp_dropped, 3);
  KP_CHECK_MSG(took >= 1700, "fell back after %llu ms, before PCP's three tries",
               (unsigned long long)took);
  close_case(&c);
  KP_CHECK_EQ(c.gw.natpmp_deletes, 1);
}

/* A refusal is the gateway's answer: no NAT-PMP after it, nothing to
 * delete. */
static void test_pcp_refused(void) {
  mapping_case_t c;
  map_at(&c, 4, GW_PCP_REFUSES);
  KP_CHECK_EQ(c.seen.last.state, KP_PORT_MAPPING_UNAVAILABLE);
  KP_CHECK_MSG(strstr(c.seen.last.why, "not authorized"), "why: %s", c.seen.last.why);
  KP_CHECK(!strcmp(c.seen.last.protocol, "PCP"));
  close_case(&c);
  KP_CHECK_EQ(c.gw.natpmp_requests, 0);
  KP_CHECK_EQ(c.gw.pcp_maps, 1);
  KP_CHECK_EQ(c.gw.pcp_deletes, 0);
}

/* ---- The PCP client alone: a renewal keeps the nonce and the port ------- */

typedef struct pcp_seen_s {
  kp_pcp_result_t last;
  bool got;
} pcp_seen_t;

static void on_pcp(void *ctx, const kp_pcp_result_t *r) {
  pcp_seen_t *s = ctx;
  s->last = *r;
  s->got = true;
}

static void test_pcp_renewal(void) {
  uv_loop_t loop;
  gateway_t gw;
  kp_addr_t at;
  KP_CHECK_OK(uv_loop_init(&loop));
  gw_start(&gw, &loop, 5, GW_PCP, &at);
  kp_pcp_t *p;
  KP_CHECK_OK(kp_pcp_new(&loop, &at, PORT, &p));
  for (int round = 0; round < 2; round++) {
    pcp_seen_t s = {0};
    KP_CHECK_OK(kp_pcp_map(p, 600, 3, on_pcp, &s));
    KP_CHECK(kp_pcp_busy(p));
    KP_CHECK_ERR(kp_pcp_map(p, 600, 3, on_pcp, &s), UV_EBUSY);
    run_until(&loop, &s.got, 3000);
    KP_CHECK(s.got && s.last.outcome == KP_PCP_MAPPED && s.last.external.port == GRANTED_PORT);
    /* The first asks for the socket's port, a renewal for the one granted. */
    uint16_t suggested = (uint16_t)(gw.last_pcp[42] << 8 | gw.last_pcp[43]);
    KP_CHECK_EQ(suggested, round ? GRANTED_PORT : PORT);
  }
  KP_CHECK(!gw.nonce_changed);
  /* The first round's forgery, and the renewal's "version 0": once mapped,
   * only answers with our nonce count. */
  KP_CHECK_EQ(kp_pcp_dropped(p), 2);
  KP_CHECK(kp_pcp_has_mapped(p));
  pcp_seen_t s = {0};
  KP_CHECK_OK(kp_pcp_unmap(p, 2, on_pcp, &s));
  run_until(&loop, &s.got, 3000);
  KP_CHECK(s.got && s.last.outcome == KP_PCP_DELETED);
  KP_CHECK_EQ(kp_pcp_dropped(p), 3); /* the late mapping answer is no delete's */
  kp_pcp_close(p, NULL, NULL);
  uv_close((uv_handle_t *)&gw.sock, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  KP_CHECK_OK(uv_loop_close(&loop));
}

static const kp_test_case_t cases[] = {
    KP_CASE(pcp_codec, unit, 10),           KP_CASE(pcp_gateway, loopback, 20),
    KP_CASE(natpmp_fallback, loopback, 20), KP_CASE(pcp_silent_fallback, loopback, 20),
    KP_CASE(pcp_refused, loopback, 20),     KP_CASE(pcp_renewal, loopback, 20),
};

KP_TEST_MAIN(cases)
