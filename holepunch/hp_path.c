/* SPDX-License-Identifier: MIT */
/* Paths: the probes of a punch, the proofs they carry, and the rule that
 * nobody is sent more than a hint's worth of probes before it proved its
 * address (hp_internal.h, "Paths"; docs/protocol.md, "Probes").
 *
 * A probe carries a nonce bound to where it is sent. An authenticated probe
 * that comes back from that address echoing the nonce proves the address:
 * it took the probe key (only the two peers hold it, from the chaining
 * key) and a socket that receives there. A claimed address, whoever
 * claims it, gets one probe per round the peer pays for, up to a small
 * budget; what arrives gets one answer, of the same size, per datagram. */
#include <sodium.h>
#include <string.h>

#include "holepunch/hp_internal.h"

/* The after-proof schedule (ms from the proof): dense at first, then
 * sparse to the end of the linger, so one of them gets through even on a
 * lossy path. */
static const uint16_t keep_ms[] = {0,   10,  30,  60,   100,  150,  250,
                                   400, 600, 900, 1300, 1800, 2500, 3500};
#define KEEP_LEN (sizeof(keep_ms) / sizeof(keep_ms[0]))

static const uint8_t zero_nonce[KP_PROBE_NONCE_LEN];

void kp__hp_nonce(kp_hp_t *hp, uint64_t local_id, const kp_addr_t *to, uint64_t now,
                  uint8_t out[KP_PROBE_NONCE_LEN]) {
  uint8_t msg[8 + KP_ADDR_COMPACT_MAX + 8];
  uint64_t epoch = now / HP_PROBE_EPOCH_MS;
  for (int i = 0; i < 8; i++) msg[i] = (uint8_t)(local_id >> (8 * (7 - i)));
  size_t n = 8 + kp_addr_encode_compact(to, msg + 8);
  for (int i = 0; i < 8; i++) msg[n++] = (uint8_t)(epoch >> (8 * (7 - i)));
  crypto_generichash(out, KP_PROBE_NONCE_LEN, msg, n, hp->secret, sizeof(hp->secret));
  /* All zeros means "no echo": never a nonce. */
  if (!sodium_memcmp(out, zero_nonce, KP_PROBE_NONCE_LEN)) out[0] = 1;
}

/* Whether echo is a nonce we sent to from, in this epoch or the last. */
static bool nonce_ok(kp_hp_t *hp, uint64_t local_id, const kp_addr_t *from, const uint8_t *echo,
                     uint64_t now) {
  uint8_t n[KP_PROBE_NONCE_LEN];
  for (int back = 0; back < 2; back++) {
    if (now < (uint64_t)back * HP_PROBE_EPOCH_MS) break;
    kp__hp_nonce(hp, local_id, from, now - (uint64_t)back * HP_PROBE_EPOCH_MS, n);
    if (!sodium_memcmp(n, echo, KP_PROBE_NONCE_LEN)) return true;
  }
  return false;
}

void kp__hp_send_probe(kp_hp_t *hp, void *sock, const kp_addr_t *to, const kp_probe_t *p,
                       const uint8_t key[32]) {
  uint8_t pkt[KP_PROBE_LEN];
  kp_probe_encode(p, key, pkt);
  if (sock) {
    hp->io.send_from(hp->io.sockets_ctx, sock, to, pkt, sizeof(pkt));
  } else {
    hp->io.send(hp->io.ctx, to, pkt, sizeof(pkt));
  }
  hp->stats.probes_sent++;
}

void kp__hp_path_init(hp_path_t *p, uint64_t local_id, uint64_t remote_id, uint8_t flags,
                      const uint8_t key[32], uint64_t now) {
  memset(p, 0, sizeof(*p));
  p->local_id = local_id;
  p->remote_id = remote_id;
  p->flags = flags;
  memcpy(p->key, key, 32);
  p->best = -1;
  p->keep_next = UINT64_MAX;
  kp_bucket_init(&p->answers, HP_ANSWER_BURST, now);
}

hp_cand_t *kp__hp_path_find(hp_path_t *p, const kp_addr_t *addr, const void *sock) {
  for (unsigned i = 0; i < p->count; i++)
    if (p->cand[i].sock == sock && kp_addr_eq(&p->cand[i].addr, addr)) return &p->cand[i];
  return NULL;
}

/* A free slot: one a closed socket's candidate left, a new one, or the
 * stalest that proves nothing. Every rebinding leaves addresses behind (the
 * old mappings, a birthday's sockets); a table full of them must not keep
 * the peer's newest mapping from being proven, or a connection whose NAT
 * forgets its mappings a few times can never move again. Addresses that
 * were only heard from go before the ones a claim named. */
static hp_cand_t *free_slot(hp_path_t *p) {
  for (unsigned i = 0; i < p->count; i++)
    if (!p->cand[i].addr.family) return &p->cand[i];
  if (p->count < HP_PATH_CANDIDATES) return &p->cand[p->count++];
  hp_cand_t *victim = NULL;
  for (unsigned i = 0; i < p->count; i++) {
    hp_cand_t *c = &p->cand[i];
    if (c->proven || c->held || p->best == (int)i) continue;
    bool claimed = c->budget > 0, victim_claimed = victim && victim->budget > 0;
    if (!victim || (!claimed && victim_claimed) ||
        (claimed == victim_claimed && (int32_t)(c->used - victim->used) < 0))
      victim = c;
  }
  return victim;
}

static void touch(hp_path_t *p, hp_cand_t *c) {
  c->used = ++p->uses;
}

hp_cand_t *kp__hp_path_hint(hp_path_t *p, const kp_addr_t *addr, void *sock, unsigned budget) {
  hp_cand_t *c = kp__hp_path_find(p, addr, sock);
  if (budget > HP_HINTS_PER_ADDR) budget = HP_HINTS_PER_ADDR;
  if (!c && addr->family && addr->port && (c = free_slot(p))) {
    memset(c, 0, sizeof(*c));
    c->addr = *addr;
    c->sock = sock;
  }
  if (!c) return NULL;
  if (budget > c->budget) c->budget = (uint8_t)budget;
  touch(p, c);
  return c;
}

hp_cand_t *kp__hp_path_hint_round(hp_path_t *p, const kp_addr_t *addr, void *sock,
                                  unsigned budget) {
  hp_cand_t *c = kp__hp_path_hint(p, addr, sock, budget);
  if (c && !c->proven && c->budget && c->hints >= c->budget) c->hints = (uint8_t)(c->budget - 1);
  return c;
}

void kp__hp_path_forget_sock(hp_path_t *p, const void *sock) {
  if (!sock) return; /* the main socket is never closed under us */
  for (unsigned i = 0; i < p->count; i++) {
    hp_cand_t *c = &p->cand[i];
    if (c->sock != sock || !c->addr.family) continue;
    memset(c, 0, sizeof(*c)); /* address family 0: a free slot no address matches */
    if (p->best == (int)i) {
      p->best = -1;
      p->keep_next = UINT64_MAX;
    }
  }
}

hp_cand_t *kp__hp_path_best(hp_path_t *p) {
  return p->best < 0 ? NULL : &p->cand[p->best];
}

static void send_to(kp_hp_t *hp, hp_path_t *p, hp_cand_t *c, uint8_t flags, const uint8_t *echo,
                    uint64_t now) {
  kp_probe_t pr = {.flags = p->flags | flags | kp_probe_nat_flags(kp_dht_nat(hp->dht)->type),
                   .conn_id = p->remote_id};
  kp__hp_nonce(hp, p->local_id, &c->addr, now, pr.nonce);
  if (echo) {
    memcpy(pr.echo, echo, KP_PROBE_NONCE_LEN);
    pr.has_observed = true;
    pr.observed = c->addr;
  }
  kp__hp_send_probe(hp, c->sock, &c->addr, &pr, p->key);
  p->sent++;
}

void kp__hp_path_probe(kp_hp_t *hp, hp_path_t *p, hp_cand_t *c, uint8_t extra_flags, uint64_t now) {
  send_to(hp, p, c, extra_flags, c->has_echo ? c->echo : NULL, now);
}

void kp__hp_path_probe_own(kp_hp_t *hp, hp_path_t *p, hp_cand_t *c, const kp_addr_t *own,
                           uint64_t now) {
  /* No echo: the observed field is ours to fill, and the path it goes on
   * is proven already. */
  kp_probe_t pr = {.flags = p->flags | KP_PROBE_PUNCH | KP_PROBE_OWN_ADDR,
                   .conn_id = p->remote_id,
                   .has_observed = true,
                   .observed = *own};
  kp__hp_nonce(hp, p->local_id, &c->addr, now, pr.nonce);
  kp__hp_send_probe(hp, c->sock, &c->addr, &pr, p->key);
  p->sent++;
}

void kp__hp_path_hints(kp_hp_t *hp, hp_path_t *p, uint64_t now) {
  for (unsigned i = 0; i < p->count; i++) {
    hp_cand_t *c = &p->cand[i];
    if (c->proven || c->hints >= c->budget) continue;
    c->hints++;
    hp->stats.probes_unproven++;
    kp__hp_path_probe(hp, p, c, 0, now);
  }
}

/* The peer says where it saw our probe come from. A relay node that
 * forwards probes between the two peers (claiming its own address for
 * each, as a NAT would) is caught here: the peer saw the relay node's
 * address, not ours. Only public addresses are compared, and only when
 * our DHT contacts agree on ours (on a proxied node's own socket, on that
 * socket's). */
static bool observed_ok(kp_hp_t *hp, const void *sock, const kp_probe_t *pr) {
  if (!pr->has_observed || (pr->flags & KP_PROBE_OWN_ADDR)) return false;
  const kp_addr_t *o = &pr->observed;
  if (kp_addr_is_loopback(o) || kp_addr_is_private(o)) return true;
  if (sock && sock == hp->own_sock)
    return !hp->own_addr.family || kp_addr_same_ip(&hp->own_addr, o);
  const kp_dht_nat_t *nat = kp_dht_nat(hp->dht);
  if (!nat->has_public || nat->type == KP_NAT_UNKNOWN || nat->public_addr.family != o->family)
    return true;
  return kp_addr_same_ip(&nat->public_addr, o);
}

hp_cand_t *kp__hp_path_input(kp_hp_t *hp, hp_path_t *p, void *sock, const kp_addr_t *from,
                             const uint8_t *data, size_t len, uint64_t now, bool *ok) {
  kp_probe_t pr;
  *ok = false;
  /* Ours reflected back at us carry our own direction: not the peer's. */
  if (kp_probe_decode(data, len, p->key, &pr) || pr.conn_id != p->local_id ||
      (pr.flags & KP_PROBE_FROM_CLIENT) == p->flags)
    return NULL;
  *ok = true;
  hp_cand_t *c = kp__hp_path_find(p, from, sock);
  if (!c) c = kp__hp_path_hint(p, from, sock, 0); /* answered, never hinted */
  if (c) {
    touch(p, c);
    c->has_echo = true;
    c->answered = false;
    memcpy(c->echo, pr.nonce, KP_PROBE_NONCE_LEN);
  }
  hp_cand_t *proved = NULL;
  p->last_fresh = sodium_memcmp(pr.echo, zero_nonce, KP_PROBE_NONCE_LEN) &&
                  nonce_ok(hp, p->local_id, from, pr.echo, now);
  if (p->last_fresh) {
    if (!observed_ok(hp, sock, &pr)) {
      hp->stats.proofs_refused++;
    } else if (c && !c->proven) {
      c->proven = true;
      proved = c;
      hp->stats.proofs++;
      /* A peer is there: a birthday towards this IP is no flood. */
      if (hp->bday_targets.slots) kp_ratelimit_refill(&hp->bday_targets, from, now);
      if (p->best < 0) {
        p->best = (int)(c - p->cand);
        /* Step 0 is the follow-up below. */
        p->keep_start = now;
        p->keep_step = 1;
        p->keep_next = now + keep_ms[1];
      }
    }
  }
  /* One answer per probe that is not itself an answer, never bigger than
   * it (every probe has one size), within the path's answer budget. A
   * probe that just proved its sender is followed up the same way, so the
   * peer gets our echo of its nonce and proves us in turn. */
  bool answer = !(pr.flags & KP_PROBE_ANSWER) || proved;
  if (answer && kp_bucket_take(&p->answers, HP_ANSWER_RATE, HP_ANSWER_BURST, 1, now)) {
    hp_cand_t tmp = {.addr = *from, .sock = sock};
    hp_cand_t *to = c ? c : &tmp;
    uint8_t flags = (pr.flags & KP_PROBE_ANSWER) ? 0 : KP_PROBE_ANSWER;
    send_to(hp, p, to, flags | (pr.flags & (KP_PROBE_PUNCH | KP_PROBE_BIRTHDAY)), pr.nonce, now);
    if (c) c->answered = true;
  }
  return proved;
}

uint64_t kp__hp_path_keep(kp_hp_t *hp, hp_path_t *p, uint64_t now) {
  hp_cand_t *best = kp__hp_path_best(p);
  while (best && p->keep_next <= now) {
    kp__hp_path_probe(hp, p, best, 0, now);
    p->keep_step++;
    p->keep_next = p->keep_step < KEEP_LEN ? p->keep_start + keep_ms[p->keep_step] : UINT64_MAX;
  }
  return p->keep_next;
}

uint64_t kp__hp_path_deadline(const hp_path_t *p) {
  return p->best < 0 ? UINT64_MAX : p->keep_next;
}

bool kp__hp_corroborated(const kp_addr_t *claimed, const kp_addr_t *addrs, size_t count,
                         bool exact) {
  for (size_t i = 0; i < count; i++)
    if (exact ? kp_addr_eq(claimed, &addrs[i]) : kp_addr_same_ip(claimed, &addrs[i])) return true;
  return false;
}
