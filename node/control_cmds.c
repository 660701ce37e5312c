/* SPDX-License-Identifier: MIT */
/* The control socket's built-in commands: what a running node knows, as
 * JSON (shapes in docs/inspect.md). Each reads the node's state and
 * writes; none changes anything. */
#include <string.h>

#include "dht/dht_id.h"
#include "dht/dht_record.h"
#include "dht/dht_store.h"
#include "node/control.h"
#include "node/node_internal.h"

/* A store holds up to 16384 records; an answer lists this many. */
#define RECORDS_SHOWN_MAX 1000

static void head(kp_jw_t *w, const char *cmd) {
  kp_jw_obj(w);
  kp_jw_kbool(w, "ok", true);
  kp_jw_kstr(w, "cmd", cmd);
}

static void addr(kp_jw_t *w, const char *key, const kp_addr_t *a) {
  char text[KP_ADDR_STRLEN];
  kp_jw_key(w, key);
  if (a && kp_addr_is_set(a))
    kp_jw_str(w, kp_addr_format(a, text, sizeof(text)));
  else
    kp_jw_null(w);
}

static void node_id(kp_jw_t *w, kp_dht_t *dht) {
  uint8_t id[KP_ID_LEN];
  kp_jw_key(w, "id");
  if (kp_dht_id(dht, id))
    kp_jw_hex(w, id, KP_ID_LEN);
  else
    kp_jw_null(w);
}

/* ---- table ------------------------------------------------------------------ */

static int table(void *ctx, const kp_json_t *req, const char *line, size_t len, kp_jw_t *w) {
  kp_node_t *node = ctx;
  kp_dht_t *dht = node->dht;
  const kp_dht_table_t *t = kp_dht_table(dht);
  uint32_t now_s = (uint32_t)(kp__node_now(node) / 1000);
  (void)req, (void)line, (void)len;
  head(w, "table");
  node_id(w, dht);
  kp_jw_kbool(w, "member", kp_dht_is_member(dht));
  kp_jw_ku64(w, "k", t->k);
  kp_jw_ku64(w, "count", t->count);
  kp_jw_key(w, "buckets");
  kp_jw_arr(w);
  for (unsigned b = 0; b < KP_DHT_BUCKETS; b++) {
    if (!t->bucket_count[b]) continue;
    kp_jw_obj(w);
    kp_jw_ku64(w, "bucket", b);
    kp_jw_ku64(w, "count", t->bucket_count[b]);
    kp_jw_obj_end(w);
  }
  kp_jw_arr_end(w);
  kp_jw_key(w, "nodes");
  kp_jw_arr(w);
  for (uint32_t i = 0; i < t->count; i++) {
    const kp_dht_entry_t *e = kp_dht_table_at(t, i);
    kp_addr_t a;
    uint8_t id[KP_ID_LEN];
    kp_dht_entry_addr(t, e, &a);
    kp_dht_id_from_addr(&a, id);
    kp_jw_obj(w);
    kp_jw_khex(w, "id", id, KP_ID_LEN);
    addr(w, "addr", &a);
    kp_jw_ku64(w, "bucket", kp_dht_entry_bucket(t, e));
    kp_jw_ku64(w, "age_s", now_s >= e->last_seen ? now_s - e->last_seen : 0);
    kp_jw_ku64(w, "fails", e->fails);
    kp_jw_obj_end(w);
  }
  kp_jw_arr_end(w);
  kp_jw_obj_end(w);
  return 0;
}

/* ---- records ---------------------------------------------------------------- */

typedef struct walk_s {
  kp_jw_t *w;
  uint64_t now;
  size_t count, shown, tombstones, by_kind[3];
} walk_t;

static const char *kind_name(uint8_t kind) {
  return kind == KP_STORE_ANNOUNCE  ? "announce"
         : kind == KP_STORE_MUTABLE ? "mutable"
                                    : "immutable";
}

/* What an announce record says: its relays and data. The store holds only
 * records whose signature verified on the way in; decoding checks again. */
static void announce_fields(kp_jw_t *w, const kp_dht_store_item_t *it) {
  kp_record_t rec;
  bool ok = kp_dht_record_decode(it->data, it->data_len, it->target, &rec) == 0;
  kp_jw_kbool(w, "signature_ok", ok);
  if (!ok) return;
  kp_jw_key(w, "relays");
  kp_jw_arr(w);
  for (size_t i = 0; i < rec.relay_count; i++) {
    char text[KP_ADDR_STRLEN];
    kp_jw_str(w, kp_addr_format(&rec.relays[i], text, sizeof(text)));
  }
  kp_jw_arr_end(w);
  kp_jw_key(w, "data");
  kp_jw_strn(w, (const char *)rec.data, rec.data_len);
}

static bool record(void *ctx, const kp_dht_store_item_t *it) {
  walk_t *s = ctx;
  s->count++;
  s->tombstones += it->tombstone;
  if (it->kind < 3) s->by_kind[it->kind]++;
  if (s->shown == RECORDS_SHOWN_MAX) return true; /* still counting */
  s->shown++;
  kp_jw_t *w = s->w;
  kp_jw_obj(w);
  kp_jw_kstr(w, "kind", kind_name(it->kind));
  kp_jw_khex(w, "target", it->target, KP_ID_LEN);
  kp_jw_key(w, "public_key");
  if (it->public_key) {
    char key[KP_KEY_TEXT_LEN + 1];
    kp_key_to_text(it->public_key, key);
    kp_jw_str(w, key);
  } else {
    kp_jw_null(w);
  }
  kp_jw_ku64(w, "seq", it->seq);
  kp_jw_ku64(w, "expires_in_s", it->expires > s->now ? (it->expires - s->now) / 1000 : 0);
  kp_jw_ku64(w, "size", it->data_len);
  addr(w, "origin", it->origin);
  kp_jw_kbool(w, "tombstone", it->tombstone);
  if (it->kind == KP_STORE_ANNOUNCE && !it->tombstone) announce_fields(w, it);
  kp_jw_obj_end(w);
  return true;
}

static int records(void *ctx, const kp_json_t *req, const char *line, size_t len, kp_jw_t *w) {
  kp_node_t *node = ctx;
  const kp_dht_store_t *store = kp_dht_swarm_store(node->swarm);
  (void)req, (void)line, (void)len;
  kp_dht_store_stats_t st;
  kp_dht_store_stats(store, &st);
  walk_t s = {.w = w, .now = kp__node_now(node)};
  head(w, "records");
  kp_jw_key(w, "records");
  kp_jw_arr(w);
  kp_dht_store_walk(store, record, &s);
  kp_jw_arr_end(w);
  /* The totals follow the list: they are counted while it is written. */
  kp_jw_ku64(w, "count", s.count);
  kp_jw_ku64(w, "shown", s.shown);
  kp_jw_kbool(w, "truncated", s.shown < s.count);
  kp_jw_ku64(w, "announce", s.by_kind[KP_STORE_ANNOUNCE]);
  kp_jw_ku64(w, "mutable", s.by_kind[KP_STORE_MUTABLE]);
  kp_jw_ku64(w, "immutable", s.by_kind[KP_STORE_IMMUTABLE]);
  kp_jw_ku64(w, "tombstones", s.tombstones);
  kp_jw_ku64(w, "bytes", st.bytes);
  kp_jw_obj_end(w);
  return 0;
}

/* ---- stats ------------------------------------------------------------------ */

static void counters(kp_jw_t *w, const kp_node_stats_t *st) {
  const struct {
    const char *name;
    uint64_t v;
  } c[] = {{"packets_in", st->packets_in},
           {"packets_out", st->packets_out},
           {"bytes_in", st->bytes_in},
           {"bytes_out", st->bytes_out},
           {"requests_in", st->requests_in},
           {"responses_in", st->responses_in},
           {"requests_out", st->requests_out},
           {"timeouts", st->timeouts},
           {"drops_malformed", st->drops_malformed},
           {"drops_truncated", st->drops_truncated},
           {"drops_too_big", st->drops_too_big},
           {"drops_version", st->drops_version},
           {"drops_field", st->drops_field},
           {"drops_command", st->drops_command},
           {"drops_bad_id", st->drops_bad_id},
           {"drops_unmatched", st->drops_unmatched},
           {"drops_rate", st->drops_rate},
           {"drops_send", st->drops_send},
           {"drops_other", st->drops_other}};
  kp_jw_key(w, "counters");
  kp_jw_obj(w);
  for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) kp_jw_ku64(w, c[i].name, c[i].v);
  kp_jw_obj_end(w);
}

static void store_stats(kp_jw_t *w, const kp_dht_store_t *store) {
  kp_dht_store_stats_t st;
  kp_dht_store_stats(store, &st);
  kp_jw_key(w, "store");
  kp_jw_obj(w);
  kp_jw_ku64(w, "records", st.records);
  kp_jw_ku64(w, "bytes", st.bytes);
  kp_jw_ku64(w, "stored", st.stored);
  kp_jw_ku64(w, "expired", st.expired);
  kp_jw_ku64(w, "evicted", st.evicted);
  kp_jw_ku64(w, "refused", st.refused);
  kp_jw_obj_end(w);
}

static void relay_stats(kp_jw_t *w, const kp_node_t *node) {
  kp_relay_counters_t r;
  kp_jw_key(w, "relay");
  if (kp_node_relay_counters(node, &r)) {
    kp_jw_null(w);
    return;
  }
  kp_jw_obj(w);
  kp_jw_ku64(w, "sessions", r.sessions);
  kp_jw_ku64(w, "tcp_links", r.tcp_links);
  kp_jw_ku64(w, "paired", r.paired);
  kp_jw_ku64(w, "forwarded", r.forwarded);
  kp_jw_ku64(w, "forwarded_bytes", r.forwarded_bytes);
  kp_jw_ku64(w, "dropped_rate", r.dropped_rate);
  kp_jw_ku64(w, "refused_full", r.refused_full);
  kp_jw_ku64(w, "refused_attempts", r.refused_attempts);
  kp_jw_ku64(w, "expired", r.expired);
  kp_jw_obj_end(w);
}

static int stats(void *ctx, const kp_json_t *req, const char *line, size_t len, kp_jw_t *w) {
  kp_node_t *node = ctx;
  kp_dht_t *dht = node->dht;
  const kp_dht_nat_t *nat = kp_dht_nat(dht);
  (void)req, (void)line, (void)len;
  kp_node_stats_t st;
  kp_node_stats(node, &st);
  kp_addr_t local;
  kp_node_local_addr(node, &local);
  head(w, "stats");
  kp_jw_kstr(w, "version", kp_version_string());
  node_id(w, dht);
  kp_jw_kbool(w, "member", kp_dht_is_member(dht));
  kp_jw_kbool(w, "joined", kp_dht_is_joined(dht));
  addr(w, "local", &local);
  addr(w, "public", nat->has_public ? &nat->public_addr : NULL);
  kp_jw_kstr(w, "nat", kp_nat_type_name(nat->type));
  kp_jw_kbool(w, "reachable", nat->reachable);
  kp_jw_ku64(w, "table_size", st.table_size);
  kp_jw_ku64(w, "inflight", st.inflight);
  counters(w, &st);
  store_stats(w, kp_dht_swarm_store(node->swarm));
  relay_stats(w, node);
  kp_jw_obj_end(w);
  return 0;
}

int kp__control_add_builtins(kp_control_t *c, kp_node_t *node) {
  int err;
  if ((err = kp_control_add(c, "table", table, node))) return err;
  if ((err = kp_control_add(c, "records", records, node))) return err;
  return kp_control_add(c, "stats", stats, node);
}
