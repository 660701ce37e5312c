/* SPDX-License-Identifier: MIT */
/* Noise IK on libsodium (hs_noise.h). Names follow the Noise spec's
 * sections 5.1-5.3 (CipherState, SymmetricState, HandshakeState). */
#include "holepunch/hs_noise.h"

#include <sodium.h>
#include <string.h>

static const char PROTOCOL_NAME[] = "Noise_IK_25519_ChaChaPoly_BLAKE2b";
#define BLOCK_LEN 128 /* BLAKE2b's block, the HMAC pad length */

void kp_noise_hmac(const uint8_t *key, size_t key_len, const uint8_t *data, size_t len,
                   uint8_t out[KP_NOISE_HASH_LEN]) {
  uint8_t k[BLOCK_LEN] = {0}, pad[BLOCK_LEN], inner[KP_NOISE_HASH_LEN];
  if (key_len > BLOCK_LEN) {
    crypto_generichash(k, KP_NOISE_HASH_LEN, key, key_len, NULL, 0);
  } else {
    memcpy(k, key, key_len);
  }
  crypto_generichash_state st;
  for (int i = 0; i < BLOCK_LEN; i++) pad[i] = k[i] ^ 0x36;
  crypto_generichash_init(&st, NULL, 0, KP_NOISE_HASH_LEN);
  crypto_generichash_update(&st, pad, BLOCK_LEN);
  crypto_generichash_update(&st, data, len);
  crypto_generichash_final(&st, inner, KP_NOISE_HASH_LEN);
  for (int i = 0; i < BLOCK_LEN; i++) pad[i] = k[i] ^ 0x5c;
  crypto_generichash_init(&st, NULL, 0, KP_NOISE_HASH_LEN);
  crypto_generichash_update(&st, pad, BLOCK_LEN);
  crypto_generichash_update(&st, inner, KP_NOISE_HASH_LEN);
  crypto_generichash_final(&st, out, KP_NOISE_HASH_LEN);
  sodium_memzero(k, sizeof(k));
  sodium_memzero(pad, sizeof(pad));
  sodium_memzero(inner, sizeof(inner));
}

/* HKDF with two outputs (the spec's HKDF(ck, ikm, 2)). */
static void hkdf2(const uint8_t ck[KP_NOISE_HASH_LEN], const uint8_t *ikm, size_t ikm_len,
                  uint8_t out1[KP_NOISE_HASH_LEN], uint8_t out2[KP_NOISE_HASH_LEN]) {
  uint8_t temp[KP_NOISE_HASH_LEN], in[KP_NOISE_HASH_LEN + 1];
  kp_noise_hmac(ck, KP_NOISE_HASH_LEN, ikm, ikm_len, temp);
  in[0] = 1;
  kp_noise_hmac(temp, sizeof(temp), in, 1, out1);
  memcpy(in, out1, KP_NOISE_HASH_LEN);
  in[KP_NOISE_HASH_LEN] = 2;
  kp_noise_hmac(temp, sizeof(temp), in, sizeof(in), out2);
  sodium_memzero(temp, sizeof(temp));
  sodium_memzero(in, sizeof(in));
}

static void mix_hash(kp_noise_t *st, const uint8_t *data, size_t len) {
  crypto_generichash_state hs;
  crypto_generichash_init(&hs, NULL, 0, KP_NOISE_HASH_LEN);
  crypto_generichash_update(&hs, st->h, KP_NOISE_HASH_LEN);
  crypto_generichash_update(&hs, data, len);
  crypto_generichash_final(&hs, st->h, KP_NOISE_HASH_LEN);
}

static void mix_key(kp_noise_t *st, const uint8_t *ikm, size_t len) {
  uint8_t temp_k[KP_NOISE_HASH_LEN];
  hkdf2(st->ck, ikm, len, st->ck, temp_k);
  memcpy(st->k, temp_k, 32); /* HASHLEN 64: truncated to the cipher's key */
  st->has_k = true;
  st->n = 0;
  sodium_memzero(temp_k, sizeof(temp_k));
}

static void nonce_bytes(uint64_t n, uint8_t out[12]) {
  memset(out, 0, 4);
  for (int i = 0; i < 8; i++) out[4 + i] = (uint8_t)(n >> (8 * i)); /* little-endian */
}

/* EncryptAndHash: out must hold len + 16 bytes (or len without a key). */
static size_t encrypt_and_hash(kp_noise_t *st, const uint8_t *plain, size_t len, uint8_t *out) {
  size_t out_len = len;
  if (st->has_k) {
    uint8_t nonce[12];
    unsigned long long clen;
    nonce_bytes(st->n++, nonce);
    crypto_aead_chacha20poly1305_ietf_encrypt(out, &clen, plain, len, st->h, KP_NOISE_HASH_LEN,
                                              NULL, nonce, st->k);
    out_len = (size_t)clen;
  } else {
    memmove(out, plain, len);
  }
  mix_hash(st, out, out_len);
  return out_len;
}

static int decrypt_and_hash(kp_noise_t *st, const uint8_t *cipher, size_t len, uint8_t *out,
                            size_t *out_len) {
  if (!st->has_k) {
    memmove(out, cipher, len);
    *out_len = len;
    mix_hash(st, cipher, len);
    return 0;
  }
  if (len < KP_NOISE_TAG_LEN) return KP_EMALFORMED;
  uint8_t nonce[12];
  unsigned long long plen;
  nonce_bytes(st->n, nonce);
  if (crypto_aead_chacha20poly1305_ietf_decrypt(out, &plen, NULL, cipher, len, st->h,
                                                KP_NOISE_HASH_LEN, nonce, st->k))
    return KP_EMALFORMED;
  st->n++;
  mix_hash(st, cipher, len);
  *out_len = (size_t)plen;
  return 0;
}

static int dh(uint8_t out[32], const uint8_t sk[32], const uint8_t pk[32]) {
  /* libsodium refuses low-order points (an all-zero result). */
  return crypto_scalarmult(out, sk, pk) ? KP_EMALFORMED : 0;
}

static void init_symmetric(kp_noise_t *st, bool initiator, const uint8_t *prologue,
                           size_t prologue_len) {
  memset(st, 0, sizeof(*st));
  st->initiator = initiator;
  memcpy(st->h, PROTOCOL_NAME, sizeof(PROTOCOL_NAME) - 1); /* shorter than HASHLEN: padded */
  memcpy(st->ck, st->h, KP_NOISE_HASH_LEN);
  mix_hash(st, prologue, prologue_len);
}

int kp_noise_init_x25519(kp_noise_t *st, bool initiator, const uint8_t s_sk[32], const uint8_t *rs,
                         const uint8_t *prologue, size_t prologue_len) {
  init_symmetric(st, initiator, prologue, prologue_len);
  memcpy(st->s_sk, s_sk, 32);
  if (crypto_scalarmult_base(st->s_pk, st->s_sk)) return KP_EFIELD;
  if (initiator) {
    if (!rs) return KP_EFIELD;
    memcpy(st->rs, rs, 32);
    mix_hash(st, st->rs, 32); /* <- s */
  } else {
    mix_hash(st, st->s_pk, 32); /* <- s */
  }
  return 0;
}

int kp_noise_init_initiator(kp_noise_t *st, const kp_keypair_t *self,
                            const uint8_t remote_key[KP_PUBLIC_KEY_LEN], const uint8_t *prologue,
                            size_t prologue_len) {
  uint8_t s_sk[32], rs[32];
  int err = crypto_sign_ed25519_sk_to_curve25519(s_sk, self->secret_key) ||
                    crypto_sign_ed25519_pk_to_curve25519(rs, remote_key)
                ? KP_EFIELD
                : kp_noise_init_x25519(st, true, s_sk, rs, prologue, prologue_len);
  sodium_memzero(s_sk, sizeof(s_sk));
  if (!err) memcpy(st->remote_identity, remote_key, KP_PUBLIC_KEY_LEN);
  return err;
}

int kp_noise_init_responder(kp_noise_t *st, const kp_keypair_t *self, const uint8_t *prologue,
                            size_t prologue_len) {
  uint8_t s_sk[32];
  int err = crypto_sign_ed25519_sk_to_curve25519(s_sk, self->secret_key)
                ? KP_EFIELD
                : kp_noise_init_x25519(st, false, s_sk, NULL, prologue, prologue_len);
  sodium_memzero(s_sk, sizeof(s_sk));
  return err;
}

static void make_ephemeral(kp_noise_t *st, const uint8_t e_secret[32]) {
  memcpy(st->e_sk, e_secret, 32);
  crypto_scalarmult_base(st->e_pk, st->e_sk);
}

int kp_noise_write_msg1(kp_noise_t *st, const uint8_t e_secret[32], const uint8_t *payload,
                        size_t payload_len, uint8_t *out, size_t cap, size_t *out_len) {
  if (!st->initiator || st->step != 0) return KP_ESTATE;
  if (cap < payload_len + KP_NOISE_MSG1_OVERHEAD) return KP_ENOSPACE;
  uint8_t shared[32];
  size_t off = 0;
  make_ephemeral(st, e_secret);
  memcpy(out, st->e_pk, 32); /* e */
  mix_hash(st, st->e_pk, 32);
  off += 32;
  if (dh(shared, st->e_sk, st->rs)) return KP_EFIELD; /* es */
  mix_key(st, shared, 32);
  off += encrypt_and_hash(st, st->s_pk, 32, out + off); /* s */
  if (dh(shared, st->s_sk, st->rs)) return KP_EFIELD;   /* ss */
  mix_key(st, shared, 32);
  off += encrypt_and_hash(st, payload, payload_len, out + off);
  sodium_memzero(shared, sizeof(shared));
  st->step = 1;
  *out_len = off;
  return 0;
}

int kp_noise_read_msg1(kp_noise_t *st, const uint8_t *msg, size_t len, uint8_t *payload_out,
                       size_t cap, size_t *payload_len) {
  if (st->initiator || st->step != 0) return KP_ESTATE;
  if (len < KP_NOISE_MSG1_OVERHEAD || len - KP_NOISE_MSG1_OVERHEAD > cap) return KP_EMALFORMED;
  uint8_t shared[32];
  size_t n;
  memcpy(st->re, msg, 32);
  mix_hash(st, st->re, 32);
  int err = dh(shared, st->s_sk, st->re); /* es */
  if (!err) {
    mix_key(st, shared, 32);
    err = decrypt_and_hash(st, msg + 32, 32 + KP_NOISE_TAG_LEN, st->rs, &n);
  }
  if (!err) err = dh(shared, st->s_sk, st->rs); /* ss */
  if (!err) {
    mix_key(st, shared, 32);
    err = decrypt_and_hash(st, msg + 32 + 32 + KP_NOISE_TAG_LEN, len - (32 + 32 + KP_NOISE_TAG_LEN),
                           payload_out, payload_len);
  }
  sodium_memzero(shared, sizeof(shared));
  if (err) return KP_EMALFORMED;
  st->step = 1;
  return 0;
}

int kp_noise_write_msg2(kp_noise_t *st, const uint8_t e_secret[32], const uint8_t *payload,
                        size_t payload_len, uint8_t *out, size_t cap, size_t *out_len) {
  if (st->initiator || st->step != 1) return KP_ESTATE;
  if (cap < payload_len + KP_NOISE_MSG2_OVERHEAD) return KP_ENOSPACE;
  uint8_t shared[32];
  make_ephemeral(st, e_secret);
  memcpy(out, st->e_pk, 32); /* e */
  mix_hash(st, st->e_pk, 32);
  if (dh(shared, st->e_sk, st->re)) return KP_EFIELD; /* ee */
  mix_key(st, shared, 32);
  if (dh(shared, st->e_sk, st->rs)) return KP_EFIELD; /* se */
  mix_key(st, shared, 32);
  *out_len = 32 + encrypt_and_hash(st, payload, payload_len, out + 32);
  sodium_memzero(shared, sizeof(shared));
  st->step = 2;
  return 0;
}

int kp_noise_read_msg2(kp_noise_t *st, const uint8_t *msg, size_t len, uint8_t *payload_out,
                       size_t cap, size_t *payload_len) {
  if (!st->initiator || st->step != 1) return KP_ESTATE;
  if (len < KP_NOISE_MSG2_OVERHEAD || len - KP_NOISE_MSG2_OVERHEAD > cap) return KP_EMALFORMED;
  /* Work on a copy so a forged reply leaves the state untouched and the
   * genuine one can still be read. */
  kp_noise_t tmp = *st;
  uint8_t shared[32];
  memcpy(tmp.re, msg, 32);
  mix_hash(&tmp, tmp.re, 32);
  int err = dh(shared, tmp.e_sk, tmp.re); /* ee */
  if (!err) {
    mix_key(&tmp, shared, 32);
    err = dh(shared, tmp.s_sk, tmp.re); /* se */
  }
  if (!err) {
    mix_key(&tmp, shared, 32);
    err = decrypt_and_hash(&tmp, msg + 32, len - 32, payload_out, payload_len);
  }
  sodium_memzero(shared, sizeof(shared));
  if (!err) {
    tmp.step = 2;
    *st = tmp;
  }
  sodium_memzero(&tmp, sizeof(tmp));
  return err ? KP_EMALFORMED : 0;
}

void kp_noise_split(kp_noise_t *st, kp_noise_split_t *out) {
  static const char path_label[] = "kadpunch/path/v1";
  uint8_t k1[KP_NOISE_HASH_LEN], k2[KP_NOISE_HASH_LEN];
  hkdf2(st->ck, NULL, 0, k1, k2);
  /* k1 carries initiator -> responder. */
  memcpy(out->tx, st->initiator ? k1 : k2, 32);
  memcpy(out->rx, st->initiator ? k2 : k1, 32);
  /* Everything else the two peers use after the handshake comes from the
   * chaining key too, which only they know (it mixes every DH output);
   * never from h, which hashes public bytes only. The label keeps it apart
   * from the transport keys above. */
  hkdf2(st->ck, (const uint8_t *)path_label, sizeof(path_label) - 1, out->path, k2);
  memcpy(out->hash, st->h, KP_NOISE_HASH_LEN);
  memcpy(out->remote_key, st->remote_identity, KP_PUBLIC_KEY_LEN);
  sodium_memzero(k1, sizeof(k1));
  sodium_memzero(k2, sizeof(k2));
}

bool kp_noise_remote_matches(kp_noise_t *st, const uint8_t key[KP_PUBLIC_KEY_LEN]) {
  uint8_t x[32];
  if (crypto_sign_ed25519_pk_to_curve25519(x, key)) return false;
  if (sodium_memcmp(x, st->rs, 32)) return false;
  memcpy(st->remote_identity, key, KP_PUBLIC_KEY_LEN);
  return true;
}

void kp_noise_clear(kp_noise_t *st) {
  sodium_memzero(st, sizeof(*st));
}
