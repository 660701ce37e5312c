/* SPDX-License-Identifier: MIT */
/* kp_node: a DHT node on a libuv loop. Owns the sockets and the timer,
 * feeds datagrams and time to the DHT state machine and sends what it emits
 * (docs/architecture.md, "Three layers per protocol": this is the glue). */
#include "node/node_internal.h"
#include "node/node_proxy.h"
#include "proxy/proxy_msg.h"
#include "stream/uv/endpoint.h"
#include "stream/stream_frame.h"
#include "node/relay_service.h"
#include "node/socket_pool.h"
#include "relay/relay.h"
#include "relay/uv/tunnel.h"

#include <stdio.h>
#include <stdlib.h>
#include <sodium.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "dht/dht_id.h"

struct kp_node_dns_s {
  uv_getaddrinfo_t req;
  kp_node_t *node;
  kp_node_dns_t *next;
};

void kp_node_options_init(kp_node_options_t *opts) {
  memset(opts, 0, sizeof(*opts));
  opts->bind = "0.0.0.0:0";
  opts->mode = KP_NODE_AUTO;
  opts->concurrency = 10;
  opts->request_timeout_ms = 1000;
  opts->request_retries = 2;
  opts->member_stable_ms = 20000;
  opts->log_level = KP_LOG_WARN;
  opts->port_mapping = true;
}

static uint64_t now_ms(const kp_node_t *node) {
  return uv_now(node->loop);
}

uint64_t kp__node_now(const kp_node_t *node) {
  return now_ms(node);
}

uint64_t kp__node_wall_ms(void *ctx) {
  (void)ctx;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* See kp__node_forwarder_socket: four times a node's own (as far as
 * net.core.rmem_max allows), charged only while queued. */
#define FORWARDER_SOCKBUF (4 * KP_UDP_NODE_BUF)

void kp__node_forwarder_socket(kp_udp_t *sock) {
  kp_udp_enable_gro(sock);
  kp_udp_set_buffers(sock, FORWARDER_SOCKBUF, FORWARDER_SOCKBUF);
}

static void on_timer(uv_timer_t *timer);

void kp__node_rearm(kp_node_t *node) {
  if (node->closing) return;
  uint64_t deadline = kp_dht_next_deadline(node->dht);
  uint64_t relays = kp__node_relay_deadline(node);
  if (relays < deadline) deadline = relays;
  if (deadline == node->armed && uv_is_active((uv_handle_t *)&node->timer)) return;
  uint64_t now = now_ms(node);
  node->armed = deadline;
  uv_timer_start(&node->timer, on_timer, deadline > now ? deadline - now : 0, 0);
}

static void on_timer(uv_timer_t *timer) {
  kp_node_t *node = timer->data;
  kp_udp_batch_t batch;
  node->armed = UINT64_MAX;
  kp_udp_batch_begin(&node->sock, &batch);
  kp_dht_tick(node->dht, now_ms(node));
  kp_udp_batch_end(&node->sock, &batch);
  if (node->sockets) kp_socket_pool_sweep(node->sockets, now_ms(node));
  kp__node_relay_tick(node, now_ms(node));
  kp__node_rearm(node);
}

static void dht_send(void *ctx, int sock, const kp_addr_t *to, const uint8_t *data, size_t len) {
  kp_node_t *node = ctx;
  if (node->closing) return;
  /* A full socket buffer drops the datagram, counted in the socket's stats,
   * exactly as a congested link would. */
  if (sock == KP_DHT_SOCK_ALT && !(node->open_handles & OPEN_ALT)) return; /* tunnelled */
  if (node->portmap_hold && kp__node_portmap_hold(node, sock, to, data, len)) return;
  kp_udp_send(sock == KP_DHT_SOCK_ALT ? &node->alt : &node->sock, to, data, len);
}

static void dht_membership(void *ctx, bool member) {
  kp_node_t *node = ctx;
  KP_INFO(&node->log, "membership: %s", member ? "member" : "ephemeral");
  if (member && node->relay_service) kp_relay_service_announce(node->relay_service);
}

/* The first byte tells the planes apart (docs/protocol.md). */
static void on_datagram(kp_udp_t *udp, const kp_addr_t *from, uint8_t *data, size_t len) {
  kp_node_t *node = udp->data;
  /* A relay's paired peers first: their datagrams are not ours to read (a
   * dual-stack node's relay runs on its first node, for both). */
  kp_relay_service_t *relay = node->primary ? node->primary->relay_service : node->relay_service;
  if (relay && kp_relay_service_input(relay, from, data, len)) return;
  /* And a proxy's sessions, over either family (node_proxy.c). */
  kp_proxy_service_t *proxy = node->primary ? node->primary->proxy_svc : node->proxy_svc;
  if (proxy && kp_proxy_is_packet(data, len)) {
    kp__proxy_service_input(proxy, from, data, len);
    return;
  }
  if (kp_dht_msg_is_control(data, len)) {
    kp_dht_recv(node->dht, from, data, len, now_ms(node));
    kp__node_rearm(node);
    /* A hello forwarded to the other family's announcer went out on the
     * other node's DHT: its timer must see that request's deadline. */
    kp_node_t *twin = node->sibling ? node->sibling : node->primary;
    if (twin && !twin->closing) kp__node_rearm(twin);
  } else if (kp_stream_is_packet(data, len)) {
    kp__node_stream_input(node, from, data, len);
  } else if (kp_probe_is_packet(data, len)) {
    kp_hp_recv_probe(node->hp, NULL, from, data, len, now_ms(node));
    kp__node_rearm(node);
  } else {
    node->drops_other++;
  }
}

static void hp_send(void *ctx, const kp_addr_t *to, const uint8_t *data, size_t len) {
  kp_node_t *node = ctx;
  if (!node->closing) kp_udp_send(&node->sock, to, data, len);
}

/* Where peers on our own networks can reach the socket: the bound address,
 * or each interface's address with the bound port. */
static void set_lan_addrs(kp_node_t *node) {
  kp_addr_t lan[4];
  size_t n = 0;
  const kp_addr_t *bound = &node->sock.local;
  if (!kp_addr_is_any(bound)) {
    lan[n++] = *bound;
  } else {
    uv_interface_address_t *ifs;
    int count;
    if (uv_interface_addresses(&ifs, &count) == 0) {
      for (int i = 0; i < count && n < 4; i++) {
        kp_addr_t a;
        if (ifs[i].is_internal ||
            kp_addr_from_sockaddr(&a, (struct sockaddr *)&ifs[i].address.address4) ||
            a.family != bound->family)
          continue;
        a.port = bound->port;
        lan[n++] = a;
      }
      uv_free_interface_addresses(ifs, count);
    }
  }
  kp_hp_set_lan(node->hp, lan, n);
}

static int config_from_options(const kp_node_options_t *o, kp_dht_config_t *cfg) {
  kp_addr_t bind_addr;
  if (kp_addr_parse(&bind_addr, o->bind ? o->bind : "0.0.0.0:0")) return KP_EBADADDR;
  if (o->mode > KP_NODE_MEMBER || !o->request_timeout_ms || o->request_retries > 10 ||
      o->concurrency > 64 || o->log_level > KP_LOG_TRACE)
    return KP_ECONFIG;
  kp_dht_config_defaults(cfg);
  cfg->family = bind_addr.family;
  cfg->local = bind_addr;
  cfg->mode = o->mode;
  if (o->concurrency) cfg->concurrency = o->concurrency;
  cfg->rpc.timeout_ms = o->request_timeout_ms;
  cfg->rpc.retries = o->request_retries;
  cfg->query_retries = o->request_retries;
  cfg->member_stable_ms = o->member_stable_ms;
  return 0;
}

static void start_close(kp_node_t *node);

int kp_node_create(uv_loop_t *loop, const kp_node_options_t *opts, kp_node_t **out) {
  kp_node_options_t defaults;
  kp_dht_config_t cfg;
  *out = NULL;
  /* libsodium's fastest implementations are chosen here, once. */
  if (sodium_init() < 0) return UV_ENOSYS;
  if (!opts) {
    kp_node_options_init(&defaults);
    opts = &defaults;
  }
  int err = config_from_options(opts, &cfg);
  if (err) return err;

  kp_node_t *node = kp_calloc(1, sizeof(*node));
  if (!node) return UV_ENOMEM;
  node->loop = loop;
  node->armed = UINT64_MAX;
  kp_log_init(&node->log, opts->log_level, opts->log_cb ? opts->log_cb : kp_log_stderr,
              opts->log_ctx);
  node->rng = opts->rng ? (kp_rng_t){opts->rng, opts->rng_ctx} : kp_rng_system();

  /* A node answers bursts (a network starting, a popular key): ask for room
   * to queue them (a relay or a proxy asks for more: FORWARDER_SOCKBUF). The kernel caps this at
   * net.core.rmem_max and charges only what is queued. */
  kp_udp_options_t sock_opts = {.rcvbuf = KP_UDP_NODE_BUF, .sndbuf = KP_UDP_NODE_BUF};
  err = opts->proxy       ? kp__node_proxy_open(node, opts, &cfg.local)
        : opts->tcp_relay ? kp__node_tunnel_open(node, opts->tcp_relay)
                          : kp_udp_init(loop, &node->sock, &cfg.local, &sock_opts);
  if (err) {
    kp_free(node);
    return err;
  }
  node->sock.data = node;
  node->open_handles |= OPEN_SOCK;
  if (node->tunnel || node->proxy_link) {
    /* Through a relay's or a proxy's allocation: never a member, no
     * second port. */
    cfg.mode = KP_NODE_EPHEMERAL;
  } else {
    kp_addr_t alt_bind = node->sock.local;
    alt_bind.port = 0;
    if ((err = kp_udp_init(loop, &node->alt, &alt_bind, NULL))) goto fail;
    node->alt.data = node;
    node->open_handles |= OPEN_ALT;
  }
  if ((err = uv_timer_init(loop, &node->timer))) goto fail;
  node->timer.data = node;
  node->open_handles |= OPEN_TIMER;

  cfg.local = node->sock.local;
  cfg.rng = node->rng;
  cfg.log = &node->log;
  kp_addr_format(&cfg.local, node->log_prefix, sizeof(node->log_prefix));
  node->log.prefix = node->log_prefix;
  kp_dht_io_t io = {.send = dht_send, .on_membership = dht_membership, .ctx = node};
  if ((err = kp_dht_new(&cfg, &io, now_ms(node), &node->dht))) goto fail;
  kp_dht_swarm_config_t swarm_cfg;
  kp_dht_swarm_config_defaults(&swarm_cfg);
  swarm_cfg.store.max_records = opts->store_max_records;
  swarm_cfg.store.max_bytes = opts->store_max_bytes;
  swarm_cfg.store.ttl_ms = opts->record_ttl_ms;
  swarm_cfg.refresh_ms = opts->record_ttl_ms ? opts->record_ttl_ms / 2 : 0;
  swarm_cfg.wall_ms = kp__node_wall_ms;
  if ((err = kp_dht_swarm_new(node->dht, &swarm_cfg, &node->swarm))) goto fail;
  kp_dht_swarm_set_policy(node->swarm, kp__node_store_policy, node);
  kp_hp_config_t hp_cfg;
  kp_hp_config_defaults(&hp_cfg);
  hp_cfg.ciphers |= (uint8_t)(1u << kp_cipher_preferred());
  hp_cfg.wall_ms = kp__node_wall_ms;
  hp_cfg.relay_only = opts->relay_only || node->tunnel;
  node->rx_budget.max = opts->rx_budget ? opts->rx_budget : (size_t)256 << 20;
  node->resume_grace_ms = kp__node_resume_grace(opts);
  kp_hp_io_t hp_io = {.send = hp_send, .ctx = node};
  if ((err = kp_socket_pool_create(node, &node->sockets))) goto fail;
  kp_socket_pool_io(node->sockets, &hp_io);

  if ((err = kp_hp_new(node->dht, node->swarm, &hp_cfg, &hp_io, &node->hp))) goto fail;
  if (!node->tunnel && !node->proxy_link) set_lan_addrs(node); /* a proxied node tells none */
  /* A proxied node goes direct where it can, unless it keeps its
   * addresses private (or hides them at relays, or has no UDP). */
  if (node->proxy_link && !opts->proxy_private && !opts->relay_only &&
      !kp_proxy_link_tcp(node->proxy_link) && (err = kp__node_own_start(node)))
    KP_WARN(&node->log, "proxied connections stay proxied: no socket of its own: %s",
            kp_strerror(err));
  if (opts->relay_count &&
      (err = kp__node_relay_set_explicit(node, opts->relays, opts->relay_count)))
    goto fail;
  /* Tunnelled: pairing works only at the relay we tunnel to. */
  if (node->tunnel) kp__node_relay_set_tunnel(node);
  if (opts->relay &&
      (err = kp_relay_service_create(node, &opts->relay_limits, &node->relay_service)))
    goto fail;
  if ((err = kp_udp_recv_start(&node->sock, on_datagram))) goto fail;
  if ((err = kp__node_portmap_start(node, opts))) goto fail;
  if (opts->bind_also && (err = kp__node_sibling_start(node, opts))) goto fail;
  if (opts->bootstrap_count &&
      (err = kp_node_bootstrap(node, opts->bootstrap, opts->bootstrap_count)))
    goto fail;
  kp__node_rearm(node);
  *out = node;
  return 0;

fail:
  /* Handles close on a later tick; the node's memory goes with the last. */
  node->close_cb = NULL;
  start_close(node);
  return err;
}

/* ---- Bootstrap ------------------------------------------------------------ */

static void add_bootstrap_addr(kp_node_t *node, const kp_addr_t *addr) {
  char text[KP_ADDR_STRLEN];
  int err = kp_dht_add_bootstrap(node->dht, addr, now_ms(node));
  if (err)
    KP_WARN(&node->log, "bootstrap %s: %s", kp_addr_format(addr, text, sizeof(text)),
            kp_strerror(err));
}

static void dns_unlink(kp_node_t *node, kp_node_dns_t *d) {
  for (kp_node_dns_t **p = &node->dns; *p; p = &(*p)->next) {
    if (*p == d) {
      *p = d->next;
      return;
    }
  }
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  kp_node_dns_t *d = req->data;
  kp_node_t *node = d->node;
  dns_unlink(node, d);
  if (status == 0 && !node->closing) {
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
      kp_addr_t addr;
      kp_node_t *to = NULL;
      if (kp_addr_from_sockaddr(&addr, ai->ai_addr) == 0)
        to = kp__node_of_family(node, addr.family);
      if (to) add_bootstrap_addr(to, &addr);
      if (to && to != node) kp__node_rearm(to);
    }
    kp__node_rearm(node);
  } else if (status && status != UV_ECANCELED && status != UV_EAI_CANCELED) {
    KP_WARN(&node->log, "cannot resolve bootstrap node: %s", uv_strerror(status));
  }
  uv_freeaddrinfo(res);
  kp_free(d);
  if (node->closing) kp__node_maybe_finish_close(node);
}

static int resolve(kp_node_t *node, const char *host_port) {
  char host[256];
  const char *colon = strrchr(host_port, ':');
  if (!colon || colon == host_port || (size_t)(colon - host_port) >= sizeof(host) || !colon[1])
    return KP_EBADADDR;
  memcpy(host, host_port, (size_t)(colon - host_port));
  host[colon - host_port] = '\0';
  kp_node_dns_t *d = kp_calloc(1, sizeof(*d));
  if (!d) return UV_ENOMEM;
  d->node = node;
  d->req.data = d;
  struct addrinfo hints = {0};
  /* A dual-stack node takes a name's addresses of both families. */
  hints.ai_family = node->sibling                             ? AF_UNSPEC
                    : kp_dht_family(node->dht) == KP_AF_INET6 ? AF_INET6
                                                              : AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  int err = uv_getaddrinfo(node->loop, &d->req, on_resolved, host, colon + 1, &hints);
  if (err) {
    kp_free(d);
    return err;
  }
  d->next = node->dns;
  node->dns = d;
  return 0;
}

int kp_node_bootstrap(kp_node_t *node, const char *const *hosts, size_t count) {
  if (node->closing) return UV_EINVAL;
  for (size_t i = 0; i < count; i++) {
    kp_addr_t addr;
    if (kp_addr_parse(&addr, hosts[i]) == 0) {
      if (!addr.port) return KP_EBADADDR;
      kp_node_t *to = kp__node_of_family(node, addr.family);
      if (!to) return KP_EBADADDR;
      add_bootstrap_addr(to, &addr);
      if (to != node) kp__node_rearm(to);
      continue;
    }
    int err = resolve(node, hosts[i]);
    if (err) return err;
  }
  kp__node_rearm(node);
  return 0;
}

/* ---- Queries ---------------------------------------------------------- */

/* A find-node query: over each family a dual-stack node has (BEP 32: a
 * query per family), its answers merged by distance when both are done. */
typedef struct find_s {
  kp_node_t *node;
  kp_node_find_cb cb;
  void *arg;
  uint64_t started_ns;
  uint8_t target[KP_ID_LEN];
  unsigned pending;
  int status; /* 0 once either family found nodes */
  kp_node_query_stats_t stats;
  size_t count;
  kp_node_peer_t peers[2 * KP_DHT_K];
} find_t;

/* Closest first (at most 2 K of them: an insertion sort). */
static void sort_by_distance(find_t *f) {
  for (size_t i = 1; i < f->count; i++) {
    kp_node_peer_t p = f->peers[i];
    size_t j = i;
    for (; j > 0 && kp_dht_id_cmp(f->target, p.id, f->peers[j - 1].id) < 0; j--)
      f->peers[j] = f->peers[j - 1];
    f->peers[j] = p;
  }
}

static void on_find_done(void *arg, kp_dht_query_t *q, int status, const kp_dht_result_t *res,
                         size_t count, uint64_t now) {
  find_t *f = arg;
  (void)now;
  if (count > KP_DHT_K) count = KP_DHT_K;
  for (size_t i = 0; i < count && f->count < 2 * KP_DHT_K; i++) {
    memcpy(f->peers[f->count].id, res[i].id, KP_ID_LEN);
    f->peers[f->count++].addr = res[i].addr;
  }
  if (!status || f->status == KP_ENONODES) f->status = status;
  const kp_dht_query_stats_t *qs = kp_dht_query_stats(q);
  f->stats.requests += qs->requests;
  f->stats.responses += qs->responses;
  f->stats.timeouts += qs->timeouts;
  if (qs->hops > f->stats.hops) f->stats.hops = qs->hops;
  if (--f->pending) return;
  sort_by_distance(f);
  f->stats.duration_us = (uv_hrtime() - f->started_ns) / 1000;
  f->cb(f->node, f->status, f->peers, f->count, &f->stats, f->arg);
  kp_free(f);
}

/* Starts the query on one family's node (it ends on a later turn, never
 * inside kp_dht_query_start). */
static int find_on(kp_node_t *node, find_t *f) {
  kp_dht_query_opts_t opts = {.on_done = on_find_done, .arg = f};
  kp_udp_batch_t batch;
  kp_udp_batch_begin(&node->sock, &batch);
  int err = kp_dht_query_start(node->dht, f->target, &opts, now_ms(node), NULL);
  kp_udp_batch_end(&node->sock, &batch);
  if (err) return err;
  f->pending++;
  kp__node_rearm(node);
  return 0;
}

int kp_node_find_node(kp_node_t *node, const uint8_t target[KP_ID_LEN], kp_node_find_cb cb,
                      void *arg) {
  if (node->closing || !cb) return UV_EINVAL;
  find_t *f = kp_calloc(1, sizeof(*f));
  if (!f) return UV_ENOMEM;
  f->node = node;
  f->cb = cb;
  f->arg = arg;
  f->started_ns = uv_hrtime();
  f->status = KP_ENONODES;
  memcpy(f->target, target, KP_ID_LEN);
  int err = find_on(node, f);
  if (node->sibling && !node->sibling->closing && !find_on(node->sibling, f)) err = 0;
  if (f->pending) return 0;
  kp_free(f);
  return err;
}

/* ---- Close --------------------------------------------------------------- */

void kp__node_maybe_finish_close(kp_node_t *node) {
  if (node->open_handles || node->dns || node->sockets || node->relay_service || node->proxy_svc ||
      node->portmap || node->sibling)
    return;
  /* Every channel is closed: the relay connection can go. */
  if (node->tunnel) kp_tunnel_close(node->tunnel);
  node->tunnel = NULL;
  if (node->proxy_link) kp_proxy_link_close(node->proxy_link);
  node->proxy_link = NULL;
  /* Everything is quiet: cancelled operations report, then the owner. */
  kp__node_announces_cancel(node);
  kp__node_conns_forget(node);
  kp__node_index_free(node);
  kp__node_own_free(node);
  /* A sibling's DHT goes: the first node's hellos stop crossing to it. */
  kp_node_t *primary = node->primary;
  if (primary && primary->hp) kp_hp_set_other_family(primary->hp, NULL);
  kp_hp_free(node->hp); /* before the DHT it rides on */
  node->hp = NULL;
  if (node->dht) kp_dht_free(node->dht, now_ms(node));
  node->dht = NULL;
  kp_dht_swarm_free(node->swarm);
  node->swarm = NULL;
  kp_free(node->relay_memo);
  node->relay_memo = NULL;

  if (node->close_cb) node->close_cb(node);
  kp_free(node);
  if (primary) kp__node_sibling_gone(primary);
}

static void on_timer_closed(uv_handle_t *handle) {
  kp_node_t *node = handle->data;
  node->open_handles &= ~OPEN_TIMER;
  kp__node_maybe_finish_close(node);
}

static void on_sockets_closed(kp_socket_pool_t *pool, void *arg) {
  kp_node_t *node = arg;
  (void)pool;
  node->sockets = NULL;
  kp__node_maybe_finish_close(node);
}

static void on_relay_service_closed(kp_relay_service_t *svc, void *arg) {
  kp_node_t *node = arg;
  (void)svc;
  node->relay_service = NULL;
  kp__node_maybe_finish_close(node);
}

static void on_udp_closed(kp_udp_t *udp) {
  kp_node_t *node = udp->data;
  node->open_handles &= ~(udp == &node->sock ? OPEN_SOCK : OPEN_ALT);
  kp__node_maybe_finish_close(node);
}

static void on_endpoint_closed(kp_endpoint_t *ep) {
  kp_node_t *node = ep->udp->data;
  node->ep = NULL;
  if (node->open_handles & OPEN_SOCK) kp_udp_close(&node->sock, on_udp_closed);
}

static void start_close(kp_node_t *node) {
  node->closing = true;
  kp__node_races_cancel(node);
  if (node->sibling) {
    /* Its half of our announcements first: its swarm may go before ours. */
    kp__node_announces_unpair(node);
    kp_node_close(node->sibling, NULL);
  }
  kp__node_portmap_close(node);
  for (kp_node_dns_t *d = node->dns; d; d = d->next) uv_cancel((uv_req_t *)&d->req);
  if (node->open_handles & OPEN_TIMER) uv_close((uv_handle_t *)&node->timer, on_timer_closed);
  if (node->ep) {
    /* The connections say goodbye on the socket, which closes after. */
    node->ep_closing = true;
    kp_endpoint_close(node->ep, on_endpoint_closed);
  } else if (node->open_handles & OPEN_SOCK) {
    kp_udp_close(&node->sock, on_udp_closed);
  }
  if (node->open_handles & OPEN_ALT) kp_udp_close(&node->alt, on_udp_closed);
  if (node->relay_service)
    kp_relay_service_close(node->relay_service, on_relay_service_closed, node);
  if (node->proxy_svc) kp_proxy_service_close(node->proxy_svc, NULL);
  /* Last: with no socket open the pool is gone at once, and so may be the
   * node. */
  if (node->sockets) kp_socket_pool_close(node->sockets, on_sockets_closed, node);
}

void kp_node_close(kp_node_t *node, kp_node_close_cb cb) {
  if (node->closing) return;
  node->close_cb = cb;
  start_close(node);
}

/* ---- Accessors ----------------------------------------------------------- */

const uint8_t *kp_node_id(const kp_node_t *node) {
  static const uint8_t none[KP_ID_LEN];
  const kp_dht_table_t *t = kp_dht_table(node->dht);
  return kp_dht_is_member(node->dht) ? t->self : none;
}

bool kp_node_is_member(const kp_node_t *node) {
  return kp_dht_is_member(node->dht);
}

int kp_node_local_addr(const kp_node_t *node, kp_addr_t *out) {
  *out = node->sock.local;
  return 0;
}

int kp_node_public_addr(const kp_node_t *node, kp_addr_t *out) {
  const kp_dht_nat_t *nat = kp_dht_nat(node->dht);
  memset(out, 0, sizeof(*out));
  if (!nat->has_public) return KP_ENOTFOUND;
  *out = nat->public_addr;
  return 0;
}

void kp_node_stats(const kp_node_t *node, kp_node_stats_t *out) {
  kp_dht_stats_t d;
  kp_dht_stats(node->dht, &d);
  memset(out, 0, sizeof(*out));
  out->rx_held = node->rx_budget.used;
  out->packets_in = node->sock.stats.packets_in;
  out->packets_out = node->sock.stats.packets_out + node->alt.stats.packets_out;
  out->bytes_in = node->sock.stats.bytes_in;
  out->bytes_out = node->sock.stats.bytes_out + node->alt.stats.bytes_out;
  out->requests_in = d.requests_in;
  out->responses_in = d.responses_in;
  out->requests_out = d.rpc.requests;
  out->timeouts = d.rpc.timeouts;
  out->drops_malformed = d.drops_malformed;
  out->drops_truncated = d.drops_truncated;
  out->drops_too_big = d.drops_too_big + node->sock.stats.recv_oversize;
  out->drops_version = d.drops_version;
  out->drops_field = d.drops_field;
  out->drops_command = d.drops_command;
  out->drops_bad_id = d.drops_bad_id;
  out->drops_unmatched = d.rpc.unmatched;
  out->drops_rate = d.drops_rate + d.rpc.rejected;
  out->drops_send = node->sock.stats.send_drops + node->alt.stats.send_drops;
  out->drops_other = node->drops_other;
  out->table_size = kp_dht_table(node->dht)->count;
  out->inflight = (uint32_t)kp_dht_inflight(node->dht);
}

size_t kp_node_table(const kp_node_t *node, kp_node_peer_t *out, size_t cap) {
  const kp_dht_table_t *t = kp_dht_table(node->dht);
  for (size_t i = 0; i < t->count && i < cap; i++) {
    kp_dht_entry_addr(t, kp_dht_table_at(t, (uint32_t)i), &out[i].addr);
    kp_dht_id_from_addr(&out[i].addr, out[i].id);
  }
  return t->count;
}

void *kp_node_get_data(const kp_node_t *node) {
  return node->data;
}

void kp_node_set_data(kp_node_t *node, void *data) {
  node->data = data;
}
