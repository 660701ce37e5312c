/* SPDX-License-Identifier: MIT */
/* The driver for builds without libFuzzer: every seed, then deterministic
 * mutations (bit flips, byte sets, truncations, splices, random bytes). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "tests/fuzz/fuzz.h"

void kp_fuzz_fail(const char *file, int line, const char *what) {
  fprintf(stderr, "FUZZ FAIL %s:%d: %s\n", file, line, what);
  abort();
}

int main(int argc, char **argv) {
  unsigned long runs = argc > 1 ? strtoul(argv[1], NULL, 10) : 50000;
  kp_fuzz_seed_t seeds[64];
  size_t n = kp_fuzz_seeds(seeds, 64);
  uint8_t buf[2048];
  kp_rng_seeded_t st;
  kp_rng_seeded_init(&st, 20261122);
  kp_rng_t rng = kp_rng_seeded(&st);
  for (size_t i = 0; i < n; i++) LLVMFuzzerTestOneInput(seeds[i].data, seeds[i].len);
  for (unsigned long r = 0; r < runs && n; r++) {
    const kp_fuzz_seed_t *s = &seeds[kp_rng_below(&rng, (uint32_t)n)];
    size_t len = s->len < sizeof(buf) ? s->len : sizeof(buf);
    memcpy(buf, s->data, len);
    switch (kp_rng_below(&rng, 5)) {
      case 0: /* flip bits */
        for (unsigned k = 1 + kp_rng_below(&rng, 4); k && len; k--)
          buf[kp_rng_below(&rng, (uint32_t)len)] ^= (uint8_t)(1u << kp_rng_below(&rng, 8));
        break;
      case 1: /* set bytes to interesting values */
        for (unsigned k = 1 + kp_rng_below(&rng, 3); k && len; k--) {
          static const uint8_t v[] = {0,    1,    0x7f, 0x80, 0xc0, 0xc1, 0xc4, 0xcc,
                                      0xcd, 0xce, 0xcf, 0xdc, 0xdd, 0xde, 0xdf, 0xff};
          buf[kp_rng_below(&rng, (uint32_t)len)] = v[kp_rng_below(&rng, sizeof(v))];
        }
        break;
      case 2: /* truncate */ len = kp_rng_below(&rng, (uint32_t)len + 1); break;
      case 3: /* splice another seed's tail */ {
        const kp_fuzz_seed_t *o = &seeds[kp_rng_below(&rng, (uint32_t)n)];
        size_t at = kp_rng_below(&rng, (uint32_t)len + 1),
               from = kp_rng_below(&rng, (uint32_t)o->len + 1);
        size_t take = o->len - from;
        if (at + take > sizeof(buf)) take = sizeof(buf) - at;
        memcpy(buf + at, o->data + from, take);
        len = at + take;
        break;
      }
      default: /* random bytes */
        len = kp_rng_below(&rng, 1400);
        kp_rng_fill(&rng, buf, len);
        break;
    }
    LLVMFuzzerTestOneInput(buf, len);
  }
  printf("ran %zu seeds and %lu mutations\n", n, runs);
  return 0;
}
