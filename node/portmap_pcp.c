/* SPDX-License-Identifier: MIT */
/* PCP on the node's loop (portmap_pcp.h). The socket is connected to the
 * gateway, so the kernel drops what anyone else sends it, and an ICMP port
 * unreachable arrives as a receive error: nobody answers PCP there. */
#include "node/portmap_pcp.h"

#include <sodium.h>
#include <string.h>

#include "common/addr.h"
#include "common/alloc.h"
#include "node/pcp_msg.h"

#define FIRST_WAIT_MS 250 /* RFC 6886's schedule: a gateway on the LAN answers within it */

struct kp_pcp_s {
  uv_loop_t *loop;
  uv_udp_t sock;
  uv_timer_t timer;
  unsigned open_handles; /* sock, timer */
  kp_addr_t gateway;
  uint16_t port;
  kp_pcp_map_req_t req; /* the request in flight, or the last one */
  uint16_t had_port;    /* the external port the last mapping got */
  unsigned tries_left;
  uint64_t wait_ms;
  bool busy;
  bool closing;
  uint64_t dropped;
  kp_pcp_cb cb;
  void *ctx;
  kp_pcp_closed_cb closed;
  void *closed_ctx;
  uint8_t rbuf[KP_PCP_MAX_LEN];
};

static void report(kp_pcp_t *p, kp_pcp_outcome_t outcome, const char *why,
                   const kp_pcp_map_resp_t *resp) {
  kp_pcp_result_t r = {.outcome = outcome, .why = why};
  if (resp) {
    r.external = resp->external;
    r.lifetime_s = resp->lifetime_s;
  }
  p->busy = false;
  uv_timer_stop(&p->timer);
  if (p->cb) p->cb(p->ctx, &r);
}

static void send_request(kp_pcp_t *p) {
  uint8_t msg[KP_PCP_MAP_LEN];
  kp_pcp_encode_map(&p->req, msg);
  uv_buf_t b = uv_buf_init((char *)msg, sizeof(msg));
  /* A send that fails (no route yet) is a lost datagram: the next try. */
  (void)uv_udp_try_send(&p->sock, &b, 1, NULL);
}

static void on_timer(uv_timer_t *t) {
  kp_pcp_t *p = t->data;
  if (!p->busy) return;
  if (!p->tries_left) {
    report(p, KP_PCP_NO_PCP, "the gateway does not answer PCP", NULL);
    return;
  }
  p->tries_left--;
  send_request(p);
  uv_timer_start(&p->timer, on_timer, p->wait_ms, 0);
  p->wait_ms *= 2;
}

/* An answer to the request in flight: its nonce, UDP, our port. */
static bool ours(const kp_pcp_t *p, const kp_pcp_map_resp_t *m) {
  if (!m->has_map) return m->result != KP_PCP_SUCCESS; /* an error's short form */
  return !sodium_memcmp(m->nonce, p->req.nonce, KP_PCP_NONCE_LEN) && m->protocol == 17 &&
         m->internal_port == p->port;
}

static void on_answer(kp_pcp_t *p, const uint8_t *data, size_t len) {
  kp_pcp_map_resp_t m;
  kp_pcp_decoded_t d = kp_pcp_decode(data, len, &m);
  /* Once the gateway mapped with PCP, only answers carrying our nonce
   * count: anyone on the LAN can send what looks like the gateway's
   * "version 0" or a short error, and must not end a mapping with it. */
  if (p->had_port && (d != KP_PCP_MAP_ANSWER || !m.has_map)) {
    p->dropped++;
    return;
  }
  if (d == KP_PCP_OLD_VERSION) {
    report(p, KP_PCP_NO_PCP, "the gateway speaks NAT-PMP, not PCP", NULL);
    return;
  }
  if (d != KP_PCP_MAP_ANSWER || !ours(p, &m)) {
    p->dropped++;
    return;
  }
  bool deleting = p->req.lifetime_s == 0;
  switch (m.result) {
    case KP_PCP_SUCCESS:
      if (deleting && m.lifetime_s) {
        p->dropped++; /* the mapping's answer, late: not the delete's (RFC 6887 section 15) */
      } else if (deleting) {
        report(p, KP_PCP_DELETED, "deleted", &m);
      } else if (m.external.family == KP_AF_INET && m.external.port && m.lifetime_s &&
                 !kp_addr_is_any(&m.external)) {
        p->had_port = m.external.port;
        report(p, KP_PCP_MAPPED, NULL, &m);
      } else {
        p->dropped++; /* a mapping of nothing, or of another family: not one we can use */
      }
      return;
    /* What a gateway says when it does not do what we ask of PCP: NAT-PMP
     * may still. */
    case KP_PCP_UNSUPP_VERSION:
    case KP_PCP_MALFORMED_REQUEST:
    case KP_PCP_UNSUPP_OPCODE:
    case KP_PCP_UNSUPP_PROTOCOL:
    case KP_PCP_ADDRESS_MISMATCH:
      report(p, KP_PCP_NO_PCP, kp_pcp_result_why(m.result), NULL);
      return;
    default: report(p, KP_PCP_REFUSED, kp_pcp_result_why(m.result), NULL); return;
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  kp_pcp_t *p = h->data;
  (void)suggested;
  *buf = uv_buf_init((char *)p->rbuf, sizeof(p->rbuf));
}

static void on_recv(uv_udp_t *u, ssize_t n, const uv_buf_t *buf, const struct sockaddr *from,
                    unsigned flags) {
  kp_pcp_t *p = u->data;
  (void)from;
  if (!p->busy) return; /* unasked: dropped (libuv has read it) */
  if (n == UV_ECONNREFUSED && !p->had_port) {
    report(p, KP_PCP_NO_PCP, "nobody answers PCP at the gateway", NULL);
    return;
  }
  /* A datagram longer than any PCP message is not one. */
  if (n <= 0 || (flags & UV_UDP_PARTIAL)) return;
  on_answer(p, (const uint8_t *)buf->base, (size_t)n);
}

static int open_socket(kp_pcp_t *p) {
  struct sockaddr_storage ss;
  struct sockaddr_in any = {.sin_family = AF_INET};
  int err = uv_udp_bind(&p->sock, (const struct sockaddr *)&any, 0);
  if (!err && kp_addr_to_sockaddr(&p->gateway, &ss))
    err = uv_udp_connect(&p->sock, (const struct sockaddr *)&ss);
  else if (!err)
    err = UV_EINVAL;
  /* The client's address in the request is the one the gateway sees: the
   * socket's, once the route to the gateway chose it. */
  int len = sizeof(ss);
  if (!err) err = uv_udp_getsockname(&p->sock, (struct sockaddr *)&ss, &len);
  if (!err) err = kp_addr_from_sockaddr(&p->req.client, (const struct sockaddr *)&ss);
  if (!err) err = uv_udp_recv_start(&p->sock, on_alloc, on_recv);
  return err;
}

static void on_closed(uv_handle_t *h) {
  kp_pcp_t *p = h->data;
  p->open_handles &= ~(h == (uv_handle_t *)&p->timer ? 1u : 2u);
  if (p->open_handles) return;
  kp_pcp_closed_cb closed = p->closed;
  void *ctx = p->closed_ctx;
  kp_free(p);
  if (closed) closed(ctx);
}

int kp_pcp_new(uv_loop_t *loop, const kp_addr_t *gateway, uint16_t port, kp_pcp_t **out) {
  *out = NULL;
  if (gateway->family != KP_AF_INET) return UV_EAFNOSUPPORT;
  kp_pcp_t *p = kp_calloc(1, sizeof(*p));
  if (!p) return UV_ENOMEM;
  p->loop = loop;
  p->gateway = *gateway;
  if (!p->gateway.port) p->gateway.port = KP_PCP_PORT;
  p->port = port;
  randombytes_buf(p->req.nonce, sizeof(p->req.nonce));
  p->req.internal_port = port;
  int err = uv_timer_init(loop, &p->timer);
  if (err) {
    kp_free(p);
    return err;
  }
  p->timer.data = p;
  p->open_handles = 1;
  err = uv_udp_init(loop, &p->sock);
  if (!err) {
    p->sock.data = p;
    p->open_handles |= 2;
    err = open_socket(p);
  }
  if (err) {
    kp_pcp_close(p, NULL, NULL);
    return err;
  }
  *out = p;
  return 0;
}

static int start(kp_pcp_t *p, uint32_t lifetime_s, unsigned tries, kp_pcp_cb cb, void *ctx) {
  if (p->busy || p->closing || !tries) return UV_EBUSY;
  p->req.lifetime_s = lifetime_s;
  /* The port it had (a renewal keeps it), else the socket's own. */
  p->req.suggested = (kp_addr_t){.family = KP_AF_INET, .port = p->had_port ? p->had_port : p->port};
  p->cb = cb;
  p->ctx = ctx;
  p->busy = true;
  p->tries_left = tries;
  p->wait_ms = FIRST_WAIT_MS;
  on_timer(&p->timer);
  return 0;
}

int kp_pcp_map(kp_pcp_t *p, uint32_t lifetime_s, unsigned tries, kp_pcp_cb cb, void *ctx) {
  return start(p, lifetime_s ? lifetime_s : 1, tries, cb, ctx);
}

int kp_pcp_unmap(kp_pcp_t *p, unsigned tries, kp_pcp_cb cb, void *ctx) {
  return start(p, 0, tries, cb, ctx);
}

void kp_pcp_cancel(kp_pcp_t *p) {
  p->busy = false;
  uv_timer_stop(&p->timer);
}

bool kp_pcp_busy(const kp_pcp_t *p) {
  return p->busy;
}

bool kp_pcp_has_mapped(const kp_pcp_t *p) {
  return p->had_port != 0;
}

uint64_t kp_pcp_dropped(const kp_pcp_t *p) {
  return p->dropped;
}

void kp_pcp_close(kp_pcp_t *p, kp_pcp_closed_cb closed, void *ctx) {
  kp_pcp_cancel(p);
  p->closing = true;
  p->closed = closed;
  p->closed_ctx = ctx;
  p->cb = NULL;
  uv_close((uv_handle_t *)&p->timer, on_closed);
  if (p->open_handles & 2) uv_close((uv_handle_t *)&p->sock, on_closed);
}
