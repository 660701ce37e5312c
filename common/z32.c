/* SPDX-License-Identifier: MIT */
#include "common/z32.h"

#include <string.h>

static const char alphabet[] = "ybndrfg8ejkmcpqxot1uwisza345h769";

void kp_z32_encode(const uint8_t *in, size_t n, char *out) {
  uint32_t acc = 0;
  unsigned bits = 0;
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    acc = acc << 8 | in[i];
    bits += 8;
    while (bits >= 5) {
      out[o++] = alphabet[(acc >> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits) out[o++] = alphabet[(acc << (5 - bits)) & 31];
  out[o] = '\0';
}

static int value_of(char c) {
  if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
  const char *p = c ? strchr(alphabet, c) : NULL;
  return p ? (int)(p - alphabet) : -1;
}

int kp_z32_decode(const char *text, uint8_t *out, size_t n) {
  size_t want = kp_z32_len(n);
  if (strlen(text) != want) return -1;
  uint32_t acc = 0;
  unsigned bits = 0;
  size_t o = 0;
  for (size_t i = 0; i < want; i++) {
    int v = value_of(text[i]);
    if (v < 0) return -1;
    acc = acc << 5 | (uint32_t)v;
    bits += 5;
    if (bits >= 8) {
      out[o++] = (uint8_t)(acc >> (bits - 8));
      bits -= 8;
    }
  }
  /* The last character's unused bits must be zero: one text per key. */
  if (acc & ((1u << bits) - 1)) return -1;
  return o == n ? 0 : -1;
}
