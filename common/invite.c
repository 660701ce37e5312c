/* SPDX-License-Identifier: MIT */
/* Invitations and service names (kadpunch.h, "Services, device info,
 * invitations"; docs/protocol.md "Invitations"). */
#include <sodium.h>
#include <string.h>

#include "common/z32.h"
#include "kadpunch_base.h"

#define INVITE_BYTES (KP_PUBLIC_KEY_LEN + 8 + 16)

bool kp_service_name_ok(const char *name) {
  size_t n = strlen(name);
  if (!n || n > KP_SERVICE_MAX) return false;
  for (size_t i = 0; i < n; i++) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

void kp_invite_to_text(const kp_invite_t *inv, char out[KP_INVITE_TEXT_LEN + 1]) {
  uint8_t b[INVITE_BYTES];
  memcpy(b, inv->server_key, KP_PUBLIC_KEY_LEN);
  for (int i = 0; i < 8; i++) b[KP_PUBLIC_KEY_LEN + i] = (uint8_t)(inv->id >> (56 - 8 * i));
  memcpy(b + KP_PUBLIC_KEY_LEN + 8, inv->secret, 16);
  kp_z32_encode(b, sizeof(b), out);
  sodium_memzero(b, sizeof(b));
}

int kp_invite_from_text(const char *text, kp_invite_t *out) {
  uint8_t b[INVITE_BYTES];
  memset(out, 0, sizeof(*out));
  if (!text || strlen(text) != KP_INVITE_TEXT_LEN || kp_z32_decode(text, b, sizeof(b)))
    return KP_EKEYFORMAT;
  memcpy(out->server_key, b, KP_PUBLIC_KEY_LEN);
  for (int i = 0; i < 8; i++) out->id = out->id << 8 | b[KP_PUBLIC_KEY_LEN + i];
  memcpy(out->secret, b + KP_PUBLIC_KEY_LEN + 8, 16);
  sodium_memzero(b, sizeof(b));
  return out->id ? 0 : KP_EKEYFORMAT;
}

void kp_invite_proof(const kp_invite_t *inv, const uint8_t client_key[KP_PUBLIC_KEY_LEN],
                     uint8_t proof[32]) {
  static const char label[] = "kadpunch/invite/v1";
  uint8_t id[8];
  for (int i = 0; i < 8; i++) id[i] = (uint8_t)(inv->id >> (56 - 8 * i));
  crypto_generichash_state st;
  crypto_generichash_init(&st, inv->secret, sizeof(inv->secret), 32);
  crypto_generichash_update(&st, (const uint8_t *)label, sizeof(label) - 1);
  crypto_generichash_update(&st, id, sizeof(id));
  crypto_generichash_update(&st, client_key, KP_PUBLIC_KEY_LEN);
  crypto_generichash_update(&st, inv->server_key, KP_PUBLIC_KEY_LEN);
  crypto_generichash_final(&st, proof, 32);
}

bool kp_invite_check(const kp_invite_t *inv, const uint8_t client_key[KP_PUBLIC_KEY_LEN],
                     const uint8_t proof[32]) {
  uint8_t want[32];
  kp_invite_proof(inv, client_key, want);
  bool ok = !sodium_memcmp(want, proof, 32);
  sodium_memzero(want, sizeof(want));
  return ok;
}
