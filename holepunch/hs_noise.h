/* SPDX-License-Identifier: MIT */
/* Noise_IK_25519_ChaChaPoly_BLAKE2b (noiseprotocol.org, revision 34), on
 * libsodium.
 *
 * IK fits "connect to a public key": the initiator (client) already knows
 * the responder's (server's) static key, so one round trip authenticates
 * both sides and gives forward secrecy:
 *
 *   <- s
 *   ...
 *   -> e, es, s, ss
 *   <- e, ee, se
 *
 * Static keys are the peers' ed25519 identities converted to X25519
 * (crypto_sign_ed25519_*_to_curve25519), so a peer has one key, not two.
 * HMAC-BLAKE2b (the HKDF of the Noise spec) is built here from libsodium's
 * BLAKE2b because libsodium offers keyed BLAKE2b but not HMAC over it.
 *
 * Pure: the ephemeral key comes from the caller's randomness. */
#ifndef KP_HS_NOISE_H
#define KP_HS_NOISE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kadpunch_base.h"

#define KP_NOISE_DH_LEN 32
#define KP_NOISE_HASH_LEN 64
#define KP_NOISE_TAG_LEN 16
/* Bytes a message adds to its payload. */
#define KP_NOISE_MSG1_OVERHEAD (KP_NOISE_DH_LEN + KP_NOISE_DH_LEN + 2 * KP_NOISE_TAG_LEN)
#define KP_NOISE_MSG2_OVERHEAD (KP_NOISE_DH_LEN + KP_NOISE_TAG_LEN)

typedef struct kp_noise_s {
  bool initiator;
  int step; /* messages processed so far */
  uint8_t h[KP_NOISE_HASH_LEN];
  uint8_t ck[KP_NOISE_HASH_LEN];
  uint8_t k[32];
  bool has_k;
  uint64_t n;
  uint8_t s_pk[32], s_sk[32];                 /* our static X25519 key */
  uint8_t e_pk[32], e_sk[32];                 /* our ephemeral */
  uint8_t rs[32];                             /* their static X25519 key */
  uint8_t re[32];                             /* their ephemeral */
  uint8_t remote_identity[KP_PUBLIC_KEY_LEN]; /* their ed25519 key, once known */
} kp_noise_t;

/* The result of a finished handshake. */
typedef struct kp_noise_split_s {
  uint8_t tx[32], rx[32]; /* transport keys, ours to send / receive */
  /* The handshake hash: a channel binding, never a key. It hashes public
   * bytes only, so every node that relayed the handshake can compute it. */
  uint8_t hash[KP_NOISE_HASH_LEN];
  /* HKDF(ck, "kadpunch/path/v1"): secret to the two peers. Every key and
   * token used after the handshake is derived from it (kp_hs_derive). */
  uint8_t path[KP_NOISE_HASH_LEN];
  uint8_t remote_key[KP_PUBLIC_KEY_LEN]; /* the peer's ed25519 identity */
} kp_noise_split_t;

/* Initiator: our key pair, the responder's identity. KP_EFIELD when a key
 * is not a valid ed25519 point. */
int kp_noise_init_initiator(kp_noise_t *st, const kp_keypair_t *self,
                            const uint8_t remote_key[KP_PUBLIC_KEY_LEN], const uint8_t *prologue,
                            size_t prologue_len);
int kp_noise_init_responder(kp_noise_t *st, const kp_keypair_t *self, const uint8_t *prologue,
                            size_t prologue_len);
/* The same from raw X25519 keys (the published test vectors use them): our
 * secret key, and the responder's public key when we initiate (NULL
 * otherwise). */
int kp_noise_init_x25519(kp_noise_t *st, bool initiator, const uint8_t s_sk[32], const uint8_t *rs,
                         const uint8_t *prologue, size_t prologue_len);

/* The ephemeral's secret (32 random bytes) comes from the caller: tests pin
 * it, the glue draws it from the rng. Writes payload_len +
 * KP_NOISE_MSG1_OVERHEAD bytes. */
int kp_noise_write_msg1(kp_noise_t *st, const uint8_t e_secret[32], const uint8_t *payload,
                        size_t payload_len, uint8_t *out, size_t cap, size_t *out_len);
/* Responder: reads msg1; the payload (len - overhead bytes) goes to
 * payload_out. KP_EMALFORMED on any failure (bad length, forged, sealed for
 * another responder key: they look alike by design). The initiator's
 * static key arrives as X25519; its ed25519 identity is named in the
 * payload and checked with kp_noise_remote_matches(). */
int kp_noise_read_msg1(kp_noise_t *st, const uint8_t *msg, size_t len, uint8_t *payload_out,
                       size_t cap, size_t *payload_len);
int kp_noise_write_msg2(kp_noise_t *st, const uint8_t e_secret[32], const uint8_t *payload,
                        size_t payload_len, uint8_t *out, size_t cap, size_t *out_len);
int kp_noise_read_msg2(kp_noise_t *st, const uint8_t *msg, size_t len, uint8_t *payload_out,
                       size_t cap, size_t *payload_len);

/* After msg2 (written or read): transport keys, the path secret and the
 * handshake hash. The caller wipes st (kp_noise_clear) once done with it. */
void kp_noise_split(kp_noise_t *st, kp_noise_split_t *out);

/* Responder: true if the X25519 static key the initiator sent belongs to
 * the ed25519 identity `key` (which the initiator names in its payload);
 * it then becomes the split's remote_key. */
bool kp_noise_remote_matches(kp_noise_t *st, const uint8_t key[KP_PUBLIC_KEY_LEN]);

/* Wipes the state. */
void kp_noise_clear(kp_noise_t *st);

/* HMAC-BLAKE2b-512, as the Noise spec's HASH = BLAKE2b needs it. */
void kp_noise_hmac(const uint8_t *key, size_t key_len, const uint8_t *data, size_t len,
                   uint8_t out[KP_NOISE_HASH_LEN]);

#endif
