/* SPDX-License-Identifier: MIT */
#include "node/testnet.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/rng.h"
#include "dht/dht_id.h"
#include "node/node_internal.h"

void kp_testnet_options_init(kp_testnet_options_t *opts) {
  memset(opts, 0, sizeof(*opts));
  opts->size = 100;
  opts->host = "127.0.0.1";
  opts->log_level = KP_LOG_WARN;
}

static void rng_fill(void *ctx, void *buf, size_t len) {
  kp_rng_t r = kp_rng_seeded(ctx);
  kp_rng_fill(&r, buf, len);
}

/* stacks: KP_TESTNET_V4 and/or KP_TESTNET_V6 (both: a dual-stack node). */
static int make_node(kp_testnet_t *tn, size_t index, unsigned stacks, kp_node_mode_t mode,
                     unsigned stable_ms, kp_log_level_t level, kp_node_t **out) {
  kp_node_options_t o;
  kp_node_options_init(&o);
  bool v4 = stacks & KP_TESTNET_V4, v6 = stacks & KP_TESTNET_V6;
  o.bind = v4 ? "127.0.0.1:0" : "[::1]:0";
  o.bind_also = v4 && v6 ? "[::1]:0" : NULL;
  o.mode = mode;
  o.member_stable_ms = stable_ms;
  o.log_level = level;
  const char *boot[2];
  size_t n = 0;
  if (index > 0) {
    bool boot_v6 = tn->bootstrap[0] == '[';
    if ((v4 && !boot_v6) || (v6 && boot_v6)) boot[n++] = tn->bootstrap;
    if (v6 && tn->bootstrap6[0]) boot[n++] = tn->bootstrap6;
  }
  o.bootstrap = boot;
  o.bootstrap_count = n;
  if (tn->rngs) {
    o.rng = rng_fill;
    o.rng_ctx = (kp_rng_seeded_t *)tn->rngs + index;
  }
  return kp_node_create(tn->loop, &o, out);
}

static unsigned stacks_of(const char *host) {
  if (!strcmp(host, "dual")) return KP_TESTNET_V4 | KP_TESTNET_V6;
  return strchr(host, ':') ? KP_TESTNET_V6 : KP_TESTNET_V4;
}

int kp_testnet_create(uv_loop_t *loop, const kp_testnet_options_t *opts, kp_testnet_t *tn) {
  memset(tn, 0, sizeof(*tn));
  tn->loop = loop;
  if (!opts->size) return UV_EINVAL;
  /* Room for nodes added later with kp_testnet_add (the array only grows). */
  tn->nodes = kp_calloc(opts->size, sizeof(*tn->nodes));
  if (!tn->nodes) return UV_ENOMEM;
  if (opts->seed) {
    kp_rng_seeded_t *r = kp_calloc(opts->size, sizeof(*r));
    if (!r) {
      kp_free(tn->nodes);
      return UV_ENOMEM;
    }
    for (size_t i = 0; i < opts->size; i++) kp_rng_seeded_init(&r[i], opts->seed * 1000003u + i);
    tn->rngs = r;
  }
  tn->stacks = stacks_of(opts->host ? opts->host : "127.0.0.1");
  for (size_t i = 0; i < opts->size; i++) {
    kp_node_mode_t mode = i == 0 ? KP_NODE_MEMBER : KP_NODE_AUTO;
    int err =
        make_node(tn, i, tn->stacks, mode, opts->member_stable_ms, opts->log_level, &tn->nodes[i]);
    if (err) {
      kp_testnet_destroy(tn);
      return err;
    }
    tn->count++;
    if (i == 0) {
      kp_addr_t a;
      kp_node_local_addr(tn->nodes[0], &a);
      kp_addr_format(&a, tn->bootstrap, sizeof(tn->bootstrap));
      kp_node_t *v6 = tn->stacks == (KP_TESTNET_V4 | KP_TESTNET_V6)
                          ? kp__node_of_family(tn->nodes[0], KP_AF_INET6)
                          : NULL;
      if (v6) kp_addr_format(&v6->sock.local, tn->bootstrap6, sizeof(tn->bootstrap6));
    }
  }
  return 0;
}

int kp_testnet_add(kp_testnet_t *tn, kp_node_mode_t mode, unsigned stable_ms, kp_node_t **out) {
  return kp_testnet_add_stacks(tn, tn->stacks, mode, stable_ms, out);
}

int kp_testnet_add_stacks(kp_testnet_t *tn, unsigned stacks, kp_node_mode_t mode,
                          unsigned stable_ms, kp_node_t **out) {
  if (!stacks || (stacks & ~tn->stacks)) return UV_EINVAL;
  kp_node_t **grown = kp_realloc(tn->nodes, (tn->count + 1) * sizeof(*grown));
  if (!grown) return UV_ENOMEM;
  tn->nodes = grown;
  /* Added nodes draw from the system rng: the seeded ones are sized once. */
  void *rngs = tn->rngs;
  tn->rngs = NULL;
  int err = make_node(tn, tn->count, stacks, mode, stable_ms, KP_LOG_WARN, &tn->nodes[tn->count]);
  tn->rngs = rngs;
  if (err) return err;
  if (out) *out = tn->nodes[tn->count];
  tn->count++;
  return 0;
}

typedef struct {
  bool fired;
} deadline_t;

static void on_deadline(uv_timer_t *t) {
  ((deadline_t *)t->data)->fired = true;
}

bool kp_testnet_run_until(uv_loop_t *loop, bool (*pred)(void *ctx), void *ctx,
                          unsigned timeout_ms) {
  if (pred && pred(ctx)) return true;
  deadline_t d = {false};
  uv_timer_t timer;
  uv_timer_init(loop, &timer);
  timer.data = &d;
  uv_timer_start(&timer, on_deadline, timeout_ms, 0);
  bool ok = false;
  while (!d.fired) {
    uv_run(loop, UV_RUN_ONCE);
    if (pred && pred(ctx)) {
      ok = true;
      break;
    }
  }
  uv_close((uv_handle_t *)&timer, NULL);
  uv_run(loop, UV_RUN_NOWAIT); /* let the timer's close complete */
  return ok;
}

size_t kp_testnet_members(const kp_testnet_t *tn) {
  size_t n = 0;
  for (size_t i = 0; i < tn->count; i++)
    if (tn->nodes[i] && kp_node_is_member(tn->nodes[i])) n++;
  return n;
}

size_t kp_testnet_joined(const kp_testnet_t *tn) {
  size_t n = 0;
  for (size_t i = 0; i < tn->count; i++)
    if (tn->nodes[i] && kp_dht_is_joined(kp__node_dht(tn->nodes[i]))) n++;
  return n;
}

static bool all_joined(void *ctx) {
  const kp_testnet_t *tn = ctx;
  size_t live = 0;
  for (size_t i = 0; i < tn->count; i++) live += tn->nodes[i] != NULL;
  return kp_testnet_joined(tn) == live;
}

bool kp_testnet_wait_joined(kp_testnet_t *tn, unsigned timeout_ms) {
  return kp_testnet_run_until(tn->loop, all_joined, tn, timeout_ms);
}

static void on_node_closed(kp_node_t *node) {
  size_t *pending = kp_node_get_data(node);
  (*pending)--;
}

static bool none_pending(void *ctx) {
  return *(size_t *)ctx == 0;
}

void kp_testnet_kill(kp_testnet_t *tn, size_t index) {
  size_t pending = 1;
  if (!tn->nodes[index]) return;
  kp_node_set_data(tn->nodes[index], &pending);
  kp_node_close(tn->nodes[index], on_node_closed);
  tn->nodes[index] = NULL;
  kp_testnet_run_until(tn->loop, none_pending, &pending, 10000);
}

void kp_testnet_destroy(kp_testnet_t *tn) {
  size_t pending = 0;
  for (size_t i = 0; i < tn->count; i++) {
    if (!tn->nodes[i]) continue;
    kp_node_set_data(tn->nodes[i], &pending);
    kp_node_close(tn->nodes[i], on_node_closed);
    pending++;
  }
  kp_testnet_run_until(tn->loop, none_pending, &pending, 30000);
  kp_free(tn->nodes);
  kp_free(tn->rngs);
  memset(tn, 0, sizeof(*tn));
}

/* Lives on the heap: if the caller gives up waiting, the query's callback
 * still arrives later and frees it. */
typedef struct {
  bool done;
  bool abandoned;
  int status;
  size_t count;
  kp_node_peer_t peers[KP_DHT_K];
  kp_node_query_stats_t stats;
} find_wait_t;

static void on_found(kp_node_t *node, int status, const kp_node_peer_t *peers, size_t count,
                     const kp_node_query_stats_t *stats, void *arg) {
  find_wait_t *w = arg;
  (void)node;
  if (w->abandoned) {
    kp_free(w);
    return;
  }
  w->done = true;
  w->status = status;
  w->count = count;
  w->stats = *stats;
  memcpy(w->peers, peers, count * sizeof(*peers));
}

static bool find_done(void *ctx) {
  return ((find_wait_t *)ctx)->done;
}

int kp_testnet_find(kp_testnet_t *tn, kp_node_t *from, const uint8_t target[KP_ID_LEN],
                    kp_node_peer_t peers[KP_DHT_K], size_t *count, kp_node_query_stats_t *stats,
                    unsigned timeout_ms) {
  if (count) *count = 0;
  find_wait_t *w = kp_calloc(1, sizeof(*w));
  if (!w) return UV_ENOMEM;
  int err = kp_node_find_node(from, target, on_found, w);
  if (err) {
    kp_free(w);
    return err;
  }
  if (!kp_testnet_run_until(tn->loop, find_done, w, timeout_ms)) {
    w->abandoned = true;
    return UV_ETIMEDOUT;
  }
  if (peers) memcpy(peers, w->peers, w->count * sizeof(*peers));
  if (count) *count = w->count;
  if (stats) *stats = w->stats;
  err = w->status;
  kp_free(w);
  return err;
}

size_t kp_testnet_true_closest(const kp_testnet_t *tn, const uint8_t target[KP_ID_LEN],
                               const kp_node_t *skip, uint8_t out[KP_DHT_K][KP_ID_LEN]) {
  size_t n = 0;
  for (size_t i = 0; i < tn->count; i++) {
    const kp_node_t *node = tn->nodes[i];
    if (!node || node == skip || !kp_node_is_member(node)) continue;
    const uint8_t *id = kp_node_id(node);
    /* Insertion into the sorted top-k by XOR distance. */
    size_t at = n < KP_DHT_K ? n : KP_DHT_K;
    while (at > 0 && kp_dht_id_cmp(target, id, out[at - 1]) < 0) {
      if (at < KP_DHT_K) memcpy(out[at], out[at - 1], KP_ID_LEN);
      at--;
    }
    if (at < KP_DHT_K) memcpy(out[at], id, KP_ID_LEN);
    if (n < KP_DHT_K) n++;
  }
  return n;
}

int kp_testnet_free_port(void) {
  for (int tries = 0; tries < 100; tries++) {
    int u = socket(AF_INET, SOCK_DGRAM, 0), t = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    bool ok = u >= 0 && t >= 0 && !bind(u, (struct sockaddr *)&a, sizeof(a)) &&
              !getsockname(u, (struct sockaddr *)&a, &alen) &&
              !bind(t, (struct sockaddr *)&a, sizeof(a));
    if (u >= 0) close(u);
    if (t >= 0) close(t);
    if (ok) return ntohs(a.sin_port);
  }
  return 0;
}
