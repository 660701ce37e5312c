/* SPDX-License-Identifier: MIT */
/* A connection's paths at the node (docs/architecture.md, "Connections
 * that survive"): every connection the node makes or accepts gets a link
 * (holepunch/hp_link.c) for its whole life. The transport tells the link
 * when the path stops carrying (stream path_state); the link finds another
 * and says where, and this glue moves the connection there: to the socket
 * the new path was punched or paired from (kp__conn_move) and the peer's
 * address on it (kp__conn_set_path). The user's kp_conn_t stays the same
 * handle throughout; its on_path hears each change with its reason.
 *
 * On a dual-stack node a connection also has a standby link on the other
 * family's node (kp_hp_link_start_standby), with a record in that node's
 * list: told of every path death, as the first link is, it resumes over
 * its family, and a path it proves takes the connection to that node's
 * socket, across families; the link that lost it then stands by. */
#include <sodium.h>
#include <string.h>

#include "common/alloc.h"
#include "node/node_internal.h"
#include "node/socket_pool.h"
#include "stream/stream_frame.h"
#include "stream/uv/endpoint.h"

#define RESUME_GRACE_MS 60000

static void conn_unlink(kp_node_conn_t *rec) {
  for (kp_node_conn_t **p = &rec->node->conns; *p; p = &(*p)->next) {
    if (*p == rec) {
      *p = rec->next;
      return;
    }
  }
}

/* ---- The index of paired records ---------------------------------------------------- */

static size_t index_slot(const kp_node_t *node, uint64_t id) {
  return (size_t)((id * 0x9e3779b97f4a7c15ull) >> 32) & (node->conn_index_size - 1);
}

static kp_node_conn_t *index_find(const kp_node_t *node, uint64_t id) {
  if (!node->conn_index_size) return NULL;
  for (kp_node_conn_t *r = node->conn_index[index_slot(node, id)]; r; r = r->index_next)
    if (r->conn->local_id == id) return r;
  return NULL;
}

/* Chained, doubling at one record a slot (the ids are ours: random). */
static bool index_add(kp_node_t *node, kp_node_conn_t *rec) {
  if (node->conn_index_count >= node->conn_index_size) {
    size_t n = node->conn_index_size ? node->conn_index_size * 2 : 16;
    kp_node_conn_t **b = kp_calloc(n, sizeof(*b));
    if (!b) return false;
    kp_node_conn_t **old = node->conn_index;
    size_t old_n = node->conn_index_size;
    node->conn_index = b;
    node->conn_index_size = n;
    for (size_t i = 0; i < old_n; i++) {
      for (kp_node_conn_t *r = old[i], *next; r; r = next) {
        next = r->index_next;
        size_t k = index_slot(node, r->conn->local_id);
        r->index_next = b[k];
        b[k] = r;
      }
    }
    kp_free(old);
  }
  size_t k = index_slot(node, rec->conn->local_id);
  rec->index_next = node->conn_index[k];
  node->conn_index[k] = rec;
  node->conn_index_count++;
  return true;
}

static void index_remove(kp_node_t *node, kp_node_conn_t *rec) {
  if (!node->conn_index_size) return;
  for (kp_node_conn_t **p = &node->conn_index[index_slot(node, rec->conn->local_id)]; *p;
       p = &(*p)->index_next) {
    if (*p == rec) {
      *p = rec->index_next;
      node->conn_index_count--;
      return;
    }
  }
}

/* A pair comes apart: neither record is found by id any more. */
static void unpair(kp_node_conn_t *rec) {
  kp_node_conn_t *other = rec->other;
  index_remove(rec->node, rec);
  index_remove(other->node, other);
  rec->other = other->other = NULL;
}

void kp__node_index_free(kp_node_t *node) {
  kp_free(node->conn_index);
  node->conn_index = NULL;
  node->conn_index_size = node->conn_index_count = 0;
}

/* ---- Records --------------------------------------------------------------------------- */

static void conn_free(kp_node_conn_t *rec) {
  kp_node_conn_t *other = rec->other;
  if (other) {
    /* The pair goes together (the transport ended, or a node closed). */
    unpair(rec);
    conn_free(other);
  }
  kp_hp_link_stop(rec->link);
  rec->link = NULL;
  if (rec->on_end) rec->on_end(rec);
  conn_unlink(rec);
  kp_free(rec);
}

static void on_ended(kp_conn_t *conn, void *ctx) {
  (void)conn;
  conn_free(ctx);
}

/* The transport's word: the link acts on it from its next tick. */
static void tell_path_state(kp_node_conn_t *rec, bool alive) {
  kp_node_t *node = rec->node;
  if (!rec->link || node->closing) return;
  kp_hp_link_path_state(rec->link, alive, kp__node_now(node));
  kp__node_rearm(node);
}

/* Both families' links hear it: each looks for a path over its own. */
static void on_path_state(kp_conn_t *conn, bool alive, void *ctx) {
  kp_node_conn_t *rec = ctx;
  (void)conn;
  tell_path_state(rec, alive);
  if (rec->other) tell_path_state(rec->other, alive);
}

static kp_path_why_t why_of(kp_hp_move_why_t why) {
  switch (why) {
    case KP_HP_MOVE_UPGRADE: return KP_PATH_DIRECT;
    case KP_HP_MOVE_BACK_TO_RELAY: return KP_PATH_TO_RELAY;
    case KP_HP_MOVE_RESUMED: return KP_PATH_REBOUND;
    case KP_HP_MOVE_RELAYED: return KP_PATH_RELAYED;
    case KP_HP_MOVE_FAILOVER: return KP_PATH_FAILOVER;
  }
  return KP_PATH_MIGRATED;
}

int kp__node_endpoint_for(kp_node_t *node, void *sock, kp_endpoint_t **out) {
  /* A closing node's endpoints are closing: a new one would outlive it. */
  if (node->closing) return UV_EINVAL;
  if (sock) return kp_socket_pool_endpoint(node->sockets, sock, out);
  if (!node->ep) {
    int err = kp__endpoint_attach(node->loop, &node->sock, &node->ep);
    if (err) return err;
    kp__endpoint_set_rx_budget(node->ep, &node->rx_budget);
  }
  *out = node->ep;
  return 0;
}

/* The link found another path (or went back to the relay it kept). */
static void on_moved(void *ctx, const kp_hp_move_t *m) {
  kp_node_conn_t *rec = ctx;
  kp_node_t *node = rec->node;
  kp_conn_t *conn = rec->conn;
  kp_endpoint_t *ep;
  char to[KP_ADDR_STRLEN], key[9];
  kp_addr_format(&m->to, to, sizeof(to));
  sodium_bin2hex(key, sizeof(key), rec->key, 4);
  int err = kp__node_endpoint_for(node, m->sock, &ep);
  if (!err) err = kp__conn_move(conn, ep);
  if (err) {
    KP_WARN(&node->log, "connection %s: cannot move to %s: %s", key, to, kp_strerror(err));
    /* The link thinks it moved: it stands by again, and looks again unless
     * the node is going. */
    if (rec->link) kp_hp_link_release(rec->link, kp__node_now(node));
    if (!node->closing) tell_path_state(rec, false);
    return;
  }
  /* The other family's link stands by now (not for a fall back to a kept
   * relay, which may be of a family that went: though the transport, told
   * of the move, calls the path alive at once, and the other stops looking
   * until it says the path died again). */
  kp_node_conn_t *other = rec->other;
  if (other && other->link && m->why != KP_HP_MOVE_BACK_TO_RELAY) {
    kp_hp_link_release(other->link, kp__node_now(other->node));
    kp__node_rearm(other->node);
  }
  kp_path_event_t ev = {.why = why_of(m->why), .direct = m->direct, .remote = m->to};
  if (!m->direct) ev.relay = m->to;
  KP_INFO(&node->log, "connection %s: %s (%s %s)", key, kp_path_why_str(ev.why),
          m->direct ? "direct to" : "relay", to);
  kp__conn_set_path(conn, &ev);
}

/* Server: the path died and the client will come looking through our
 * relay nodes: make sure they know where we are now. */
static void on_reach(void *ctx) {
  kp_node_conn_t *rec = ctx;
  if (rec->standby_rec) rec = rec->other; /* the server's record, on its first node */
  if (rec && rec->reach) rec->reach(rec);
}

/* The standby record and link on a dual-stack node's other family (none
 * for a node that reaches the network through a relay or a proxy: its
 * other family is not its own). */
static void standby_open(kp_node_t *node, kp_node_conn_t *rec, const kp_hp_result_t *r) {
  int other_family = kp_dht_family(node->dht) == KP_AF_INET ? KP_AF_INET6 : KP_AF_INET;
  kp_node_t *twin = kp__node_of_family(node, other_family);
  if (!twin || !twin->hp || twin->tunnel || twin->proxy_link || node->tunnel || node->proxy_link)
    return;
  kp_node_conn_t *sb = kp_calloc(1, sizeof(*sb));
  if (!sb) return; /* the connection lives on one family: as a single-stack one */
  sb->node = twin;
  sb->conn = rec->conn;
  sb->standby_rec = true;
  sb->initiator = rec->initiator;
  memcpy(sb->key, rec->key, KP_PUBLIC_KEY_LEN);
  kp_hp_link_cb_t lcb = {.moved = on_moved, .reach = on_reach, .ctx = sb};
  if (kp_hp_link_start_standby(twin->hp, r, &lcb, kp__node_now(twin), &sb->link)) {
    kp_free(sb);
    return;
  }
  if (!index_add(node, rec) || !index_add(twin, sb)) {
    index_remove(node, rec);
    kp_hp_link_stop(sb->link);
    kp_free(sb);
    return;
  }
  sb->other = rec;
  rec->other = sb;
  sb->next = twin->conns;
  twin->conns = sb;
}

int kp__node_conn_open(kp_node_t *node, const kp_hp_result_t *r, const kp_conn_callbacks_t *cb,
                       kp_conn_t **out, kp_node_conn_t **rec_out) {
  *out = NULL;
  if (rec_out) *rec_out = NULL;
  /* On the socket whose NAT mapping the punch opened (or that paired). */
  kp_endpoint_t *ep;
  int err = kp__node_endpoint_for(node, r->socket, &ep);
  if (err) return err;
  kp_node_conn_t *rec = kp_calloc(1, sizeof(*rec));
  if (!rec) return UV_ENOMEM;
  kp_conn_options_t o;
  kp_conn_options_init(&o);
  o.initiator = r->initiator;
  o.local_id = r->local_id;
  o.remote_id = r->remote_id;
  o.cipher = r->cipher;
  memcpy(o.tx_key, r->tx_key, 32);
  memcpy(o.rx_key, r->rx_key, 32);
  o.remote = r->path;
  o.resume_grace_ms = node->resume_grace_ms;
  err = kp_conn_open(ep, &o, cb, out);
  sodium_memzero(&o, sizeof(o));
  if (err) {
    kp_free(rec);
    return err;
  }
  kp_conn_t *conn = *out;
  rec->node = node;
  rec->conn = conn;
  rec->initiator = r->initiator;
  memcpy(rec->key, r->remote_key, KP_PUBLIC_KEY_LEN);
  conn->relayed = r->strategy == KP_PUNCH_RELAYED;
  /* Both paths deliver for a while after each move, and each side moves
   * on its own evidence: only the link moves it. */
  kp__conn_pin_path(conn);
  kp_hp_link_cb_t lcb = {.moved = on_moved, .reach = on_reach, .ctx = rec};
  err = kp_hp_link_start(node->hp, r, &lcb, kp__node_now(node), &rec->link);
  if (err) KP_WARN(&node->log, "connection without path recovery: %s", kp_strerror(err));
  kp_conn_hooks_t hooks = {.ended = on_ended, .path_state = on_path_state};
  kp__conn_set_hooks(conn, &hooks, rec);
  rec->next = node->conns;
  node->conns = rec;
  if (rec->link) standby_open(node, rec, r);
  if (rec_out) *rec_out = rec;
  kp__node_rearm(node);
  return 0;
}

void kp__node_stream_input(kp_node_t *node, const kp_addr_t *from, uint8_t *data, size_t len) {
  /* The common case first, in one lookup: a connection on this socket. */
  bool open = node->ep && !node->ep_closing;
  if (open && kp__endpoint_deliver(node->ep, from, data, len)) return;
  uint64_t cid = kp_stream_packet_cid(data);
  kp_node_conn_t *rec = index_find(node, cid);
  kp_conn_t *conn = rec ? rec->conn : NULL;
  kp_endpoint_t *ep = conn ? conn->ep : NULL;
  if (!rec || conn->over || ep->close_requested) {
    if (open) node->ep->drops_unknown++;
    return;
  }
  /* A connection with a record here that runs on other sockets (the other
   * family's, or a pool socket of either): its peer sends over this family
   * now. The transport reads it where the connection is. */
  uint64_t newest = kp_sconn_newest_received(conn->sc);
  kp__endpoint_input(ep, from, data, len);
  /* The packet may have ended the connection, and its records with it. */
  rec = index_find(node, cid);
  if (!rec || rec->conn != conn || conn->over) return;
  /* Authentic and the newest the client has sent (not a late copy of one
   * from before it moved): a server follows, to an address its link here
   * proved. */
  if (kp_sconn_newest_received(conn->sc) > newest && !rec->initiator && rec->link &&
      kp_hp_link_follow(rec->link, from, kp__node_now(node)))
    kp__node_rearm(node);
}

bool kp__node_conns_hold(const kp_node_t *node, const void *sock) {
  for (const kp_node_conn_t *rec = node->conns; rec; rec = rec->next)
    if (rec->link && kp_hp_link_holds(rec->link, sock)) return true;
  return false;
}

void kp__node_conns_forget(kp_node_t *node) {
  while (node->conns) {
    kp_node_conn_t *rec = node->conns;
    kp_node_conn_t *other = rec->other;
    if (other) {
      /* One family's node goes first: the other's record carries on alone
       * (and holds the hooks, if this one did). */
      unpair(rec);
      if (!rec->standby_rec) {
        kp_conn_hooks_t hooks = {.ended = on_ended, .path_state = on_path_state};
        other->standby_rec = false;
        kp__conn_set_hooks(rec->conn, &hooks, other);
      }
    } else if (!rec->standby_rec) {
      kp__conn_set_hooks(rec->conn, NULL, NULL);
    }
    conn_free(rec);
  }
}

unsigned kp__node_resume_grace(const kp_node_options_t *opts) {
  return opts->resume_grace_ms ? opts->resume_grace_ms : RESUME_GRACE_MS;
}
