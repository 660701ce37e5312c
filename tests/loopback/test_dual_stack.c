/* SPDX-License-Identifier: MIT */
/* Dual-stack nodes (node/node_stacks.c) on a loopback testnet of
 * 127.0.0.1 and ::1: DHT nodes of IPv4 only, IPv6 only and both; a server
 * and a client of each kind. Every lookup finds every server, whatever the
 * families; every pair connects and echoes 64 KiB byte-exact; a pair of
 * dual-stack nodes ends on IPv6, a pair with one family in common on that
 * family, and a pair with none through a dual-stack relay. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node/node_internal.h"
#include "node/testnet.h"
#include "tests/harness/pattern.h"
#include "tests/harness/test.h"
#include "tests/loopback/echo_stream.h"
#include "tests/loopback/test_node.h"
#include "tests/loopback/testnet_up.h"

#define DHT_EACH 5 /* DHT nodes of each kind */
#define PAYLOAD (64 * 1024)
#define KINDS 3

static const unsigned kind_stacks[KINDS] = {KP_TESTNET_V4, KP_TESTNET_V6,
                                            KP_TESTNET_V4 | KP_TESTNET_V6};
static const char *const kind_name[KINDS] = {"v4", "v6", "dual"};

typedef struct look_s {
  const uint8_t *key;
  bool found, done;
} look_t;

static void on_look_record(kp_node_t *node, const kp_record_t *rec, void *arg) {
  look_t *l = arg;
  (void)node;
  if (!memcmp(rec->public_key, l->key, KP_PUBLIC_KEY_LEN)) l->found = true;
}

static void on_look_done(kp_node_t *node, int status, size_t found,
                         const kp_node_query_stats_t *stats, void *arg) {
  look_t *l = arg;
  (void)node, (void)status, (void)found, (void)stats;
  l->done = true;
}

static bool look_done(void *ctx) {
  return ((look_t *)ctx)->done;
}

/* Looks key up from node, up to 10 times (an announcement lands in the
 * first seconds): whether a lookup found it. */
static bool finds(uv_loop_t *loop, kp_node_t *node, const uint8_t key[KP_PUBLIC_KEY_LEN]) {
  uint8_t target[KP_ID_LEN];
  kp_target_from_key(key, target);
  for (int i = 0; i < 10; i++) {
    look_t l = {.key = key};
    KP_CHECK_OK(kp_node_lookup(node, target, on_look_record, on_look_done, &l));
    KP_CHECK(kp_testnet_run_until(loop, look_done, &l, 10000));
    if (l.found) return true;
  }
  return false;
}

/* ---- Values ------------------------------------------------------------------ */

typedef struct value_wait_s {
  bool done;
  int status;
  unsigned stored;
  uint64_t seq;
  char value[64];
} value_wait_t;

typedef struct found_s {
  bool done;
  int status;
  size_t count, v4, v6;
  bool sorted;
} found_t;

static void on_found(kp_node_t *node, int status, const kp_node_peer_t *peers, size_t count,
                     const kp_node_query_stats_t *stats, void *arg) {
  found_t *f = arg;
  (void)node, (void)stats;
  f->done = true;
  f->status = status;
  f->count = count;
  f->sorted = true;
  for (size_t i = 0; i < count; i++) {
    f->v4 += peers[i].addr.family == KP_AF_INET;
    f->v6 += peers[i].addr.family == KP_AF_INET6;
    /* Distance to the all-zero id is the id itself. */
    if (i && memcmp(peers[i - 1].id, peers[i].id, KP_ID_LEN) > 0) f->sorted = false;
  }
}

static bool found_done(void *arg) {
  return ((found_t *)arg)->done;
}

static void on_put_done(kp_node_t *node, int status, unsigned stored, void *arg) {
  value_wait_t *v = arg;
  (void)node;
  v->status = status;
  v->stored = stored;
  v->done = true;
}

static void on_got(kp_node_t *node, int status, uint64_t seq, const uint8_t *value, size_t len,
                   void *arg) {
  value_wait_t *v = arg;
  (void)node;
  v->status = status;
  v->seq = seq;
  if (!status && len < sizeof(v->value)) memcpy(v->value, value, len);
  v->done = true;
}

static bool value_done(void *ctx) {
  return ((value_wait_t *)ctx)->done;
}

/* ---- Echo ---------------------------------------------------------------------- */

typedef struct trip_s {
  bool done;
  int status;
  uint64_t started_ns, connect_ns;
  kp_connect_info_t info;
  kp_conn_t *conn;
  kp_stream_t *stream;
  kp_write_t write;
  uint64_t echoed, mismatches;
  uint8_t data[PAYLOAD];
} trip_t;

static void trip_read(kp_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  trip_t *t = kp_stream_get_data(s);
  if (n < 0) return;
  t->mismatches += kp_pattern_mismatches((uint64_t)(uintptr_t)t, t->echoed,
                                         (const uint8_t *)buf->base, (size_t)n);
  t->echoed += (uint64_t)n;
}

static void trip_written(kp_write_t *req, int status) {
  (void)req;
  KP_CHECK_OK(status);
}

static void on_connected(kp_node_t *node, int status, kp_conn_t *conn,
                         const kp_connect_info_t *info, void *arg) {
  trip_t *t = arg;
  (void)node;
  t->connect_ns = uv_hrtime() - t->started_ns;
  t->status = status;
  t->info = *info;
  if (status) {
    t->done = true;
    return;
  }
  t->conn = conn;
  kp_conn_set_data(conn, t);
  KP_CHECK_OK(kp_stream_open(conn, &t->stream));
  kp_stream_set_data(t->stream, t);
  KP_CHECK_OK(kp_stream_read_start(t->stream, trip_read));
  size_t avail;
  for (size_t off = 0; off < PAYLOAD; off += avail) {
    const uint8_t *chunk = kp_pattern_at((uint64_t)(uintptr_t)t, off, &avail);
    if (avail > PAYLOAD - off) avail = PAYLOAD - off;
    memcpy(t->data + off, chunk, avail);
  }
  uv_buf_t b = uv_buf_init((char *)t->data, PAYLOAD);
  KP_CHECK_OK(kp_stream_write(&t->write, t->stream, &b, 1, trip_written));
}

/* Only a connection the test was handed may tell it of its end: a race's
 * loser is closed without a word (node_race.c). */
static unsigned strays;
static void on_client_close(kp_conn_t *conn, int status, uint64_t code) {
  (void)status, (void)code;
  if (!kp_conn_get_data(conn)) strays++;
}

static bool trip_over(void *ctx) {
  trip_t *t = ctx;
  if (!t->done && t->conn && t->echoed >= PAYLOAD) t->done = true;
  return t->done;
}

static void on_relay_closed(kp_node_t *node) {
  *(bool *)kp_node_get_data(node) = true;
}

static bool relay_closed(void *ctx) {
  return *(bool *)ctx;
}

/* A client that closes its node from the connect callback (as a
 * one-shot program does): told once, and the node goes. */
typedef struct quitter_s {
  unsigned told;
  int status;
  bool closed;
} quitter_t;

static void on_quitter_closed(kp_node_t *node) {
  ((quitter_t *)kp_node_get_data(node))->closed = true;
}

static void on_quitter_connected(kp_node_t *node, int status, kp_conn_t *conn,
                                 const kp_connect_info_t *info, void *arg) {
  quitter_t *q = arg;
  (void)conn, (void)info;
  q->told++;
  q->status = status;
  kp_node_close(node, on_quitter_closed);
}

static bool quitter_closed(void *ctx) {
  return ((quitter_t *)ctx)->closed;
}

void test_dual_stack_testnet(void) {
  uv_loop_t loop;
  kp_testnet_t tn;
  kp_test_dual_testnet(&loop, &tn);
  for (int i = 0; i < DHT_EACH; i++)
    for (int k = 0; k < KINDS; k++)
      KP_CHECK_OK(kp_testnet_add_stacks(&tn, kind_stacks[k], KP_NODE_AUTO, 0, NULL));
  KP_CHECK(kp_testnet_wait_joined(&tn, 20000));
  /* A dual-stack relay, announced over both families. */
  kp_node_options_t ro;
  kp_node_options_init(&ro);
  ro.bind = "127.0.0.1:0";
  ro.bind_also = "[::1]:0";
  ro.member_stable_ms = 0;
  ro.relay = true;
  const char *boot[2] = {tn.bootstrap, tn.bootstrap6};
  ro.bootstrap = boot;
  ro.bootstrap_count = 2;
  kp_node_t *relay;
  KP_CHECK_OK(kp_node_create(&loop, &ro, &relay));

  kp_node_t *server[KINDS], *client[KINDS];
  kp_keypair_t skp[KINDS], ckp[KINDS];
  kp_server_t *srv[KINDS];
  kp_conn_callbacks_t echo = {.on_stream = kp_test_echo_stream};
  for (int k = 0; k < KINDS; k++) {
    KP_CHECK_OK(kp_testnet_add_stacks(&tn, kind_stacks[k], KP_NODE_AUTO, 0, &server[k]));
    KP_CHECK_OK(kp_testnet_add_stacks(&tn, kind_stacks[k], KP_NODE_AUTO, 0, &client[k]));
    kp_keypair_generate(&skp[k]);
    kp_keypair_generate(&ckp[k]);
  }
  KP_CHECK(kp_testnet_wait_joined(&tn, 20000));
  for (int k = 0; k < KINDS; k++)
    KP_CHECK_OK(kp_server_listen(server[k], &skp[k], NULL, &echo, NULL, NULL, &srv[k]));

  printf("lookups (client -> server): ");
  unsigned found = 0;
  for (int c = 0; c < KINDS; c++) {
    for (int s = 0; s < KINDS; s++) {
      bool ok = finds(&loop, client[c], skp[s].public_key);
      printf("%s->%s %s  ", kind_name[c], kind_name[s], ok ? "found" : "NOT FOUND");
      found += ok;
    }
  }
  printf("\n");
  KP_CHECK_EQ(found, KINDS * KINDS);

  /* A dual-stack node's find-node asks both families (BEP 32), closest
   * first: to the all-zero id, the smallest ids. */
  static const uint8_t zero[KP_ID_LEN] = {0};
  found_t fd = {0};
  KP_CHECK_OK(kp_node_find_node(client[2], zero, on_found, &fd));
  KP_CHECK(kp_testnet_run_until(&loop, found_done, &fd, 20000));
  KP_CHECK_OK(fd.status);
  KP_CHECK_MSG(fd.v4 && fd.v6 && fd.sorted, "find-node: %zu IPv4, %zu IPv6 nodes, %s", fd.v4, fd.v6,
               fd.sorted ? "closest first" : "out of order");
  printf("a dual-stack find-node: %zu IPv4 and %zu IPv6 nodes, closest first\n", fd.v4, fd.v6);

  /* A dual-stack node's put goes out over both families: a node of either
   * family gets it. */
  value_wait_t put = {0};
  kp_keypair_t vkp;
  kp_keypair_generate(&vkp);
  KP_CHECK_OK(kp_node_put_mutable(client[2], &vkp, "dual", 4, 7, "both families", 13, NULL,
                                  on_put_done, &put));
  KP_CHECK(kp_testnet_run_until(&loop, value_done, &put, 20000));
  KP_CHECK_OK(put.status);
  for (int k = 0; k < 2; k++) {
    value_wait_t got = {0};
    KP_CHECK_OK(kp_node_get_mutable(client[k], vkp.public_key, "dual", 4, on_got, &got));
    KP_CHECK(kp_testnet_run_until(&loop, value_done, &got, 20000));
    KP_CHECK_MSG(!got.status && got.seq == 7 && !strcmp(got.value, "both families"),
                 "a %s node's get: %s", kind_name[k], kp_strerror(got.status));
  }
  printf("a dual-stack put (stored at %u nodes) is got over IPv4 and over IPv6\n", put.stored);

  static trip_t trips[KINDS][KINDS];
  for (int c = 0; c < KINDS; c++) {
    for (int s = 0; s < KINDS; s++) {
      trip_t *t = &trips[c][s];
      memset(t, 0, sizeof(*t));
      t->started_ns = uv_hrtime();
      kp_conn_callbacks_t ccb = {.on_close = on_client_close};
      KP_CHECK_OK(kp_node_connect(client[c], &ckp[c], skp[s].public_key, &ccb, on_connected, t));
      KP_CHECK(kp_testnet_run_until(&loop, trip_over, t, 30000));
      char path[KP_ADDR_STRLEN];
      kp_addr_format(&t->info.path, path, sizeof(path));
      printf("%-4s -> %-4s %s in %.1f ms, %s %s, %llu bytes echoed\n", kind_name[c], kind_name[s],
             t->status ? kp_strerror(t->status) : "connected", (double)t->connect_ns / 1e6,
             t->status ? "" : kp_punch_name(t->info.punch), t->status ? "" : path,
             (unsigned long long)t->echoed);
    }
  }
  for (int c = 0; c < KINDS; c++) {
    for (int s = 0; s < KINDS; s++) {
      trip_t *t = &trips[c][s];
      KP_CHECK_MSG(!t->status, "%s -> %s: %s", kind_name[c], kind_name[s], kp_strerror(t->status));
      KP_CHECK_EQ(t->echoed, PAYLOAD);
      KP_CHECK_EQ(t->mismatches, 0);
      bool common4 = (kind_stacks[c] & kind_stacks[s]) & KP_TESTNET_V4;
      bool common6 = (kind_stacks[c] & kind_stacks[s]) & KP_TESTNET_V6;
      if (common6) {
        /* IPv6 where both have it, dual-stack pairs included. */
        KP_CHECK_MSG(t->info.path.family == KP_AF_INET6 && t->info.punch != KP_PUNCH_RELAYED,
                     "%s -> %s", kind_name[c], kind_name[s]);
      } else if (common4) {
        KP_CHECK(t->info.path.family == KP_AF_INET && t->info.punch != KP_PUNCH_RELAYED);
      } else {
        KP_CHECK(t->info.punch == KP_PUNCH_RELAYED);
      }
      kp_stream_close(t->stream, NULL);
      kp_conn_close(t->conn, 0);
    }
  }
  kp_testnet_run_until(&loop, NULL, NULL, 200); /* the closes go out */
  KP_CHECK_EQ(strays, 0);

  quitter_t q = {0};
  kp_node_options_t qo;
  kp_node_options_init(&qo);
  qo.bind = "127.0.0.1:0";
  qo.bind_also = "[::1]:0";
  qo.bootstrap = boot;
  qo.bootstrap_count = 2;
  kp_node_t *quitter;
  KP_CHECK_OK(kp_node_create(&loop, &qo, &quitter));
  kp_node_set_data(quitter, &q);
  kp_keypair_t qkp;
  kp_keypair_generate(&qkp);
  KP_CHECK_OK(kp_node_connect(quitter, &qkp, skp[2].public_key, NULL, on_quitter_connected, &q));
  KP_CHECK(kp_testnet_run_until(&loop, quitter_closed, &q, 20000));
  kp_testnet_run_until(&loop, NULL, NULL, 100);
  KP_CHECK_EQ(q.told, 1);
  KP_CHECK_OK(q.status);
  kp_relay_counters_t rc;
  KP_CHECK_OK(kp_node_relay_counters(relay, &rc));
  printf("the relay paired %llu, forwarded %llu datagrams\n", (unsigned long long)rc.paired,
         (unsigned long long)rc.forwarded);
  KP_CHECK(rc.paired >= 2); /* v4 -> v6 and v6 -> v4 */
  for (int k = 0; k < KINDS; k++) kp_server_close(srv[k]);
  bool closed = false;
  kp_node_set_data(relay, &closed);
  kp_node_close(relay, on_relay_closed);
  KP_CHECK(kp_testnet_run_until(&loop, relay_closed, &closed, 10000));
  kp_testnet_destroy(&tn);
  kp_test_check_loop_closes(&loop);
}
