/* SPDX-License-Identifier: MIT */
/* Patterned bytes for transfer tests: stream `id` carries, at offset off,
 * a fixed pseudo-random block of a prime length read from an offset that
 * depends on the stream. A receiver checks every byte without keeping what
 * was sent; misplaced, doubled or mixed-up bytes show. */
#ifndef KP_TEST_PATTERN_H
#define KP_TEST_PATTERN_H

#include <stddef.h>
#include <stdint.h>

#define KP_PATTERN_LEN 1048573u

/* The bytes of stream id from offset off: *avail of them are contiguous
 * (until the block wraps). Valid for the whole process. */
const uint8_t *kp_pattern_at(uint64_t id, uint64_t off, size_t *avail);
/* How many of data[0..len) differ from the pattern at off. */
uint64_t kp_pattern_mismatches(uint64_t id, uint64_t off, const uint8_t *data, size_t len);

#endif
