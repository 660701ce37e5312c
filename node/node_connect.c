/* SPDX-License-Identifier: MIT */
/* kp_node's connect-by-key API (kadpunch.h, "Connecting by key"): the
 * holepunch state machine (holepunch/holepunch.h) fed with the node's
 * clock, and the stream connection opened where the punched NAT mapping
 * lives (node_paths.c, which keeps it on a path from then on). */
#include <sodium.h>
#include <string.h>

#include "common/alloc.h"
#include "common/ratelimit.h"
#include "node/node_internal.h"
#include "node/node_proxy.h"
#include "stream/uv/endpoint.h"

#define SERVER_CONNS_PER_KEY 32
#define SERVER_CONNS_PER_IP 64
#define SERVER_MAX_CONNS 4096
/* Announcement refreshes for paths that died: a few at once (a NAT that
 * reassigns ports twice in a row), then one per REACH_EVERY_S. */
#define REACH_EVERY_S 5
#define REACH_BURST 4

/* The server's half on one node: a dual-stack node's server answers
 * handshakes over both families, its connections open on the node the
 * handshake came through. */
typedef struct server_side_s {
  kp_server_t *s;
  kp_node_t *node;
  kp_hp_server_t *inner;
} server_side_t;

struct kp_server_s {
  kp_node_t *node;
  server_side_t side[2];   /* the node's; its sibling's (inner NULL: none) */
  kp_announce_t *announce; /* over both families (node_swarm.c) */
  kp_firewall_cb firewall;
  kp_conn_callbacks_t conn_cb;
  kp_server_connection_cb on_connection;
  void *arg;
  kp_server_limits_t limits;
  unsigned conn_count; /* its clients' connections (node->conns whose server it is) */
  kp_bucket_t reach;   /* announcement refreshes for paths that died */
};

/* One connect attempt, on one node (one family of a dual-stack node). */
struct kp_node_attempt_s {
  kp_node_t *node;
  uint8_t server_key[KP_PUBLIC_KEY_LEN];
  kp_conn_callbacks_t conn_cb;
  kp_connect_cb cb;
  void *arg;
  kp_hp_connect_t *hc;
  /* Inside kp_hp_connect, which may end the connect before it returns:
   * then the attempt is freed after it, not from the callback. */
  bool starting, ended;
};
typedef kp_node_attempt_t connect_t;

static void info_from(const kp_node_t *node, const kp_hp_result_t *r, kp_connect_info_t *info) {
  memset(info, 0, sizeof(*info));
  info->relay_tcp = node->tunnel && r->strategy == KP_PUNCH_RELAYED;
  if (node->proxy_link && !kp_proxy_link_on_own(node->proxy_link))
    info->proxy = *kp_proxy_link_addr(node->proxy_link);
  memcpy(info->remote_key, r->remote_key, KP_PUBLIC_KEY_LEN);
  info->local_nat = r->local_nat;
  info->remote_nat = r->remote_nat;
  info->punch = r->strategy;
  info->path = r->path;
  info->relay = r->relay;
  info->lookup_ms = (unsigned)r->lookup_ms;
  info->handshake_ms = (unsigned)r->handshake_ms;
  info->punch_ms = (unsigned)r->punch_ms;
  info->datagrams = r->datagrams;
  memcpy(info->service, r->service, sizeof(info->service));
  info->has_device = r->has_info;
  info->device = r->info;
}

/* ---- Server -------------------------------------------------------------------------- */

static kp_hs_refusal_t refusal_of(int err) {
  switch (err) {
    case 0: return KP_HS_OK;
    case KP_ENOSERVICE: return KP_HS_REFUSE_NO_SERVICE;
    case KP_EINVITE: return KP_HS_REFUSE_INVITE;
    case KP_EINVITEUSED: return KP_HS_REFUSE_INVITE_USED;
    case KP_EINVITEEXPIRED: return KP_HS_REFUSE_INVITE_EXPIRED;
    case KP_EOVERLOADED: return KP_HS_REFUSE_OVERLOADED;
    default: return KP_HS_REFUSE_NOT_ALLOWED;
  }
}

/* A side whose node is still there (a dual-stack node's sibling goes
 * first when the node closes). */
static server_side_t *side_at(const kp_server_t *s, unsigned i) {
  const server_side_t *side = &s->side[i];
  kp_node_t *on = i == 0 ? s->node : s->node->sibling;
  return side->inner && on == side->node ? (server_side_t *)side : NULL;
}

/* One IPv4 address or IPv6 /64: what the per-IP limit counts. */
static void ip_of(const kp_addr_t *a, kp_addr_t *out) {
  *out = *a;
  out->port = 0;
  if (out->family == KP_AF_INET6) memset(out->ip + 8, 0, 8);
}

/* Whether one more connection from this key and IP stays within limits. */
static bool within_limits(const kp_server_t *s, const uint8_t key[KP_PUBLIC_KEY_LEN],
                          const kp_addr_t *client) {
  kp_addr_t ip;
  ip_of(client, &ip);
  unsigned by_key = 0, by_ip = 0;
  for (unsigned i = 0; i < 2; i++) {
    const server_side_t *side = side_at(s, i);
    for (const kp_node_conn_t *c = side ? side->node->conns : NULL; c; c = c->next) {
      if (c->server != s) continue;
      by_key += !memcmp(c->key, key, KP_PUBLIC_KEY_LEN);
      by_ip += kp_addr_eq(&c->ip, &ip);
    }
  }
  return s->conn_count < s->limits.max_conns && by_key < s->limits.conns_per_key &&
         by_ip < s->limits.conns_per_ip;
}

static kp_hs_refusal_t server_firewall(void *ctx, const kp_hs_hello_t *h, const kp_addr_t *client) {
  kp_server_t *s = ((server_side_t *)ctx)->s;
  if (!within_limits(s, h->client_key, client)) return KP_HS_REFUSE_LIMIT;
  if (!s->firewall) return KP_HS_OK;
  kp_client_hello_t hello = {
      .service = h->service, .has_invite = h->invite_id != 0, .invite_id = h->invite_id};
  memcpy(hello.key, h->client_key, KP_PUBLIC_KEY_LEN);
  memcpy(hello.invite_proof, h->invite_proof, 32);
  return refusal_of(s->firewall(s, &hello, s->arg));
}

static void conn_ended(kp_node_conn_t *rec) {
  kp_server_t *s = rec->server;
  s->conn_count--;
}

/* The path died: the client comes looking through the nodes that store
 * our announcement, which must name where we are now. */
static void conn_reach(kp_node_conn_t *rec) {
  kp_server_t *s = rec->server;
  uint64_t now = kp__node_now(s->node);
  /* Many connections losing their paths at once (our NAT) start one
   * refresh (a refresh under way takes no other); however paths come and
   * go, a few refreshes, then one every few seconds. */
  if (!kp_bucket_take(&s->reach, 1, REACH_EVERY_S * REACH_BURST, REACH_EVERY_S, now)) return;
  if (s->announce) kp_announce_refresh(s->announce);
}

static void server_connection(void *ctx, const kp_hp_result_t *r) {
  server_side_t *side = ctx;
  kp_server_t *s = side->s;
  kp_conn_t *conn;
  kp_node_conn_t *rec;
  kp_connect_info_t info;
  int err = kp__node_conn_open(side->node, r, &s->conn_cb, &conn, &rec);
  if (err) {
    KP_WARN(&side->node->log, "accepting a connection: %s", kp_strerror(err));
    return;
  }
  /* Counted until it ends. */
  rec->server = s;
  ip_of(r->client_seen.family ? &r->client_seen : &r->path, &rec->ip);
  rec->on_end = conn_ended;
  rec->reach = conn_reach;
  s->conn_count++;
  info_from(side->node, r, &info);
  if (s->on_connection) s->on_connection(s, conn, &info, s->arg);
}

int kp_server_listen(kp_node_t *node, const kp_keypair_t *kp, kp_firewall_cb firewall,
                     const kp_conn_callbacks_t *conn_callbacks,
                     kp_server_connection_cb on_connection, void *arg, kp_server_t **out) {
  *out = NULL;
  if (node->closing) return UV_EINVAL;
  kp_server_t *s = kp_calloc(1, sizeof(*s));
  if (!s) return UV_ENOMEM;
  s->node = node;
  s->firewall = firewall;
  if (conn_callbacks) s->conn_cb = *conn_callbacks;
  s->on_connection = on_connection;
  s->arg = arg;
  kp_bucket_init(&s->reach, REACH_EVERY_S * REACH_BURST, kp__node_now(node));
  kp_server_set_limits(s, NULL);
  kp_node_t *nodes[2] = {node, node->sibling && !node->sibling->closing ? node->sibling : NULL};
  int err = 0;
  for (unsigned i = 0; i < 2 && nodes[i] && !err; i++) {
    s->side[i] = (server_side_t){.s = s, .node = nodes[i]};
    err = kp_hp_listen(nodes[i]->hp, kp, server_firewall, server_connection, &s->side[i],
                       &s->side[i].inner);
    /* Relays to name to clients that cannot punch to us. */
    kp__node_relay_discover(nodes[i]);
  }
  uint8_t target[KP_ID_LEN];
  kp_target_from_key(kp->public_key, target);
  if (!err) err = kp_node_announce(node, target, kp, NULL, 0, NULL, &s->announce);
  if (err) {
    for (unsigned i = 0; i < 2; i++)
      if (s->side[i].inner) kp_hp_server_close(s->side[i].inner);
    kp_free(s);
    return err;
  }
  *out = s;
  return 0;
}

void kp_server_set_info(kp_server_t *s, const kp_device_info_t *info, kp_info_policy_t who) {
  for (unsigned i = 0; i < 2; i++)
    if (side_at(s, i)) kp_hp_server_set_info(s->side[i].inner, info, who);
}

void kp_server_stats(const kp_server_t *s, kp_server_stats_t *out) {
  memset(out, 0, sizeof(*out));
  for (unsigned i = 0; i < 2; i++) {
    if (!side_at(s, i)) continue;
    kp_hp_server_stats_t st;
    kp_hp_server_stats(s->side[i].inner, &st);
    out->handshakes += st.handshakes;
    out->accepted += st.accepted;
    out->refused += st.refused;
    out->busy += st.busy;
    out->dropped += st.dropped;
    out->bad += st.bad;
    out->replays += st.replays;
    out->evicted += st.evicted;
    out->connections += st.connections;
    out->punch_timeouts += st.punch_timeouts;
    out->sessions += st.sessions;
  }
}

void kp_server_set_limits(kp_server_t *s, const kp_server_limits_t *l) {
  kp_server_limits_t d = {0};
  if (l) d = *l;
  s->limits.conns_per_key = d.conns_per_key ? d.conns_per_key : SERVER_CONNS_PER_KEY;
  s->limits.conns_per_ip = d.conns_per_ip ? d.conns_per_ip : SERVER_CONNS_PER_IP;
  s->limits.max_conns = d.max_conns ? d.max_conns : SERVER_MAX_CONNS;
}

void kp_server_close(kp_server_t *s) {
  if (s->announce) kp_announce_stop(s->announce, true);
  for (unsigned i = 0; i < 2; i++) {
    server_side_t *side = side_at(s, i);
    if (!side) continue;
    if (side->node->hp) kp_hp_server_close(side->inner);
    /* Its connections stay, uncounted. */
    for (kp_node_conn_t *rec = side->node->conns; rec; rec = rec->next) {
      if (rec->server != s) continue;
      rec->server = NULL;
      rec->on_end = NULL;
      rec->reach = NULL;
    }
  }
  kp_free(s);
}

/* ---- Client ---------------------------------------------------------------------------- */

static kp_node_relay_memo_t *memo_find(kp_node_t *node, const uint8_t key[KP_PUBLIC_KEY_LEN]) {
  for (unsigned i = 0; node->relay_memo && i < KP_NODE_RELAY_MEMOS; i++)
    if (node->relay_memo[i].at && !memcmp(node->relay_memo[i].server_key, key, KP_PUBLIC_KEY_LEN))
      return &node->relay_memo[i];
  return NULL;
}

static void memo_store(kp_node_t *node, const uint8_t key[KP_PUBLIC_KEY_LEN],
                       const kp_addr_t *relay) {
  kp_node_relay_memo_t *m = memo_find(node, key);
  if (!node->relay_memo &&
      !(node->relay_memo = kp_calloc(KP_NODE_RELAY_MEMOS, sizeof(*node->relay_memo))))
    return; /* the next connect looks the key up */
  if (!m) {
    /* An empty slot (at 0), else the oldest. */
    m = &node->relay_memo[0];
    for (unsigned i = 1; i < KP_NODE_RELAY_MEMOS; i++)
      if (node->relay_memo[i].at < m->at) m = &node->relay_memo[i];
  }
  memcpy(m->server_key, key, KP_PUBLIC_KEY_LEN);
  m->relay = *relay;
  m->at = kp__node_now(node) | 1;
}

static void connected(void *arg, int status, const kp_hp_result_t *r) {
  connect_t *c = arg;
  kp_connect_info_t info;
  kp_conn_t *conn = NULL;
  c->hc = NULL; /* the state machine lets go of it after this call */
  info_from(c->node, r, &info);
  if (!status && r->relay.family) memo_store(c->node, c->server_key, &r->relay);
  if (!status) status = kp__node_conn_open(c->node, r, &c->conn_cb, &conn, NULL);
  c->cb(c->node, status, conn, &info, c->arg);
  if (c->starting) {
    c->ended = true;
    return;
  }
  kp_free(c);
}

int kp__node_attempt(kp_node_t *on, const kp_keypair_t *self,
                     const uint8_t server_key[KP_PUBLIC_KEY_LEN], const kp_hp_connect_opts_t *base,
                     const kp_conn_callbacks_t *conn_callbacks, kp_connect_cb cb, void *arg,
                     kp_node_attempt_t **out) {
  if (on->closing) return UV_EINVAL;
  connect_t *c = kp_calloc(1, sizeof(*c));
  if (!c) return UV_ENOMEM;
  c->node = on;
  memcpy(c->server_key, server_key, KP_PUBLIC_KEY_LEN);
  if (conn_callbacks) c->conn_cb = *conn_callbacks;
  c->cb = cb;
  c->arg = arg;
  kp_hp_connect_opts_t opts = *base;
  const kp_node_relay_memo_t *m = memo_find(on, server_key);
  if (m && kp__node_now(on) - m->at < KP_NODE_RELAY_MEMO_MS) {
    opts.relays = &m->relay;
    opts.relay_count = 1;
    opts.lookup_fallback = true;
  }
  int err;
  kp_hp_connect_t *hc = NULL;
  c->starting = true;
  if (out) *out = c;
  KP_NODE_FEED(on, err = kp_hp_connect(on->hp, self, server_key, &opts, connected, c,
                                       kp__node_now(on), &hc));
  c->starting = false;
  if (err || c->ended) {
    /* Failed, or over already (the callback has been told). */
    bool told = c->ended;
    if (out) *out = NULL;
    kp_free(c);
    return told ? 0 : err;
  }
  c->hc = hc;
  return 0;
}

void kp__node_attempt_cancel(kp_node_attempt_t *c) {
  if (c->hc) kp_hp_connect_cancel(c->hc);
  kp_free(c);
}

int kp_node_connect(kp_node_t *node, const kp_keypair_t *self,
                    const uint8_t server_key[KP_PUBLIC_KEY_LEN],
                    const kp_conn_callbacks_t *conn_callbacks, kp_connect_cb cb, void *arg) {
  return kp_node_connect_with(node, self, server_key, NULL, conn_callbacks, cb, arg);
}

int kp_node_connect_with(kp_node_t *node, const kp_keypair_t *self,
                         const uint8_t server_key[KP_PUBLIC_KEY_LEN],
                         const kp_connect_options_t *copts,
                         const kp_conn_callbacks_t *conn_callbacks, kp_connect_cb cb, void *arg) {
  if (node->closing) return UV_EINVAL;
  if (copts && copts->service && *copts->service && !kp_service_name_ok(copts->service))
    return KP_ECONFIG;
  if (copts && copts->invite && memcmp(copts->invite->server_key, server_key, KP_PUBLIC_KEY_LEN))
    return KP_ECONFIG;
  kp_hp_connect_opts_t opts = {0};
  if (copts) {
    opts.service = copts->service;
    opts.want_info = copts->want_info;
    if (copts->invite) {
      opts.invite_id = copts->invite->id;
      kp_invite_proof(copts->invite, self->public_key, opts.invite_proof);
    }
  }
  /* A dual-stack node races its families (node_race.c). */
  if (node->sibling && !node->sibling->closing)
    return kp__node_race(node, self, server_key, &opts, conn_callbacks, cb, arg);
  return kp__node_attempt(node, self, server_key, &opts, conn_callbacks, cb, arg, NULL);
}
