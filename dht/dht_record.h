/* SPDX-License-Identifier: MIT */
/* Signed records stored on the DHT (docs/protocol.md, "Records").
 *
 * Announce records say "public key K can be reached through these relay
 * nodes" under a target (the hash of a topic, or of K itself). Mutable values
 * are signed by a key and addressed by hash(key, salt); immutable values are
 * addressed by their own hash. Everything signed is signed over exact bytes
 * (a record is [body bytes, signature]), so no re-encoding ever has to match.
 *
 * Pure codecs: decoded views point into the input. Decoders verify
 * signatures and hashes; every failure is an error, never a crash. */
#ifndef KP_DHT_RECORD_H
#define KP_DHT_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/addr.h"
#include "kadpunch_base.h"

#define KP_RECORD_VERSION 1
#define KP_SIGNATURE_LEN 64
/* The largest encoded announce record (3 IPv6 relays, full data). */
#define KP_RECORD_MAX_SIZE 320
/* A mutable put must fit one datagram, over IPv6 too: salt + value <= this
 * (docs/protocol.md, "Mutable values"). */
#define KP_MUTABLE_MAX_SALT_VALUE 1006

/* ---- Targets ------------------------------------------------------------- */

void kp_dht_target_mutable(const uint8_t public_key[KP_PUBLIC_KEY_LEN], const uint8_t *salt,
                           size_t salt_len, uint8_t target[KP_ID_LEN]);
void kp_dht_target_immutable(const uint8_t *value, size_t len, uint8_t target[KP_ID_LEN]);

/* ---- Announce records ------------------------------------------------------ */

/* Encodes and signs rec under target with secret_key (whose public half must
 * be rec->public_key). KP_ETOOBIG if it exceeds the bounds. */
int kp_dht_record_encode(const kp_record_t *rec, const uint8_t target[KP_ID_LEN],
                         const uint8_t secret_key[KP_SECRET_KEY_LEN], uint8_t *buf, size_t cap,
                         size_t *len);

/* Decodes and verifies one record for target. Errors: KP_EMALFORMED,
 * KP_ETRUNCATED, KP_EFIELD, KP_EVERSION, KP_EBADSIG. */
int kp_dht_record_decode(const uint8_t *buf, size_t len, const uint8_t target[KP_ID_LEN],
                         kp_record_t *out);

/* A LOOKUP reply: an array of records. For each element, `wanted` (may be
 * NULL) sees the claimed key and seq before the signature is checked (so a
 * client skips records it already holds without paying for a verification);
 * fn gets each wanted record that verifies. Returns how many did, or a
 * negative error if the list itself is malformed; records that fail are
 * counted in *rejected (may be NULL). */
typedef bool (*kp_dht_record_wanted_fn)(void *ctx, const uint8_t public_key[KP_PUBLIC_KEY_LEN],
                                        uint64_t seq);
typedef void (*kp_dht_record_fn)(void *ctx, const kp_record_t *rec);
int kp_dht_record_list_decode(const uint8_t *buf, size_t len, const uint8_t target[KP_ID_LEN],
                              kp_dht_record_wanted_fn wanted, kp_dht_record_fn fn, void *ctx,
                              unsigned *rejected);

/* ---- The origin proof --------------------------------------------------------
 *
 * An ANNOUNCE request carries, after the record, the record key's signature
 * over the token the storing node gave the announcer for the address it
 * sends from (docs/protocol.md, "Announce records"). The storing node keeps
 * that address as the record's origin, where it relays the announcer's
 * hellos; the token is bound to the address, so only the key's holder can
 * make a proof for an address it sends from, and a record copied and sent
 * again from elsewhere cannot move the origin. */
#define KP_ORIGIN_PROOF_LEN KP_SIGNATURE_LEN

void kp_dht_origin_sign(const uint8_t target[KP_ID_LEN], const uint8_t token[32],
                        const uint8_t secret_key[KP_SECRET_KEY_LEN],
                        uint8_t proof[KP_ORIGIN_PROOF_LEN]);
/* 0, or KP_EBADSIG. */
int kp_dht_origin_verify(const uint8_t target[KP_ID_LEN], const uint8_t token[32],
                         const uint8_t public_key[KP_PUBLIC_KEY_LEN],
                         const uint8_t proof[KP_ORIGIN_PROOF_LEN]);

/* ---- Unannounce -------------------------------------------------------- */

int kp_dht_unannounce_encode(const uint8_t public_key[KP_PUBLIC_KEY_LEN], uint64_t seq,
                             const uint8_t target[KP_ID_LEN],
                             const uint8_t secret_key[KP_SECRET_KEY_LEN], uint8_t *buf, size_t cap,
                             size_t *len);
int kp_dht_unannounce_decode(const uint8_t *buf, size_t len, const uint8_t target[KP_ID_LEN],
                             uint8_t public_key[KP_PUBLIC_KEY_LEN], uint64_t *seq);

/* ---- Mutable values ---------------------------------------------------------- */

typedef struct kp_dht_mutable_s {
  uint8_t public_key[KP_PUBLIC_KEY_LEN];
  const uint8_t *salt;
  size_t salt_len;
  uint64_t seq;
  const uint8_t *value;
  size_t value_len;
  uint8_t signature[KP_SIGNATURE_LEN];
  bool has_cas;
  uint64_t cas; /* put only: the seq the writer expects to replace */
} kp_dht_mutable_t;

/* Signs m (fills m->signature) with secret_key. */
int kp_dht_mutable_sign(kp_dht_mutable_t *m, const uint8_t secret_key[KP_SECRET_KEY_LEN]);
/* Checks m->signature for the target implied by m's key and salt. */
int kp_dht_mutable_verify(const kp_dht_mutable_t *m);

/* The put request value, and its decoder (which verifies and returns the
 * target the value lives at). */
int kp_dht_mutable_put_encode(const kp_dht_mutable_t *m, uint8_t *buf, size_t cap, size_t *len);
int kp_dht_mutable_put_decode(const uint8_t *buf, size_t len, kp_dht_mutable_t *m,
                              uint8_t target[KP_ID_LEN]);

/* A get reply: [seq, value, signature], or the summary [seq] sent to a
 * requester that has not proved its address (the value would amplify). */
int kp_dht_mutable_reply_encode(const kp_dht_mutable_t *m, bool summary, uint8_t *buf, size_t cap,
                                size_t *len);
/* Decodes a reply into m (whose public_key and salt the caller set), and
 * verifies a full one. *summary tells which it was. */
int kp_dht_mutable_reply_decode(const uint8_t *buf, size_t len, kp_dht_mutable_t *m, bool *summary);

#endif
