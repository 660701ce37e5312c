/* SPDX-License-Identifier: MIT */
/* A proxy on a node's socket (proxy/proxy.h is the state machine; this is
 * its libuv glue): session datagrams arrive on the node's socket (node.c
 * hands over the 0x58 class), each allocation is a UDP socket of its own
 * on the node's address, one timer ends what expired, and the proxy is
 * announced on the DHT like a relay. An object with its own lifecycle:
 * kp_proxy_service_create / kp_proxy_service_close.
 *
 * On a dual-stack node the proxy runs on the first node and serves both
 * families, as a dual-stack relay does: sessions arrive on either node's
 * socket (and TCP port), an allocation is opened on the node of the
 * family the peer asks for, whichever family its session runs on, and
 * each family's node announces the proxy there. So an IPv6-only peer
 * borrows an IPv4 address, and the other way round. */
#include <string.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "node/node_internal.h"
#include "node/node_proxy.h"
#include "proxy/proxy.h"
#include "relay/uv/tunnel.h"

#define TICK_MS 1000
/* The TCP port (the UDP port's number), for peers whose UDP is blocked:
 * each link carries one peer's session datagrams as DATA frames on
 * channel 0 of the relay tunnel's framing (relay/tunnel.h). */
#define TCP_BACKLOG 64
#define TCP_LINKS 256
#define TCP_LINKS_PER_IP 16
#define LINK_STALL_MS 10000

typedef struct plink_s {
  kp_tunnel_io_t io;
  struct kp_proxy_service_s *svc;
  struct plink_s *next;
  kp_addr_t peer;
  bool closing;
} plink_t;

typedef struct alloc_sock_s {
  kp_udp_t udp;
  kp_proxy_service_t *svc;
  unsigned slot;
} alloc_sock_t;

/* The TCP port on one family's node. */
typedef struct listener_s {
  uv_tcp_t tcp;
  struct kp_proxy_service_s *svc;
  bool open;
} listener_t;

struct kp_proxy_service_s {
  kp_node_t *node;
  kp_proxy_t *px;
  kp_keypair_t kp;
  uv_timer_t timer;
  bool timer_open, closing, announce;
  /* By family: the first node's record, then its sibling's. */
  kp_announce_t *announced[2];
  bool named_both[2];
  alloc_sock_t **socks; /* by slot */
  unsigned max_allocs, socks_closing;
  kp_proxy_service_close_cb close_cb;
  listener_t listen[2]; /* the first node's family, the sibling's */
  plink_t *links;
  unsigned link_count, links_closing;
  uint64_t tcp_refused, tcp_drops;
  /* What the node's socket hands the proxy comes in bursts (a coalesced
   * receive of one peer's stream) that leave one allocation: those sends
   * are gathered in one batch on that allocation's socket and flushed
   * when the loop has polled (a check handle), so a burst leaves as GSO
   * sends rather than one system call a datagram. An idle handle runs with
   * it: a batch begun before the poll phase (a TCP peer's frames, from a
   * write that completed at once) must not wait for the poll to time out. */
  kp_udp_batch_t *gather;
  unsigned gather_slot;
  bool gathering;
  uv_check_t gather_check;
  uv_idle_t gather_idle;
  unsigned gather_handles; /* open: the check and the idle handle */
};

void kp_proxy_service_options_init(kp_proxy_service_options_t *opts) {
  memset(opts, 0, sizeof(*opts));
  opts->announce = true;
}

static plink_t *link_of(kp_proxy_service_t *svc, const kp_addr_t *peer) {
  for (plink_t *l = svc->links; l; l = l->next)
    if (kp_addr_eq(&l->peer, peer)) return l;
  return NULL;
}

/* The socket of a family's node, or NULL (none, or closing). */
static kp_udp_t *sock_of(const kp_proxy_service_t *svc, uint8_t family) {
  kp_node_t *n = kp__node_of_family(svc->node, family);
  return n && !n->closing ? &n->sock : NULL;
}

static kp_node_t *sibling_of(const kp_proxy_service_t *svc) {
  kp_node_t *sib = svc->node->sibling;
  return sib && !sib->closing ? sib : NULL;
}

/* What the proxy sends while handling one input leaves in batches: one
 * per family's socket (the session may run on either). */
typedef struct batches_s {
  kp_udp_t *sock[2];
  kp_udp_batch_t batch[2];
} batches_t;

static void batches_begin(kp_proxy_service_t *svc, batches_t *b) {
  kp_node_t *sib = sibling_of(svc);
  b->sock[0] = &svc->node->sock;
  b->sock[1] = sib ? &sib->sock : NULL;
  for (int i = 0; i < 2; i++)
    if (b->sock[i]) kp_udp_batch_begin(b->sock[i], &b->batch[i]);
}

static void batches_end(batches_t *b) {
  for (int i = 0; i < 2; i++)
    if (b->sock[i]) kp_udp_batch_end(b->sock[i], &b->batch[i]);
}

static void px_send(void *ctx, const kp_addr_t *to, const uint8_t *data, size_t len) {
  kp_proxy_service_t *svc = ctx;
  if (svc->node->closing) return;
  plink_t *l = svc->links ? link_of(svc, to) : NULL;
  if (!l) {
    kp_udp_t *sock = sock_of(svc, to->family);
    if (sock) kp_udp_send(sock, to, data, len);
    return;
  }
  kp_tunnel_frame_t f = {.type = KP_TUNNEL_DATA, .addr = *to, .data = data, .len = len};
  if (l->closing || !kp_tunnel_io_send(&l->io, &f)) svc->tcp_drops++;
}

static void px_send_parts(void *ctx, const kp_addr_t *to, const uint8_t *head, size_t hlen,
                          const uint8_t *body, size_t blen) {
  kp_proxy_service_t *svc = ctx;
  if (svc->node->closing) return;
  kp_udp_t *sock = svc->links ? NULL : sock_of(svc, to->family);
  if (sock) {
    kp_udp_send_parts(sock, to, head, hlen, body, blen);
    return;
  }
  /* A peer over TCP may be this one: joined, through send. */
  uint8_t whole[KP_PROXY_MAX_DATAGRAM];
  size_t n = kp_join_parts(whole, sizeof(whole), head, hlen, body, blen);
  if (n) px_send(ctx, to, whole, n);
}

static void on_alloc_datagram(kp_udp_t *udp, const kp_addr_t *from, uint8_t *data, size_t len) {
  alloc_sock_t *s = udp->data;
  kp_proxy_service_t *svc = s->svc;
  if (svc->closing) return;
  /* What it passes on leaves on the sockets the sessions run on. */
  batches_t b;
  batches_begin(svc, &b);
  kp_proxy_alloc_input(svc->px, s->slot, from, data, len, kp__node_now(svc->node));
  batches_end(&b);
}

static int px_alloc_open(void *ctx, unsigned slot, uint8_t family, kp_addr_t *bound) {
  kp_proxy_service_t *svc = ctx;
  kp_udp_t *on = sock_of(svc, family);
  if (svc->closing || svc->socks[slot]) return UV_EBUSY;
  if (!on) return UV_EAFNOSUPPORT;
  alloc_sock_t *s = kp_calloc(1, sizeof(*s));
  if (!s) return UV_ENOMEM;
  kp_addr_t any = on->local;
  any.port = 0;
  /* The kernel's default room: a proxy holds hundreds of allocations, and
   * what their queues may hold together is what a flood could pin. */
  int err = kp_udp_init(svc->node->loop, &s->udp, &any, NULL);
  if (err) {
    kp_free(s);
    return err;
  }
  s->svc = svc;
  s->slot = slot;
  s->udp.data = s;
  kp_udp_enable_gro(&s->udp);
  kp_udp_recv_start(&s->udp, on_alloc_datagram);
  svc->socks[slot] = s;
  *bound = s->udp.local;
  return 0;
}

static void gather_end(kp_proxy_service_t *svc) {
  if (!svc->gathering) return;
  svc->gathering = false;
  uv_check_stop(&svc->gather_check);
  uv_idle_stop(&svc->gather_idle);
  kp_udp_batch_end(&svc->socks[svc->gather_slot]->udp, svc->gather);
}

static void on_gather_check(uv_check_t *h) {
  gather_end(h->data);
}

static void on_gather_idle(uv_idle_t *h) {
  gather_end(h->data);
}

static void px_alloc_send(void *ctx, unsigned slot, const kp_addr_t *to, const uint8_t *data,
                          size_t len) {
  kp_proxy_service_t *svc = ctx;
  alloc_sock_t *s = svc->socks[slot];
  if (!s) return;
  if (svc->gathering && svc->gather_slot != slot) gather_end(svc);
  if (!svc->gathering && !s->udp.batch && svc->gather_handles == 2 && !svc->closing) {
    kp_udp_batch_begin(&s->udp, svc->gather);
    svc->gathering = true;
    svc->gather_slot = slot;
    uv_check_start(&svc->gather_check, on_gather_check);
    uv_idle_start(&svc->gather_idle, on_gather_idle);
  }
  kp_udp_send(&s->udp, to, data, len);
}

static void maybe_done(kp_proxy_service_t *svc);

static void on_sock_closed(kp_udp_t *udp) {
  alloc_sock_t *s = udp->data;
  kp_proxy_service_t *svc = s->svc;
  kp_free(s);
  svc->socks_closing--;
  maybe_done(svc);
}

static void px_alloc_close(void *ctx, unsigned slot) {
  kp_proxy_service_t *svc = ctx;
  alloc_sock_t *s = svc->socks[slot];
  if (!s) return;
  if (svc->gathering && svc->gather_slot == slot) gather_end(svc);
  svc->socks[slot] = NULL;
  svc->socks_closing++;
  kp_udp_close(&s->udp, on_sock_closed);
}

/* ---- The TCP port --------------------------------------------------------------------------- */

static plink_t *plink_of(kp_tunnel_io_t *io) {
  return (plink_t *)((char *)io - offsetof(plink_t, io));
}

static void on_link_closed(kp_tunnel_io_t *io) {
  plink_t *l = plink_of(io);
  kp_proxy_service_t *svc = l->svc;
  kp_free(l);
  svc->links_closing--;
  maybe_done(svc);
}

static void link_close(plink_t *l) {
  kp_proxy_service_t *svc = l->svc;
  if (l->closing) return;
  l->closing = true;
  uv_read_stop((uv_stream_t *)&l->io.tcp);
  l->io.ended = true;
  for (plink_t **p = &svc->links; *p; p = &(*p)->next) {
    if (*p == l) {
      *p = l->next;
      break;
    }
  }
  svc->link_count--;
  svc->links_closing++;
  /* Its sessions cannot be answered any more (a peer that dials again
   * comes from another port and makes a new one). */
  if (svc->px) kp_proxy_forget(svc->px, &l->peer);
  kp_tunnel_io_close(&l->io, on_link_closed);
}

static bool on_frame(kp_tunnel_io_t *io, const kp_tunnel_frame_t *f) {
  plink_t *l = plink_of(io);
  kp_proxy_service_t *svc = l->svc;
  if (l->closing || svc->closing) return false;
  if (f->type == KP_TUNNEL_DATA && f->channel == 0) {
    batches_t b;
    batches_begin(svc, &b);
    kp_proxy_input(svc->px, &l->peer, f->data, f->len, kp__node_now(svc->node));
    batches_end(&b);
  }
  if (io->overflow) { /* our answers found no room: the peer does not read */
    link_close(l);
    return false;
  }
  return true;
}

static void on_link_end(kp_tunnel_io_t *io, int status) {
  (void)status;
  link_close(plink_of(io));
}

static unsigned links_from(const kp_proxy_service_t *svc, const kp_addr_t *peer) {
  unsigned n = 0;
  for (const plink_t *l = svc->links; l; l = l->next) n += kp_addr_same_host(&l->peer, peer);
  return n;
}

static void on_connection(uv_stream_t *server, int status) {
  kp_proxy_service_t *svc = ((listener_t *)server->data)->svc;
  if (status || svc->closing) return;
  plink_t *l = kp_calloc(1, sizeof(*l));
  if (!l || kp_tunnel_io_init(svc->node->loop, &l->io)) {
    /* Accept and drop it anyway: libuv polls the listener again only
     * after an accept. */
    kp_free(l);
    svc->tcp_refused++;
    kp_tunnel_refuse(svc->node->loop, server);
    return;
  }
  l->svc = svc;
  l->io.on_frame = on_frame;
  l->io.on_end = on_link_end;
  l->next = svc->links;
  svc->links = l;
  svc->link_count++;
  if (kp_tunnel_io_accept(&l->io, server, &l->peer) || kp_tunnel_io_start(&l->io) ||
      svc->link_count > TCP_LINKS || links_from(svc, &l->peer) > TCP_LINKS_PER_IP) {
    svc->tcp_refused++;
    link_close(l);
  }
}

static void on_listener_closed(uv_handle_t *h) {
  listener_t *t = h->data;
  t->open = false;
  maybe_done(t->svc);
}

/* The TCP port on `node`'s address. Without it (a relay on this node has
 * it, say) the proxy serves everyone else. */
static void tcp_start(kp_proxy_service_t *svc, listener_t *t, kp_node_t *node) {
  struct sockaddr_storage ss;
  kp_addr_to_sockaddr(&node->sock.local, &ss);
  t->svc = svc;
  int err = uv_tcp_init(node->loop, &t->tcp);
  if (err) return;
  t->tcp.data = t;
  t->open = true;
  /* IPv6 only, as the UDP sockets are: [::]:P beside 0.0.0.0:P, and no
   * IPv4 peer seen as ::ffff:a.b.c.d (whose /64 would make every IPv4
   * peer one host for the per-IP caps). */
  unsigned flags = node->sock.local.family == KP_AF_INET6 ? UV_TCP_IPV6ONLY : 0;
  err = uv_tcp_bind(&t->tcp, (struct sockaddr *)&ss, flags);
  if (!err) err = uv_listen((uv_stream_t *)&t->tcp, TCP_BACKLOG, on_connection);
  if (!err) return;
  char text[KP_ADDR_STRLEN];
  KP_WARN(&node->log, "proxy: no TCP on %s (%s): peers whose UDP is blocked cannot use it",
          kp_addr_format(&node->sock.local, text, sizeof(text)), kp_strerror(err));
  uv_close((uv_handle_t *)&t->tcp, on_listener_closed);
}

static void tcp_stop(listener_t *t) {
  if (t->open && !uv_is_closing((uv_handle_t *)&t->tcp))
    uv_close((uv_handle_t *)&t->tcp, on_listener_closed);
}

static void sweep_links(kp_proxy_service_t *svc) {
  for (plink_t *l = svc->links, *next; l; l = next) {
    next = l->next;
    if (kp_tunnel_io_stalled(&l->io, LINK_STALL_MS)) link_close(l);
  }
}

/* ---- Announcing ------------------------------------------------------------------------------ */

/* Our addresses, as the nodes know them: the proxy's scope, by family. */
static void set_local(kp_proxy_service_t *svc) {
  kp_node_t *nodes[2] = {svc->node, sibling_of(svc)};
  for (int i = 0; i < 2; i++) {
    kp_addr_t pub;
    if (nodes[i])
      kp_proxy_set_local(svc->px, &nodes[i]->sock.local,
                         kp_node_public_addr(nodes[i], &pub) == 0 ? &pub : NULL);
  }
}

/* Each family's node announces the proxy there, its own address first and
 * the other family's after it (as a dual-stack relay does). */
static void announce(kp_proxy_service_t *svc) {
  if (!svc->announce) return;
  kp_node_t *sib = sibling_of(svc);
  uint8_t target[KP_ID_LEN];
  kp_target_from_topic(KP_PROXY_TOPIC, sizeof(KP_PROXY_TOPIC) - 1, target);
  int err = kp__node_announce_addrs(svc->node, sib, target, &svc->kp, &svc->announced[0],
                                    &svc->named_both[0]);
  if (!err && sib)
    err = kp__node_announce_addrs(sib, svc->node, target, &svc->kp, &svc->announced[1],
                                  &svc->named_both[1]);
  if (err) KP_WARN(&svc->node->log, "announcing the proxy: %s", kp_strerror(err));
}

static void on_timer(uv_timer_t *t) {
  kp_proxy_service_t *svc = t->data;
  kp_udp_batch_t batch;
  kp_udp_batch_begin(&svc->node->sock, &batch);
  kp_proxy_tick(svc->px, kp__node_now(svc->node));
  kp_udp_batch_end(&svc->node->sock, &batch);
  sweep_links(svc);
  set_local(svc);
  announce(svc);
}

/* ---- Lifecycle ------------------------------------------------------------------------------- */

static kp_proxy_config_t config_of(const kp_proxy_service_options_t *o) {
  kp_proxy_config_t c;
  kp_proxy_config_defaults(&c);
  const kp_proxy_limits_t *l = &o->limits;
  if (l->max_sessions) c.max_sessions = l->max_sessions;
  if (l->max_allocs) c.max_allocs = l->max_allocs;
  if (l->allocs_per_key) c.allocs_per_key = l->allocs_per_key;
  if (l->per_ip) c.per_ip = l->per_ip;
  if (l->lifetime_s) c.lifetime_s = l->lifetime_s;
  if (l->max_lifetime_s) c.max_lifetime_s = l->max_lifetime_s;
  if (l->alloc_rate) {
    /* The packet rate follows the byte rate: 1 per 1 KiB of it (8192/s
     * at the default), so bulk transfers meet the byte limit first. */
    c.alloc_rate = l->alloc_rate;
    c.alloc_pps = l->alloc_rate / 1024 > 1024 ? l->alloc_rate / 1024 : 1024;
  }
  if (l->alloc_quota) c.alloc_quota = l->alloc_quota;
  if (l->total_rate) c.total_rate = l->total_rate;
  c.allow = o->allow;
  c.allow_count = o->allow ? o->allow_count : 0;
  return c;
}

static void free_svc(kp_proxy_service_t *svc) {
  kp_keypair_wipe(&svc->kp);
  kp_free(svc->socks);
  kp_free(svc->gather);
  kp_free(svc);
}

int kp_proxy_service_create(kp_node_t *node, const kp_proxy_service_options_t *opts,
                            kp_proxy_service_t **out) {
  kp_proxy_service_options_t defaults;
  *out = NULL;
  if (node->closing) return UV_EINVAL;
  if (node->proxy_svc) return UV_EBUSY;
  if (!opts) {
    kp_proxy_service_options_init(&defaults);
    opts = &defaults;
  }
  kp_proxy_config_t cfg = config_of(opts);
  kp_proxy_service_t *svc = kp_calloc(1, sizeof(*svc));
  if (!svc) return UV_ENOMEM;
  svc->node = node;
  svc->announce = opts->announce;
  svc->max_allocs = cfg.max_allocs;
  if (opts->identity)
    svc->kp = *opts->identity;
  else
    kp_keypair_generate(&svc->kp);
  kp_proxy_io_t io = {svc, px_send, px_alloc_open, px_alloc_send, px_alloc_close, px_send_parts};
  int err = UV_ENOMEM;
  if (!(svc->socks = kp_calloc(cfg.max_allocs, sizeof(*svc->socks))) ||
      !(svc->gather = kp_malloc(sizeof(*svc->gather))) ||
      (err = kp_proxy_new(&cfg, &svc->kp, &node->rng, &io, &svc->px)) ||
      (err = uv_timer_init(node->loop, &svc->timer))) {
    kp_proxy_free(svc->px);
    free_svc(svc);
    return err;
  }
  uv_check_init(node->loop, &svc->gather_check); /* neither can fail */
  uv_idle_init(node->loop, &svc->gather_idle);
  svc->gather_check.data = svc->gather_idle.data = svc;
  svc->gather_handles = 2;
  svc->timer_open = true;
  svc->timer.data = svc;
  uv_timer_start(&svc->timer, on_timer, TICK_MS, TICK_MS);
  set_local(svc);
  kp_node_t *sib = sibling_of(svc);
  kp__node_forwarder_socket(&node->sock);
  if (sib) kp__node_forwarder_socket(&sib->sock);
  node->proxy_svc = svc;
  /* The same port over TCP, for peers whose UDP is blocked. */
  tcp_start(svc, &svc->listen[0], node);
  if (sib) tcp_start(svc, &svc->listen[1], sib);
  *out = svc;
  return 0;
}

void kp__proxy_service_input(kp_proxy_service_t *svc, const kp_addr_t *from, const uint8_t *data,
                             size_t len) {
  if (!svc->closing) kp_proxy_input(svc->px, from, data, len, kp__node_now(svc->node));
}

static void maybe_done(kp_proxy_service_t *svc) {
  if (!svc->closing || svc->timer_open || svc->gather_handles || svc->socks_closing ||
      svc->listen[0].open || svc->listen[1].open || svc->links_closing)
    return;
  kp_node_t *node = svc->node;
  kp_proxy_service_close_cb cb = svc->close_cb;
  node->proxy_svc = NULL;
  if (cb) cb(svc);
  free_svc(svc);
  if (node->closing) kp__node_maybe_finish_close(node);
}

static void on_timer_closed(uv_handle_t *h) {
  kp_proxy_service_t *svc = h->data;
  svc->timer_open = false;
  maybe_done(svc);
}

static void on_gather_handle_closed(uv_handle_t *h) {
  kp_proxy_service_t *svc = h->data;
  svc->gather_handles--;
  maybe_done(svc);
}

void kp_proxy_service_close(kp_proxy_service_t *svc, kp_proxy_service_close_cb cb) {
  if (svc->closing) return;
  svc->closing = true;
  svc->close_cb = cb;
  /* A node that stays withdraws the records (a closing one's end with it). */
  kp_node_t *nodes[2] = {svc->node, svc->node->sibling};
  for (int i = 0; i < 2; i++) {
    if (svc->announced[i] && nodes[i] && !nodes[i]->closing)
      kp_announce_stop(svc->announced[i], true);
    svc->announced[i] = NULL;
  }
  kp_proxy_free(svc->px); /* closes every allocation's socket */
  svc->px = NULL;
  uv_close((uv_handle_t *)&svc->timer, on_timer_closed);
  gather_end(svc);
  uv_close((uv_handle_t *)&svc->gather_check, on_gather_handle_closed);
  uv_close((uv_handle_t *)&svc->gather_idle, on_gather_handle_closed);
  tcp_stop(&svc->listen[0]);
  tcp_stop(&svc->listen[1]);
  while (svc->links) link_close(svc->links);
}

void kp_proxy_service_counters(const kp_proxy_service_t *svc, kp_proxy_counters_t *out) {
  kp_proxy_stats_t st;
  memset(out, 0, sizeof(*out));
  if (!svc->px) return;
  kp_proxy_stats(svc->px, &st);
  out->sessions = st.sessions;
  out->allocs = st.allocs;
  out->welcomed = st.welcomed;
  for (int i = 1; i <= KP_PROXY_REASON_MAX; i++) out->refused += st.refused[i];
  out->forged = st.forged;
  out->replayed = st.replayed;
  out->sent = st.sent;
  out->sent_bytes = st.sent_bytes;
  out->received = st.received;
  out->received_bytes = st.received_bytes;
  for (int i = 0; i < KP_PROXY_DROP_KINDS; i++) out->dropped += st.drops[i];
}

void kp__proxy_service_stats(const kp_proxy_service_t *svc, kp_proxy_stats_t *out) {
  memset(out, 0, sizeof(*out));
  if (svc->px) kp_proxy_stats(svc->px, out);
}

const uint8_t *kp_proxy_service_key(const kp_proxy_service_t *svc) {
  return svc->kp.public_key;
}

/* ---- A node through a proxy ------------------------------------------------------------------ */

/* New allocation addresses: the connections look for their peers from
 * there at once. */
static void proxy_rebound(void *ctx) {
  kp_node_t *node = ctx;
  if (node->closing || !node->hp) return;
  uint64_t now = kp__node_now(node);
  /* Our public address is the new allocation's: the old one must not make
   * the peer's proofs of it look like a relay's (hp_path.c, observed). */
  KP_NODE_FEED(node, {
    kp_dht_network_changed(node->dht, now);
    kp_hp_rebound(node->hp, now);
  });
}

void kp_node_proxy_info(const kp_node_t *node, kp_node_proxy_info_t *out) {
  memset(out, 0, sizeof(*out));
  if (!node->proxy_link) return;
  out->proxied = true;
  out->proxy = *kp_proxy_link_addr(node->proxy_link);
  out->up = kp_proxy_link_up(node->proxy_link);
  out->tcp = kp_proxy_link_tcp(node->proxy_link);
  out->on_own = kp_proxy_link_on_own(node->proxy_link);
  out->falls = kp_proxy_link_falls(node->proxy_link);
  uint32_t trials[2], moves[2];
  kp_proxy_link_trials(node->proxy_link, trials, moves);
  out->udp_trials = trials[0], out->tcp_trials = trials[1];
  out->moves_to_udp = moves[0], out->moves_to_tcp = moves[1];
}

int kp__node_proxy_open(kp_node_t *node, const kp_node_options_t *opts, const kp_addr_t *bind) {
  kp_keypair_t self;
  if (opts->proxy_identity)
    self = *opts->proxy_identity;
  else
    kp_keypair_generate(&self);
  int err = kp_proxy_link_new(node->loop, bind, opts->proxy, &self, &node->rng, &node->log,
                              &node->proxy_link);
  kp_keypair_wipe(&self);
  if (err) return err;
  kp_proxy_link_on_rebound(node->proxy_link, proxy_rebound, node);
  if (!opts->proxy_private && !opts->relay_only) kp_proxy_link_may_go_own(node->proxy_link);
  err = kp_proxy_link_socket(node->proxy_link, &node->sock);
  if (err) {
    kp_proxy_link_close(node->proxy_link);
    node->proxy_link = NULL;
  }
  return err;
}
