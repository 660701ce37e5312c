/* SPDX-License-Identifier: MIT */
/* The client side of swarms: lookups, announcements, puts and gets, each an
 * operation built from DHT queries, commits and single requests. */
#include "dht/dht_swarm_internal.h"

#include <sodium.h>
#include <string.h>

#include "common/alloc.h"

/* Backoff before an announce round that failed is tried again. */
#define ANNOUNCE_RETRY_MS 5000
#define ANNOUNCE_HOLDERS 20 /* k: an announce round stores at the 20 closest nodes */
/* Distinct records a lookup remembers (to report each once). */
#define LOOKUP_SEEN_MAX 1024
/* Nodes a get remembers as holding a value it has not fetched yet. */
#define GET_HOLDERS_MAX 8

/* ---- Lookup ---------------------------------------------------------------- */

typedef struct seen_s {
  uint8_t public_key[KP_PUBLIC_KEY_LEN];
  uint64_t seq;
} seen_t;

typedef struct lookup_s {
  kp_swarm_op_t op;
  kp_dht_swarm_t *swarm;
  uint8_t target[KP_ID_LEN];
  kp_dht_lookup_record_cb on_record;
  kp_dht_lookup_done_cb on_done;
  void *arg;
  size_t found;
  size_t seen_count, seen_cap;
  seen_t *seen;
} lookup_t;

static seen_t *find_seen(lookup_t *l, const uint8_t *pk) {
  for (size_t i = 0; i < l->seen_count; i++)
    if (!memcmp(l->seen[i].public_key, pk, KP_PUBLIC_KEY_LEN)) return &l->seen[i];
  return NULL;
}

/* Before any signature check: only keys we have not seen at this seq. */
static bool lookup_wanted(void *ctx, const uint8_t pk[KP_PUBLIC_KEY_LEN], uint64_t seq) {
  seen_t *s = find_seen(ctx, pk);
  return !s || seq > s->seq;
}

static void lookup_record(void *ctx, const kp_record_t *rec) {
  lookup_t *l = ctx;
  seen_t *s = find_seen(l, rec->public_key);
  if (!s && l->seen_count < LOOKUP_SEEN_MAX) {
    if (l->seen_count == l->seen_cap) {
      size_t cap = l->seen_cap ? l->seen_cap * 2 : 8;
      seen_t *grown = kp_realloc(l->seen, cap * sizeof(*grown));
      if (grown) l->seen = grown, l->seen_cap = cap;
    }
    if (l->seen_count < l->seen_cap) s = &l->seen[l->seen_count++];
    if (s) l->found++;
  }
  if (s) {
    memcpy(s->public_key, rec->public_key, KP_PUBLIC_KEY_LEN);
    s->seq = rec->seq;
  }
  if (l->on_record) l->on_record(l->arg, rec);
}

static void lookup_reply(void *arg, kp_dht_query_t *q, const kp_dht_msg_t *reply,
                         const kp_addr_t *from, uint64_t now) {
  lookup_t *l = arg;
  (void)q, (void)from, (void)now;
  if (reply->value && reply->value_len && !reply->error)
    kp_dht_record_list_decode(reply->value, reply->value_len, l->target, lookup_wanted,
                              lookup_record, l, NULL);
}

static void lookup_free(lookup_t *l) {
  kp_free(l->seen);
  kp_free(l);
}

static void lookup_done(void *arg, kp_dht_query_t *q, int status, const kp_dht_result_t *closest,
                        size_t count, uint64_t now) {
  lookup_t *l = arg;
  (void)closest, (void)count, (void)now;
  kp__swarm_op_unlink(l->swarm, &l->op);
  if (l->on_done) l->on_done(l->arg, status, l->found, kp_dht_query_stats(q));
  lookup_free(l);
}

static void lookup_drop(kp_dht_swarm_t *swarm, kp_swarm_op_t *op) {
  (void)swarm;
  lookup_free((lookup_t *)op);
}

int kp_dht_swarm_lookup(kp_dht_swarm_t *swarm, const uint8_t target[KP_ID_LEN],
                        kp_dht_lookup_record_cb on_record, kp_dht_lookup_done_cb on_done, void *arg,
                        uint64_t now) {
  lookup_t *l = kp_calloc(1, sizeof(*l));
  if (!l) return KP_ENOMEM;
  l->op.drop = lookup_drop;
  l->swarm = swarm;
  memcpy(l->target, target, KP_ID_LEN);
  l->on_record = on_record;
  l->on_done = on_done;
  l->arg = arg;
  kp_dht_query_opts_t opts = {
      .command = KP_DHT_CMD_LOOKUP, .on_reply = lookup_reply, .on_done = lookup_done, .arg = l};
  int err = kp_dht_query_start(swarm->dht, target, &opts, now, NULL);
  if (err) {
    lookup_free(l);
    return err;
  }
  kp__swarm_op_link(swarm, &l->op);
  return 0;
}

/* ---- Announce -------------------------------------------------------------- */

typedef enum { A_IDLE, A_QUERY, A_COMMIT } announce_state_t;

struct kp_dht_announce_s {
  kp_dht_announce_t *next;
  kp_dht_swarm_t *swarm;
  uint8_t target[KP_ID_LEN];
  kp_keypair_t kp;
  uint8_t data[KP_RECORD_MAX_DATA];
  size_t data_len;
  kp_dht_announce_cb cb;
  void *arg;
  announce_state_t state;
  kp_dht_query_t *query;
  kp_dht_commit_t *commit;
  int commit_error; /* the first error a node gave in this round */
  uint64_t seq;
  uint64_t next_round; /* while idle */
  uint64_t early_ms;   /* the last early re-announce interval (0: none yet) */
  uint64_t next_ping;  /* while idle with relays */
  kp_addr_t relays[KP_RECORD_MAX_RELAYS];
  size_t relay_count;
  kp_dht_req_t *pings[KP_RECORD_MAX_RELAYS];
  /* The nodes that stored the record in this round and the one before:
   * the only nodes that can relay a client's messages to us on its
   * behalf (kp_dht_swarm_stored_at). */
  kp_addr_t holders[2][ANNOUNCE_HOLDERS];
  unsigned holder_count[2];
  uint8_t record[KP_RECORD_MAX_SIZE]; /* this round's, signed */
  size_t record_len;
};

static void start_round(kp_dht_announce_t *a, uint64_t now);
static void free_announce(kp_dht_announce_t *a);

static void round_failed(kp_dht_announce_t *a, int status, uint64_t now) {
  a->state = A_IDLE;
  a->next_round = now + ANNOUNCE_RETRY_MS;
  if (a->cb) a->cb(a->arg, status, 0);
}

static void on_commit_node(void *arg, const kp_dht_result_t *node, int status,
                           const kp_dht_msg_t *reply) {
  kp_dht_announce_t *a = arg;
  if (!status && a->holder_count[0] < ANNOUNCE_HOLDERS)
    a->holders[0][a->holder_count[0]++] = node->addr;
  if (status == KP_ECANCELED)
    a->commit_error = KP_ECANCELED;
  else if (status && !a->commit_error)
    a->commit_error = reply && reply->error ? kp_dht_swarm_error(reply->error) : status;
}

static void on_commit_done(void *arg, unsigned ok, unsigned failed, uint64_t now) {
  kp_dht_announce_t *a = arg;
  (void)failed;
  a->commit = NULL;
  if (a->commit_error == KP_ECANCELED) {
    /* The DHT is shutting down: report it, schedule nothing. */
    a->state = A_IDLE;
    a->next_round = UINT64_MAX;
    if (a->cb) a->cb(a->arg, KP_ECANCELED, 0);
    return;
  }
  if (!ok) {
    round_failed(a, a->commit_error ? a->commit_error : KP_ENONODES, now);
    return;
  }
  a->state = A_IDLE;
  /* Fewer holders than k: our view of the network is small or young (a
   * network coming up, a node that has just joined). The record sits only
   * where this round's query converged, and a lookup that converges
   * elsewhere misses it (a relay announced while tables were still
   * filling, found by no server). So store again soon, 1 s and doubling,
   * as the tables fill, and settle to the refresh period. */
  uint64_t period = a->swarm->cfg.refresh_ms;
  if (ok < ANNOUNCE_HOLDERS && a->early_ms < period) {
    a->early_ms = a->early_ms ? a->early_ms * 2 : 1000;
    if (a->early_ms < period) period = a->early_ms;
  }
  a->next_round = now + period;
  a->next_ping = now + a->swarm->cfg.keepalive_ms;
  if (a->cb) a->cb(a->arg, 0, ok);
}

/* The record, then the proof that we hold its key, made for the token this
 * node gave our address (dht_record.h, "The origin proof"). */
static size_t announce_value(void *arg, const kp_dht_result_t *node, uint8_t *buf, size_t cap) {
  kp_dht_announce_t *a = arg;
  if (!node->has_token || a->record_len + KP_ORIGIN_PROOF_LEN > cap) return 0;
  memcpy(buf, a->record, a->record_len);
  kp_dht_origin_sign(a->target, node->token, a->kp.secret_key, buf + a->record_len);
  return a->record_len + KP_ORIGIN_PROOF_LEN;
}

static void on_round_query(void *arg, kp_dht_query_t *q, int status, const kp_dht_result_t *closest,
                           size_t count, uint64_t now) {
  kp_dht_announce_t *a = arg;
  (void)q;
  a->query = NULL;
  if (status == KP_ECANCELED) {
    a->state = A_IDLE;
    a->next_round = UINT64_MAX;
    if (a->cb) a->cb(a->arg, KP_ECANCELED, 0);
    return;
  }
  if (status) {
    round_failed(a, status, now);
    return;
  }
  /* The closest nodes that answered become the relays: clients reach us
   * through them, and we keep our NAT mapping towards them open. */
  a->relay_count = count < KP_RECORD_MAX_RELAYS ? count : KP_RECORD_MAX_RELAYS;
  kp_record_t rec = {0};
  memcpy(rec.public_key, a->kp.public_key, KP_PUBLIC_KEY_LEN);
  for (size_t i = 0; i < a->relay_count; i++) a->relays[i] = rec.relays[i] = closest[i].addr;
  rec.relay_count = a->relay_count;
  /* Every round gets a larger seq: storing nodes take only newer records. */
  uint64_t wall = kp__swarm_wall_ms(a->swarm, now);
  a->seq = wall > a->seq ? wall : a->seq + 1;
  rec.seq = a->seq;
  rec.data = a->data;
  rec.data_len = a->data_len;
  int err = kp_dht_record_encode(&rec, a->target, a->kp.secret_key, a->record, sizeof(a->record),
                                 &a->record_len);
  if (!err) {
    a->commit_error = 0;
    memcpy(a->holders[1], a->holders[0], sizeof(a->holders[0]));
    a->holder_count[1] = a->holder_count[0];
    a->holder_count[0] = 0;
    err = kp_dht_commit_each(a->swarm->dht, closest, count, KP_DHT_CMD_ANNOUNCE, a->target,
                             announce_value, 0, on_commit_node, on_commit_done, a, now, &a->commit);
  }
  if (err)
    round_failed(a, err, now);
  else
    a->state = A_COMMIT;
}

static void start_round(kp_dht_announce_t *a, uint64_t now) {
  kp_dht_query_opts_t opts = {.on_done = on_round_query, .arg = a};
  a->next_round = UINT64_MAX;
  if (kp_dht_query_start(a->swarm->dht, a->target, &opts, now, &a->query)) {
    round_failed(a, KP_ENOMEM, now);
    return;
  }
  a->state = A_QUERY;
}

static void on_relay_ping(void *arg, kp_dht_req_t *req, int status, const kp_dht_msg_t *resp,
                          const kp_addr_t *from, uint64_t now) {
  kp_dht_announce_t *a = arg;
  (void)resp, (void)from;
  for (size_t i = 0; i < a->relay_count; i++)
    if (a->pings[i] == req) a->pings[i] = NULL;
  if (status == KP_ECANCELED || status == 0) return;
  /* A relay stopped answering: clients could no longer reach us through it.
   * Announce again at once; the new round picks the closest live nodes. */
  if (a->state == A_IDLE) start_round(a, now);
}

static void ping_relays(kp_dht_announce_t *a, uint64_t now) {
  for (size_t i = 0; i < a->relay_count; i++) {
    if (a->pings[i]) continue;
    kp_dht_request(a->swarm->dht, &a->relays[i], KP_DHT_CMD_PING, NULL, NULL, 0, NULL,
                   on_relay_ping, a, now, &a->pings[i]);
  }
  a->next_ping = now + a->swarm->cfg.keepalive_ms;
}

void kp__swarm_announces_tick(kp_dht_swarm_t *swarm, uint64_t now) {
  for (kp_dht_announce_t *a = swarm->announces; a; a = a->next) {
    if (a->state != A_IDLE) continue;
    if (now >= a->next_round)
      start_round(a, now);
    else if (a->relay_count && now >= a->next_ping)
      ping_relays(a, now);
  }
}

uint64_t kp__swarm_announces_deadline(const kp_dht_swarm_t *swarm) {
  uint64_t next = UINT64_MAX;
  for (const kp_dht_announce_t *a = swarm->announces; a; a = a->next) {
    if (a->state != A_IDLE) continue;
    if (a->next_round < next) next = a->next_round;
    if (a->relay_count && a->next_ping < next) next = a->next_ping;
  }
  return next;
}

int kp_dht_swarm_announce(kp_dht_swarm_t *swarm, const uint8_t target[KP_ID_LEN],
                          const kp_keypair_t *kp, const uint8_t *data, size_t data_len,
                          kp_dht_announce_cb cb, void *arg, uint64_t now, kp_dht_announce_t **out) {
  if (out) *out = NULL;
  if (data_len > KP_RECORD_MAX_DATA) return KP_ETOOBIG;
  kp_dht_announce_t *a = kp_calloc(1, sizeof(*a));
  if (!a) return KP_ENOMEM;
  a->swarm = swarm;
  memcpy(a->target, target, KP_ID_LEN);
  a->kp = *kp;
  if (data_len) memcpy(a->data, data, data_len);
  a->data_len = data_len;
  a->cb = cb;
  a->arg = arg;
  /* The first round's query starts here, so a failure is this call's error
   * (callbacks never fire from inside the call). */
  kp_dht_query_opts_t opts = {.on_done = on_round_query, .arg = a};
  int err = kp_dht_query_start(swarm->dht, target, &opts, now, &a->query);
  if (err) {
    free_announce(a);
    return err;
  }
  a->state = A_QUERY;
  a->next_round = UINT64_MAX;
  a->next = swarm->announces;
  swarm->announces = a;
  if (out) *out = a;
  return 0;
}

void kp_dht_announce_refresh(kp_dht_swarm_t *swarm, kp_dht_announce_t *a, uint64_t now) {
  (void)swarm;
  if (a->state == A_IDLE) start_round(a, now);
}

bool kp_dht_swarm_stored_at(const kp_dht_swarm_t *swarm, const uint8_t target[KP_ID_LEN],
                            const kp_addr_t *node) {
  for (const kp_dht_announce_t *a = swarm->announces; a; a = a->next) {
    if (memcmp(a->target, target, KP_ID_LEN)) continue;
    for (int r = 0; r < 2; r++)
      for (unsigned i = 0; i < a->holder_count[r]; i++)
        if (kp_addr_eq(&a->holders[r][i], node)) return true;
  }
  return false;
}

size_t kp_dht_announce_relays(const kp_dht_announce_t *a, kp_addr_t *out, size_t cap) {
  size_t n = a->relay_count < cap ? a->relay_count : cap;
  memcpy(out, a->relays, n * sizeof(*out));
  return a->relay_count;
}

static void unlink_announce(kp_dht_swarm_t *swarm, kp_dht_announce_t *a) {
  for (kp_dht_announce_t **p = &swarm->announces; *p; p = &(*p)->next) {
    if (*p == a) {
      *p = a->next;
      return;
    }
  }
}

static void free_announce(kp_dht_announce_t *a) {
  kp_keypair_wipe(&a->kp);
  kp_free(a);
}

static int start_unannounce(kp_dht_swarm_t *swarm, const uint8_t target[KP_ID_LEN],
                            const kp_keypair_t *kp, uint64_t seq, uint64_t now);

void kp_dht_announce_stop(kp_dht_swarm_t *swarm, kp_dht_announce_t *a, bool unannounce,
                          uint64_t now) {
  unlink_announce(swarm, a);
  if (a->query) kp_dht_query_cancel(swarm->dht, a->query);
  if (a->commit) kp_dht_commit_cancel(swarm->dht, a->commit);
  for (size_t i = 0; i < a->relay_count; i++)
    if (a->pings[i]) kp_dht_request_abandon(swarm->dht, a->pings[i]);
  if (unannounce && a->seq) start_unannounce(swarm, a->target, &a->kp, a->seq + 1, now);
  free_announce(a);
}

void kp__swarm_announces_free(kp_dht_swarm_t *swarm) {
  /* The DHT is gone: its requests and queries were cancelled with it. */
  while (swarm->announces) {
    kp_dht_announce_t *a = swarm->announces;
    swarm->announces = a->next;
    free_announce(a);
  }
}

/* ---- Writes: unannounce, mutable and immutable puts ----------------------------- */

/* A query for the closest nodes, then one command to each with its token. */
typedef struct write_s {
  kp_swarm_op_t op;
  kp_dht_swarm_t *swarm;
  uint8_t target[KP_ID_LEN];
  uint8_t command;
  bool send_target; /* announce-like commands name the target; puts imply it */
  kp_dht_commit_t *commit;
  kp_dht_put_cb cb;
  void *arg;
  unsigned errors[4]; /* KP_ECAS, KP_ESEQ, KP_ELIMIT, anything else */
  bool cancelled;
  size_t len;
  uint8_t value[];
} write_t;

static void write_free(write_t *w) {
  kp_free(w);
}

static void write_drop(kp_dht_swarm_t *swarm, kp_swarm_op_t *op) {
  (void)swarm;
  write_free((write_t *)op);
}

static void write_node(void *arg, const kp_dht_result_t *node, int status,
                       const kp_dht_msg_t *reply) {
  write_t *w = arg;
  (void)node;
  if (!status) return;
  if (status == KP_ECANCELED) w->cancelled = true;
  int err = reply && reply->error ? kp_dht_swarm_error(reply->error) : status;
  w->errors[err == KP_ECAS ? 0 : err == KP_ESEQ ? 1 : err == KP_ELIMIT ? 2 : 3]++;
}

static void write_finish(write_t *w, int status, unsigned ok, unsigned failed) {
  kp__swarm_op_unlink(w->swarm, &w->op);
  if (w->cb) w->cb(w->arg, status, ok, failed);
  write_free(w);
}

static void write_done(void *arg, unsigned ok, unsigned failed, uint64_t now) {
  write_t *w = arg;
  (void)now;
  w->commit = NULL;
  /* With nothing stored, report the most telling refusal: a CAS conflict
   * first (the caller must re-read), then a stale seq. */
  int status = w->cancelled   ? KP_ECANCELED
               : ok           ? 0
               : w->errors[0] ? KP_ECAS
               : w->errors[1] ? KP_ESEQ
               : w->errors[2] ? KP_ELIMIT
                              : KP_ENONODES;
  write_finish(w, status, ok, failed);
}

static void write_query_done(void *arg, kp_dht_query_t *q, int status,
                             const kp_dht_result_t *closest, size_t count, uint64_t now) {
  write_t *w = arg;
  (void)q;
  if (status == 0) {
    status = kp_dht_commit(w->swarm->dht, closest, count, w->command,
                           w->send_target ? w->target : NULL, w->value, w->len, KP_DHT_REQ_NO_ID,
                           write_node, write_done, w, now, &w->commit);
    if (!status) return;
  }
  write_finish(w, status, 0, 0);
}

static int start_write(kp_dht_swarm_t *swarm, const uint8_t target[KP_ID_LEN], uint8_t command,
                       bool send_target, const uint8_t *value, size_t len, kp_dht_put_cb cb,
                       void *arg, uint64_t now) {
  write_t *w = kp_calloc(1, sizeof(*w) + len);
  if (!w) return KP_ENOMEM;
  w->op.drop = write_drop;
  w->swarm = swarm;
  memcpy(w->target, target, KP_ID_LEN);
  w->command = command;
  w->send_target = send_target;
  w->cb = cb;
  w->arg = arg;
  w->len = len;
  memcpy(w->value, value, len);
  kp_dht_query_opts_t opts = {.on_done = write_query_done, .arg = w};
  int err = kp_dht_query_start(swarm->dht, target, &opts, now, NULL);
  if (err) {
    write_free(w);
    return err;
  }
  kp__swarm_op_link(swarm, &w->op);
  return 0;
}

static int start_unannounce(kp_dht_swarm_t *swarm, const uint8_t target[KP_ID_LEN],
                            const kp_keypair_t *kp, uint64_t seq, uint64_t now) {
  uint8_t buf[KP_RECORD_MAX_SIZE];
  size_t len;
  int err =
      kp_dht_unannounce_encode(kp->public_key, seq, target, kp->secret_key, buf, sizeof(buf), &len);
  return err ? err
             : start_write(swarm, target, KP_DHT_CMD_UNANNOUNCE, true, buf, len, NULL, NULL, now);
}

int kp_dht_swarm_put_mutable(kp_dht_swarm_t *swarm, const kp_keypair_t *kp, const uint8_t *salt,
                             size_t salt_len, uint64_t seq, const uint8_t *value, size_t len,
                             bool has_cas, uint64_t cas, kp_dht_put_cb cb, void *arg,
                             uint64_t now) {
  kp_dht_mutable_t m = {0};
  memcpy(m.public_key, kp->public_key, KP_PUBLIC_KEY_LEN);
  m.salt = salt;
  m.salt_len = salt_len;
  m.seq = seq;
  m.value = value;
  m.value_len = len;
  m.has_cas = has_cas;
  m.cas = cas;
  uint8_t buf[KP_DHT_MAX_VALUE], target[KP_ID_LEN];
  size_t n;
  int err = kp_dht_mutable_sign(&m, kp->secret_key);
  if (!err) err = kp_dht_mutable_put_encode(&m, buf, sizeof(buf), &n);
  if (err) return err;
  kp_dht_target_mutable(kp->public_key, salt, salt_len, target);
  return start_write(swarm, target, KP_DHT_CMD_MUTABLE_PUT, false, buf, n, cb, arg, now);
}

int kp_dht_swarm_put_immutable(kp_dht_swarm_t *swarm, const uint8_t *value, size_t len,
                               kp_dht_put_cb cb, void *arg, uint64_t now,
                               uint8_t target_out[KP_ID_LEN]) {
  uint8_t target[KP_ID_LEN];
  if (len > KP_IMMUTABLE_MAX_VALUE) return KP_ETOOBIG;
  kp_dht_target_immutable(value, len, target);
  if (target_out) memcpy(target_out, target, KP_ID_LEN);
  return start_write(swarm, target, KP_DHT_CMD_IMMUTABLE_PUT, false, value, len, cb, arg, now);
}

/* ---- Gets --------------------------------------------------------------------- */

/* A get queries the closest nodes; those holding the value answer an
 * unproven request with a summary (the seq) and a token, and the get then
 * fetches the value once, with that token, from the holder of the newest. An
 * immutable get ends at the first value that matches its hash. */
typedef struct holder_s {
  kp_addr_t addr;
  uint8_t token[32];
  uint64_t seq;
  bool tried;
} holder_t;

typedef struct get_s {
  kp_swarm_op_t op;
  kp_dht_swarm_t *swarm;
  bool mutable_value;
  uint8_t target[KP_ID_LEN];
  uint8_t public_key[KP_PUBLIC_KEY_LEN];
  uint8_t salt[KP_MUTABLE_MAX_SALT];
  size_t salt_len;
  kp_dht_query_t *query;
  kp_dht_req_t *fetch;
  bool finished;
  holder_t holders[GET_HOLDERS_MAX];
  size_t holder_count;
  bool have_best;
  uint64_t best_seq;
  size_t best_len;
  uint8_t best[KP_MUTABLE_MAX_VALUE];
  kp_dht_get_cb cb;
  void *arg;
} get_t;

static void get_free(get_t *g) {
  kp_free(g);
}

static void get_drop(kp_dht_swarm_t *swarm, kp_swarm_op_t *op) {
  (void)swarm;
  get_free((get_t *)op);
}

/* Delivers once. The query and the fetch may still be running: they end
 * on their own and free the op when the last of them does. */
static void get_deliver(get_t *g, int status) {
  if (g->finished) return;
  g->finished = true;
  if (g->query) kp_dht_query_cancel(g->swarm->dht, g->query);
  g->query = NULL;
  if (g->fetch) kp_dht_request_abandon(g->swarm->dht, g->fetch);
  g->fetch = NULL;
  kp__swarm_op_unlink(g->swarm, &g->op);
  if (g->cb) g->cb(g->arg, status, g->best_seq, g->best, g->best_len);
  get_free(g);
}

/* Takes a value that verified; an immutable get is done with it. */
static void get_keep(get_t *g, uint64_t seq, const uint8_t *value, size_t len) {
  if (g->have_best && seq <= g->best_seq) return;
  g->have_best = true;
  g->best_seq = seq;
  g->best_len = len;
  memcpy(g->best, value, len);
}

/* Checks a full value; true if it is genuine. */
static bool get_check(get_t *g, const kp_dht_msg_t *reply, uint64_t *seq) {
  *seq = 0;
  if (!reply->value || reply->error) return false;
  if (!g->mutable_value) {
    uint8_t h[KP_ID_LEN];
    if (reply->value_len > KP_IMMUTABLE_MAX_VALUE) return false;
    kp_dht_target_immutable(reply->value, reply->value_len, h);
    return sodium_memcmp(h, g->target, KP_ID_LEN) == 0;
  }
  kp_dht_mutable_t m = {0};
  bool summary;
  memcpy(m.public_key, g->public_key, KP_PUBLIC_KEY_LEN);
  m.salt = g->salt_len ? g->salt : NULL;
  m.salt_len = g->salt_len;
  if (kp_dht_mutable_reply_decode(reply->value, reply->value_len, &m, &summary) || summary)
    return false;
  *seq = m.seq;
  return true;
}

static void get_value_of(get_t *g, const kp_dht_msg_t *reply, const uint8_t **value, size_t *len) {
  if (!g->mutable_value) {
    *value = reply->value;
    *len = reply->value_len;
    return;
  }
  kp_dht_mutable_t m = {0};
  bool summary;
  memcpy(m.public_key, g->public_key, KP_PUBLIC_KEY_LEN);
  m.salt = g->salt_len ? g->salt : NULL;
  m.salt_len = g->salt_len;
  kp_dht_mutable_reply_decode(reply->value, reply->value_len, &m, &summary);
  *value = m.value;
  *len = m.value_len;
}

static void get_next_fetch(get_t *g, uint64_t now);

static void on_fetch(void *arg, kp_dht_req_t *req, int status, const kp_dht_msg_t *resp,
                     const kp_addr_t *from, uint64_t now) {
  get_t *g = arg;
  (void)req, (void)from;
  g->fetch = NULL;
  if (status == KP_ECANCELED) {
    get_deliver(g, KP_ECANCELED);
    return;
  }
  uint64_t seq;
  if (status == 0 && get_check(g, resp, &seq)) {
    const uint8_t *value;
    size_t len;
    get_value_of(g, resp, &value, &len);
    get_keep(g, seq, value, len);
    if (!g->mutable_value || !g->query) {
      get_deliver(g, 0);
      return;
    }
  }
  get_next_fetch(g, now);
}

/* Fetches from the untried holder with the newest seq, if it is newer than
 * what we hold; once nothing is left and the query is over, delivers. */
static void get_next_fetch(get_t *g, uint64_t now) {
  if (g->fetch || g->finished) return;
  holder_t *pick = NULL;
  for (size_t i = 0; i < g->holder_count; i++) {
    holder_t *h = &g->holders[i];
    if (h->tried || (g->have_best && h->seq <= g->best_seq)) continue;
    if (!pick || h->seq > pick->seq) pick = h;
  }
  /* A mutable get waits for the query: a newer seq may still turn up. */
  if (pick && (!g->mutable_value || !g->query)) {
    pick->tried = true;
    uint8_t command = g->mutable_value ? KP_DHT_CMD_MUTABLE_GET : KP_DHT_CMD_IMMUTABLE_GET;
    if (kp_dht_request(g->swarm->dht, &pick->addr, command, g->target, NULL, 0, pick->token,
                       on_fetch, g, now, &g->fetch) == 0)
      return;
    get_next_fetch(g, now);
    return;
  }
  if (!g->query && !g->fetch) get_deliver(g, g->have_best ? 0 : KP_ENOTFOUND);
}

static void get_reply(void *arg, kp_dht_query_t *q, const kp_dht_msg_t *reply,
                      const kp_addr_t *from, uint64_t now) {
  get_t *g = arg;
  (void)q;
  uint64_t seq;
  if (get_check(g, reply, &seq)) {
    const uint8_t *value;
    size_t len;
    get_value_of(g, reply, &value, &len);
    get_keep(g, seq, value, len);
    if (!g->mutable_value) get_deliver(g, 0);
    return;
  }
  if (reply->error != KP_DHT_ERR_TRUNCATED || !reply->has_token) return;
  /* A holder answered with a summary: remember it for the fetch. */
  if (g->mutable_value) {
    kp_dht_mutable_t m = {0};
    bool summary;
    memcpy(m.public_key, g->public_key, KP_PUBLIC_KEY_LEN);
    if (!reply->value ||
        kp_dht_mutable_reply_decode(reply->value, reply->value_len, &m, &summary) || !summary)
      return;
    seq = m.seq;
  }
  if (g->holder_count == GET_HOLDERS_MAX) return;
  holder_t *h = &g->holders[g->holder_count++];
  memset(h, 0, sizeof(*h));
  h->addr = *from;
  memcpy(h->token, reply->token, sizeof(h->token));
  h->seq = seq;
  get_next_fetch(g, now);
}

static void get_query_done(void *arg, kp_dht_query_t *q, int status, const kp_dht_result_t *closest,
                           size_t count, uint64_t now) {
  get_t *g = arg;
  (void)q, (void)closest, (void)count;
  g->query = NULL;
  if (status == KP_ECANCELED) {
    get_deliver(g, KP_ECANCELED);
    return;
  }

  get_next_fetch(g, now);
}

static int start_get(kp_dht_swarm_t *swarm, get_t *g, uint64_t now) {
  g->op.drop = get_drop;
  g->swarm = swarm;
  kp_dht_query_opts_t opts = {.command = g->mutable_value ? KP_DHT_CMD_MUTABLE_GET
                                                          : KP_DHT_CMD_IMMUTABLE_GET,
                              .on_reply = get_reply,
                              .on_done = get_query_done,
                              .arg = g};
  int err = kp_dht_query_start(swarm->dht, g->target, &opts, now, &g->query);
  if (err) {
    get_free(g);
    return err;
  }
  kp__swarm_op_link(swarm, &g->op);
  return 0;
}

int kp_dht_swarm_get_mutable(kp_dht_swarm_t *swarm, const uint8_t public_key[KP_PUBLIC_KEY_LEN],
                             const uint8_t *salt, size_t salt_len, kp_dht_get_cb cb, void *arg,
                             uint64_t now) {
  if (salt_len > KP_MUTABLE_MAX_SALT) return KP_ETOOBIG;
  get_t *g = kp_calloc(1, sizeof(*g));
  if (!g) return KP_ENOMEM;
  g->mutable_value = true;
  memcpy(g->public_key, public_key, KP_PUBLIC_KEY_LEN);
  if (salt_len) memcpy(g->salt, salt, salt_len);
  g->salt_len = salt_len;
  kp_dht_target_mutable(public_key, salt, salt_len, g->target);
  g->cb = cb;
  g->arg = arg;
  return start_get(swarm, g, now);
}

int kp_dht_swarm_get_immutable(kp_dht_swarm_t *swarm, const uint8_t target[KP_ID_LEN],
                               kp_dht_get_cb cb, void *arg, uint64_t now) {
  get_t *g = kp_calloc(1, sizeof(*g));
  if (!g) return KP_ENOMEM;
  memcpy(g->target, target, KP_ID_LEN);
  g->cb = cb;
  g->arg = arg;
  return start_get(swarm, g, now);
}
