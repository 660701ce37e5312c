/* SPDX-License-Identifier: MIT */
/* Packet protection for the data plane: AEAD with a per-direction key and a
 * nonce derived from the packet number, and a sliding replay window.
 *
 * ChaCha20-Poly1305 (IETF) everywhere; AES-256-GCM where both ends have
 * hardware AES (the handshake picks; crypto_aead_aes256gcm_is_available()).
 * ChaCha20-Poly1305 runs through OpenSSL's libcrypto when the build found
 * it (KP_OPENSSL), else libsodium's; the bytes are the same.
 * nonce = iv XOR packet number (big-endian, in the last 8 bytes), as in TLS
 * 1.3 and QUIC; iv = the first 12 bytes of BLAKE2b-128 keyed with the key,
 * so a key alone defines a direction. A packet number is never used twice under one key. */
#ifndef KP_STREAM_CRYPTO_H
#define KP_STREAM_CRYPTO_H

#include <sodium.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kadpunch_base.h"

typedef struct kp_aead_s {
  kp_cipher_t cipher;
  uint8_t key[32];
  uint8_t iv[12];
  /* AES-GCM's expanded key, computed once (libsodium's "afternm" API). */
  crypto_aead_aes256gcm_state *aes;
  /* libcrypto's ChaCha20-Poly1305 context, keyed once, made for the first
   * packet of at least evp_min bytes (idle connections, which only see
   * acks and keepalives, never pay its 1.7 KB); NULL: libsodium. */
  bool evp_able;
  size_t evp_min;
  void *evp;
} kp_aead_t;

/* KP_ECONFIG if the cipher is unknown or AES-GCM is asked for without
 * hardware support; KP_ENOMEM. */
int kp_aead_init(kp_aead_t *a, kp_cipher_t cipher, const uint8_t key[32]);
/* The same with libsodium for ChaCha20-Poly1305 whatever the build (tests
 * compare the two). */
int kp_aead_init_sodium(kp_aead_t *a, kp_cipher_t cipher, const uint8_t key[32]);
/* True if a seals and opens big packets with libcrypto. */
bool kp_aead_uses_libcrypto(const kp_aead_t *a);
void kp_aead_destroy(kp_aead_t *a);

/* Encrypts data[0..len) in place under packet number pn with associated
 * data ad, writing the 16-byte tag to tag. */
void kp_aead_seal(kp_aead_t *a, uint64_t pn, const uint8_t *ad, size_t ad_len, uint8_t *data,
                  size_t len, uint8_t tag[16]);
/* Decrypts in place; 0, or -1 if the packet is not authentic (data is then
 * garbage: drop it). */
int kp_aead_open(kp_aead_t *a, uint64_t pn, const uint8_t *ad, size_t ad_len, uint8_t *data,
                 size_t len, const uint8_t tag[16]);

/* Received packet numbers: the largest, and which of the 1024 below it
 * arrived. A packet older than that, or seen already, is a replay. */
#define KP_REPLAY_WINDOW 1024

typedef struct kp_replay_s {
  bool any;
  uint64_t largest;
  uint64_t bits[KP_REPLAY_WINDOW / 64]; /* bit i: largest - i seen */
} kp_replay_t;

/* True if pn may be accepted (new and not too old). Does not record it. */
bool kp_replay_check(const kp_replay_t *r, uint64_t pn);
/* Records pn (after it authenticated). */
void kp_replay_mark(kp_replay_t *r, uint64_t pn);

#endif
