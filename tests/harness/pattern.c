/* SPDX-License-Identifier: MIT */
#include "tests/harness/pattern.h"

#include <stdlib.h>
#include <string.h>

#include "common/rng.h"

static uint8_t *block;

static void init(void) {
  if (block) return;
  block = malloc(KP_PATTERN_LEN);
  if (!block) abort();
  kp_rng_seeded_t r;
  kp_rng_seeded_init(&r, 0x5eed);
  for (size_t i = 0; i < KP_PATTERN_LEN; i += 8) {
    uint64_t v = kp_rng_seeded_next(&r);
    for (size_t j = 0; j < 8 && i + j < KP_PATTERN_LEN; j++) block[i + j] = (uint8_t)(v >> (8 * j));
  }
}

const uint8_t *kp_pattern_at(uint64_t id, uint64_t off, size_t *avail) {
  init();
  size_t pos = (size_t)((off + id * 7919) % KP_PATTERN_LEN);
  *avail = KP_PATTERN_LEN - pos;
  return block + pos;
}

uint64_t kp_pattern_mismatches(uint64_t id, uint64_t off, const uint8_t *data, size_t len) {
  uint64_t bad = 0;
  while (len) {
    size_t avail;
    const uint8_t *p = kp_pattern_at(id, off, &avail);
    size_t n = len < avail ? len : avail;
    if (memcmp(p, data, n))
      for (size_t i = 0; i < n; i++) bad += p[i] != data[i];
    data += n;
    off += n;
    len -= n;
  }
  return bad;
}
