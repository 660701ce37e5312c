/* SPDX-License-Identifier: MIT */
/* Identity: ed25519 key pairs from a seed, and their text form. Making a
 * key pair (randomness) and key files (I/O) are glue: common/uv/key_file.c. */
#include <sodium.h>
#include <string.h>

#include "common/z32.h"
#include "kadpunch_base.h"

void kp_keypair_from_seed(kp_keypair_t *kp, const uint8_t seed[KP_SEED_LEN]) {
  crypto_sign_seed_keypair(kp->public_key, kp->secret_key, seed);
}

void kp_keypair_wipe(kp_keypair_t *kp) {
  sodium_memzero(kp, sizeof(*kp));
}

void kp_key_to_text(const uint8_t public_key[KP_PUBLIC_KEY_LEN], char out[KP_KEY_TEXT_LEN + 1]) {
  kp_z32_encode(public_key, KP_PUBLIC_KEY_LEN, out);
}

int kp_key_from_text(const char *text, uint8_t public_key[KP_PUBLIC_KEY_LEN]) {
  if (!text || kp_z32_decode(text, public_key, KP_PUBLIC_KEY_LEN)) {
    memset(public_key, 0, KP_PUBLIC_KEY_LEN);
    return KP_EKEYFORMAT;
  }
  return 0;
}
