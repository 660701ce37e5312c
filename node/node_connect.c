/* kp_node's connect-by-key API (kadpunch.h, "Connecting by key"): the
 * holepunch state machine (holepunch/holepunch.h) fed with the node's
 * clock, and the stream connection opened on the node's own socket, where
 * the punched NAT mapping lives. */
#include <sodium.h>
#include <string.h>

#include "common/alloc.h"
#include "node/node_internal.h"
#include "stream/endpoint.h"

struct kp_server_s {
  kp_node_t *node;
  kp_hp_server_t *inner;
  kp_announce_t *announce;
  kp_firewall_cb firewall;
  kp_conn_callbacks_t conn_cb;
  kp_server_connection_cb on_connection;
  void *arg;
};

typedef struct connect_s {
  kp_node_t *node;
  uint8_t server_key[KP_PUBLIC_KEY_LEN];
  kp_conn_callbacks_t conn_cb;
  kp_connect_cb cb;
  void *arg;
} connect_t;

static void info_from(const kp_node_t *node, const kp_hp_result_t *r, kp_connect_info_t *info) {
  memset(info, 0, sizeof(*info));
  info->relay_tcp = node->tunnel && r->strategy == KP_PUNCH_RELAYED;
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

static int ensure_endpoint(kp_node_t *node) {
  if (node->ep) return 0;
  return kp__endpoint_attach(node->loop, &node->sock, &node->ep);
}

static int open_conn(kp_node_t *node, const kp_hp_result_t *r, const kp_conn_callbacks_t *cb,
                     kp_conn_t **out) {
  /* On the socket whose NAT mapping the punch opened. */
  kp_endpoint_t *ep;
  int err = r->socket ? kp__node_xsock_endpoint(node, r->socket, &ep) : ensure_endpoint(node);
  if (err) return err;
  if (!r->socket) ep = node->ep;

  kp_conn_options_t o;
  kp_conn_options_init(&o);
  o.initiator = r->initiator;
  o.local_id = r->local_id;
  o.remote_id = r->remote_id;
  o.cipher = r->cipher;
  memcpy(o.tx_key, r->tx_key, 32);
  memcpy(o.rx_key, r->rx_key, 32);
  o.remote = r->path;
  err = kp_conn_open(ep, &o, cb, out);
  sodium_memzero(&o, sizeof(o));
  if (!err && r->strategy == KP_PUNCH_RELAYED && r->socket) kp__node_xsock_upgrade(node, r, *out);
  return err;
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

static kp_hs_refusal_t server_firewall(void *ctx, const kp_hs_hello_t *h) {
  kp_server_t *s = ctx;
  if (!s->firewall) return KP_HS_OK;
  kp_client_hello_t hello = {
      .service = h->service, .has_invite = h->invite_id != 0, .invite_id = h->invite_id};
  memcpy(hello.key, h->client_key, KP_PUBLIC_KEY_LEN);
  memcpy(hello.invite_proof, h->invite_proof, 32);
  return refusal_of(s->firewall(s, &hello, s->arg));
}

static void server_connection(void *ctx, const kp_hp_result_t *r) {
  kp_server_t *s = ctx;
  kp_conn_t *conn;
  kp_connect_info_t info;
  int err = open_conn(s->node, r, &s->conn_cb, &conn);
  if (err) {
    KP_WARN(&s->node->log, "accepting a connection: %s", kp_strerror(err));
    return;
  }
  info_from(s->node, r, &info);
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
  int err = kp_hp_listen(node->hp, kp, server_firewall, server_connection, s, &s->inner);
  /* Relays to name to clients that cannot punch to us. */
  kp__node_relay_discover(node);
  uint8_t target[KP_ID_LEN];
  kp_target_from_key(kp->public_key, target);
  if (!err) err = kp_node_announce(node, target, kp, NULL, 0, NULL, &s->announce);
  if (err) {
    if (s->inner) kp_hp_server_close(s->inner);
    kp_free(s);
    return err;
  }
  *out = s;
  return 0;
}

void kp_server_set_info(kp_server_t *s, const kp_device_info_t *info, kp_info_policy_t who) {
  if (s->inner) kp_hp_server_set_info(s->inner, info, who);
}

void kp_server_close(kp_server_t *s) {
  if (s->announce) kp_announce_stop(s->announce, true);
  if (s->inner && s->node->hp) kp_hp_server_close(s->inner);
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
  info_from(c->node, r, &info);
  if (!status && r->relay.family) memo_store(c->node, c->server_key, &r->relay);
  if (!status) status = open_conn(c->node, r, &c->conn_cb, &conn);
  c->cb(c->node, status, conn, &info, c->arg);
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
  connect_t *c = kp_calloc(1, sizeof(*c));
  if (!c) return UV_ENOMEM;
  c->node = node;
  memcpy(c->server_key, server_key, KP_PUBLIC_KEY_LEN);
  if (conn_callbacks) c->conn_cb = *conn_callbacks;
  c->cb = cb;
  c->arg = arg;
  kp_hp_connect_opts_t opts = {0};
  if (copts) {
    opts.service = copts->service;
    opts.want_info = copts->want_info;
    if (copts->invite) {
      opts.invite_id = copts->invite->id;
      kp_invite_proof(copts->invite, self->public_key, opts.invite_proof);
    }
  }
  const kp_node_relay_memo_t *m = memo_find(node, server_key);
  if (m && kp__node_now(node) - m->at < KP_NODE_RELAY_MEMO_MS) {
    opts.relays = &m->relay;
    opts.relay_count = 1;
    opts.lookup_fallback = true;
  }
  int err;
  KP_NODE_FEED(node, err = kp_hp_connect(node->hp, self, server_key, &opts, connected, c,
                                         kp__node_now(node), NULL));
  if (err) kp_free(c);
  return err;
}
