/* SPDX-License-Identifier: MIT */
/* A dual-stack node's connect (node_stacks.c): the IPv6 attempt starts
 * first, the IPv4 one RACE_HEAD_START_MS later unless IPv6 is done by then
 * (or at once when IPv6 fails first); the first to connect wins and the
 * other is cancelled, unless it connected through a relay: then the other
 * family's attempt runs on for up to RACE_HELD_MAX_MS, and a direct path
 * there wins. This is RFC 8305's connection attempt delay, applied to a
 * connect by key: a lookup, a handshake through a relay node and a punch
 * per family, so an IPv6 path that works usually wins its head start (no
 * NAT to punch), and one that does not costs IPv4 only the head start.
 * Measured on loopback and in the NAT lab: docs/architecture.md, "Dual
 * stack". */
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "node/node_internal.h"
#include "stream/uv/endpoint.h"

#define RACE_HEAD_START_MS 150
/* How long a relayed connection waits for the other family's direct one. */
#define RACE_HELD_MAX_MS 2000

typedef struct kp_node_race_s race_t;
struct kp_node_race_s {
  race_t *next;
  kp_node_t *node;  /* the user's */
  kp_node_t *on[2]; /* [0] IPv6, [1] IPv4 */
  kp_node_attempt_t *attempt[2];
  bool started[2], over[2];
  kp_keypair_t self;
  uint8_t server_key[KP_PUBLIC_KEY_LEN];
  kp_hp_connect_opts_t opts;
  char service[KP_SERVICE_MAX + 1];
  kp_conn_callbacks_t conn_cb;
  kp_connect_cb cb;
  void *arg;
  uv_timer_t timer; /* the head start, then a held connection's wait */
  uint64_t started_at;
  /* The first failure, reported when the other fails too. */
  int failure;
  kp_connect_info_t failure_info;
  /* A relayed connection that waits for the other family's attempt: a
   * direct path there is better (a peer with no family in common with
   * this one is reached through a relay at once, and would always win). */
  kp_conn_t *held;
  kp_connect_info_t held_info;
};

static void unlink_race(race_t *r) {
  for (race_t **p = &r->node->races; *p; p = &(*p)->next) {
    if (*p == r) {
      *p = r->next;
      return;
    }
  }
}

static void on_timer_closed(uv_handle_t *h) {
  kp_free(h->data);
}

/* A held connection the race no longer wants: closed, and nothing of it
 * calls back into the race (whose memory goes before the close ends). */
static void release_held(race_t *r) {
  kp_conn_t *conn = r->held;
  r->held = NULL;
  kp_conn_set_data(conn, NULL);
  kp__conn_set_callbacks(conn, NULL);
  kp_conn_close(conn, 0);
}

/* The race lets go of everything (the memory goes with the timer). */
static void finish(race_t *r) {
  for (unsigned i = 0; i < 2; i++) {
    if (r->attempt[i]) kp__node_attempt_cancel(r->attempt[i]);
    r->attempt[i] = NULL;
  }
  if (r->held) release_held(r);
  unlink_race(r);
  kp_keypair_wipe(&r->self);
  uv_close((uv_handle_t *)&r->timer, on_timer_closed);
}

/* The end, told once: the race is gone first, so the user may do anything
 * from the callback (close the node, connect again). */
static void report(race_t *r, int status, kp_conn_t *conn, const kp_connect_info_t *info) {
  kp_connect_cb cb = r->cb;
  void *arg = r->arg;
  kp_node_t *node = r->node;
  kp_connect_info_t copy = *info;
  if (conn) {
    if (conn == r->held) r->held = NULL; /* not closed by finish */
    kp_conn_set_data(conn, NULL);
    kp__conn_set_callbacks(conn, &r->conn_cb);
  }
  finish(r);
  cb(node, status, conn, &copy, arg);
}

/* While the race holds a relayed connection, it is the race's: if it ends
 * before the other family's attempt does, it is forgotten. */
static void on_held_close(kp_conn_t *conn, int status, uint64_t code) {
  race_t *r = kp_conn_get_data(conn);
  (void)status, (void)code;
  if (!r || r->held != conn) return;
  release_held(r);
  if (!r->failure) r->failure = KP_ECLOSED;
  if (r->over[0] && r->over[1]) report(r, r->failure, NULL, &r->failure_info);
}

static void attempt_done(kp_node_t *on, int status, kp_conn_t *conn, const kp_connect_info_t *info,
                         void *arg);

static void start(race_t *r, unsigned i) {
  if (r->started[i]) return;
  r->started[i] = true;
  /* Without the user's callbacks: a connection that loses is closed
   * without the user ever hearing of it; the winner gets them (report). */
  int err = kp__node_attempt(r->on[i], &r->self, r->server_key, &r->opts, NULL, attempt_done, r,
                             &r->attempt[i]);
  if (err) {
    r->attempt[i] = NULL;
    kp_connect_info_t info = {0};
    attempt_done(r->on[i], err, NULL, &info, r);
  }
}

static void on_timer(uv_timer_t *t) {
  race_t *r = t->data;
  if (r->held) {
    /* The other family had its chance: the relay it is. */
    report(r, 0, r->held, &r->held_info);
    return;
  }
  start(r, 1);
}

static void attempt_done(kp_node_t *on, int status, kp_conn_t *conn, const kp_connect_info_t *info,
                         void *arg) {
  race_t *r = arg;
  unsigned i = on == r->on[0] ? 0 : 1;
  r->attempt[i] = NULL; /* gone after this call */
  r->over[i] = true;
  bool relayed = info->punch == KP_PUNCH_RELAYED;
  KP_INFO(&r->node->log, "connect over %s: %s after %llu ms (lookup %u, handshake %u, punch %u ms)",
          i ? "IPv4" : "IPv6", status ? kp_strerror(status) : kp_punch_name(info->punch),
          (unsigned long long)(uv_now(r->node->loop) - r->started_at), info->lookup_ms,
          info->handshake_ms, info->punch_ms);
  if (!status && relayed && !r->held && !r->over[1 - i]) {
    r->held = conn;
    r->held_info = *info;
    kp_conn_callbacks_t mine = {.on_close = on_held_close};
    kp__conn_set_callbacks(conn, &mine);
    kp_conn_set_data(conn, r);
    uv_timer_stop(&r->timer);
    uv_timer_start(&r->timer, on_timer, RACE_HELD_MAX_MS, 0);
    start(r, 1 - i);
    return;
  }
  if (!status) {
    /* A second relayed one: the first is as good. */
    if (relayed && r->held) {
      kp_conn_close(conn, 0);
      report(r, 0, r->held, &r->held_info);
    } else {
      report(r, 0, conn, info);
    }
    return;
  }
  if (r->held) {
    report(r, 0, r->held, &r->held_info);
    return;
  }
  if (!r->failure) {
    r->failure = status;
    r->failure_info = *info;
  }
  if (!r->started[1 - i]) {
    /* The first family failed before the head start ran out. */
    uv_timer_stop(&r->timer);
    start(r, 1 - i);
    return;
  }
  if (r->over[1 - i]) report(r, r->failure, NULL, &r->failure_info);
}

int kp__node_race(kp_node_t *node, const kp_keypair_t *self,
                  const uint8_t server_key[KP_PUBLIC_KEY_LEN], const kp_hp_connect_opts_t *opts,
                  const kp_conn_callbacks_t *conn_callbacks, kp_connect_cb cb, void *arg) {
  race_t *r = kp_calloc(1, sizeof(*r));
  if (!r) return UV_ENOMEM;
  int err = uv_timer_init(node->loop, &r->timer);
  if (err) {
    kp_free(r);
    return err;
  }
  r->timer.data = r;
  r->node = node;
  r->started_at = uv_now(node->loop);
  bool v6_first = kp_dht_family(node->dht) == KP_AF_INET6;
  r->on[0] = v6_first ? node : node->sibling;
  r->on[1] = v6_first ? node->sibling : node;
  r->self = *self;
  memcpy(r->server_key, server_key, KP_PUBLIC_KEY_LEN);
  r->opts = *opts;
  if (opts->service) {
    snprintf(r->service, sizeof(r->service), "%s", opts->service);
    r->opts.service = r->service;
  }
  if (conn_callbacks) r->conn_cb = *conn_callbacks;
  r->cb = cb;
  r->arg = arg;
  r->next = node->races;
  node->races = r;
  uv_timer_start(&r->timer, on_timer, RACE_HEAD_START_MS, 0);
  start(r, 0);
  return 0;
}

void kp__node_races_cancel(kp_node_t *node) {
  kp_connect_info_t info = {0};
  while (node->races) report(node->races, UV_ECANCELED, NULL, &info);
}
