/* SPDX-License-Identifier: MIT */
/* --metrics: the exposition (docs/metrics.md) and the HTTP responder that
 * serves it (cli_metrics.h). Why our own responder: the Debian libraries
 * that serve HTTP (libmicrohttpd, for one) run their own threads or their
 * own select loop; here everything runs on the program's one libuv loop,
 * and a request needs nothing but its first line (cli_http.c, fuzzed). */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common/addr.h"
#include "dht/dht_store.h"
#include "node/cli/cli.h"
#include "node/cli/cli_http.h"
#include "node/cli/cli_metrics.h"
#include "node/node_internal.h"

/* ---- Text ----------------------------------------------------------------------------- */

void kp_cli_text_printf(kp_cli_text_t *t, const char *fmt, ...) {
  if (t->failed) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->buf ? t->buf + t->len : NULL, t->buf ? t->cap - t->len : 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
      t->failed = true;
      return;
    }
    if (t->buf && t->len + (size_t)n < t->cap) {
      t->len += (size_t)n;
      return;
    }
    size_t want = t->cap ? t->cap * 2 : 16384;
    while (want < t->len + (size_t)n + 1) want *= 2;
    char *grown = want <= KP_CLI_METRICS_BODY_MAX ? realloc(t->buf, want) : NULL;
    if (!grown) {
      t->failed = true;
      return;
    }
    t->buf = grown;
    t->cap = want;
  }
}

void kp_cli_metric_head(kp_cli_text_t *t, const char *name, const char *type, const char *help) {
  kp_cli_text_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Upper bounds in ms: a LAN connect takes a few, a punch up to a second or
 * two, a relayed one up to the handshake's and the punch's timeouts. */
static const unsigned latency_bounds_ms[KP_CLI_LATENCY_BUCKETS] = {5,   10,  25,   50,   100,
                                                                   250, 500, 1000, 2500, 10000};

void kp_cli_latency_add(kp_cli_latency_t *h, unsigned ms) {
  size_t i = 0;
  while (i < KP_CLI_LATENCY_BUCKETS && ms > latency_bounds_ms[i]) i++;
  h->counts[i]++;
  h->count++;
  h->sum_s += ms / 1000.0;
}

void kp_cli_latency_write(kp_cli_text_t *t, const char *name, const char *help,
                          const kp_cli_latency_t *h) {
  kp_cli_metric_head(t, name, "histogram", help);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < KP_CLI_LATENCY_BUCKETS; i++) {
    cumulative += h->counts[i];
    kp_cli_text_printf(t, "%s_bucket{le=\"%g\"} %llu\n", name, latency_bounds_ms[i] / 1000.0,
                       (unsigned long long)cumulative);
  }
  kp_cli_text_printf(t, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.3f\n%s_count %llu\n", name,
                     (unsigned long long)h->count, name, h->sum_s, name,
                     (unsigned long long)h->count);
}

/* ---- The node's metrics ----------------------------------------------------------------- */

static void counter(kp_cli_text_t *t, const char *name, const char *help, uint64_t v) {
  kp_cli_metric_head(t, name, "counter", help);
  kp_cli_text_printf(t, "%s %llu\n", name, (unsigned long long)v);
}

static void gauge(kp_cli_text_t *t, const char *name, const char *help, uint64_t v) {
  kp_cli_metric_head(t, name, "gauge", help);
  kp_cli_text_printf(t, "%s %llu\n", name, (unsigned long long)v);
}

static void dht_metrics(const kp_node_stats_t *s, kp_cli_text_t *t) {
  kp_cli_metric_head(t, "kadpunch_datagrams_total", "counter",
                     "UDP datagrams through the node's socket, by direction.");
  kp_cli_text_printf(t, "kadpunch_datagrams_total{direction=\"in\"} %llu\n",
                     (unsigned long long)s->packets_in);
  kp_cli_text_printf(t, "kadpunch_datagrams_total{direction=\"out\"} %llu\n",
                     (unsigned long long)s->packets_out);
  kp_cli_metric_head(t, "kadpunch_datagram_bytes_total", "counter",
                     "Bytes of UDP datagrams through the node's socket, by direction.");
  kp_cli_text_printf(t, "kadpunch_datagram_bytes_total{direction=\"in\"} %llu\n",
                     (unsigned long long)s->bytes_in);
  kp_cli_text_printf(t, "kadpunch_datagram_bytes_total{direction=\"out\"} %llu\n",
                     (unsigned long long)s->bytes_out);
  const struct {
    const char *reason;
    uint64_t v;
  } drops[] = {{"malformed", s->drops_malformed}, {"truncated", s->drops_truncated},
               {"too_big", s->drops_too_big},     {"version", s->drops_version},
               {"field", s->drops_field},         {"command", s->drops_command},
               {"bad_id", s->drops_bad_id},       {"unmatched", s->drops_unmatched},
               {"rate", s->drops_rate},           {"send", s->drops_send},
               {"other", s->drops_other}};
  kp_cli_metric_head(t, "kadpunch_drops_total", "counter",
                     "Datagrams dropped, by reason (docs/protocol.md).");
  for (size_t i = 0; i < sizeof(drops) / sizeof(drops[0]); i++)
    kp_cli_text_printf(t, "kadpunch_drops_total{reason=\"%s\"} %llu\n", drops[i].reason,
                       (unsigned long long)drops[i].v);
  kp_cli_metric_head(t, "kadpunch_dht_requests_total", "counter",
                     "DHT requests received and sent.");
  kp_cli_text_printf(t, "kadpunch_dht_requests_total{direction=\"in\"} %llu\n",
                     (unsigned long long)s->requests_in);
  kp_cli_text_printf(t, "kadpunch_dht_requests_total{direction=\"out\"} %llu\n",
                     (unsigned long long)s->requests_out);
  counter(t, "kadpunch_dht_responses_total", "DHT responses received.", s->responses_in);
  counter(t, "kadpunch_dht_timeouts_total", "DHT requests that got no answer.", s->timeouts);
  gauge(t, "kadpunch_dht_routing_table_nodes", "Nodes in the routing table.", s->table_size);
  gauge(t, "kadpunch_dht_inflight_requests", "DHT requests awaiting an answer.", s->inflight);
  gauge(t, "kadpunch_rx_held_bytes", "Received bytes the node's connections hold.", s->rx_held);
}

static void store_metrics(kp_node_t *node, kp_cli_text_t *t) {
  kp_dht_store_stats_t st;
  kp_dht_store_stats(kp_dht_swarm_store(node->swarm), &st);
  gauge(t, "kadpunch_store_records", "Records the node stores for others.", st.records);
  gauge(t, "kadpunch_store_bytes", "Memory the stored records take.", st.bytes);
  kp_cli_metric_head(t, "kadpunch_store_events_total", "counter",
                     "Records stored, expired, evicted (quota) and refused (no room).");
  const char *names[] = {"stored", "expired", "evicted", "refused"};
  uint64_t values[] = {st.stored, st.expired, st.evicted, st.refused};
  for (size_t i = 0; i < 4; i++)
    kp_cli_text_printf(t, "kadpunch_store_events_total{event=\"%s\"} %llu\n", names[i],
                       (unsigned long long)values[i]);
}

static void relay_metrics(kp_node_t *node, kp_cli_text_t *t) {
  kp_relay_counters_t r;
  if (kp_node_relay_counters(node, &r)) return; /* not a relay */
  gauge(t, "kadpunch_relay_sessions", "Relayed connections now.", r.sessions);
  gauge(t, "kadpunch_relay_tcp_links", "Peers on the relay's TCP port now.", r.tcp_links);
  counter(t, "kadpunch_relay_paired_total", "Relayed connections paired.", r.paired);
  counter(t, "kadpunch_relay_forwarded_datagrams_total", "Datagrams the relay forwarded.",
          r.forwarded);
  counter(t, "kadpunch_relay_forwarded_bytes_total", "Bytes the relay forwarded.",
          r.forwarded_bytes);
  counter(t, "kadpunch_relay_expired_total",
          "Relayed connections ended by the idle or life limits.", r.expired);
  kp_cli_metric_head(t, "kadpunch_relay_refused_total", "counter",
                     "What the relay refused or dropped, by reason.");
  const char *names[] = {"full",      "attempts", "ip_limit",   "rate",
                         "tcp_limit", "tcp_drop", "tcp_stalled"};
  uint64_t values[] = {r.refused_full, r.refused_attempts, r.refused_ip_limit, r.dropped_rate,
                       r.tcp_refused,  r.tcp_drops,        r.tcp_stalled};
  for (size_t i = 0; i < 7; i++)
    kp_cli_text_printf(t, "kadpunch_relay_refused_total{reason=\"%s\"} %llu\n", names[i],
                       (unsigned long long)values[i]);
}

/* A node through proxies: whether its session is up (and over TCP), and whether it
 * speaks from its own sockets because every proxy went silent. */
static void proxy_link_metrics(const kp_node_t *node, kp_cli_text_t *t) {
  kp_node_proxy_info_t p;
  kp_node_proxy_info(node, &p);
  if (!p.proxied) return;
  kp_cli_metric_head(t, "kadpunch_proxy_link_up", "gauge",
                     "Whether the session with the proxy in use is up.");
  kp_cli_text_printf(t, "kadpunch_proxy_link_up %d\n", p.up);
  kp_cli_metric_head(t, "kadpunch_proxy_link_tcp", "gauge",
                     "Whether the session runs over TCP (asked for, or UDP never answered).");
  kp_cli_text_printf(t, "kadpunch_proxy_link_tcp %d\n", p.tcp);
  kp_cli_metric_head(t, "kadpunch_proxy_link_own", "gauge",
                     "Whether every proxy went silent and the node speaks from its own sockets.");
  kp_cli_text_printf(t, "kadpunch_proxy_link_own %d\n", p.on_own);
  kp_cli_metric_head(t, "kadpunch_proxy_link_falls_total", "counter",
                     "Times every proxy went silent and the node fell back on its own sockets.");
  kp_cli_text_printf(t, "kadpunch_proxy_link_falls_total %u\n", p.falls);
  kp_cli_metric_head(t, "kadpunch_proxy_link_trials_total", "counter",
                     "Sessions tried with the proxy over the other transport, by that transport.");
  kp_cli_text_printf(t, "kadpunch_proxy_link_trials_total{over=\"udp\"} %u\n", p.udp_trials);
  kp_cli_text_printf(t, "kadpunch_proxy_link_trials_total{over=\"tcp\"} %u\n", p.tcp_trials);
  kp_cli_metric_head(t, "kadpunch_proxy_link_moves_total", "counter",
                     "Trials the proxy welcomed, the link moving onto their transport.");
  kp_cli_text_printf(t, "kadpunch_proxy_link_moves_total{to=\"udp\"} %u\n", p.moves_to_udp);
  kp_cli_text_printf(t, "kadpunch_proxy_link_moves_total{to=\"tcp\"} %u\n", p.moves_to_tcp);
}

void kp_cli_metrics_node(kp_node_t *node, kp_cli_text_t *out) {
  kp_node_stats_t s;
  kp_node_stats(node, &s);
  kp_cli_metric_head(out, "kadpunch_info", "gauge", "The program's version (always 1).");
  kp_cli_text_printf(out, "kadpunch_info{version=\"%s\"} 1\n", kp_version_string());
  dht_metrics(&s, out);
  store_metrics(node, out);
  relay_metrics(node, out);
  proxy_link_metrics(node, out);
}
