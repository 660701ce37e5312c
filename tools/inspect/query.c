/* SPDX-License-Identifier: MIT */
/* An iterative query as the inspector runs it: the DHT's own query, plus the
 * path it took (how many referrals deep each node was found) and a PING to
 * each result for its round trip. */
#include <string.h>

#include "common/addr.h"
#include "dht/dht_id.h"
#include "node/node_internal.h"
#include "tools/inspect/inspect.h"

static unsigned seen_hops(const kp_inspect_query_t *q, const kp_addr_t *addr) {
  for (size_t i = 0; i < q->seen_count; i++)
    if (kp_addr_eq(&q->seen[i].addr, addr)) return q->seen[i].hops;
  return 0;
}

static void see(kp_inspect_query_t *q, const kp_addr_t *addr, unsigned hops) {
  if (q->seen_count == KP_INSPECT_SEEN_MAX || seen_hops(q, addr)) return;
  q->seen[q->seen_count].addr = *addr;
  q->seen[q->seen_count++].hops = (uint8_t)(hops > 255 ? 255 : hops);
}

/* A node that answers without having been referred to us was a starting
 * point (depth 1); the nodes it names are one referral deeper. */
static void on_reply(void *arg, kp_dht_query_t *dq, const kp_dht_msg_t *reply,
                     const kp_addr_t *from, uint64_t now) {
  kp_inspect_query_t *q = arg;
  (void)dq, (void)now;
  q->replies++;
  see(q, from, 1);
  unsigned depth = seen_hops(q, from);
  size_t step = kp_addr_compact_len(from->family);
  for (size_t off = 0; step && off + step <= reply->nodes_len; off += step) {
    kp_addr_t a;
    if (kp_addr_decode_compact(&a, reply->nodes + off, step) == 0) see(q, &a, depth + 1);
  }
  if (q->on_reply) q->on_reply(q->arg, reply, from);
}

static void on_done(void *arg, kp_dht_query_t *dq, int status, const kp_dht_result_t *closest,
                    size_t count, uint64_t now) {
  kp_inspect_query_t *q = arg;
  (void)now;
  q->done = true;
  q->handle = NULL;
  q->status = status;
  q->stats = *kp_dht_query_stats(dq);
  q->duration_ms = (double)(uv_hrtime() - q->started_ns) / 1e6;
  q->count = count < KP_DHT_K ? count : KP_DHT_K;
  for (size_t i = 0; i < q->count; i++) {
    kp_inspect_result_t *r = &q->results[i];
    memcpy(r->id, closest[i].id, KP_ID_LEN);
    r->addr = closest[i].addr;
    r->hops = seen_hops(q, &r->addr);
    if (!r->hops) r->hops = 1;
    r->rtt_ms = -1;
  }
}

static bool query_done(void *ctx) {
  return ((kp_inspect_query_t *)ctx)->done;
}

static void on_ping(void *arg, int status, const kp_dht_msg_t *resp, const kp_addr_t *from,
                    double rtt_ms, unsigned sends) {
  kp_inspect_query_t *q = ((void **)arg)[0];
  kp_inspect_result_t *r = ((void **)arg)[1];
  (void)resp, (void)from, (void)sends;
  if (!status) r->rtt_ms = rtt_ms;
  q->pings--;
}

static bool pings_done(void *ctx) {
  return ((kp_inspect_query_t *)ctx)->pings == 0;
}

int kp_inspect_query_run(kp_inspect_session_t *s, kp_inspect_query_t *q, unsigned timeout_ms) {
  kp_node_t *node = s->node;
  kp_dht_query_opts_t opts = {
      .command = q->command, .on_reply = on_reply, .on_done = on_done, .arg = q};
  int err;
  q->started_ns = uv_hrtime();
  KP_NODE_FEED(
      node, err = kp_dht_query_start(node->dht, q->target, &opts, kp__node_now(node), &q->handle));
  if (err) return err;
  if (!kp_inspect_session_run(s, query_done, q, timeout_ms)) {
    kp_dht_query_cancel(node->dht, q->handle);
    q->handle = NULL;
    return s->signalled ? UV_ECANCELED : UV_ETIMEDOUT;
  }
  /* Stragglers still find q (the caller keeps it until the session closes). */
  for (size_t i = 0; i < q->count; i++) {
    q->ping_ctx[i][0] = q;
    q->ping_ctx[i][1] = &q->results[i];
    if (kp_inspect_request(s, &q->results[i].addr, KP_DHT_CMD_PING, NULL, on_ping, q->ping_ctx[i],
                           NULL) == 0)
      q->pings++;
  }
  kp_inspect_session_run(s, pings_done, q, 5000);
  return s->signalled ? UV_ECANCELED : 0;
}

void kp_inspect_query_print_nodes(const kp_inspect_query_t *q) {
  printf("  #  %-16s  %-24s  %4s  %4s  %8s\n", "NODE ID", "ADDRESS", "BITS", "HOPS", "RTT ms");
  for (size_t i = 0; i < q->count; i++) {
    const kp_inspect_result_t *r = &q->results[i];
    char hex[17], addr[KP_ADDR_STRLEN], rtt[16] = "-";
    if (r->rtt_ms >= 0) snprintf(rtt, sizeof(rtt), "%.2f", r->rtt_ms);
    printf(" %2zu  %s  %-24s  %4u  %4u  %8s\n", i + 1, kp_inspect_hex(r->id, 8, hex),
           kp_addr_format(&r->addr, addr, sizeof(addr)), kp_dht_id_prefix_len(q->target, r->id),
           r->hops, rtt);
  }
}

void kp_inspect_query_json_nodes(kp_jw_t *w, const kp_inspect_query_t *q) {
  kp_jw_key(w, "nodes");
  kp_jw_arr(w);
  for (size_t i = 0; i < q->count; i++) {
    const kp_inspect_result_t *r = &q->results[i];
    kp_jw_obj(w);
    kp_jw_khex(w, "id", r->id, KP_ID_LEN);
    kp_inspect_jw_addr(w, "addr", &r->addr);
    kp_jw_ku64(w, "shared_bits", kp_dht_id_prefix_len(q->target, r->id));
    kp_jw_ku64(w, "hops", r->hops);
    kp_jw_key(w, "rtt_ms");
    if (r->rtt_ms >= 0)
      kp_jw_num(w, r->rtt_ms, 3);
    else
      kp_jw_null(w);
    kp_jw_obj_end(w);
  }
  kp_jw_arr_end(w);
}

void kp_inspect_query_json_stats(kp_jw_t *w, const kp_inspect_query_t *q) {
  kp_jw_ku64(w, "requests", q->stats.requests);
  kp_jw_ku64(w, "responses", q->stats.responses);
  kp_jw_ku64(w, "timeouts", q->stats.timeouts);
  kp_jw_ku64(w, "hops", q->stats.hops);
  kp_jw_knum(w, "duration_ms", q->duration_ms, 3);
}
