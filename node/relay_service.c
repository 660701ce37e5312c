/* SPDX-License-Identifier: MIT */
/* A node's blind relay (relay_service.h): the state machine on the node's
 * socket, its tick, and its announcement under the relay topic. */
#include <string.h>

#include "common/alloc.h"
#include "node/relay_service_internal.h"

#define RELAY_TICK_MS 1000
#define RELAY_TCP_LINKS 256 /* peers on TCP at once (each up to 16 sockets here) */
#define RELAY_TCP_LINKS_PER_IP 16

static void on_tick(uv_timer_t *t) {
  kp_relay_service_t *svc = t->data;
  kp_relay_tick(svc->relay, kp__node_now(svc->node));
  kp__relay_tcp_sweep(svc);
  /* Announced once a member with a settled public address (each family
   * of a dual-stack relay on its own). */
  kp_relay_service_announce(svc);
}

/* The socket that reaches to: a dual-stack node's relay pairs a peer of
 * one family with a peer of the other. */
static kp_udp_t *sock_to(kp_relay_service_t *svc, const kp_addr_t *to) {
  kp_node_t *on = kp__node_of_family(svc->node, to->family);
  return on ? &on->sock : &svc->node->sock;
}

bool kp_relay_service_input(kp_relay_service_t *svc, const kp_addr_t *from, const uint8_t *data,
                            size_t len) {
  kp_node_t *node = svc->node;
  kp_addr_t to, other;
  uint8_t reply[KP_RELAY_CTRL_LEN];
  switch (kp_relay_input(svc->relay, from, data, len, kp__node_now(node), &to, &other, reply)) {
    case KP_RELAY_FORWARD:
      if (svc->tap) svc->tap(svc->tap_ctx, data, len);
      kp_udp_send(sock_to(svc, &to), &to, data, len);
      return true;
    case KP_RELAY_REPLY_BOTH:
      kp_udp_send(sock_to(svc, &other), &other, reply, sizeof(reply)); /* fall through */
    case KP_RELAY_REPLY: kp_udp_send(sock_to(svc, &to), &to, reply, sizeof(reply)); return true;
    case KP_RELAY_DROP: return true;
    default: return false;
  }
}

static void relay_config(const kp_relay_limits_t *l, kp_relay_config_t *cfg) {
  kp_relay_config_defaults(cfg);
  if (l->max_sessions) cfg->max_sessions = l->max_sessions;
  if (l->session_rate) cfg->session_rate = l->session_rate;
  if (l->total_rate) cfg->total_rate = l->total_rate;
  if (l->idle_ms) cfg->idle_ms = l->idle_ms;
  if (l->lifetime_ms) cfg->max_lifetime_ms = l->lifetime_ms;
  if (l->sessions_per_ip) cfg->sessions_per_ip = l->sessions_per_ip;
}

int kp_relay_service_create(kp_node_t *node, const kp_relay_limits_t *l, kp_relay_service_t **out) {
  *out = NULL;
  kp_relay_config_t cfg;
  relay_config(l, &cfg);
  kp_relay_service_t *svc = kp_calloc(1, sizeof(*svc));
  if (!svc) return UV_ENOMEM;
  svc->node = node;
  int err = kp_relay_new(&cfg, &node->rng, &svc->relay);
  if (!err) err = uv_timer_init(node->loop, &svc->timer);
  if (err) {
    kp_relay_free(svc->relay);
    kp_free(svc);
    return err;
  }
  svc->timer.data = svc;
  svc->handles++;
  uv_timer_start(&svc->timer, on_tick, RELAY_TICK_MS, RELAY_TICK_MS);
  kp_keypair_generate(&svc->kp);
  /* Forwarded streams arrive in bursts to one address and leave the same
   * way (GSO sends for the runs, udp.c). */
  kp__node_forwarder_socket(&node->sock);
  /* The same port over TCP, for peers whose UDP is blocked. Without it
   * the relay still serves everyone else. */
  err = kp__relay_tcp_start(svc, cfg.session_rate, l->tcp_links ? l->tcp_links : RELAY_TCP_LINKS,
                            l->tcp_links_per_ip ? l->tcp_links_per_ip : RELAY_TCP_LINKS_PER_IP);
  if (err) {
    char text[KP_ADDR_STRLEN];
    KP_WARN(&node->log, "relay: no TCP on %s (%s): peers whose UDP is blocked cannot use it",
            kp_addr_format(&node->sock.local, text, sizeof(text)), kp_strerror(err));
  }
  *out = svc;
  return 0;
}

static void announce_on(kp_relay_service_t *svc, kp_node_t *on, kp_node_t *other,
                        kp_announce_t **slot, bool *named_both) {
  uint8_t target[KP_ID_LEN];
  kp__node_relay_target(target);
  int err = kp__node_announce_addrs(on, other, target, &svc->kp, slot, named_both);
  if (err) KP_WARN(&svc->node->log, "announcing the relay: %s", kp_strerror(err));
}

void kp_relay_service_announce(kp_relay_service_t *svc) {
  if (svc->closing) return;
  kp_node_t *sib = svc->node->sibling;
  announce_on(svc, svc->node, sib, &svc->announce, &svc->named_both[0]);
  if (sib) announce_on(svc, sib, svc->node, &svc->announce_other, &svc->named_both[1]);
}

void kp_relay_service_counters(const kp_relay_service_t *svc, kp_relay_counters_t *out) {
  kp_relay_stats_t st;
  kp_relay_stats(svc->relay, &st);
  *out = (kp_relay_counters_t){.sessions = st.sessions,
                               .paired = st.paired,
                               .forwarded = st.forwarded,
                               .forwarded_bytes = st.forwarded_bytes,
                               .dropped_rate = st.dropped_rate,
                               .refused_full = st.refused_full,
                               .refused_attempts = st.refused_attempts,
                               .refused_ip_limit = st.refused_ip_limit,
                               .tcp_stalled = svc->tcp_stalled,
                               .expired = st.expired_idle + st.expired_lifetime,
                               .tcp_links = svc->tcp_links,
                               .tcp_refused = svc->tcp_refused,
                               .tcp_drops = svc->tcp_drops};
}

void kp_relay_service_set_tap(kp_relay_service_t *svc,
                              void (*tap)(void *ctx, const uint8_t *data, size_t len), void *ctx) {
  svc->tap = tap;
  svc->tap_ctx = ctx;
}

/* ---- Closing --------------------------------------------------------------------- */

void kp__relay_service_maybe_finish(kp_relay_service_t *svc) {
  if (!svc->closing || svc->handles || svc->tcp_closing) return;
  kp_relay_free(svc->relay);
  kp_keypair_wipe(&svc->kp);
  if (svc->close_cb) svc->close_cb(svc, svc->close_arg);
  kp_free(svc);
}

static void on_timer_closed(uv_handle_t *h) {
  kp_relay_service_t *svc = h->data;
  svc->handles--;
  kp__relay_service_maybe_finish(svc);
}

void kp_relay_service_close(kp_relay_service_t *svc, kp_relay_service_close_cb cb, void *arg) {
  if (svc->closing) return;
  svc->closing = true;
  svc->close_cb = cb;
  svc->close_arg = arg;
  /* A node that stays withdraws the record; a closing node's announcements
   * end with it. */
  if (svc->announce && !svc->node->closing) kp_announce_stop(svc->announce, true);
  svc->announce = NULL;
  kp_node_t *sib = svc->node->sibling;
  if (svc->announce_other && sib && !sib->closing) kp_announce_stop(svc->announce_other, true);
  svc->announce_other = NULL;
  uv_close((uv_handle_t *)&svc->timer, on_timer_closed);
  kp__relay_tcp_close(svc);
}
