/* Upgrading a relayed connection to a direct path (holepunch.h,
 * "Upgrading"; docs/architecture.md, "Relays").
 *
 * Both peers reach the relay from a socket of their own, and the relay's
 * PAIRED told each of them both links: the NAT mappings those sockets have.
 * Behind NATs that map consistently, a mapping is the same whoever the
 * packets go to, so probes from each pairing socket to the other's link
 * open a direct path on the very sockets the connection already runs on:
 * the stream connection only has to change its peer address.
 *
 * The link is the relay's claim, so it is a hint (hp_path.c): it must be
 * the IP the peer reported itself, and it gets one probe per request the
 * peer sends through the relay (an authenticated PUNCH probe, which the
 * relay can neither forge nor replay elsewhere), answered the same way so
 * the two sides fire together. Attempts back off (0.2 s, then 1, 2, 4 ...
 * 60 s); a fresh echo of our nonce from the link proves the path. Once
 * direct, silence on the path for UPGRADE_DEAD_MS sends the connection back
 * to the relay, whose session a probe every 20 s keeps alive meanwhile. */
#include <sodium.h>
#include <string.h>

#include "common/alloc.h"
#include "holepunch/hp_internal.h"

#define UPGRADE_FIRST_MS 200    /* the peer hears PAIRED at the same time */
#define UPGRADE_BACKOFF_MS 1000 /* then 1, 2, 4 ... s between attempts */
#define UPGRADE_BACKOFF_MAX_MS 60000
#define UPGRADE_QUIET_MS 1000      /* direct and nothing heard: probe it, each second */
#define UPGRADE_DEAD_MS 4000       /* ... and after this, back to the relay */
#define UPGRADE_KEEPALIVE_MS 20000 /* through the relay while direct: it stays paired */

struct kp_hp_upgrade_s {
  kp_hp_upgrade_t *next;
  kp_hp_t *hp;
  void *sock;
  hp_path_t path;   /* candidates: the relay (proven: it answered our PAIR) and the link */
  hp_cand_t *relay; /* where the connection goes when not direct */
  hp_cand_t *link;  /* the peer's pairing socket as the relay saw it: a hint */
  hp_cand_t *direct;
  unsigned attempts; /* how far the back-off has got */
  uint64_t next_at;  /* the next attempt, or (direct) the next quiet probe */
  uint64_t heard_at; /* the direct path's last sign of life */
  uint64_t keepalive_at;
  kp_hp_path_fn fn;
  void *ctx;
};

static uint64_t backoff(unsigned attempts) {
  uint64_t ms = (uint64_t)UPGRADE_BACKOFF_MS << (attempts < 7 ? attempts : 7);
  return ms < UPGRADE_BACKOFF_MAX_MS ? ms : UPGRADE_BACKOFF_MAX_MS;
}

int kp_hp_upgrade_start(kp_hp_t *hp, const kp_hp_result_t *r, kp_hp_path_fn fn, void *ctx,
                        uint64_t now, kp_hp_upgrade_t **out) {
  *out = NULL;
  /* A client that asked for the relay to hide its address stays there;
   * two random NATs give no path to find; a link whose IP the peer did not
   * report itself is the relay's word alone, and nothing to aim at. */
  if (r->strategy != KP_PUNCH_RELAYED || !r->socket || !r->peer_link.family ||
      (r->initiator && hp->cfg.relay_only) ||
      (r->local_nat == KP_NAT_RANDOM && r->remote_nat == KP_NAT_RANDOM))
    return UV_EINVAL;
  if (!kp__hp_corroborated(&r->peer_link, r->peer_addrs, r->peer_addr_count, false)) {
    hp->stats.claims_refused++;
    return UV_EINVAL;
  }
  kp_hp_upgrade_t *u = kp_calloc(1, sizeof(*u));
  if (!u) return UV_ENOMEM;
  u->hp = hp;
  u->sock = r->socket;
  kp__hp_path_init(&u->path, r->local_id, r->remote_id, r->initiator ? KP_PROBE_FROM_CLIENT : 0,
                   r->probe_key, now);
  u->relay = kp__hp_path_hint(&u->path, &r->path, u->sock, 0);
  u->link = kp__hp_path_hint(&u->path, &r->peer_link, u->sock, 1);
  u->relay->proven = true;
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

static void go_direct(kp_hp_upgrade_t *u, hp_cand_t *c, uint64_t now) {
  u->heard_at = now;
  if (u->direct == c) return;
  if (!u->direct) u->hp->stats.upgrades++;
  u->direct = c;
  u->keepalive_at = now + UPGRADE_KEEPALIVE_MS;
  u->next_at = now + UPGRADE_QUIET_MS;
  u->fn(u->ctx, &c->addr, true);
}

static void back_to_relay(kp_hp_upgrade_t *u, uint64_t now) {
  /* The old direct address must prove itself again to be used again. */
  u->direct->proven = false;
  u->direct->hints = 0;
  u->direct = NULL;
  u->hp->stats.upgrade_fallbacks++;
  u->next_at = now + backoff(u->attempts++);
  u->fn(u->ctx, &u->relay->addr, false);
}

/* One attempt: our hint to the link, in step with the peer's. */
static void probe_link(kp_hp_upgrade_t *u, uint64_t now) {
  if (u->direct || u->link->proven) return;
  /* A hint's budget is per punch; here it is per request from the peer. */
  u->link->hints = 0;
  kp__hp_path_hints(u->hp, &u->path, now);
}

/* A probe on the upgrade's socket: from the peer's link (or wherever its
 * NAT now maps it), or through the relay. */
bool kp__hp_upgrade_probe(kp_hp_upgrade_t *u, const kp_addr_t *from, const uint8_t *data,
                          size_t len, uint64_t now) {
  bool ok, via_relay = kp_addr_eq(from, &u->relay->addr);
  uint64_t conn_id;
  uint8_t flags = 0;
  kp_probe_peek(data, len, &conn_id, &flags);
  hp_cand_t *proved = kp__hp_path_input(u->hp, &u->path, u->sock, from, data, len, now, &ok);
  if (!ok) return false;
  if (via_relay) {
    /* The peer asks us to probe its link now (and, through its answer,
     * we ask it). Paid for by its datagram; the relay cannot make one. */
    if (flags & KP_PROBE_PUNCH) probe_link(u, now);
    return true;
  }
  hp_cand_t *c = proved ? proved : NULL;
  for (unsigned i = 0; !c && i < u->path.count; i++)
    if (u->path.cand[i].proven && kp_addr_eq(&u->path.cand[i].addr, from)) c = &u->path.cand[i];
  /* Heard on the direct path: alive. A newly proven address (the first,
   * or the peer's NAT rebound) moves the connection there. */
  if (c && c != u->relay) go_direct(u, c, now);
  return true;
}

static uint64_t upgrade_deadline(const kp_hp_upgrade_t *u) {
  uint64_t pd = kp__hp_path_deadline(&u->path);
  if (!u->direct) return u->next_at < pd ? u->next_at : pd;
  /* The quiet probe is due once both a second of silence and its own
   * pacing have passed. */
  uint64_t quiet = u->heard_at + UPGRADE_QUIET_MS, d = u->heard_at + UPGRADE_DEAD_MS;
  if (quiet < u->next_at) quiet = u->next_at;
  if (quiet < d) d = quiet;
  if (pd < d) d = pd;
  return u->keepalive_at < d ? u->keepalive_at : d;
}

static void upgrade_tick(kp_hp_upgrade_t *u, uint64_t now) {
  kp__hp_path_keep(u->hp, &u->path, now);
  if (!u->direct) {
    if (u->next_at > now) return;
    /* Ask the peer to fire at our link; it answers, asking us to fire. */
    kp__hp_path_probe(u->hp, &u->path, u->relay, KP_PROBE_PUNCH, now);
    u->next_at = now + backoff(u->attempts++);
    return;
  }
  if (now >= u->heard_at + UPGRADE_DEAD_MS) {
    back_to_relay(u, now);
    return;
  }
  if (now >= u->heard_at + UPGRADE_QUIET_MS && now >= u->next_at) {
    kp__hp_path_probe(u->hp, &u->path, u->direct, 0, now);
    u->next_at = now + UPGRADE_QUIET_MS;
  }
  if (now >= u->keepalive_at) {
    kp__hp_path_probe(u->hp, &u->path, u->relay, 0, now);
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
