/* SPDX-License-Identifier: MIT */
#include "dht/dht_nat.h"

#include <string.h>

const char *kp_nat_type_name(kp_nat_type_t type) {
  switch (type) {
    case KP_NAT_OPEN: return "open";
    case KP_NAT_CONSISTENT: return "consistent";
    case KP_NAT_RANDOM: return "random";
    default: return "unknown";
  }
}

void kp_dht_nat_init(kp_dht_nat_t *nat) {
  memset(nat, 0, sizeof(*nat));
}

void kp_dht_nat_reset(kp_dht_nat_t *nat) {
  bool has_mapped = nat->has_mapped;
  kp_addr_t mapped = nat->mapped;
  kp_dht_nat_init(nat);
  nat->has_mapped = has_mapped;
  nat->mapped = mapped;
}

bool kp_dht_nat_same_host(const kp_addr_t *a, const kp_addr_t *b) {
  if (a->family != b->family) return false;
  if (kp_addr_is_loopback(a)) return kp_addr_eq(a, b);
  return memcmp(a->ip, b->ip, a->family == KP_AF_INET6 ? 8 : 4) == 0;
}

/* The address a strict majority of samples report, if any. */
static const kp_addr_t *majority(const kp_dht_nat_t *nat) {
  for (unsigned i = 0; i < nat->count; i++) {
    unsigned votes = 0;
    for (unsigned j = 0; j < nat->count; j++)
      votes += kp_addr_eq(&nat->samples[i].seen, &nat->samples[j].seen);
    if (2 * votes > nat->count) return &nat->samples[i].seen;
  }
  return NULL;
}

/* Whether the two newest reporters (the one, while there is one) see our
 * mapping's IP: one reporter alone, lying, cannot make us drop or take the
 * claim (it holds one sample). */
static bool mapped_ip_seen(const kp_dht_nat_t *nat) {
  unsigned n = nat->count < 2 ? nat->count : 2;
  size_t len = nat->mapped.family == KP_AF_INET6 ? 16 : 4;
  for (unsigned i = 0; i < n; i++)
    if (nat->samples[i].seen.family != nat->mapped.family ||
        memcmp(nat->samples[i].seen.ip, nat->mapped.ip, len))
      return false;
  return n > 0;
}

static void classify(kp_dht_nat_t *nat, uint64_t now, bool *changed) {
  kp_dht_nat_sample_t *s = nat->samples;
  kp_addr_t prev = nat->public_addr;
  bool had = nat->has_public;
  const kp_addr_t *agreed;

  if (nat->count >= 2 && kp_addr_eq(&s[0].seen, &s[1].seen)) {
    /* The two newest reporters agree. Older samples that disagree predate a
     * rebinding of our mapping (or a network change): drop them. */
    unsigned keep = 2;
    for (unsigned i = 2; i < nat->count; i++)
      if (kp_addr_eq(&s[i].seen, &s[0].seen)) s[keep++] = s[i];
    nat->count = keep;
    nat->public_addr = s[0].seen;
    nat->has_public = true;
    nat->type = nat->reachable ? KP_NAT_OPEN : KP_NAT_CONSISTENT;
  } else if (nat->count >= 3 && (agreed = majority(nat))) {
    /* One dissenter (a rebinding in progress, or a reporter that lies) does
     * not move us while most reporters agree. */
    nat->public_addr = *agreed;
    nat->has_public = true;
    nat->type = nat->reachable ? KP_NAT_OPEN : KP_NAT_CONSISTENT;
  } else if (nat->count >= 2) {
    /* Reporters see different mappings of one socket, with no majority. */
    nat->public_addr = s[0].seen;
    nat->has_public = true;
    nat->type = KP_NAT_RANDOM;
  } else {
    nat->public_addr = nat->count ? s[0].seen : prev;
    nat->has_public = nat->count > 0;
    nat->type = KP_NAT_UNKNOWN;
  }
  if (nat->has_mapped && mapped_ip_seen(nat)) {
    /* A mapping forwards whatever arrives at its port: OPEN, as a claim;
     * reachability (membership) is still proven by PING_NAT witnesses. */
    nat->public_addr = nat->mapped;
    nat->has_public = true;
    nat->type = KP_NAT_OPEN;
  }
  if (nat->has_public && (!had || !kp_addr_eq(&prev, &nat->public_addr))) {
    nat->public_since = now;
    *changed = true;
  }
}

bool kp_dht_nat_add_sample(kp_dht_nat_t *nat, const kp_addr_t *reporter, const kp_addr_t *seen,
                           uint64_t now) {
  unsigned at = nat->count;
  for (unsigned i = 0; i < nat->count; i++) {
    if (kp_dht_nat_same_host(&nat->samples[i].reporter, reporter)) {
      at = i;
      break;
    }
  }
  /* A reporter repeating itself adds nothing. */
  if (at == 0 && nat->count && kp_addr_eq(&nat->samples[0].seen, seen)) return false;
  if (at == nat->count && nat->count == KP_DHT_NAT_SAMPLES)
    at = KP_DHT_NAT_SAMPLES - 1;
  else if (at == nat->count)
    nat->count++;
  memmove(&nat->samples[1], &nat->samples[0], at * sizeof(nat->samples[0]));
  nat->samples[0].reporter = *reporter;
  nat->samples[0].seen = *seen;
  bool changed = false;
  classify(nat, now, &changed);
  return changed;
}

bool kp_dht_nat_set_mapped(kp_dht_nat_t *nat, const kp_addr_t *mapped, uint64_t now) {
  nat->has_mapped = mapped != NULL;
  if (mapped) nat->mapped = *mapped;
  bool changed = false;
  classify(nat, now, &changed);
  return changed;
}

bool kp_dht_nat_reach_confirmed_by(const kp_dht_nat_t *nat, const kp_addr_t *reporter) {
  for (unsigned i = 0; i < nat->reach_ok_count; i++)
    if (kp_dht_nat_same_host(&nat->reach_ok[i], reporter)) return true;
  return false;
}

bool kp_dht_nat_reach_result(kp_dht_nat_t *nat, const kp_addr_t *reporter, bool ok) {
  bool was = nat->reachable;
  if (ok) {
    nat->reach_fails = 0;
    if (!kp_dht_nat_reach_confirmed_by(nat, reporter)) {
      if (nat->reach_ok_count == KP_DHT_NAT_QUORUM) {
        memmove(&nat->reach_ok[0], &nat->reach_ok[1],
                (KP_DHT_NAT_QUORUM - 1) * sizeof(nat->reach_ok[0]));
        nat->reach_ok_count--;
      }
      nat->reach_ok[nat->reach_ok_count++] = *reporter;
    }
    if (nat->reach_ok_count >= KP_DHT_NAT_QUORUM) nat->reachable = true;
  } else if (++nat->reach_fails >= KP_DHT_NAT_QUORUM) {
    nat->reachable = false;
    nat->reach_ok_count = 0;
  }
  if ((nat->type == KP_NAT_OPEN || nat->type == KP_NAT_CONSISTENT) &&
      !(nat->has_mapped && kp_addr_eq(&nat->public_addr, &nat->mapped)))
    nat->type = nat->reachable ? KP_NAT_OPEN : KP_NAT_CONSISTENT;
  return was != nat->reachable;
}
