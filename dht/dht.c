/* SPDX-License-Identifier: MIT */
/* The DHT core: receive and dispatch, replies, membership, maintenance.
 * Queries and commits live in dht_query.c. */
#include "dht/dht_internal.h"

#include <string.h>

#include "common/alloc.h"
#include "dht/dht_id.h"

/* Background work falls due at `at` (see KP_DHT_IDLE_TICK_MS). */
static void due(kp_dht_t *dht, uint64_t at) {
  if (at < dht->next_background) dht->next_background = at;
}

void kp_dht_config_defaults(kp_dht_config_t *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->family = KP_AF_INET;
  cfg->mode = KP_NODE_AUTO;
  cfg->k = KP_DHT_K;
  cfg->concurrency = 10;
  kp_dht_rpc_config_defaults(&cfg->rpc);
  cfg->query_retries = 2;
  cfg->member_stable_ms = 20000;
  cfg->refresh_ms = 15 * 60 * 1000;
  cfg->ping_stale_ms = 10 * 60 * 1000;
  cfg->natcheck_ms = 5 * 60 * 1000;
  cfg->suspend_ms = 60 * 1000;
  /* cfg->rng: the creator's (a core draws no randomness of its own). */
}

/* ---- Sending ------------------------------------------------------------ */

static void send_main(void *ctx, const kp_addr_t *to, const uint8_t *data, size_t len) {
  kp_dht_t *dht = ctx;
  dht->sent++;
  dht->io.send(dht->io.ctx, KP_DHT_SOCK_MAIN, to, data, len);
}

size_t kp__dht_reply_value_max(const kp_dht_t *dht, uint8_t command) {
  for (unsigned i = 0; i < dht->handler_count; i++)
    if (dht->handlers[i].command == command) return dht->handlers[i].reply_value_max;
  return 0;
}

int kp_dht_wire_error(uint8_t code) {
  switch (code) {
    case KP_DHT_ERR_NONE: return 0;
    case KP_DHT_ERR_UNKNOWN_COMMAND: return KP_ECOMMAND;
    case KP_DHT_ERR_BAD_TOKEN: return KP_EBADTOKEN;
    case KP_DHT_ERR_TRUNCATED: return KP_ETOOBIG;
    default: return KP_EFIELD;
  }
}

int kp_dht_request(kp_dht_t *dht, const kp_addr_t *to, uint8_t command, const uint8_t *target,
                   const uint8_t *value, size_t value_len, const uint8_t *token, kp_dht_req_cb cb,
                   void *arg, uint64_t now, kp_dht_req_t **out) {
  return kp__dht_request_ex(dht, to, command, target, value, value_len, token, -1, 0, cb, arg, now,
                            out);
}

int kp__dht_request_ex(kp_dht_t *dht, const kp_addr_t *to, uint8_t command, const uint8_t *target,
                       const uint8_t *value, size_t value_len, const uint8_t *token, int retries,
                       unsigned flags, kp_dht_req_cb cb, void *arg, uint64_t now,
                       kp_dht_req_t **out) {
  kp_dht_msg_t m;
  memset(&m, 0, sizeof(m));
  if (to->family != dht->cfg.family) return KP_EBADADDR;
  m.to = *to;
  m.command = command;
  if (dht->member && dht->has_id && !(flags & KP_DHT_REQ_NO_ID)) {
    m.has_id = true;
    memcpy(m.id, dht->table.self, KP_ID_LEN);
  }
  if (target) {
    m.has_target = true;
    memcpy(m.target, target, KP_ID_LEN);
  }
  if (token) {
    m.has_token = true;
    memcpy(m.token, token, sizeof(m.token));
  }
  m.value = value;
  m.value_len = value_len;

  kp_dht_req_opts_t opts = {.retries = retries};
  if (command == KP_DHT_CMD_PING_NAT) opts.any_port = true;
  if (!token) {
    /* No proof that we receive at our address: pad so the reply may be as
     * large as it needs to be (docs/protocol.md, "No amplification"). */
    size_t nodes = target ? dht->cfg.k : 0;
    opts.min_len =
        kp_dht_msg_reply_bound(dht->cfg.family, nodes, kp__dht_reply_value_max(dht, command));
  }
  return kp_dht_rpc_request(&dht->rpc, &m, to, &opts, cb, arg, now, out);
}

void kp_dht_request_abandon(kp_dht_t *dht, kp_dht_req_t *req) {
  kp_dht_rpc_abandon(&dht->rpc, req);
}

/* ---- Replies ------------------------------------------------------------ */

void kp_dht_reply_to_init(kp_dht_reply_to_t *rt, const kp_dht_request_t *req) {
  memset(rt, 0, sizeof(*rt));
  rt->to = req->from;
  rt->tid = req->msg->tid;
  rt->command = req->msg->command;
  rt->has_target = req->msg->has_target;
  memcpy(rt->target, req->msg->target, KP_ID_LEN);
  rt->limit = (uint16_t)(req->token_valid ? KP_DHT_MAX_DATAGRAM : req->wire_len);
  if (req->token_current) {
    rt->has_token = true;
    memcpy(rt->token, req->msg->token, sizeof(rt->token));
  }
}

static size_t encode_closest(kp_dht_t *dht, const uint8_t target[KP_ID_LEN],
                             const kp_addr_t *exclude, uint8_t *out) {
  const kp_dht_entry_t *best[KP_DHT_MAX_NODES];
  size_t k = dht->cfg.k < KP_DHT_MAX_NODES ? dht->cfg.k : KP_DHT_MAX_NODES;
  size_t n = kp_dht_table_closest(&dht->table, target, exclude, best, k);
  size_t len = 0;
  for (size_t i = 0; i < n; i++) len += kp_dht_entry_compact(&dht->table, best[i], out + len);
  return len;
}

static int send_reply(kp_dht_t *dht, int sock, const kp_dht_reply_to_t *rt, const uint8_t *value,
                      size_t value_len, uint8_t error, bool with_id) {
  uint8_t nodes[KP_DHT_MAX_NODES * KP_ADDR_COMPACT_MAX];
  uint8_t buf[KP_DHT_MAX_DATAGRAM];
  size_t step = kp_addr_compact_len(dht->cfg.family);
  kp_dht_msg_t r;
  memset(&r, 0, sizeof(r));
  r.type = KP_DHT_RESPONSE;
  r.tid = rt->tid;
  r.to = rt->to;
  r.command = rt->command;
  r.error = error;
  if (with_id && dht->member && dht->has_id) {
    r.has_id = true;
    memcpy(r.id, dht->table.self, KP_ID_LEN);
  }
  r.has_token = true;
  if (rt->has_token)
    memcpy(r.token, rt->token, sizeof(r.token));
  else
    kp_dht_token_make(&dht->tokens, &rt->to, r.token);
  if (rt->has_target) {
    r.nodes = nodes;
    r.nodes_len = encode_closest(dht, rt->target, &rt->to, nodes);
  }
  r.value = value;
  r.value_len = value_len;

  /* Shed what the requester can do without until the reply is no larger
   * than the limit: nodes first, then the value, then id and token. */
  for (;;) {
    size_t len;
    int err = kp_dht_msg_encode(&r, buf, sizeof(buf), &len);
    if (!err && len <= rt->limit) {
      dht->sent += sock == KP_DHT_SOCK_MAIN;
      dht->io.send(dht->io.ctx, sock, &rt->to, buf, len);
      return 0;
    }
    size_t excess = err ? KP_DHT_MAX_DATAGRAM : len - rt->limit;
    if (r.nodes_len) {
      size_t drop = (excess + step - 1) / step * step;
      r.nodes_len = drop >= r.nodes_len ? 0 : r.nodes_len - drop;
    } else if (r.value) {
      r.value = NULL;
      r.value_len = 0;
      r.error = KP_DHT_ERR_TRUNCATED;
    } else if (r.has_token) {
      r.has_token = false;
    } else if (r.has_id) {
      r.has_id = false;
    } else {
      return KP_ETOOBIG;
    }
  }
}

size_t kp_dht_reply_room(kp_dht_t *dht, const kp_dht_reply_to_t *rt) {
  uint8_t nodes[KP_DHT_MAX_NODES * KP_ADDR_COMPACT_MAX];
  uint8_t buf[KP_DHT_MAX_DATAGRAM];
  kp_dht_msg_t r;
  memset(&r, 0, sizeof(r));
  r.type = KP_DHT_RESPONSE;
  r.tid = rt->tid;
  r.to = rt->to;
  r.command = rt->command;
  r.has_id = dht->member && dht->has_id;
  r.has_token = true;
  r.error = UINT8_MAX; /* the widest error, so the estimate never falls short */
  if (rt->has_target) {
    r.nodes = nodes;
    r.nodes_len = encode_closest(dht, rt->target, &rt->to, nodes);
  }
  r.value = nodes; /* an empty value: its header is counted */
  r.value_len = 0;
  size_t len;
  if (kp_dht_msg_encode(&r, buf, sizeof(buf), &len) || len + 1 >= rt->limit) return 0;
  /* A value over 255 bytes takes one more header byte than an empty one. */
  return rt->limit - len - 1;
}

int kp_dht_reply(kp_dht_t *dht, const kp_dht_reply_to_t *rt, const uint8_t *value, size_t len,
                 uint8_t error, uint64_t now) {
  (void)now;
  return send_reply(dht, KP_DHT_SOCK_MAIN, rt, value, len, error, true);
}

/* ---- Routing table upkeep ---------------------------------------------- */

typedef enum { PING_LIVENESS, PING_REPLACE } ping_kind_t;

/* A requester proves it receives at its address by answering a ping: the
 * answer must come from that address with the ping's random tid. Only then
 * does on_response put it in the table (docs/protocol.md, "Membership"). */
struct kp_dht_verify_s {
  kp_dht_verify_t *next;
  kp_dht_t *dht;
  kp_addr_t addr;
};

static void on_verify(void *arg, kp_dht_req_t *req, int status, const kp_dht_msg_t *resp,
                      const kp_addr_t *from, uint64_t now) {
  kp_dht_verify_t *v = arg;
  kp_dht_t *dht = v->dht;
  (void)req, (void)status, (void)resp, (void)from, (void)now;
  for (kp_dht_verify_t **p = &dht->verifying; *p; p = &(*p)->next) {
    if (*p == v) {
      *p = v->next;
      break;
    }
  }
  dht->verify_count--;
  kp_free(v);
}

/* Pings addr (at most KP_DHT_MAX_VERIFY at once, one per address). One
 * ping for one request no smaller than it: nothing is amplified. */
static void verify(kp_dht_t *dht, const kp_addr_t *addr, uint64_t now) {
  if (dht->verify_count >= KP_DHT_MAX_VERIFY) return;
  for (kp_dht_verify_t *v = dht->verifying; v; v = v->next)
    if (kp_addr_eq(&v->addr, addr)) return;
  kp_dht_verify_t *v = kp_malloc(sizeof(*v));
  if (!v) return;
  v->dht = dht;
  v->addr = *addr;
  if (kp__dht_request_ex(dht, addr, KP_DHT_CMD_PING, NULL, NULL, 0, NULL, 1, 0, on_verify, v, now,
                         NULL)) {
    kp_free(v);
    return;
  }
  v->next = dht->verifying;
  dht->verifying = v;
  dht->verify_count++;
}

typedef struct ping_ctx_s {
  kp_dht_t *dht;
  uint8_t id[KP_ID_LEN];
  ping_kind_t kind;
  kp_dht_pending_insert_t insert; /* PING_REPLACE: who gets the slot if it fails */
} ping_ctx_t;

static void on_maint_ping(void *arg, kp_dht_req_t *req, int status, const kp_dht_msg_t *resp,
                          const kp_addr_t *from, uint64_t now) {
  ping_ctx_t *p = arg;
  kp_dht_t *dht = p->dht;
  (void)req;
  (void)resp;
  (void)from;
  dht->maint_pings--;
  kp_dht_entry_t *e = kp_dht_table_find(&dht->table, p->id);
  if (e) e->flags &= (uint8_t)~KP_DHT_ENTRY_PINGING;
  if (status == KP_ECANCELED) {
    kp_free(p);
    return;
  }
  if (status != 0 && e) {
    /* Dead: evict it, and let the node waiting for its slot in (once it
     * has proved its address). */
    kp_dht_table_remove(&dht->table, p->id);
    if (p->kind == PING_REPLACE && p->insert.proven)
      kp_dht_table_add(&dht->table, p->insert.id, &p->insert.addr, kp__dht_seconds(now), NULL);
    else if (p->kind == PING_REPLACE)
      verify(dht, &p->insert.addr, now);
  }
  kp_free(p);
}

static void ping_entry(kp_dht_t *dht, kp_dht_entry_t *e, ping_kind_t kind,
                       const kp_dht_pending_insert_t *insert, uint64_t now) {
  if ((e->flags & KP_DHT_ENTRY_PINGING) || dht->maint_pings >= KP_DHT_MAX_MAINT_PINGS) return;
  ping_ctx_t *p = kp_malloc(sizeof(*p));
  if (!p) return;
  kp_addr_t addr;
  kp_dht_entry_addr(&dht->table, e, &addr);
  p->dht = dht;
  kp_dht_id_from_addr(&addr, p->id);
  p->kind = kind;
  if (insert) p->insert = *insert;
  if (kp_dht_request(dht, &addr, KP_DHT_CMD_PING, NULL, NULL, 0, NULL, on_maint_ping, p, now,
                     NULL)) {
    kp_free(p);
    return;
  }
  e->flags |= KP_DHT_ENTRY_PINGING;
  dht->maint_pings++;
}

/* A member goes into the table once it has proved its address (it
 * answered us, or its request carried our token for that address); one
 * that has not is pinged first. A full bucket keeps what it has, unless
 * its least recently seen entry has been quiet for KP_DHT_FRESH_S: that
 * one is pinged, and the newcomer takes its place only if it fails. */
static void learn_member(kp_dht_t *dht, const uint8_t id[KP_ID_LEN], const kp_addr_t *addr,
                         bool proven, uint64_t now) {
  kp_dht_entry_t *lru;
  int r = proven ? kp_dht_table_add(&dht->table, id, addr, kp__dht_seconds(now), &lru)
                 : kp_dht_table_would_add(&dht->table, id, addr, &lru);
  if (r == KP_DHT_TABLE_ADDED && !proven) verify(dht, addr, now);
  if (r != KP_DHT_TABLE_FULL || !lru || kp__dht_seconds(now) - lru->last_seen < KP_DHT_FRESH_S)
    return;
  /* At most KP_DHT_MAX_MAINT_PINGS newcomers wait; the rest are dropped, as
   * Kademlia prefers the nodes it already knows to be alive. */
  kp_dht_pending_insert_t wait;
  memcpy(wait.id, id, KP_ID_LEN);
  wait.addr = *addr;
  wait.proven = proven;
  ping_entry(dht, lru, PING_REPLACE, &wait, now);
}

static void on_request_timeout(void *ctx, const kp_dht_req_t *req) {
  kp_dht_t *dht = ctx;
  uint8_t id[KP_ID_LEN];
  kp_dht_id_from_addr(&req->to, id);
  kp_dht_entry_t *e = kp_dht_table_find(&dht->table, id);
  if (!e || !kp_dht_entry_is(&dht->table, e, &req->to)) return;
  /* Two requests that each exhausted their retries: the node is gone. */
  if (++e->fails >= 2 && !(e->flags & KP_DHT_ENTRY_PINGING)) kp_dht_table_remove(&dht->table, id);
}

/* ---- Membership ---------------------------------------------------------- */

static void set_id(kp_dht_t *dht, const kp_addr_t *public_addr) {
  uint8_t id[KP_ID_LEN];
  kp_dht_id_from_addr(public_addr, id);
  if (dht->has_id && memcmp(id, dht->table.self, KP_ID_LEN) == 0) return;
  dht->has_id = true;
  kp_dht_table_set_self(&dht->table, id);
}

static void self_lookup(kp_dht_t *dht, uint64_t now) {
  kp_dht_query_opts_t opts = {0};
  kp_dht_query_start(dht, dht->table.self, &opts, now, NULL);
}

static void join_step(kp_dht_t *dht, uint64_t now);

static void on_join_step(void *arg, kp_dht_query_t *q, int status, const kp_dht_result_t *closest,
                         size_t count, uint64_t now) {
  kp_dht_t *dht = arg;
  (void)q, (void)closest, (void)count;
  if (status != KP_ECANCELED) join_step(dht, now);
}

/* A new member proves its address to the nodes closest to it, the ones
 * whose tables it must enter: a PING to each with the token each just gave
 * it (a token round trip), so each files it at once. Otherwise each would
 * have to ping it back, at most KP_DHT_MAX_VERIFY at a time, and a node that
 * hears from many newcomers at once (a network forming) would miss some. */
static void introduce(kp_dht_t *dht, const kp_dht_result_t *closest, size_t count, uint64_t now) {
  kp_dht_result_t with_token[KP_DHT_MAX_NODES];
  size_t n = 0;
  for (size_t i = 0; i < count && n < KP_DHT_MAX_NODES; i++)
    if (closest[i].has_token) with_token[n++] = closest[i];
  if (n)
    kp_dht_commit(dht, with_token, n, KP_DHT_CMD_PING, NULL, NULL, 0, 0, NULL, NULL, NULL, now,
                  NULL);
}

static void on_join_self(void *arg, kp_dht_query_t *q, int status, const kp_dht_result_t *closest,
                         size_t count, uint64_t now) {
  kp_dht_t *dht = arg;
  if (status == 0 && dht->member) introduce(dht, closest, count, now);
  on_join_step(arg, q, status, closest, count, now);
}

/* The Kademlia join: after a lookup of our own id, refresh every bucket from
 * the farthest to one past the deepest, each lookup starting when the last
 * ends, so a new member's table fills in a few round trips rather than a
 * refresh period. Nodes joining at the same moment were not members yet at
 * our first lookup; the later ones find them. */
static void join_step(kp_dht_t *dht, uint64_t now) {
  int last = kp_dht_table_depth(&dht->table) + 1;
  if (last >= KP_DHT_REFRESH_BUCKETS) last = KP_DHT_REFRESH_BUCKETS - 1;
  for (int b = 0; b <= last && dht->member; b++) {
    if (!(dht->refresh_due & (UINT64_C(1) << b))) continue;
    /* A full bucket needs no filling (the last step, our own id, always runs). */
    if (b < last && dht->table.bucket_count[b] >= dht->cfg.k) {
      dht->refresh_due &= ~(UINT64_C(1) << b);
      continue;
    }
    uint8_t target[KP_ID_LEN];
    if (b == last)
      memcpy(target, dht->table.self, KP_ID_LEN);
    else
      kp_dht_id_random_in_bucket(dht->table.self, (unsigned)b, &dht->cfg.rng, target);
    dht->refresh_due &= ~(UINT64_C(1) << b);
    kp_dht_query_opts_t opts = {.on_done = on_join_step, .arg = dht};
    if (kp_dht_query_start(dht, target, &opts, now, NULL) == 0) return;
  }
  dht->refresh_due = 0;
  dht->joined = dht->member;
}

static void set_member(kp_dht_t *dht, bool member, uint64_t now) {
  if (dht->member == member) return;
  dht->member = member;
  KP_INFO(dht->cfg.log, "%s", member ? "became a DHT member" : "left DHT membership (ephemeral)");
  if (member) {
    set_id(dht, &dht->nat.public_addr);
    /* Announce ourselves: the lookup finds the nodes closest to us, which
     * we then introduce ourselves to, with their tokens. */
    dht->refresh_due = UINT64_MAX;
    kp_dht_query_opts_t opts = {.on_done = on_join_self, .arg = dht};
    if (kp_dht_query_start(dht, dht->table.self, &opts, now, NULL)) join_step(dht, now);
  } else {
    dht->joined = false;
    dht->refresh_due = 0;
  }
  if (dht->io.on_membership) dht->io.on_membership(dht->io.ctx, member);
}

/* Witnesses we ask for: two distinct hosts, or one while we know only one
 * (a brand-new network with a single bootstrap node must still form). */
static unsigned witnesses_needed(const kp_dht_t *dht) {
  const kp_dht_table_t *t = &dht->table;
  kp_addr_t first, other;
  if (t->count < KP_DHT_NAT_QUORUM) return 1;
  kp_dht_entry_addr(t, kp_dht_table_at(t, 0), &first);
  for (uint32_t i = 1; i < t->count; i++) {
    kp_dht_entry_addr(t, kp_dht_table_at(t, i), &other);
    if (!kp_dht_nat_same_host(&first, &other)) return KP_DHT_NAT_QUORUM;
  }
  return 1;
}

static bool address_settled(const kp_dht_t *dht) {
  const kp_dht_nat_t *nat = &dht->nat;
  if (!nat->has_public) return false;
  if (nat->type == KP_NAT_OPEN || nat->type == KP_NAT_CONSISTENT) return true;
  return nat->type == KP_NAT_UNKNOWN && nat->count >= witnesses_needed(dht);
}

static bool reachable_now(const kp_dht_t *dht) {
  return dht->nat.reach_ok_count >= witnesses_needed(dht) &&
         dht->nat.reach_fails < KP_DHT_NAT_QUORUM;
}

/* AUTO mode: join once our address and reachability have held for
 * member_stable_ms; leave only on evidence (failed PING_NATs, a new address,
 * a mapping that turned out random), not because more witnesses are wanted. */
static void evaluate_membership(kp_dht_t *dht, uint64_t now) {
  if (dht->cfg.mode != KP_NODE_AUTO) return;
  if (dht->member) {
    if (dht->nat.reach_fails >= KP_DHT_NAT_QUORUM || !address_settled(dht))
      set_member(dht, false, now);
    return;
  }
  bool want = address_settled(dht) && reachable_now(dht) &&
              now - dht->nat.public_since >= dht->cfg.member_stable_ms &&
              now - dht->reachable_since >= dht->cfg.member_stable_ms;
  set_member(dht, want, now);
}

static void on_public_address(kp_dht_t *dht, uint64_t now) {
  char text[KP_ADDR_STRLEN];
  KP_DEBUG(dht->cfg.log, "public address %s (%s)",
           kp_addr_format(&dht->nat.public_addr, text, sizeof(text)),
           kp_nat_type_name(dht->nat.type));
  if (dht->cfg.mode == KP_NODE_MEMBER && dht->nat.type != KP_NAT_RANDOM)
    set_id(dht, &dht->nat.public_addr);
  due(dht, now + dht->cfg.member_stable_ms); /* membership may follow then */
  /* Our address moved: an AUTO member must prove itself again. */
  if (dht->cfg.mode == KP_NODE_AUTO) set_member(dht, false, now);
}

static void natcheck(kp_dht_t *dht, uint64_t now);

void kp_dht_set_mapped(kp_dht_t *dht, const kp_addr_t *mapped, uint64_t now) {
  if (kp_dht_nat_set_mapped(&dht->nat, mapped, now)) on_public_address(dht, now);
}

/* After two failed reachability checks in a row: 30 s, doubling with each
 * failure to natcheck_ms. Most nodes sit behind NATs that never let an
 * unsolicited answer in; checking every 30 s forever, each of them would
 * keep the members busy answering. */
static uint64_t natcheck_backoff(const kp_dht_t *dht) {
  unsigned doublings = dht->nat.reach_fails - KP_DHT_NAT_QUORUM;
  uint64_t ms = (uint64_t)30000 << (doublings < 8 ? doublings : 8);
  return ms < dht->cfg.natcheck_ms ? ms : dht->cfg.natcheck_ms;
}

static void on_natcheck(void *arg, kp_dht_req_t *req, int status, const kp_dht_msg_t *resp,
                        const kp_addr_t *from, uint64_t now) {
  kp_dht_t *dht = arg;
  (void)resp;
  (void)from;
  dht->natcheck_inflight = false;
  if (status == KP_ECANCELED) return;
  bool was = reachable_now(dht);
  kp_dht_nat_reach_result(&dht->nat, &req->to, status == 0);
  if (!was && reachable_now(dht)) {
    dht->reachable_since = now;
    due(dht, now + dht->cfg.member_stable_ms); /* membership may follow then */
  }
  if (dht->nat.reach_ok_count >= KP_DHT_NAT_QUORUM)
    dht->natcheck_next = now + dht->cfg.natcheck_ms;
  else if (dht->nat.reach_fails >= KP_DHT_NAT_QUORUM)
    dht->natcheck_next = now + natcheck_backoff(dht);
  else if (status == 0)
    dht->natcheck_next = now + (reachable_now(dht) ? 1000 : 0);
  else
    dht->natcheck_next = now + 1000;
  evaluate_membership(dht, now);
  natcheck(dht, now); /* a second witness at once, if one is wanted */
  if (!dht->natcheck_inflight) due(dht, dht->natcheck_next);
}

/* PING_NAT asks a node to answer from another port: the answer reaches us
 * only if unsolicited packets do. Each check goes to a random table entry
 * that has not vouched for us yet. */
static void natcheck(kp_dht_t *dht, uint64_t now) {
  if (dht->natcheck_inflight || now < dht->natcheck_next || !dht->table.count) return;
  bool recheck = dht->nat.reach_ok_count >= witnesses_needed(dht);
  uint32_t start = kp_rng_below(&dht->cfg.rng, dht->table.count);
  for (uint32_t i = 0; i < dht->table.count; i++) {
    kp_addr_t addr;
    kp_dht_entry_addr(&dht->table, kp_dht_table_at(&dht->table, (start + i) % dht->table.count),
                      &addr);
    if (!recheck && kp_dht_nat_reach_confirmed_by(&dht->nat, &addr)) continue;
    /* One retry: a lost answer is one failure, and it takes two. */
    if (kp__dht_request_ex(dht, &addr, KP_DHT_CMD_PING_NAT, NULL, NULL, 0, NULL, 1, 0, on_natcheck,
                           dht, now, NULL) == 0)
      dht->natcheck_inflight = true;
    return;
  }
  dht->natcheck_next = now + 1000; /* everyone we know vouched; wait for more nodes */
  due(dht, dht->natcheck_next);
}

/* ---- Receiving ---------------------------------------------------------- */

static void count_drop(kp_dht_t *dht, int err) {
  switch (err) {
    case KP_ETRUNCATED: dht->stats.drops_truncated++; break;
    case KP_ETOOBIG: dht->stats.drops_too_big++; break;
    case KP_EVERSION: dht->stats.drops_version++; break;
    case KP_EFIELD: dht->stats.drops_field++; break;
    default: dht->stats.drops_malformed++; break;
  }
}

static bool id_matches(kp_dht_t *dht, const uint8_t id[KP_ID_LEN], const kp_addr_t *from) {
  /* Fast path: a table entry already binds this id to this address. */
  kp_dht_entry_t *e = kp_dht_table_find(&dht->table, id);
  if (e && kp_dht_entry_is(&dht->table, e, from)) return true;
  uint8_t expect[KP_ID_LEN];
  kp_dht_id_from_addr(from, expect);
  return memcmp(expect, id, KP_ID_LEN) == 0;
}

static void handle_down_hint(kp_dht_t *dht, const kp_dht_request_t *req, uint64_t now) {
  kp_addr_t suspect;
  const kp_dht_msg_t *m = req->msg;
  if (m->value && kp_addr_decode_compact(&suspect, m->value, m->value_len) == 0 &&
      suspect.family == dht->cfg.family) {
    uint8_t id[KP_ID_LEN];
    kp_dht_id_from_addr(&suspect, id);
    kp_dht_entry_t *e = kp_dht_table_find(&dht->table, id);
    /* Re-check it ourselves; a hint alone never evicts anyone. */
    if (e && kp_dht_entry_is(&dht->table, e, &suspect))
      ping_entry(dht, e, PING_LIVENESS, NULL, now);
  }
  kp_dht_reply_to_t rt;
  kp_dht_reply_to_init(&rt, req);
  kp_dht_reply(dht, &rt, NULL, 0, 0, now);
}

static void on_request(kp_dht_t *dht, const kp_dht_msg_t *m, const kp_addr_t *from, size_t len,
                       uint64_t now) {
  kp_dht_request_t req = {.msg = m, .from = *from, .wire_len = len, .from_member = m->has_id};
  int token = m->has_token ? kp_dht_token_check(&dht->tokens, from, m->token) : 0;
  req.token_valid = token != 0;
  req.token_current = token == KP_DHT_TOKEN_CURRENT;
  dht->stats.requests_in++;
  if (m->has_id) learn_member(dht, m->id, from, req.token_valid, now);

  kp_dht_reply_to_t rt;
  kp_dht_reply_to_init(&rt, &req);
  switch (m->command) {
    case KP_DHT_CMD_PING: kp_dht_reply(dht, &rt, NULL, 0, 0, now); return;
    case KP_DHT_CMD_PING_NAT:
      /* From the other socket and without our id (it would not match the
       * other port's address). */
      send_reply(dht, KP_DHT_SOCK_ALT, &rt, NULL, 0, 0, false);
      return;
    case KP_DHT_CMD_FIND_NODE:
      if (!m->has_target) {
        dht->stats.drops_field++;
        return;
      }
      kp_dht_reply(dht, &rt, NULL, 0, 0, now);
      return;
    case KP_DHT_CMD_DOWN_HINT: handle_down_hint(dht, &req, now); return;
    default: break;
  }
  for (unsigned i = 0; i < dht->handler_count; i++) {
    if (dht->handlers[i].command == m->command) {
      dht->handlers[i].fn(dht->handlers[i].ctx, dht, &req, now);
      return;
    }
  }
  dht->stats.drops_command++;
  kp_dht_reply(dht, &rt, NULL, 0, KP_DHT_ERR_UNKNOWN_COMMAND, now);
}

static void on_response(kp_dht_t *dht, kp_dht_msg_t *m, const kp_addr_t *from, uint64_t now) {
  kp_dht_req_t *req = kp_dht_rpc_take(&dht->rpc, m, from);
  if (!req) return;
  dht->stats.responses_in++;
  /* The answer came from where we sent (PING_NAT aside), so an id we knew
   * for that address is the one to expect. */
  if (m->has_id && !(req->known_id && !req->any_port ? !memcmp(req->id, m->id, KP_ID_LEN)
                                                     : id_matches(dht, m->id, from))) {
    dht->stats.drops_bad_id++;
    m->has_id = false;
  }
  /* Only answers to our own requests teach us our address; a PING_NAT answer
   * comes from a second port and would count as a second witness. */
  if (m->command != KP_DHT_CMD_PING_NAT && kp_dht_nat_add_sample(&dht->nat, from, &m->to, now))
    on_public_address(dht, now);
  /* It answered a random tid at the address we asked: proof enough. */
  if (m->has_id) learn_member(dht, m->id, from, true, now);
  kp_dht_rpc_finish(&dht->rpc, req, m, from, now);
}

void kp_dht_recv(kp_dht_t *dht, const kp_addr_t *from, const uint8_t *data, size_t len,
                 uint64_t now) {
  kp_dht_msg_t m;
  if (from->family != dht->cfg.family) {
    dht->stats.drops_field++;
    return;
  }
  int err = kp_dht_msg_decode(data, len, dht->cfg.family, &m);
  if (err) {
    count_drop(dht, err);
    return;
  }
  if (m.type == KP_DHT_RESPONSE) {
    on_response(dht, &m, from, now);
    return;
  }
  if (m.has_id && !id_matches(dht, m.id, from)) {
    /* Not who it claims to be at this address (or behind a NAT it does not
     * know of): treat it as a non-member. */
    dht->stats.drops_bad_id++;
    m.has_id = false;
  }
  on_request(dht, &m, from, len, now);
}

/* ---- Periodic work ---------------------------------------------------- */

/* One reporter of our address does not tell our NAT's kind: a second says
 * whether the mapping depends on the destination, and a connection's
 * strategy depends on that (a random NAT needs the birthday punch). A join
 * that heard only one (the others' answers lost or late; a client that
 * connects at once cuts its lookup short) is repeated: after 1 s, doubling
 * to a minute, while there is one reporter or two that disagree, eight
 * times at most (about four minutes) until the network changes: a lookup
 * costs tens of requests, and some networks have one host only. */
#define REPORTERS_MAX_MS 60000
#define REPORTERS_TRIES 8
static bool reporters_wanted(const kp_dht_t *dht) {
  const kp_dht_nat_t *nat = &dht->nat;
  /* Two that disagree call the NAT random: a third settles it, so that
   * one lying reporter does not keep it so. */
  return dht->reporters_tries < REPORTERS_TRIES &&
         ((nat->type == KP_NAT_UNKNOWN && nat->count < 2) ||
          (nat->type == KP_NAT_RANDOM && nat->count == 2));
}

static void plan_reporters(kp_dht_t *dht, uint64_t now) {
  if (!reporters_wanted(dht)) {
    dht->reporters_next = UINT64_MAX;
    return;
  }
  unsigned shift = dht->reporters_tries < 6 ? dht->reporters_tries : 6;
  uint64_t wait = UINT64_C(1000) << shift;
  dht->reporters_next = now + (wait < REPORTERS_MAX_MS ? wait : REPORTERS_MAX_MS);
}

static void seek_reporters(kp_dht_t *dht, uint64_t now) {
  if (now < dht->reporters_next || dht->bootstrap_query) return;
  dht->reporters_next = UINT64_MAX;
  if (!reporters_wanted(dht)) return;
  dht->reporters_tries++;
  dht->reporters_seeking = true;
  KP_DEBUG(dht->cfg.log, "one reporter of our address: looking ourselves up again (%u)",
           dht->reporters_tries);
  kp_dht_bootstrap(dht, now);
}

static void on_bootstrap_done(void *arg, kp_dht_query_t *q, int status,
                              const kp_dht_result_t *closest, size_t count, uint64_t now) {
  kp_dht_t *dht = arg;
  (void)q;
  (void)closest;
  dht->bootstrap_query = NULL;
  bool seeking = dht->reporters_seeking;
  dht->reporters_seeking = false;
  if (status == KP_ECANCELED) return;
  if (count == 0) {
    /* Nobody answered: try again later, backing off to a minute. */
    dht->bootstrap_backoff_ms =
        dht->bootstrap_backoff_ms ? dht->bootstrap_backoff_ms * 2 : KP_DHT_TICK_MS;
    if (dht->bootstrap_backoff_ms > 60000) dht->bootstrap_backoff_ms = 60000;
    dht->bootstrap_next = now + dht->bootstrap_backoff_ms;
    due(dht, dht->bootstrap_next);
    KP_DEBUG(dht->cfg.log, "bootstrap found no nodes; retrying in %u ms",
             dht->bootstrap_backoff_ms);
  } else {
    dht->bootstrap_backoff_ms = 0;
    dht->bootstrap_next = UINT64_MAX;
    plan_reporters(dht, now);
    /* A join checks reachability at once; a repeat for reporters keeps
     * the checks' back-off (members are not kept busy answering). */
    if (!seeking) {
      dht->natcheck_next = now;
      natcheck(dht, now);
      if (!dht->natcheck_inflight) due(dht, dht->natcheck_next);
    }
    /* A member by configuration joins as soon as it has found the network
     * (the bootstrap lookup was of its own id). */
    if (dht->member && !dht->joined && !dht->refresh_due) {
      introduce(dht, closest, count, now);
      dht->refresh_due = UINT64_MAX;
      join_step(dht, now);
    }
  }
}

void kp_dht_bootstrap(kp_dht_t *dht, uint64_t now) {
  if (dht->bootstrap_query) return;
  kp_dht_query_opts_t opts = {0};
  opts.on_done = on_bootstrap_done;
  opts.arg = dht;
  opts.seeds = dht->bootstrap;
  opts.seed_count = dht->bootstrap_count;
  dht->bootstrap_next = UINT64_MAX;
  if (kp_dht_query_start(dht, dht->table.self, &opts, now, &dht->bootstrap_query)) {
    dht->bootstrap_next = now + KP_DHT_TICK_MS;
    due(dht, dht->bootstrap_next);
  }
}

int kp_dht_add_bootstrap(kp_dht_t *dht, const kp_addr_t *addr, uint64_t now) {
  if (addr->family != dht->cfg.family) return KP_EBADADDR;
  for (unsigned i = 0; i < dht->bootstrap_count; i++)
    if (kp_addr_eq(&dht->bootstrap[i], addr)) return 0;
  if (dht->bootstrap_count == KP_DHT_MAX_BOOTSTRAP) return KP_ELIMIT;
  kp_addr_t *grown = kp_realloc(dht->bootstrap, (dht->bootstrap_count + 1) * sizeof(*grown));
  if (!grown) return KP_ENOMEM;
  dht->bootstrap = grown;
  dht->bootstrap[dht->bootstrap_count++] = *addr;
  dht->bootstrap_next = now;
  due(dht, now);
  return 0;
}

/* The network may be a different one now: forget what we knew of our
 * address, prove reachability again, and rejoin. */
static void forget_network(kp_dht_t *dht, uint64_t now) {
  kp_dht_nat_reset(&dht->nat);
  dht->reporters_tries = 0;
  dht->reporters_next = UINT64_MAX;
  if (dht->cfg.mode == KP_NODE_AUTO) set_member(dht, false, now);
  dht->natcheck_next = now;
  for (uint32_t i = 0; i < dht->table.count; i++) kp_dht_table_at(&dht->table, i)->last_seen = 0;
  if (dht->bootstrap_count)
    dht->bootstrap_next = now;
  else
    self_lookup(dht, now);
}

static void on_suspend(kp_dht_t *dht, uint64_t now) {
  KP_INFO(dht->cfg.log, "clock jumped %llu ms: assuming the machine slept; re-checking",
          (unsigned long long)(now - dht->last_tick));
  forget_network(dht, now);
}

void kp_dht_network_changed(kp_dht_t *dht, uint64_t now) {
  KP_DEBUG(dht->cfg.log, "our address changed: re-learning it");
  forget_network(dht, now);
  due(dht, now);
}

/* Refreshes the first stale bucket, from the farthest (0) to one past the
 * deepest non-empty one; the last of these is a lookup of our own id. A
 * bucket counts as fresh while a query into it ran within refresh_ms. */
static void refresh_buckets(kp_dht_t *dht, uint64_t now) {
  if (!dht->table.count || dht->refresh_due) return; /* the join chain is at it */
  uint32_t now_s = kp__dht_seconds(now), period_s = dht->cfg.refresh_ms / 1000;
  /* Times are kept mod 2^16 s: a period over 18 hours counts as 18 hours. */
  if (period_s > UINT16_MAX) period_s = UINT16_MAX;
  int last = kp_dht_table_depth(&dht->table) + 1;
  if (last >= KP_DHT_REFRESH_BUCKETS) last = KP_DHT_REFRESH_BUCKETS - 1;
  for (int b = 0; b <= last; b++) {
    if ((uint16_t)(now_s - dht->refreshed_s[b]) < period_s) continue;
    uint8_t target[KP_ID_LEN];
    if (b == last)
      memcpy(target, dht->table.self, KP_ID_LEN);
    else
      kp_dht_id_random_in_bucket(dht->table.self, (unsigned)b, &dht->cfg.rng, target);
    dht->refreshed_s[b] = (uint16_t)now_s;
    kp_dht_query_opts_t opts = {0};
    kp_dht_query_start(dht, target, &opts, now, NULL);
    return; /* one refresh per tick keeps the load smooth */
  }
}

/* Keeps a member's NAT mapping open (KP_DHT_KEEPALIVE_MS): a ping to a
 * table entry when nothing else has left for that long. A member that
 * answers requests never needs one. */
static void keepalive(kp_dht_t *dht, uint64_t now) {
  if (dht->sent != dht->sent_mark) {
    dht->sent_mark = dht->sent;
    dht->idle_since = now;
    return;
  }
  if (!dht->member || now - dht->idle_since < KP_DHT_KEEPALIVE_MS) return;
  /* The entry heard from longest ago: the ping checks it too. */
  kp_dht_entry_t *e = kp_dht_table_oldest(&dht->table, UINT32_MAX);
  if (e) ping_entry(dht, e, PING_LIVENESS, NULL, now);
  dht->idle_since = now;
}

/* When background work next falls due: the earliest of what is pending,
 * within [1 s, KP_DHT_IDLE_TICK_MS]. Staleness pings and the rejoin of a
 * node that lost its whole table wait for the next idle tick. */
static void plan_background(kp_dht_t *dht, uint64_t now) {
  uint64_t next = now + KP_DHT_IDLE_TICK_MS;
#define AT(t)                                                                                      \
  do {                                                                                             \
    uint64_t t_ = (t);                                                                             \
    if (t_ < next) next = t_;                                                                      \
  } while (0)
  if (dht->table.count && !dht->natcheck_inflight) AT(dht->natcheck_next);
  if (dht->bootstrap_count) AT(dht->bootstrap_next);
  AT(dht->reporters_next);
  AT(dht->tokens.rotated_at + KP_DHT_TOKEN_ROTATE_MS);
  if (dht->cfg.mode == KP_NODE_AUTO && !dht->member) {
    uint64_t stable = dht->cfg.member_stable_ms;
    if (dht->nat.public_since + stable > now) AT(dht->nat.public_since + stable);
    if (dht->reachable_since + stable > now) AT(dht->reachable_since + stable);
  }
  if (dht->member) AT(dht->idle_since + KP_DHT_KEEPALIVE_MS);
  if (dht->table.count && !dht->refresh_due) {
    uint32_t period_s = dht->cfg.refresh_ms / 1000, now_s = kp__dht_seconds(now);
    if (period_s > UINT16_MAX) period_s = UINT16_MAX;
    int last = kp_dht_table_depth(&dht->table) + 1;
    if (last >= KP_DHT_REFRESH_BUCKETS) last = KP_DHT_REFRESH_BUCKETS - 1;
    for (int b = 0; b <= last; b++) {
      uint32_t age = (uint16_t)(now_s - dht->refreshed_s[b]);
      AT(age >= period_s ? now : now + (uint64_t)(period_s - age) * 1000);
    }
  }
#undef AT
  if (next < now + KP_DHT_TICK_MS) next = now + KP_DHT_TICK_MS;
  dht->next_background = next;
}

static void background(kp_dht_t *dht, uint64_t now) {
  if (dht->last_tick && now - dht->last_tick >= dht->cfg.suspend_ms) on_suspend(dht, now);
  kp_dht_tokens_tick(&dht->tokens, &dht->cfg.rng, now);
  natcheck(dht, now);
  evaluate_membership(dht, now);
  if (dht->bootstrap_count && now >= dht->bootstrap_next) kp_dht_bootstrap(dht, now);
  seek_reporters(dht, now);
  if (!dht->table.count && dht->bootstrap_count && !dht->bootstrap_query &&
      dht->bootstrap_next == UINT64_MAX)
    dht->bootstrap_next = now + KP_DHT_TICK_MS; /* lost everyone: rejoin */

  uint32_t now_s = kp__dht_seconds(now);
  uint32_t stale_s = dht->cfg.ping_stale_ms / 1000;
  if (now_s > stale_s) {
    kp_dht_entry_t *old = kp_dht_table_oldest(&dht->table, now_s - stale_s);
    if (old) ping_entry(dht, old, PING_LIVENESS, NULL, now);
  }
  refresh_buckets(dht, now);
  keepalive(dht, now);
  plan_background(dht, now);
}

int kp_dht_add_ticker(kp_dht_t *dht, const kp_dht_ticker_t *ticker) {
  if (!ticker->tick || !ticker->deadline) return KP_EINVAL;
  if (dht->ticker_count == KP_DHT_MAX_TICKERS) return KP_ELIMIT;
  kp_dht_ticker_t *grown = kp_realloc(dht->tickers, (dht->ticker_count + 1) * sizeof(*grown));
  if (!grown) return KP_ENOMEM;
  dht->tickers = grown;
  dht->tickers[dht->ticker_count++] = *ticker;
  return 0;
}

void kp_dht_remove_ticker(kp_dht_t *dht, void *ctx) {
  for (unsigned i = 0; i < dht->ticker_count; i++) {
    if (dht->tickers[i].ctx != ctx) continue;
    dht->tickers[i] = dht->tickers[--dht->ticker_count];
    return;
  }
}

void kp_dht_tick(kp_dht_t *dht, uint64_t now) {
  kp_dht_rpc_tick(&dht->rpc, now);
  for (unsigned i = 0; i < dht->ticker_count; i++)
    if (dht->tickers[i].deadline(dht->tickers[i].ctx) <= now)
      dht->tickers[i].tick(dht->tickers[i].ctx, now);
  if (now >= dht->next_background) background(dht, now);
  kp__dht_queries_tick(dht, now);
  dht->last_tick = now;
}

uint64_t kp_dht_next_deadline(const kp_dht_t *dht) {
  uint64_t next = dht->next_background;
  uint64_t rpc = kp_dht_rpc_next_deadline(&dht->rpc);
  if (rpc < next) next = rpc;
  for (unsigned i = 0; i < dht->ticker_count; i++) {
    uint64_t t = dht->tickers[i].deadline(dht->tickers[i].ctx);
    if (t < next) next = t;
  }
  return kp__dht_queries_deadline(dht, next);
}

/* ---- Lifecycle and accessors ---------------------------------------------- */

int kp_dht_new(const kp_dht_config_t *cfg, const kp_dht_io_t *io, uint64_t now, kp_dht_t **out) {
  *out = NULL;
  if (cfg->family != KP_AF_INET && cfg->family != KP_AF_INET6) return KP_ECONFIG;
  if (!io || !io->send || !cfg->rng.fill) return KP_EINVAL;
  kp_dht_t *dht = kp_calloc(1, sizeof(*dht));
  if (!dht) return KP_ENOMEM;
  dht->cfg = *cfg;
  if (!dht->cfg.k || dht->cfg.k > KP_DHT_MAX_NODES) dht->cfg.k = KP_DHT_K;
  if (!dht->cfg.concurrency) dht->cfg.concurrency = 10;
  dht->io = *io;

  uint8_t self[KP_ID_LEN];
  kp_rng_fill(&dht->cfg.rng, self, sizeof(self));
  kp_dht_table_init(&dht->table, self, dht->cfg.k, dht->cfg.family);
  if (kp_dht_table_reserve(&dht->table, KP_DHT_TABLE_RESERVE_BUCKETS * dht->cfg.k)) {
    kp_free(dht);
    return KP_ENOMEM;
  }
  kp_dht_tokens_init(&dht->tokens, &dht->cfg.rng, now);
  kp_dht_nat_init(&dht->nat);
  kp_dht_rpc_init(&dht->rpc, &cfg->rpc, send_main, dht, &dht->cfg.rng, now);
  dht->rpc.on_timeout = on_request_timeout;
  dht->bootstrap_next = dht->reporters_next = UINT64_MAX;
  dht->next_background = now;
  for (unsigned b = 0; b < KP_DHT_REFRESH_BUCKETS; b++)
    dht->refreshed_s[b] = (uint16_t)kp__dht_seconds(now);
  /* A member by configuration with a concrete bound address knows its id. */
  if (cfg->mode == KP_NODE_MEMBER) {
    dht->member = true;
    if (kp_addr_is_set(&cfg->local) && !kp_addr_is_any(&cfg->local)) set_id(dht, &cfg->local);
  }
  *out = dht;
  return 0;
}

void kp_dht_free(kp_dht_t *dht, uint64_t now) {
  if (!dht) return;
  kp__dht_queries_cancel_all(dht, now);
  kp_dht_rpc_destroy(&dht->rpc, now);
  kp_dht_table_destroy(&dht->table);
  kp_dht_tokens_destroy(&dht->tokens);
  kp_free(dht->handlers);
  kp_free(dht->tickers);
  kp_free(dht->bootstrap);
  kp_free(dht);
}

int kp_dht_register(kp_dht_t *dht, uint8_t command, kp_dht_handler_fn fn, void *ctx,
                    size_t reply_value_max) {
  if (command < KP_DHT_CMD_USER || command > KP_DHT_CMD_MAX || !fn ||
      reply_value_max > KP_DHT_MAX_VALUE)
    return KP_EINVAL;
  for (unsigned i = 0; i < dht->handler_count; i++)
    if (dht->handlers[i].command == command) return KP_EEXIST;
  if (dht->handler_count == KP_DHT_MAX_HANDLERS) return KP_ELIMIT;
  kp_dht_handler_t *grown = kp_realloc(dht->handlers, (dht->handler_count + 1) * sizeof(*grown));
  if (!grown) return KP_ENOMEM;
  dht->handlers = grown;
  kp_dht_handler_t *h = &dht->handlers[dht->handler_count++];
  h->command = command;
  h->fn = fn;
  h->ctx = ctx;
  h->reply_value_max = (uint16_t)reply_value_max;
  return 0;
}

const kp_rng_t *kp_dht_rng(const kp_dht_t *dht) {
  return &dht->cfg.rng;
}

void kp_dht_unregister(kp_dht_t *dht, uint8_t command) {
  for (unsigned i = 0; i < dht->handler_count; i++) {
    if (dht->handlers[i].command == command) {
      dht->handlers[i] = dht->handlers[--dht->handler_count];
      return;
    }
  }
}

bool kp_dht_is_joined(const kp_dht_t *dht) {

  /* A configured member with nobody to bootstrap from is the network. */
  if (dht->cfg.mode == KP_NODE_MEMBER && !dht->bootstrap_count) return kp_dht_is_member(dht);
  return dht->joined && kp_dht_is_member(dht);
}

bool kp_dht_is_member(const kp_dht_t *dht) {
  return dht->member && dht->has_id;
}

bool kp_dht_id(const kp_dht_t *dht, uint8_t id[KP_ID_LEN]) {
  if (!dht->has_id) {
    memset(id, 0, KP_ID_LEN);
    return false;
  }
  memcpy(id, dht->table.self, KP_ID_LEN);
  return true;
}

const kp_dht_nat_t *kp_dht_nat(const kp_dht_t *dht) {
  return &dht->nat;
}

const kp_dht_table_t *kp_dht_table(const kp_dht_t *dht) {
  return &dht->table;
}

void kp_dht_stats(const kp_dht_t *dht, kp_dht_stats_t *out) {
  *out = dht->stats;
  out->rpc = dht->rpc.stats;
}

int kp_dht_family(const kp_dht_t *dht) {
  return dht->cfg.family;
}

size_t kp_dht_inflight(const kp_dht_t *dht) {
  return dht->rpc.inflight.count + dht->rpc.queue.count;
}
