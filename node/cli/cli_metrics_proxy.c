/* SPDX-License-Identifier: MIT */
/* kadpunch proxy --metrics: the proxy's own families after the node's
 * (docs/metrics.md), read from the proxy core's full counters so that
 * refusals and drops come by reason. */
#include "node/cli/cli_metrics.h"
#include "node/node_proxy.h"
#include "proxy/proxy.h"
#include "proxy/proxy_msg.h"

static void one(kp_cli_text_t *t, const char *name, const char *type, const char *help,
                uint64_t v) {
  kp_cli_metric_head(t, name, type, help);
  kp_cli_text_printf(t, "%s %llu\n", name, (unsigned long long)v);
}

static void by_label(kp_cli_text_t *t, const char *name, const char *help, const char *label,
                     const char *const *names, const uint64_t *values, size_t n) {
  kp_cli_metric_head(t, name, "counter", help);
  for (size_t i = 0; i < n; i++)
    kp_cli_text_printf(t, "%s{%s=\"%s\"} %llu\n", name, label, names[i],
                       (unsigned long long)values[i]);
}

/* Refusals, indexed by kp_proxy_reason_t (1..KP_PROXY_REASON_MAX). */
static void refusals(kp_cli_text_t *t, const kp_proxy_stats_t *s) {
  static const char *const names[KP_PROXY_REASON_MAX] = {"not_allowed", "full",    "key_limit",
                                                         "ip_limit",    "rate",    "expired",
                                                         "quota",       "version", "family"};
  by_label(t, "kadpunch_proxy_refused_total",
           "Sessions and allocations the proxy refused or ended, by reason (docs/protocol.md).",
           "reason", names, s->refused + 1, KP_PROXY_REASON_MAX);
}

static void drops(kp_cli_text_t *t, const kp_proxy_stats_t *s) {
  static const char *const names[KP_PROXY_DROP_KINDS] = {
      "scope", "unproven", "rate", "permit", "too_big", "no_alloc", "stale_token"};
  by_label(t, "kadpunch_proxy_dropped_total",
           "Datagrams an allocation was not let send or pass on, by reason.", "reason", names,
           s->drops, KP_PROXY_DROP_KINDS);
  const char *const session_names[] = {"forged", "replayed", "malformed", "unknown_session"};
  const uint64_t session_values[] = {s->forged, s->replayed, s->malformed, s->unknown_session};
  by_label(t, "kadpunch_proxy_session_dropped_total",
           "Session datagrams dropped before any forwarding, by reason.", "reason", session_names,
           session_values, 4);
}

void kp_cli_metrics_proxy(void *ctx, kp_cli_text_t *t) {
  kp_proxy_stats_t s;
  kp__proxy_service_stats(ctx, &s);
  one(t, "kadpunch_proxy_sessions", "gauge", "Peers with a session now.", s.sessions);
  one(t, "kadpunch_proxy_half_open_sessions", "gauge",
      "Sessions welcomed that have sent no DATA yet.", s.half_open);
  one(t, "kadpunch_proxy_allocations", "gauge", "Allocations (sockets) now.", s.allocs);
  one(t, "kadpunch_proxy_hellos_total", "counter", "Handshakes peers began.", s.hellos);
  one(t, "kadpunch_proxy_welcomed_total", "counter", "Sessions made.", s.welcomed);
  const char *const events[] = {"opened", "closed"};
  const uint64_t counts[] = {s.allocs_opened, s.allocs_closed};
  by_label(t, "kadpunch_proxy_allocation_events_total", "Allocations opened and closed.", "event",
           events, counts, 2);
  kp_cli_metric_head(t, "kadpunch_proxy_datagrams_total", "counter",
                     "Datagrams through allocations, by direction (out: sent for a peer).");
  kp_cli_text_printf(t, "kadpunch_proxy_datagrams_total{direction=\"out\"} %llu\n",
                     (unsigned long long)s.sent);
  kp_cli_text_printf(t, "kadpunch_proxy_datagrams_total{direction=\"in\"} %llu\n",
                     (unsigned long long)s.received);
  kp_cli_metric_head(t, "kadpunch_proxy_bytes_total", "counter",
                     "Bytes through allocations, by direction (out: sent for a peer).");
  kp_cli_text_printf(t, "kadpunch_proxy_bytes_total{direction=\"out\"} %llu\n",
                     (unsigned long long)s.sent_bytes);
  kp_cli_text_printf(t, "kadpunch_proxy_bytes_total{direction=\"in\"} %llu\n",
                     (unsigned long long)s.received_bytes);
  one(t, "kadpunch_proxy_passed_total", "counter",
      "Of those datagrams, the ones that went unsealed (PASS) to and from bound addresses.",
      s.passed);
  one(t, "kadpunch_proxy_bindings_total", "counter",
      "Tokens given to peers for addresses they talk to (BIND).", s.bindings);
  one(t, "kadpunch_proxy_left_sessions_ended_total", "counter",
      "Sessions unheard for 30 s ended for a newer session of their key at its allocation cap.",
      s.left_ended);
  one(t, "kadpunch_proxy_retransmits_total", "counter",
      "HELLOs a peer sent again, answered with the same WELCOME.", s.retransmits);
  refusals(t, &s);
  drops(t, &s);
}
