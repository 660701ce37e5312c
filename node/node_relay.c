/* kp_node's blind relays (relay/relay.h): running one on the node's own
 * socket, announcing it under the relay topic, finding relays for this
 * node's connections (explicit ones, else a lookup of that topic), and
 * reaching the network through one over TCP when UDP is blocked. */
#include <string.h>

#include "common/alloc.h"
#include "node/node_internal.h"
#include "node/node_proxy.h"
#include "relay/relay.h"
#include "relay/tunnel.h"

#define RELAY_TOPIC "kadpunch/relays/v1"
#define RELAY_TICK_MS 1000
#define DISCOVERY_EVERY_MS (10 * 60 * 1000)
#define RELAY_TCP_LINKS 256 /* peers on TCP at once (each up to 16 sockets here) */
#define RELAY_TCP_LINKS_PER_IP 16

static void relay_target(uint8_t target[KP_ID_LEN]) {
  kp_target_from_topic(RELAY_TOPIC, sizeof(RELAY_TOPIC) - 1, target);
}

/* The address a relay record names (its data, as text). */
static bool record_addr(const kp_record_t *rec, kp_addr_t *out) {
  char text[KP_ADDR_STRLEN];
  if (!rec->data || !rec->data_len || rec->data_len >= sizeof(text)) return false;
  memcpy(text, rec->data, rec->data_len);
  text[rec->data_len] = '\0';
  return !kp_addr_parse(out, text);
}

/* A relay announces the address it relays at, from that address: a record
 * that names any other would steer peers' PAIRs at someone who never
 * offered to relay (or at an attacker's relay from an address that is not
 * its own). Only what the announcer's own source address vouches for is
 * stored, so it is all a lookup can find. Proxies announce the same way
 * (node_proxy.c), under their own topic. */
bool kp__node_store_policy(void *ctx, const uint8_t target[KP_ID_LEN], const kp_record_t *rec,
                           const kp_addr_t *origin) {
  uint8_t relays[KP_ID_LEN], proxies[KP_ID_LEN];
  kp_addr_t named;
  (void)ctx;
  relay_target(relays);
  kp_target_from_topic(KP_PROXY_TOPIC, sizeof(KP_PROXY_TOPIC) - 1, proxies);
  if (memcmp(target, relays, KP_ID_LEN) && memcmp(target, proxies, KP_ID_LEN)) return true;
  return record_addr(rec, &named) && kp_addr_eq(&named, origin);
}

/* ---- Running a relay ----------------------------------------------------------- */

static void on_relay_timer(uv_timer_t *t) {
  kp_node_t *node = t->data;
  kp_relay_tick(node->relay, kp__node_now(node));
  kp__node_relay_tcp_sweep(node);
  /* Announced once a member with a settled public address. */
  if (!node->relay_announce && kp_node_is_member(node)) kp__node_relay_announce(node);
}

bool kp__node_relay_input(kp_node_t *node, const kp_addr_t *from, const uint8_t *data, size_t len) {
  kp_addr_t to, other;
  uint8_t reply[KP_RELAY_CTRL_LEN];
  switch (kp_relay_input(node->relay, from, data, len, kp__node_now(node), &to, &other, reply)) {
    case KP_RELAY_FORWARD:
      if (node->relay_tap) node->relay_tap(node->relay_tap_ctx, data, len);
      kp_udp_send(&node->sock, &to, data, len);
      return true;
    case KP_RELAY_REPLY_BOTH:
      kp_udp_send(&node->sock, &other, reply, sizeof(reply)); /* fall through */
    case KP_RELAY_REPLY: kp_udp_send(&node->sock, &to, reply, sizeof(reply)); return true;
    case KP_RELAY_DROP: return true;
    default: return false;
  }
}

int kp__node_relay_start(kp_node_t *node, const kp_node_options_t *o) {
  kp_relay_config_t cfg;
  kp_relay_config_defaults(&cfg);
  const kp_relay_limits_t *l = &o->relay_limits;
  if (l->max_sessions) cfg.max_sessions = l->max_sessions;
  if (l->session_rate) cfg.session_rate = l->session_rate;
  if (l->total_rate) cfg.total_rate = l->total_rate;
  if (l->idle_s) cfg.idle_ms = l->idle_s * 1000;
  if (l->lifetime_s) cfg.max_lifetime_ms = (uint64_t)l->lifetime_s * 1000;
  if (l->sessions_per_ip) cfg.sessions_per_ip = l->sessions_per_ip;
  if (!(node->relay_svc = kp_calloc(1, sizeof(*node->relay_svc)))) return UV_ENOMEM;
  int err = kp_relay_new(&cfg, &node->rng, &node->relay);
  if (err) return err;
  /* Forwarded streams arrive in bursts to one address and leave the same
   * way: coalesced receives, and GSO sends for the runs (udp.c). */
  kp_udp_enable_gro(&node->sock);
  uv_timer_t *timer = &node->relay_svc->timer;
  if ((err = uv_timer_init(node->loop, timer))) return err;
  timer->data = node;
  node->open_handles |= OPEN_RELAY_TIMER;
  uv_timer_start(timer, on_relay_timer, RELAY_TICK_MS, RELAY_TICK_MS);
  kp_keypair_generate(&node->relay_svc->kp);
  /* The same port over TCP, for peers whose UDP is blocked. Without it
   * the relay still serves everyone else. */
  err = kp__node_relay_tcp_start(
      node, cfg.session_rate, l->tcp_links ? l->tcp_links : RELAY_TCP_LINKS,
      l->tcp_links_per_ip ? l->tcp_links_per_ip : RELAY_TCP_LINKS_PER_IP);
  if (err) {
    char text[KP_ADDR_STRLEN];
    KP_WARN(&node->log, "relay: no TCP on %s (%s): peers whose UDP is blocked cannot use it",
            kp_addr_format(&node->sock.local, text, sizeof(text)), kp_strerror(err));
  }
  return 0;
}

/* Once the node is a member (its public address settled): tell the DHT. */
void kp__node_relay_announce(kp_node_t *node) {
  kp_addr_t pub;
  if (!node->relay || node->relay_announce || kp_node_public_addr(node, &pub)) return;
  char text[KP_ADDR_STRLEN];
  kp_addr_format(&pub, text, sizeof(text));
  uint8_t target[KP_ID_LEN];
  relay_target(target);
  int err = kp_node_announce(node, target, &node->relay_svc->kp, text, strlen(text), NULL,
                             &node->relay_announce);
  if (err) KP_WARN(&node->log, "announcing the relay: %s", kp_strerror(err));
}

int kp_node_relay_counters(const kp_node_t *node, kp_relay_counters_t *out) {
  if (!node->relay) return UV_EINVAL;
  kp_relay_stats_t st;
  kp_relay_stats(node->relay, &st);
  *out = (kp_relay_counters_t){.sessions = st.sessions,
                               .paired = st.paired,
                               .forwarded = st.forwarded,
                               .forwarded_bytes = st.forwarded_bytes,
                               .dropped_rate = st.dropped_rate,
                               .refused_full = st.refused_full,
                               .refused_attempts = st.refused_attempts,
                               .refused_ip_limit = st.refused_ip_limit,
                               .tcp_stalled = node->relay_tcp_stalled,
                               .expired = st.expired_idle + st.expired_lifetime,
                               .tcp_links = node->relay_tcp_links,
                               .tcp_refused = node->relay_tcp_refused,
                               .tcp_drops = node->relay_tcp_drops};
  return 0;
}

/* ---- Finding relays --------------------------------------------------------------- */

int kp__node_relay_set_explicit(kp_node_t *node, const char *const *relays, size_t count) {
  kp_addr_t addrs[4];
  size_t n = 0;
  for (size_t i = 0; i < count && n < 4; i++)
    if (kp_addr_parse(&addrs[n++], relays[i])) return KP_EBADADDR;
  kp_hp_set_relays(node->hp, addrs, n);
  node->relays_explicit = n > 0;
  return 0;
}

static void on_relay_record(kp_node_t *node, const kp_record_t *rec, void *arg) {
  kp_addr_t a;
  (void)arg;
  if (node->found_count >= 4 || !record_addr(rec, &a) || a.family != node->sock.local.family)
    return;
  for (size_t i = 0; i < node->found_count; i++)
    if (kp_addr_eq(&node->found_relays[i], &a)) return;
  node->found_relays[node->found_count++] = a;
}

static void on_relay_lookup(kp_node_t *node, int status, size_t found,
                            const kp_node_query_stats_t *stats, void *arg) {
  (void)found, (void)stats, (void)arg;
  node->relay_lookup = false;
  if (status || node->relays_explicit) return;
  kp_hp_set_relays(node->hp, node->found_relays, node->found_count);
  KP_INFO(&node->log, "found %zu relay(s) on the DHT", node->found_count);
}

void kp__node_relay_discover(kp_node_t *node) {
  uint64_t now = kp__node_now(node);
  if (node->relays_explicit || node->relay_lookup || node->closing) return;
  if (node->relays_found_at && now - node->relays_found_at < DISCOVERY_EVERY_MS) return;
  uint8_t target[KP_ID_LEN];
  relay_target(target);
  node->found_count = 0;
  node->relays_found_at = now;
  if (!kp_node_lookup(node, target, on_relay_record, on_relay_lookup, NULL))
    node->relay_lookup = true;
}

/* ---- Through a relay over TCP ----------------------------------------------------------- */

static void on_tunnel_down(kp_tunnel_t *t, int status, void *arg) {
  kp_node_t *node = arg;
  char text[KP_ADDR_STRLEN];
  kp_addr_format(kp_tunnel_relay(t), text, sizeof(text));
  KP_ERROR(&node->log, "the TCP connection to relay %s: %s", text,
           status == UV_EOF ? "closed by the relay" : kp_strerror(status));
}

int kp__node_tunnel_open(kp_node_t *node, const char *relay) {
  kp_addr_t addr;
  if (kp_addr_parse(&addr, relay)) return KP_EBADADDR;
  int err = kp_tunnel_new(node->loop, &addr, on_tunnel_down, node, &node->tunnel);
  if (!err) err = kp_tunnel_socket(node->tunnel, &node->sock);
  if (err && node->tunnel) {
    kp_tunnel_close(node->tunnel);
    node->tunnel = NULL;
  }
  return err;
}

void kp__node_relay_set_tunnel(kp_node_t *node) {
  kp_hp_set_relays(node->hp, kp_tunnel_relay(node->tunnel), 1);
  node->relays_explicit = true;
}
