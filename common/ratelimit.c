/* SPDX-License-Identifier: MIT */
/* Admission budgets (ratelimit.h). */
#include "common/ratelimit.h"

#include <sodium.h>
#include <string.h>

#include "common/alloc.h"

void kp_bucket_init(kp_bucket_t *b, uint64_t burst, uint64_t now_ms) {
  b->milli = burst * 1000;
  b->at_ms = now_ms;
}

static void refill(kp_bucket_t *b, uint64_t rate, uint64_t burst, uint64_t now_ms) {
  uint64_t cap = burst * 1000;
  if (now_ms <= b->at_ms) return; /* a clock that steps back refills nothing */
  uint64_t elapsed = now_ms - b->at_ms;
  b->at_ms = now_ms;
  /* rate units per second are rate milli-units per ms. Past the time a
   * refill from empty takes, the bucket is full whatever the product. */
  if (!rate || elapsed >= cap / rate + 1) {
    b->milli = rate ? cap : b->milli;
    return;
  }
  b->milli += elapsed * rate;
  if (b->milli > cap) b->milli = cap;
}

bool kp_bucket_take(kp_bucket_t *b, uint64_t rate, uint64_t burst, uint64_t cost, uint64_t now_ms) {
  refill(b, rate, burst, now_ms);
  uint64_t need = cost * 1000;
  if (b->milli < need) return false;
  b->milli -= need;
  return true;
}

uint64_t kp_bucket_level(kp_bucket_t *b, uint64_t rate, uint64_t burst, uint64_t now_ms) {
  refill(b, rate, burst, now_ms);
  return b->milli / 1000;
}

int kp_ratelimit_init(kp_ratelimit_t *rl, size_t senders, uint64_t rate, uint64_t burst,
                      const uint8_t key[KP_RATELIMIT_KEY_LEN]) {
  memset(rl, 0, sizeof(*rl));
  if (!senders || !rate || !burst) return KP_EINVAL;
  size_t sets = 1;
  while (sets * KP_RATELIMIT_WAYS < senders) sets <<= 1;
  rl->slots = kp_calloc(sets * KP_RATELIMIT_WAYS, sizeof(*rl->slots));
  if (!rl->slots) return KP_ENOMEM;
  rl->set_mask = sets - 1;
  rl->rate = rate;
  rl->burst = burst;
  memcpy(rl->key, key, KP_RATELIMIT_KEY_LEN);
  return 0;
}

void kp_ratelimit_destroy(kp_ratelimit_t *rl) {
  kp_free(rl->slots);
  sodium_memzero(rl, sizeof(*rl));
}

uint64_t kp_ratelimit_key(const kp_ratelimit_t *rl, const kp_addr_t *from) {
  static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  uint8_t msg[9], h[crypto_shorthash_BYTES];
  size_t len;
  if (from->family == KP_AF_INET6 && memcmp(from->ip, mapped, sizeof(mapped))) {
    msg[0] = 6;
    memcpy(msg + 1, from->ip, 8); /* the /64 */
    len = 9;
  } else {
    msg[0] = 4;
    memcpy(msg + 1, from->family == KP_AF_INET6 ? from->ip + 12 : from->ip, 4);
    len = 5;
  }
  crypto_shorthash(h, msg, len, rl->key);
  uint64_t k;
  memcpy(&k, h, sizeof(k));
  return k ? k : 1; /* 0 marks a free slot */
}

bool kp_ratelimit_take(kp_ratelimit_t *rl, const kp_addr_t *from, uint64_t cost, uint64_t now_ms,
                       uint64_t *level) {
  uint64_t key = kp_ratelimit_key(rl, from);
  kp_ratelimit_slot_t *set = &rl->slots[((size_t)(key >> 32) & rl->set_mask) * KP_RATELIMIT_WAYS];
  kp_ratelimit_slot_t *slot = NULL, *free_way = NULL, *fullest = NULL;
  uint64_t fullest_level = 0;
  for (int i = 0; i < KP_RATELIMIT_WAYS && !slot; i++) {
    kp_ratelimit_slot_t *s = &set[i];
    if (s->key == key) {
      slot = s;
    } else if (!s->key) {
      if (!free_way) free_way = s;
    } else {
      uint64_t l = kp_bucket_level(&s->bucket, rl->rate, rl->burst, now_ms);
      if (!fullest || l > fullest_level) fullest = s, fullest_level = l;
    }
  }
  if (!slot) {
    /* A free way, else the least active sender's, which starts over full. */
    slot = free_way ? free_way : fullest;
    if (!free_way) rl->evictions++;
    slot->key = key;
    kp_bucket_init(&slot->bucket, rl->burst, now_ms);
  }
  if (level) *level = kp_bucket_level(&slot->bucket, rl->rate, rl->burst, now_ms);
  return kp_bucket_take(&slot->bucket, rl->rate, rl->burst, cost, now_ms);
}

void kp_ratelimit_refill(kp_ratelimit_t *rl, const kp_addr_t *from, uint64_t now_ms) {
  uint64_t key = kp_ratelimit_key(rl, from);
  kp_ratelimit_slot_t *set = &rl->slots[((size_t)(key >> 32) & rl->set_mask) * KP_RATELIMIT_WAYS];
  for (int i = 0; i < KP_RATELIMIT_WAYS; i++)
    if (set[i].key == key) kp_bucket_init(&set[i].bucket, rl->burst, now_ms);
}
