/* SPDX-License-Identifier: MIT */
#include "stream/stream_crypto.h"

#include <string.h>

#ifdef KP_HAVE_LIBCRYPTO
#include <openssl/evp.h>
#endif

#include "common/alloc.h"

static const char iv_label[] = "kadpunch/stream-iv/v1";

int kp_aead_init_sodium(kp_aead_t *a, kp_cipher_t cipher, const uint8_t key[32]) {
  memset(a, 0, sizeof(*a));
  if (cipher != KP_CIPHER_CHACHA20_POLY1305 && cipher != KP_CIPHER_AES256_GCM) return KP_ECONFIG;
  /* libsodium picks its SIMD implementations here; without it ChaCha20
   * runs the portable code at a third of the speed. */
  if (sodium_init() < 0) return KP_ECONFIG;
  if (cipher == KP_CIPHER_AES256_GCM) {
    if (!crypto_aead_aes256gcm_is_available()) return KP_ECONFIG;
    /* The state must be 16-byte aligned: over-allocate and align. */
    void *raw = kp_malloc(sizeof(crypto_aead_aes256gcm_state) + 16 + sizeof(void *));
    if (!raw) return KP_ENOMEM;
    uintptr_t p = ((uintptr_t)raw + sizeof(void *) + 15) & ~(uintptr_t)15;
    ((void **)p)[-1] = raw;
    a->aes = (crypto_aead_aes256gcm_state *)p;
    crypto_aead_aes256gcm_beforenm(a->aes, key);
  }
  a->cipher = cipher;
  memcpy(a->key, key, 32);
  /* BLAKE2b's shortest output is 16 bytes; the iv is its first 12. */
  uint8_t h[crypto_generichash_BYTES_MIN];
  crypto_generichash(h, sizeof(h), (const uint8_t *)iv_label, sizeof(iv_label) - 1, key, 32);
  memcpy(a->iv, h, sizeof(a->iv));
  return 0;
}

#ifdef KP_HAVE_LIBCRYPTO
/* libcrypto's ChaCha20-Poly1305, keyed once: each packet then only sets
 * its nonce. On 1400-byte packets it seals in about 1.5 us where
 * libsodium's takes 2.5 (measured on the development machine: libsodium
 * runs the keystream block for the Poly1305 key and the message as two
 * calls, and its ChaCha20 leaves the last 384 bytes of such a packet to
 * narrower code). Below EVP_MIN_LEN its per-call overhead eats the gain.
 * NULL (libsodium does it) if the context cannot be made. */
#define EVP_MIN_LEN 512

static EVP_CIPHER_CTX *evp_for(kp_aead_t *a, size_t len) {
  if (!a->evp_able || len < a->evp_min) return NULL;
  if (!a->evp) {
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx) return NULL;
    if (EVP_CipherInit_ex(ctx, EVP_chacha20_poly1305(), NULL, a->key, NULL, 1) != 1) {
      EVP_CIPHER_CTX_free(ctx);
      a->evp_able = false;
      return NULL;
    }
    a->evp = ctx;
  }
  return a->evp;
}
#endif

int kp_aead_init(kp_aead_t *a, kp_cipher_t cipher, const uint8_t key[32]) {
  int err = kp_aead_init_sodium(a, cipher, key);
#ifdef KP_HAVE_LIBCRYPTO
  a->evp_able = !err && cipher == KP_CIPHER_CHACHA20_POLY1305;
  a->evp_min = EVP_MIN_LEN;
#endif
  return err;
}

bool kp_aead_uses_libcrypto(const kp_aead_t *a) {
  return a->evp_able;
}

kp_cipher_t kp_cipher_preferred(void) {
  if (sodium_init() < 0) return KP_CIPHER_CHACHA20_POLY1305;
  return crypto_aead_aes256gcm_is_available() ? KP_CIPHER_AES256_GCM : KP_CIPHER_CHACHA20_POLY1305;
}

void kp_aead_destroy(kp_aead_t *a) {
#ifdef KP_HAVE_LIBCRYPTO
  EVP_CIPHER_CTX_free(a->evp); /* wipes the key schedule */
#endif
  if (a->aes) {
    sodium_memzero(a->aes, sizeof(*a->aes));
    kp_free(((void **)a->aes)[-1]);
  }
  sodium_memzero(a, sizeof(*a));
}

static void nonce_for(const kp_aead_t *a, uint64_t pn, uint8_t nonce[12]) {
  memcpy(nonce, a->iv, 12);
  for (int i = 0; i < 8; i++) nonce[11 - i] ^= (uint8_t)(pn >> (8 * i));
}

void kp_aead_seal(kp_aead_t *a, uint64_t pn, const uint8_t *ad, size_t ad_len, uint8_t *data,
                  size_t len, uint8_t tag[16]) {
  uint8_t nonce[12];
  nonce_for(a, pn, nonce);
#ifdef KP_HAVE_LIBCRYPTO
  EVP_CIPHER_CTX *ctx = evp_for(a, len);
  if (ctx) {
    /* In place; lengths are a datagram's, far below INT_MAX. Cannot fail
     * once keyed (it only copies and computes). */
    int n;
    EVP_CipherInit_ex(ctx, NULL, NULL, NULL, nonce, 1);
    EVP_CipherUpdate(ctx, NULL, &n, ad, (int)ad_len);
    EVP_CipherUpdate(ctx, data, &n, data, (int)len);
    EVP_CipherFinal_ex(ctx, data + n, &n);
    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, tag);
    return;
  }
#endif
  if (a->cipher == KP_CIPHER_AES256_GCM)
    crypto_aead_aes256gcm_encrypt_detached_afternm(data, tag, NULL, data, len, ad, ad_len, NULL,
                                                   nonce, a->aes);
  else
    crypto_aead_chacha20poly1305_ietf_encrypt_detached(data, tag, NULL, data, len, ad, ad_len, NULL,
                                                       nonce, a->key);
}

int kp_aead_open(kp_aead_t *a, uint64_t pn, const uint8_t *ad, size_t ad_len, uint8_t *data,
                 size_t len, const uint8_t tag[16]) {
  uint8_t nonce[12];
  nonce_for(a, pn, nonce);
#ifdef KP_HAVE_LIBCRYPTO
  EVP_CIPHER_CTX *ctx = evp_for(a, len);
  if (ctx) {
    /* Decrypts before it verifies: on failure the data is garbage, and the
     * caller drops it. */
    int n;
    if (EVP_CipherInit_ex(ctx, NULL, NULL, NULL, nonce, 0) != 1 ||
        EVP_CipherUpdate(ctx, NULL, &n, ad, (int)ad_len) != 1 ||
        EVP_CipherUpdate(ctx, data, &n, data, (int)len) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, 16, (void *)tag) != 1)
      return -1;
    return EVP_CipherFinal_ex(ctx, data + n, &n) == 1 ? 0 : -1;
  }
#endif
  if (a->cipher == KP_CIPHER_AES256_GCM)
    return crypto_aead_aes256gcm_decrypt_detached_afternm(data, NULL, data, len, tag, ad, ad_len,
                                                          nonce, a->aes);
  return crypto_aead_chacha20poly1305_ietf_decrypt_detached(data, NULL, data, len, tag, ad, ad_len,
                                                            nonce, a->key);
}

bool kp_replay_check(const kp_replay_t *r, uint64_t pn) {
  if (!r->any || pn > r->largest) return true;
  uint64_t age = r->largest - pn;
  if (age >= KP_REPLAY_WINDOW) return false;
  return !(r->bits[age / 64] & (1ull << (age % 64)));
}

void kp_replay_mark(kp_replay_t *r, uint64_t pn) {
  if (!r->any) {
    r->any = true;
    r->largest = pn;
    memset(r->bits, 0, sizeof(r->bits));
    r->bits[0] = 1;
    return;
  }
  if (pn > r->largest) {
    uint64_t shift = pn - r->largest;
    if (shift >= KP_REPLAY_WINDOW) {
      memset(r->bits, 0, sizeof(r->bits));
    } else {
      /* Shift the bitmap towards older ages by `shift` bits. */
      size_t words = KP_REPLAY_WINDOW / 64, ws = (size_t)(shift / 64), bs = (size_t)(shift % 64);
      for (size_t i = words; i-- > 0;) {
        uint64_t v = i >= ws ? r->bits[i - ws] << bs : 0;
        if (bs && i >= ws + 1) v |= r->bits[i - ws - 1] >> (64 - bs);
        r->bits[i] = v;
      }
    }
    r->largest = pn;
    r->bits[0] |= 1;
    return;
  }
  uint64_t age = r->largest - pn;
  if (age < KP_REPLAY_WINDOW) r->bits[age / 64] |= 1ull << (age % 64);
}
