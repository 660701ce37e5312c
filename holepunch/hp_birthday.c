/* SPDX-License-Identifier: MIT */
/* The birthday strategy: a RANDOM NAT against a CONSISTENT one
 * (docs/architecture.md "The birthday strategy" has the numbers).
 *
 * The random side cannot know which port its NAT will give the next
 * packet, and the consistent side's filter drops everything from a port it
 * has not sent to. So the random side opens many sockets, each sending one
 * probe to the consistent side's mapped address: every one leaves a mapping
 * on a random port of its NAT, open to exactly that address. The consistent
 * side then sprays probes at random ports of the random side's IP. One probe landing on one of
 * those mappings is enough: the socket it reaches answers, and the answer passes the consistent
 * side's filter because that side just sent to the answering port.
 *
 * With S sockets and P probes over the 64512 ports a NAT allocates from,
 * success is 1 - (1 - S/64512)^P. Both halves live in a small pool on kp_hp_t
 * (config.max_birthdays): the sockets, the probes and the bandwidth are
 * bounded per node however many connections ask.
 *
 * Neither half can wait for a proof of the address it aims at (nothing can
 * cross a port-restricted NAT and a random one before the spray does), so
 * both start only when the address a relay node reported for the peer is
 * the one the peer itself reported in its sealed messages, and each target
 * IP has a budget per minute (docs/protocol.md, "What a sender can make a
 * node send"). */
#include <sodium.h>
#include <string.h>

#include "common/alloc.h"
#include "holepunch/hp_internal.h"

#define PORT_FIRST 1024u
#define PORT_COUNT (65536u - PORT_FIRST)
#define SPRAY_TICK_MS 10

bool kp__hp_birthday_applies(kp_nat_type_t local, kp_nat_type_t remote, bool *sockets) {
  *sockets = local == KP_NAT_RANDOM && remote == KP_NAT_CONSISTENT;
  return *sockets || (local == KP_NAT_CONSISTENT && remote == KP_NAT_RANDOM);
}

static hp_bday_t *bday_slot(kp_hp_t *hp) {
  if (!hp->bday && !(hp->bday = kp_calloc(HP_MAX_BIRTHDAYS, sizeof(*hp->bday)))) return NULL;
  for (unsigned i = 0; i < HP_MAX_BIRTHDAYS && i < hp->cfg.max_birthdays; i++)
    if (!hp->bday[i].hp) return &hp->bday[i];
  return NULL;
}

/* At most birthday_probes datagrams per target IP per minute, whichever
 * half sends them and however many connections ask, unless a peer at that
 * IP proved itself since (hp_path.c refills the budget then): a peer that
 * lies about its address cannot make this node flood anyone. */
static bool target_budget(kp_hp_t *hp, const kp_addr_t *to, unsigned cost, uint64_t now) {
  if (!hp->bday_targets.slots) {
    uint8_t key[KP_RATELIMIT_KEY_LEN];
    uint64_t burst = hp->cfg.birthday_probes > hp->cfg.birthday_sockets ? hp->cfg.birthday_probes
                                                                        : hp->cfg.birthday_sockets;
    kp__hp_table_key(hp, "birthday targets", key);
    if (kp_ratelimit_init(&hp->bday_targets, HP_BDAY_TARGETS, burst / 60 + 1, burst, key))
      return false;
  }
  return kp_ratelimit_take(&hp->bday_targets, to, cost, now, NULL);
}

bool kp__hp_birthday_pool_full(kp_hp_t *hp) {
  if (bday_slot(hp)) return false;
  hp->stats.birthday_busy++;
  return true;
}

hp_bday_t *kp__hp_birthday_start(kp_hp_t *hp, bool sockets, const kp_addr_t *to, hp_path_t *path,
                                 void *sock, uint64_t at) {
  hp_bday_t *b = bday_slot(hp);
  if (!b) {
    hp->stats.birthday_busy++;
    return NULL;
  }
  /* No way to open sockets here (the simulator's plain nodes): the
   * consistent side's spray alone cannot reach a random NAT. */
  if (sockets && (!hp->io.open || !hp->cfg.birthday_sockets)) return NULL;
  if (!target_budget(hp, to, sockets ? hp->cfg.birthday_sockets : hp->cfg.birthday_probes, at)) {
    hp->stats.birthday_denied++;
    return NULL;
  }
  memset(b, 0, sizeof(*b));
  if (sockets) {
    b->socks = kp_calloc(hp->cfg.birthday_sockets, sizeof(*b->socks));
    if (!b->socks) return NULL;
  }
  b->hp = hp;
  b->sockets = sockets;
  b->to = *to;
  b->path = path;
  b->sock = sock;
  b->next_at = at;
  hp->stats.birthdays++;
  return b;
}

static void send_one(kp_hp_t *hp, hp_bday_t *b, void *sock, const kp_addr_t *to, uint64_t now) {
  kp_probe_t pr = {.flags = b->path->flags, .conn_id = b->path->remote_id};
  kp__hp_nonce(hp, b->path->local_id, to, now, pr.nonce);
  kp__hp_send_probe(hp, sock, to, &pr, b->path->key);
  b->sent++;
}

/* All sockets at once, one probe each: the mappings must exist before the
 * spray arrives, and one probe per socket is all a mapping needs (NATs
 * keep an unanswered UDP mapping for 30 s or more, beyond the punch). */
static void open_sockets(kp_hp_t *hp, hp_bday_t *b, uint64_t now) {
  while (b->sock_count < hp->cfg.birthday_sockets) {
    void *sock = hp->io.open(hp->io.sockets_ctx);
    if (!sock) break; /* out of descriptors: go with what we have */
    b->socks[b->sock_count++] = sock;
    send_one(hp, b, sock, &b->to, now);
  }
  b->next_at = UINT64_MAX;
}

static void spray(kp_hp_t *hp, hp_bday_t *b, uint64_t now) {
  unsigned per_tick = (hp->cfg.birthday_rate * SPRAY_TICK_MS + 999) / 1000;
  const kp_rng_t *rng = kp_dht_rng(hp->dht);
  for (unsigned i = 0; i < per_tick && b->sent < hp->cfg.birthday_probes; i++) {
    kp_addr_t to = b->to;
    to.port = (uint16_t)(PORT_FIRST + kp_rng_below(rng, PORT_COUNT));
    send_one(hp, b, b->sock, &to, now);
  }
  b->next_at = b->sent < hp->cfg.birthday_probes ? now + SPRAY_TICK_MS : UINT64_MAX;
}

void kp__hp_birthday_run(kp_hp_t *hp, hp_bday_t *b, uint64_t now) {
  if (b->next_at > now) return;
  if (b->sockets) {
    open_sockets(hp, b, now);
  } else {
    spray(hp, b, now);
  }
}

bool kp__hp_birthday_owns(const hp_bday_t *b, const void *sock) {
  for (unsigned i = 0; b && i < b->sock_count; i++)
    if (b->socks[i] == sock) return true;
  return false;
}

void kp__hp_birthday_end(hp_bday_t *b, void *keep) {
  kp_hp_t *hp = b->hp;
  for (unsigned i = 0; i < b->sock_count; i++)
    if (b->socks[i] != keep) hp->io.close(hp->io.sockets_ctx, b->socks[i]);
  kp_free(b->socks);
  sodium_memzero(b, sizeof(*b));
}

void kp__hp_birthdays_free(kp_hp_t *hp) {
  for (unsigned i = 0; hp->bday && i < HP_MAX_BIRTHDAYS; i++)
    if (hp->bday[i].hp) kp__hp_birthday_end(&hp->bday[i], NULL);
}
