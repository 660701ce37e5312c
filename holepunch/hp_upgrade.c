/* Upgrading a relayed connection to a direct path (holepunch.h,
 * "Upgrading"; docs/architecture.md, "Relays").
 *
 * Both peers reach the relay from a socket of their own, and the relay's
 * PAIRED told each of them both links: the NAT mappings those sockets have.
 * Behind NATs that map consistently, a mapping is the same whoever the
 * packets go to, so probes from each pairing socket to the other's link
 * open a direct path on the very sockets the connection already runs on:
 * the stream connection only has to change its peer address. Attempts
 * back off (0.2 s, then 1, 2, 4 ... 60 s); the first authenticated probe
 * from the peer proves the path. Once direct, silence on the path for
 * UPGRADE_DEAD_MS sends the connection back to the relay, whose session
 * a probe every 20 s keeps alive meanwhile. */
#include <sodium.h>
#include <string.h>

#include "common/alloc.h"
#include "holepunch/hp_internal.h"

#define UPGRADE_FIRST_MS 200    /* the peer hears PAIRED at the same time */
#define UPGRADE_BACKOFF_MS 1000 /* then 1, 2, 4 ... s between attempts */
#define UPGRADE_BACKOFF_MAX_MS 60000
#define UPGRADE_BURST 3            /* probes per attempt ... */
#define UPGRADE_BURST_GAP_MS 50    /* ... this far apart */
#define UPGRADE_QUIET_MS 1000      /* direct and nothing heard: probe it, each second */
#define UPGRADE_DEAD_MS 4000       /* ... and after this, back to the relay */
#define UPGRADE_KEEPALIVE_MS 20000 /* through the relay while direct: it stays paired */
#define UPGRADE_ANSWERS 8          /* answered probes per second: no reflection */
#define UPGRADE_SEQ_WINDOW 16      /* an answer counts for one of our last 16 probes */

struct kp_hp_upgrade_s {
  kp_hp_upgrade_t *next;
  kp_hp_t *hp;
  void *sock;
  kp_addr_t relay; /* where the connection goes when not direct */
  kp_addr_t link;  /* the peer's pairing socket as the relay saw it */
  kp_addr_t direct;
  bool is_direct;
  uint64_t local_id, remote_id;
  uint8_t flags; /* ours: KP_PROBE_FROM_CLIENT or 0 */
  uint8_t key[32];
  unsigned attempts; /* how far the back-off has got */
  unsigned burst;    /* probes left in this attempt */
  uint64_t next_at;  /* the next probe: of an attempt, or of a quiet direct path */
  uint64_t heard_at; /* the direct path's last sign of life */
  uint64_t keepalive_at;
  uint64_t answer_second;
  unsigned answers;
  uint32_t seq; /* of our next probe */
  uint32_t last_answered;
  bool answered_any;
  kp_hp_path_fn fn;
  void *ctx;
};

static uint64_t backoff(unsigned attempts) {
  uint64_t ms = (uint64_t)UPGRADE_BACKOFF_MS << (attempts < 7 ? attempts : 7);
  return ms < UPGRADE_BACKOFF_MAX_MS ? ms : UPGRADE_BACKOFF_MAX_MS;
}

static void send_probe(kp_hp_upgrade_t *u, const kp_addr_t *to, uint8_t flags, uint32_t seq) {
  kp__hp_send_probe(u->hp, u->sock, to, u->remote_id, u->flags | flags, seq, u->key);
}

int kp_hp_upgrade_start(kp_hp_t *hp, const kp_hp_result_t *r, kp_hp_path_fn fn, void *ctx,
                        uint64_t now, kp_hp_upgrade_t **out) {
  *out = NULL;
  /* A client that asked for the relay to hide its address stays there;
   * two random NATs give no path to find. */
  if (r->strategy != KP_PUNCH_RELAYED || !r->socket || !r->peer_link.family ||
      (r->initiator && hp->cfg.relay_only) ||
      (r->local_nat == KP_NAT_RANDOM && r->remote_nat == KP_NAT_RANDOM))
    return UV_EINVAL;
  kp_hp_upgrade_t *u = kp_calloc(1, sizeof(*u));
  if (!u) return UV_ENOMEM;
  u->hp = hp;
  u->sock = r->socket;
  u->relay = r->path;
  u->link = r->peer_link;
  u->local_id = r->local_id;
  u->remote_id = r->remote_id;
  u->flags = r->initiator ? KP_PROBE_FROM_CLIENT : 0;
  memcpy(u->key, r->probe_key, 32);
  u->burst = UPGRADE_BURST;
  u->next_at = now + UPGRADE_FIRST_MS;
  u->fn = fn;
  u->ctx = ctx;
  u->next = hp->upgrades;
  hp->upgrades = u;
  *out = u;
  return 0;
}

void kp_hp_upgrade_stop(kp_hp_upgrade_t *u) {
  if (!u) return;
  for (kp_hp_upgrade_t **p = &u->hp->upgrades; *p; p = &(*p)->next) {
    if (*p == u) {
      *p = u->next;
      break;
    }
  }
  sodium_memzero(u, sizeof(*u));
  kp_free(u);
}

static void go_direct(kp_hp_upgrade_t *u, const kp_addr_t *path, uint64_t now) {
  bool moved = !u->is_direct || !kp_addr_eq(path, &u->direct);
  u->heard_at = now;
  if (!moved) return;
  if (!u->is_direct) u->hp->stats.upgrades++;
  u->is_direct = true;
  u->direct = *path;
  u->keepalive_at = now + UPGRADE_KEEPALIVE_MS;
  u->fn(u->ctx, path, true);
}

static void back_to_relay(kp_hp_upgrade_t *u, uint64_t now) {
  u->is_direct = false;
  u->hp->stats.upgrade_fallbacks++;
  u->burst = UPGRADE_BURST;
  u->next_at = now + backoff(u->attempts++);
  u->fn(u->ctx, &u->relay, false);
}

/* A probe on the upgrade's socket: from the peer's link (or wherever its
 * NAT now maps it), or through the relay (a keepalive). */
bool kp__hp_upgrade_probe(kp_hp_upgrade_t *u, const kp_addr_t *from, const kp_probe_t *p,
                          const uint8_t *data, size_t len, uint64_t now) {
  if (p->conn_id != u->local_id || (p->flags & KP_PROBE_FROM_CLIENT) == u->flags ||
      !kp_probe_verify(data, len, u->key))
    return false;
  if (!(p->flags & KP_PROBE_ANSWER)) {
    if (u->answer_second != now / 1000) u->answer_second = now / 1000, u->answers = 0;
    if (u->answers++ < UPGRADE_ANSWERS) send_probe(u, from, KP_PROBE_ANSWER, p->seq);
    return true;
  }
  /* Only an answer to one of our latest probes proves a path, and each
   * once: a probe or answer replayed from elsewhere (the relay saw some)
   * moves nothing. */
  bool fresh = p->seq < u->seq && u->seq - p->seq <= UPGRADE_SEQ_WINDOW &&
               (!u->answered_any || p->seq > u->last_answered);
  if (!fresh || kp_addr_eq(from, &u->relay)) return true;
  u->answered_any = true;
  u->last_answered = p->seq;
  go_direct(u, from, now);
  return true;
}

static uint64_t upgrade_deadline(const kp_hp_upgrade_t *u) {
  if (!u->is_direct) return u->next_at;
  uint64_t d = u->heard_at + UPGRADE_DEAD_MS;
  uint64_t quiet = u->heard_at + UPGRADE_QUIET_MS;
  if (quiet < u->next_at) quiet = u->next_at;
  if (quiet < d) d = quiet;
  return u->keepalive_at < d ? u->keepalive_at : d;
}

static void upgrade_tick(kp_hp_upgrade_t *u, uint64_t now) {
  if (!u->is_direct) {
    if (u->next_at > now) return;
    send_probe(u, &u->link, 0, u->seq++);
    if (--u->burst) {
      u->next_at = now + UPGRADE_BURST_GAP_MS;
    } else {
      u->burst = UPGRADE_BURST;
      u->next_at = now + backoff(u->attempts++);
    }
    return;
  }
  if (now >= u->heard_at + UPGRADE_DEAD_MS) {
    back_to_relay(u, now);
    return;
  }
  if (now >= u->heard_at + UPGRADE_QUIET_MS && now >= u->next_at) {
    send_probe(u, &u->direct, 0, u->seq++);
    u->next_at = now + UPGRADE_QUIET_MS;
  }
  if (now >= u->keepalive_at) {
    send_probe(u, &u->relay, 0, u->seq++);
    u->keepalive_at = now + UPGRADE_KEEPALIVE_MS;
  }
}

kp_hp_upgrade_t *kp__hp_upgrade_on(kp_hp_t *hp, const void *sock) {
  for (kp_hp_upgrade_t *u = hp->upgrades; u; u = u->next)
    if (u->sock == sock) return u;
  return NULL;
}

uint64_t kp__hp_upgrades_deadline(kp_hp_t *hp) {
  uint64_t d = UINT64_MAX;
  for (kp_hp_upgrade_t *u = hp->upgrades; u; u = u->next) {
    uint64_t ud = upgrade_deadline(u);
    if (ud < d) d = ud;
  }
  return d;
}

void kp__hp_upgrades_tick(kp_hp_t *hp, uint64_t now) {
  /* A callback may stop its own upgrade: take the next one first. */
  for (kp_hp_upgrade_t *u = hp->upgrades, *next; u; u = next) {
    next = u->next;
    upgrade_tick(u, now);
  }
}

void kp__hp_upgrades_free(kp_hp_t *hp) {
  while (hp->upgrades) kp_hp_upgrade_stop(hp->upgrades);
}
