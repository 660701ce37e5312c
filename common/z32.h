/* SPDX-License-Identifier: MIT */
/* z-base-32 (the human-oriented base-32 of Zooko O'Whielacronx): lowercase
 * letters and digits chosen to be easy to read aloud and copy, with no
 * padding. libsodium offers hex and base64 only; base64 has '+', '/' and
 * upper case, hex is too long for one DNS label (64 > 63). */
#ifndef KP_COMMON_Z32_H
#define KP_COMMON_Z32_H

#include <stddef.h>
#include <stdint.h>

/* Characters needed for n bytes (without the NUL). */
static inline size_t kp_z32_len(size_t n) {
  return (n * 8 + 4) / 5;
}

/* Writes kp_z32_len(n) characters and a NUL into out. */
void kp_z32_encode(const uint8_t *in, size_t n, char *out);

/* Decodes exactly n bytes from text (case-insensitive). Fails (-1) on a wrong
 * length, a character outside the alphabet, or non-zero unused final bits. */
int kp_z32_decode(const char *text, uint8_t *out, size_t n);

#endif
