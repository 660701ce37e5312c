/* SPDX-License-Identifier: MIT */
/* Fuzz targets: each file defines LLVMFuzzerTestOneInput and its seeds.
 *
 * Built two ways. With KP_FUZZ=ON (clang), against libFuzzer: coverage-
 * guided, run time-boxed by ctest (label fuzz). Otherwise against
 * standalone.c: every seed, then a fixed number of deterministic mutations
 * of them, so the normal suite runs each target too. */
#ifndef KP_FUZZ_H
#define KP_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Seed inputs: fills *seeds with up to cap (pointer, length) pairs and
 * returns how many. Buffers stay valid for the process's life. */
typedef struct kp_fuzz_seed_s {
  const uint8_t *data;
  size_t len;
} kp_fuzz_seed_t;
size_t kp_fuzz_seeds(kp_fuzz_seed_t *seeds, size_t cap);

/* A target's check failing: print and abort (libFuzzer records the input). */
#define KP_FUZZ_ASSERT(cond)                                                                       \
  do {                                                                                             \
    if (!(cond)) kp_fuzz_fail(__FILE__, __LINE__, #cond);                                          \
  } while (0)
_Noreturn void kp_fuzz_fail(const char *file, int line, const char *what);

#endif
