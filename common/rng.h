/* SPDX-License-Identifier: MIT */
/* Injected randomness. The protocol cores never call randombytes_buf: they
 * draw from the kp_rng_t their creator hands them (creating one without
 * fails with KP_EINVAL). The node layer hands them libsodium's CSPRNG
 * (kp_rng_system, glue in common/uv); tests and the simulator a seeded,
 * deterministic source. */
#ifndef KP_COMMON_RNG_H
#define KP_COMMON_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef void (*kp_rng_fill_fn)(void *ctx, void *buf, size_t len);

typedef struct kp_rng_s {
  kp_rng_fill_fn fill;
  void *ctx;
} kp_rng_t;

/* libsodium's randombytes_buf: glue (common/uv/system.c), never called by
 * the cores (the build checks it). */
kp_rng_t kp_rng_system(void);

void kp_rng_fill(const kp_rng_t *rng, void *buf, size_t len);
uint32_t kp_rng_u32(const kp_rng_t *rng);
uint64_t kp_rng_u64(const kp_rng_t *rng);
/* Uniform in [0, upper) without modulo bias; 0 when upper is 0. */
uint32_t kp_rng_below(const kp_rng_t *rng, uint32_t upper);

/* A deterministic generator for tests and the simulator (xoshiro256**,
 * seeded through SplitMix64). Not for keys. */
typedef struct kp_rng_seeded_s {
  uint64_t s[4];
} kp_rng_seeded_t;

void kp_rng_seeded_init(kp_rng_seeded_t *state, uint64_t seed);
uint64_t kp_rng_seeded_next(kp_rng_seeded_t *state);
/* A kp_rng_t drawing from state (which must outlive it). */
kp_rng_t kp_rng_seeded(kp_rng_seeded_t *state);

#endif
