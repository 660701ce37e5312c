/* SPDX-License-Identifier: MIT */
/* msgpack helpers shared by every control-plane codec.
 *
 * Encoding goes through msgpack-c's packer writing into a kp_wbuf_t, so it can
 * never write past the caller's buffer (overflow is reported once at the end).
 *
 * Decoding is two steps. kp_mp_check() first walks the raw bytes and rejects
 * anything that is not exactly one well-formed msgpack value whose declared
 * container sizes fit in the bytes that remain: msgpack-c allocates a
 * container's elements before reading them, so a 5-byte datagram declaring
 * 2^32 elements would otherwise make it attempt a 64 GiB allocation. After the
 * check, the total number of objects is bounded by the input length, and
 * msgpack-c's parse (which references bin/str bytes in the input, no copy)
 * cannot allocate more than a small multiple of it. msgpack objects never
 * leave the codec that parsed them. */
#ifndef KP_COMMON_MP_H
#define KP_COMMON_MP_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

void kp_mp_packer_init(msgpack_packer *pk, kp_wbuf_t *w);

/* Returns 0 if data[0..len) is exactly one msgpack value with no ext types,
 * nesting at most max_depth containers deep, each container's element count
 * no larger than the bytes left. KP_ETRUNCATED if the input ends inside the
 * value; KP_EMALFORMED otherwise. */
int kp_mp_check(const uint8_t *data, size_t len, unsigned max_depth);

/* A parsed message. Views into the input stay valid as long as the input. */
typedef struct kp_mp_doc_s {
  msgpack_unpacked unpacked;
} kp_mp_doc_t;

/* kp_mp_check() then parse. On success *root is the top value and the caller
 * must call kp_mp_doc_free(); on error nothing needs freeing. */
int kp_mp_doc_parse(kp_mp_doc_t *doc, const uint8_t *data, size_t len, unsigned max_depth,
                    const msgpack_object **root);
void kp_mp_doc_free(kp_mp_doc_t *doc);

/* Typed accessors: 0 on success, KP_EFIELD on a wrong type or range. */
bool kp_mp_is_nil(const msgpack_object *o);
int kp_mp_uint(const msgpack_object *o, uint64_t max, uint64_t *out);
/* A bin of min..max bytes; *p points into the input. */
int kp_mp_bin(const msgpack_object *o, size_t min, size_t max, const uint8_t **p, size_t *n);
/* Like kp_mp_bin, but nil gives *p = NULL, *n = 0. */
int kp_mp_bin_opt(const msgpack_object *o, size_t min, size_t max, const uint8_t **p, size_t *n);
/* A bin of exactly n bytes, copied to out. */
int kp_mp_fixed(const msgpack_object *o, void *out, size_t n);
/* Optional fixed-size bin: nil gives *present = false. */
int kp_mp_fixed_opt(const msgpack_object *o, void *out, size_t n, bool *present);

void kp_mp_pack_bin(msgpack_packer *pk, const void *p, size_t n);
/* A bin, or nil when p is NULL. */
void kp_mp_pack_bin_opt(msgpack_packer *pk, const void *p, size_t n);

#endif
