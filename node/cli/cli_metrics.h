/* SPDX-License-Identifier: MIT */
/* --metrics ADDR:PORT: a node's counters for Prometheus, in its text
 * exposition format (version 0.0.4), over HTTP at /metrics (docs/metrics.md).
 * A small HTTP/1.x responder on the program's libuv loop: one request per
 * connection, answered and closed; bounded (16 connections at once, 8 KiB
 * request heads, 5 s to send one). Loop thread only. */
#ifndef KP_CLI_METRICS_H
#define KP_CLI_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kadpunch.h"

#define KP_CLI_METRICS_CONNS_MAX 16
#define KP_CLI_METRICS_TIMEOUT_MS 5000
#define KP_CLI_METRICS_BODY_MAX (4u << 20)

/* The exposition being written: append-only text, bounded. */
typedef struct kp_cli_text_s {
  char *buf;
  size_t len, cap;
  bool failed; /* out of memory or over KP_CLI_METRICS_BODY_MAX */
} kp_cli_text_t;

void kp_cli_text_printf(kp_cli_text_t *t, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* "# HELP name help\n# TYPE name type\n". */
void kp_cli_metric_head(kp_cli_text_t *t, const char *name, const char *type, const char *help);

/* A program's own metrics, after the node's. */
typedef void (*kp_cli_metrics_fn)(void *ctx, kp_cli_text_t *out);

/* Connect latencies (lookup, handshake and punch together), as a
 * Prometheus histogram in seconds. */
#define KP_CLI_LATENCY_BUCKETS 10
typedef struct kp_cli_latency_s {
  uint64_t counts[KP_CLI_LATENCY_BUCKETS + 1]; /* the last: past every bound (+Inf) */
  uint64_t count;
  double sum_s;
} kp_cli_latency_t;
void kp_cli_latency_add(kp_cli_latency_t *h, unsigned ms);
void kp_cli_latency_write(kp_cli_text_t *t, const char *name, const char *help,
                          const kp_cli_latency_t *h);

typedef struct kp_cli_metrics_s kp_cli_metrics_t;

/* Listens on addr ("ADDR:PORT", "PORT" for 127.0.0.1:PORT, or
 * "localhost:PORT") for node, prints "metrics on http://ADDR:PORT/metrics"
 * (the port bound), and serves until kp_cli_metrics_close. extra (may be
 * NULL) adds the program's metrics. Returns 0, or an exit code after
 * saying what went wrong (a bad address: 2; bind: 1). */
int kp_cli_metrics_start(uv_loop_t *loop, kp_node_t *node, const char *addr, const char *cmd,
                         kp_cli_metrics_fn extra, void *ctx, kp_cli_metrics_t **out);
/* Stops listening, drops the connections; memory goes once the loop has
 * closed the handles (run it). NULL is fine. */
void kp_cli_metrics_close(kp_cli_metrics_t *m);

/* The node's metrics alone (for tests and the daemon's own use). */
void kp_cli_metrics_node(kp_node_t *node, kp_cli_text_t *out);

/* A proxy's metrics (kadpunch_proxy_*: sessions, allocations, bytes,
 * refusals by reason, drops by kind), as a kp_cli_metrics_fn: ctx is the
 * kp_proxy_service_t. */
void kp_cli_metrics_proxy(void *ctx, kp_cli_text_t *out);

#endif
