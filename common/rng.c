/* SPDX-License-Identifier: MIT */
#include "common/rng.h"

#include <string.h>

void kp_rng_fill(const kp_rng_t *rng, void *buf, size_t len) {
  rng->fill(rng->ctx, buf, len);
}

uint32_t kp_rng_u32(const kp_rng_t *rng) {
  uint32_t v;
  kp_rng_fill(rng, &v, sizeof(v));
  return v;
}

uint64_t kp_rng_u64(const kp_rng_t *rng) {
  uint64_t v;
  kp_rng_fill(rng, &v, sizeof(v));
  return v;
}

uint32_t kp_rng_below(const kp_rng_t *rng, uint32_t upper) {
  if (upper < 2) return 0;
  /* Reject the short top range so every residue is equally likely. */
  uint32_t min = (uint32_t)(-upper) % upper;
  for (;;) {
    uint32_t v = kp_rng_u32(rng);
    if (v >= min) return v % upper;
  }
}

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void kp_rng_seeded_init(kp_rng_seeded_t *st, uint64_t seed) {
  for (int i = 0; i < 4; i++) st->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

uint64_t kp_rng_seeded_next(kp_rng_seeded_t *st) {
  uint64_t *s = st->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

static void seeded_fill(void *ctx, void *buf, size_t len) {
  uint8_t *p = buf;
  while (len) {
    uint64_t v = kp_rng_seeded_next(ctx);
    size_t n = len < sizeof(v) ? len : sizeof(v);
    memcpy(p, &v, n);
    p += n;
    len -= n;
  }
}

kp_rng_t kp_rng_seeded(kp_rng_seeded_t *state) {
  kp_rng_t r = {seeded_fill, state};
  return r;
}
