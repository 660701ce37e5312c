/* SPDX-License-Identifier: MIT */
#include "holepunch/hs_msg.h"

#include <sodium.h>
#include <string.h>

#include "common/buf.h"
#include "common/mp.h"

#define MAX_DEPTH 4

static void pack_addr(msgpack_packer *pk, const kp_addr_t *a) {
  uint8_t b[32];
  kp_mp_pack_bin(pk, b, kp_addr_encode_compact(a, b));
}

static int unpack_addr(const msgpack_object *o, kp_addr_t *out) {
  const uint8_t *p;
  size_t n;
  if (kp_mp_bin(o, 6, 18, &p, &n)) return KP_EFIELD;
  return kp_addr_decode_compact(out, p, n) ? KP_EFIELD : 0;
}

static void pack_addrs(msgpack_packer *pk, const kp_addr_t *a, size_t n) {
  msgpack_pack_array(pk, (uint32_t)n);
  for (size_t i = 0; i < n; i++) pack_addr(pk, &a[i]);
}

/* At most max addresses into out. */
static int unpack_addrs(const msgpack_object *o, kp_addr_t *out, size_t *n, size_t max) {
  if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size > max) return KP_EFIELD;
  for (uint32_t i = 0; i < o->via.array.size; i++)
    if (unpack_addr(&o->via.array.ptr[i], &out[i])) return KP_EFIELD;
  *n = o->via.array.size;
  return 0;
}

static int finish(kp_wbuf_t *w, size_t *len) {
  *len = w->overflow ? 0 : w->len;
  return w->overflow ? KP_ETOOBIG : 0;
}

/* Parses an array of exactly n elements (more are allowed from newer
 * versions and ignored). */
/* At least n items (later versions may add more): their count in *size. */
static int open_array_n(kp_mp_doc_t *doc, const uint8_t *buf, size_t len, uint32_t n,
                        const msgpack_object **items, uint32_t *size) {
  const msgpack_object *root;
  int err = kp_mp_doc_parse(doc, buf, len, MAX_DEPTH, &root);
  if (err) return err;
  if (root->type != MSGPACK_OBJECT_ARRAY || root->via.array.size < n) {
    kp_mp_doc_free(doc);
    return KP_EFIELD;
  }
  *items = root->via.array.ptr;
  *size = root->via.array.size;
  return 0;
}

static int open_array(kp_mp_doc_t *doc, const uint8_t *buf, size_t len, uint32_t n,
                      const msgpack_object **items) {
  uint32_t size;
  return open_array_n(doc, buf, len, n, items, &size);
}

/* ---- Envelope --------------------------------------------------------------------- */

int kp_hs_wire_encode(const kp_hs_wire_t *m, uint8_t *buf, size_t cap, size_t *len) {
  kp_wbuf_t w;
  msgpack_packer pk;
  if (m->len > KP_HS_MAX_DATA) return KP_ETOOBIG;
  kp_wbuf_init(&w, buf, cap);
  kp_mp_packer_init(&pk, &w);
  msgpack_pack_array(&pk, 4);
  msgpack_pack_uint8(&pk, (uint8_t)m->mode);
  kp_mp_pack_bin(&pk, m->data, m->len);
  if (m->has_peer) {
    pack_addr(&pk, &m->peer);
  } else {
    msgpack_pack_nil(&pk);
  }
  msgpack_pack_uint64(&pk, m->session);
  return finish(&w, len);
}

int kp_hs_wire_decode(const uint8_t *buf, size_t len, kp_hs_wire_t *out) {
  kp_mp_doc_t doc;
  const msgpack_object *it;
  uint64_t mode = 0;
  memset(out, 0, sizeof(*out));
  int err = open_array(&doc, buf, len, 4, &it);
  if (err) return err;
  if (kp_mp_uint(&it[0], KP_HS_REPLY, &mode) ||
      kp_mp_bin(&it[1], 0, KP_HS_MAX_DATA, &out->data, &out->len) ||
      kp_mp_uint(&it[3], UINT64_MAX, &out->session)) {
    err = KP_EFIELD;
  } else if (!kp_mp_is_nil(&it[2])) {
    err = unpack_addr(&it[2], &out->peer);
    out->has_peer = !err;
  }
  out->mode = (kp_hs_mode_t)mode;
  kp_mp_doc_free(&doc); /* data points into buf, not into the doc */
  return err;
}

/* ---- Hello and welcome ----------------------------------------------------------------- */

int kp_hs_hello_encode(const kp_hs_hello_t *h, uint8_t *buf, size_t cap, size_t *len) {
  kp_wbuf_t w;
  msgpack_packer pk;
  kp_wbuf_init(&w, buf, cap);
  kp_mp_packer_init(&pk, &w);
  msgpack_pack_array(&pk, 8);
  msgpack_pack_uint8(&pk, h->version);
  kp_mp_pack_bin(&pk, h->client_key, KP_PUBLIC_KEY_LEN);
  msgpack_pack_uint8(&pk, (uint8_t)h->nat);
  pack_addrs(&pk, h->addrs, h->addr_count);
  msgpack_pack_uint64(&pk, h->conn_id);
  msgpack_pack_uint8(&pk, h->ciphers);
  msgpack_pack_uint64(&pk, h->timestamp);
  /* The asks: [invite id, proof (empty without), service, want info]. */
  msgpack_pack_array(&pk, 4);
  msgpack_pack_uint64(&pk, h->invite_id);
  kp_mp_pack_bin(&pk, h->invite_proof, h->invite_id ? sizeof(h->invite_proof) : 0);
  kp_mp_pack_bin(&pk, h->service, strlen(h->service));
  msgpack_pack_uint8(&pk, h->want_info);
  return finish(&w, len);
}

/* A name on the wire: bytes of allowed characters, copied out with a NUL. */
static int unpack_name(const msgpack_object *o, size_t max, bool service, char *out) {
  const uint8_t *p;
  size_t n;
  if (kp_mp_bin(o, 0, max, &p, &n)) return KP_EFIELD;
  memcpy(out, p, n);
  out[n] = '\0';
  for (size_t i = 0; i < n; i++)
    if (p[i] < 0x20 || p[i] > 0x7e) return KP_EFIELD;
  return n && service && !kp_service_name_ok(out) ? KP_EFIELD : 0;
}

static int unpack_asks(const msgpack_object *o, kp_hs_hello_t *h) {
  const uint8_t *proof;
  size_t plen;
  uint64_t info = 0;
  if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 4) return KP_EFIELD;
  const msgpack_object *a = o->via.array.ptr;
  if (kp_mp_uint(&a[0], UINT64_MAX, &h->invite_id) || kp_mp_bin(&a[1], 0, 32, &proof, &plen) ||
      plen != (h->invite_id ? 32u : 0u) || unpack_name(&a[2], KP_SERVICE_MAX, true, h->service) ||
      kp_mp_uint(&a[3], 1, &info))
    return KP_EFIELD;
  memcpy(h->invite_proof, proof, plen);
  h->want_info = info;
  return 0;
}

int kp_hs_hello_decode(const uint8_t *buf, size_t len, kp_hs_hello_t *out) {
  kp_mp_doc_t doc;
  const msgpack_object *it;
  uint64_t version = 0, nat = 0, ciphers = 0;
  memset(out, 0, sizeof(*out));
  int err = open_array(&doc, buf, len, 8, &it);
  if (err) return err;
  if (kp_mp_uint(&it[0], 255, &version) ||
      kp_mp_fixed(&it[1], out->client_key, KP_PUBLIC_KEY_LEN) ||
      kp_mp_uint(&it[2], KP_NAT_RANDOM, &nat) ||
      unpack_addrs(&it[3], out->addrs, &out->addr_count, KP_HS_MAX_ADDRS) ||
      kp_mp_uint(&it[4], UINT64_MAX, &out->conn_id) || kp_mp_uint(&it[5], 255, &ciphers) ||
      kp_mp_uint(&it[6], UINT64_MAX, &out->timestamp) || unpack_asks(&it[7], out))
    err = KP_EFIELD;
  out->version = (uint8_t)version;
  out->nat = (kp_nat_type_t)nat;
  out->ciphers = (uint8_t)ciphers;
  kp_mp_doc_free(&doc);
  return err;
}

#define WELCOME_RELAY_ONLY 1 /* flags: bit 0 */

int kp_hs_welcome_encode(const kp_hs_welcome_t *wl, uint8_t *buf, size_t cap, size_t *len) {
  kp_wbuf_t w;
  msgpack_packer pk;
  kp_wbuf_init(&w, buf, cap);
  kp_mp_packer_init(&pk, &w);
  msgpack_pack_array(&pk, 10);
  msgpack_pack_uint8(&pk, wl->version);
  msgpack_pack_uint8(&pk, (uint8_t)wl->refusal);
  msgpack_pack_uint8(&pk, (uint8_t)wl->nat);
  pack_addrs(&pk, wl->addrs, wl->addr_count);
  msgpack_pack_uint64(&pk, wl->conn_id);
  msgpack_pack_uint8(&pk, (uint8_t)wl->cipher);
  msgpack_pack_uint64(&pk, wl->session);
  pack_addrs(&pk, wl->relays, wl->relay_count);
  msgpack_pack_uint8(&pk, wl->relay_only ? WELCOME_RELAY_ONLY : 0);
  if (!wl->has_info) {
    msgpack_pack_nil(&pk);
  } else {
    /* [name, version, [services]] */
    const kp_device_info_t *in = &wl->info;
    msgpack_pack_array(&pk, 3);
    kp_mp_pack_bin(&pk, in->name, strlen(in->name));
    kp_mp_pack_bin(&pk, in->version, strlen(in->version));
    unsigned n = in->service_count < KP_SERVICES_MAX ? in->service_count : KP_SERVICES_MAX;
    msgpack_pack_array(&pk, n);
    for (unsigned i = 0; i < n; i++) kp_mp_pack_bin(&pk, in->services[i], strlen(in->services[i]));
  }
  return finish(&w, len);
}

static int unpack_info(const msgpack_object *o, kp_hs_welcome_t *wl) {
  if (kp_mp_is_nil(o)) return 0;
  if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 3) return KP_EFIELD;
  const msgpack_object *a = o->via.array.ptr;
  kp_device_info_t *in = &wl->info;
  if (unpack_name(&a[0], KP_NAME_MAX, false, in->name) ||
      unpack_name(&a[1], KP_SERVICE_MAX, false, in->version) || a[2].type != MSGPACK_OBJECT_ARRAY ||
      a[2].via.array.size > KP_SERVICES_MAX)
    return KP_EFIELD;
  for (uint32_t i = 0; i < a[2].via.array.size; i++)
    if (unpack_name(&a[2].via.array.ptr[i], KP_SERVICE_MAX, true, in->services[i]))
      return KP_EFIELD;
  in->service_count = a[2].via.array.size;
  wl->has_info = true;
  return 0;
}

int kp_hs_welcome_decode(const uint8_t *buf, size_t len, kp_hs_welcome_t *out) {
  kp_mp_doc_t doc;
  const msgpack_object *it;
  uint64_t version = 0, refusal = 0, nat = 0, cipher = 0, flags = 0;
  memset(out, 0, sizeof(*out));
  int err = open_array(&doc, buf, len, 10, &it);
  if (err) return err;
  if (kp_mp_uint(&it[0], 255, &version) || kp_mp_uint(&it[1], 255, &refusal) ||
      kp_mp_uint(&it[2], KP_NAT_RANDOM, &nat) ||
      unpack_addrs(&it[3], out->addrs, &out->addr_count, KP_HS_MAX_ADDRS) ||
      kp_mp_uint(&it[4], UINT64_MAX, &out->conn_id) ||
      kp_mp_uint(&it[5], KP_CIPHER_AES256_GCM, &cipher) ||
      kp_mp_uint(&it[6], UINT64_MAX, &out->session) ||
      unpack_addrs(&it[7], out->relays, &out->relay_count, KP_HS_MAX_RELAYS) ||
      kp_mp_uint(&it[8], 255, &flags) || unpack_info(&it[9], out))
    err = KP_EFIELD;
  out->relay_only = flags & WELCOME_RELAY_ONLY;
  out->version = (uint8_t)version;
  out->refusal = (kp_hs_refusal_t)refusal;
  out->nat = (kp_nat_type_t)nat;
  out->cipher = (kp_cipher_t)cipher;
  kp_mp_doc_free(&doc);
  return err;
}

/* ---- Holepunch rounds ---------------------------------------------------------------------- */

/* Nonce: direction and round, so no (key, nonce) pair repeats. */
static void round_nonce(uint32_t round, bool from_client, uint8_t nonce[12]) {
  memset(nonce, 0, 12);
  nonce[0] = from_client ? 1 : 2;
  for (int i = 0; i < 4; i++) nonce[8 + i] = (uint8_t)(round >> (8 * (3 - i)));
}

int kp_hp_round_seal(const kp_hp_round_t *r, const uint8_t key[32], bool from_client, uint8_t *buf,
                     size_t cap, size_t *len) {
  uint8_t plain[160], nonce[12];
  kp_wbuf_t w;
  msgpack_packer pk;
  size_t plen;
  kp_wbuf_init(&w, plain, sizeof(plain));
  kp_mp_packer_init(&pk, &w);
  msgpack_pack_array(&pk, r->relay_alt.family ? 8 : 7);
  msgpack_pack_uint32(&pk, r->round);
  msgpack_pack_uint8(&pk, (uint8_t)r->nat);
  if (r->punch) {
    msgpack_pack_true(&pk);
  } else {
    msgpack_pack_false(&pk);
  }
  msgpack_pack_uint32(&pk, r->delay_ms);
  pack_addrs(&pk, &r->relay, r->has_relay ? 1 : 0);
  pack_addrs(&pk, r->addrs, r->addr_count < KP_HP_ROUND_ADDRS ? r->addr_count : KP_HP_ROUND_ADDRS);
  msgpack_pack_uint32(&pk, r->pair_round);
  /* Item 7, after every older one (their readers skip it): a dual-stack
   * relay's other address. */
  if (r->relay_alt.family) pack_addrs(&pk, &r->relay_alt, r->has_relay ? 1 : 0);
  int err = finish(&w, &plen);
  if (err) return err;
  if (cap < 4 + plen + crypto_aead_chacha20poly1305_ietf_ABYTES) return KP_ENOSPACE;
  /* The round travels in the clear too (the receiver needs it for the
   * nonce); it is authenticated as part of the ciphertext's own bytes. */
  for (int i = 0; i < 4; i++) buf[i] = (uint8_t)(r->round >> (8 * (3 - i)));
  round_nonce(r->round, from_client, nonce);
  unsigned long long clen;
  crypto_aead_chacha20poly1305_ietf_encrypt(buf + 4, &clen, plain, plen, buf, 4, NULL, nonce, key);
  *len = 4 + (size_t)clen;
  return 0;
}

int kp_hp_round_open(const uint8_t *buf, size_t len, const uint8_t key[32], bool from_client,
                     kp_hp_round_t *out) {
  uint8_t plain[160], nonce[12];
  unsigned long long plen;
  memset(out, 0, sizeof(*out));
  if (len < 4 + crypto_aead_chacha20poly1305_ietf_ABYTES ||
      len - 4 - crypto_aead_chacha20poly1305_ietf_ABYTES > sizeof(plain))
    return KP_EMALFORMED;
  uint32_t round = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 | (uint32_t)buf[2] << 8 | buf[3];
  round_nonce(round, from_client, nonce);
  if (crypto_aead_chacha20poly1305_ietf_decrypt(plain, &plen, NULL, buf + 4, len - 4, buf, 4, nonce,
                                                key))
    return KP_EMALFORMED;
  kp_mp_doc_t doc;
  const msgpack_object *it;
  uint64_t r = 0, nat = 0, delay = 0, pair_round = 0;
  uint32_t items;
  int err = open_array_n(&doc, plain, (size_t)plen, 6, &it, &items);
  if (err) return err;
  size_t relay_count = 0, alt_count = 0;
  if (kp_mp_uint(&it[0], UINT32_MAX, &r) || r != round || kp_mp_uint(&it[1], KP_NAT_RANDOM, &nat) ||
      it[2].type != MSGPACK_OBJECT_BOOLEAN || kp_mp_uint(&it[3], 60000, &delay) ||
      unpack_addrs(&it[4], &out->relay, &relay_count, 1) ||
      (items > 7 && unpack_addrs(&it[7], &out->relay_alt, &alt_count, relay_count)) ||
      (alt_count && out->relay_alt.family == out->relay.family) ||
      unpack_addrs(&it[5], out->addrs, &out->addr_count, KP_HP_ROUND_ADDRS) ||
      (items > 6 && kp_mp_uint(&it[6], round, &pair_round)))
    err = KP_EFIELD;
  if (!err) {
    out->round = round;
    out->nat = (kp_nat_type_t)nat;
    out->punch = it[2].via.boolean;
    out->delay_ms = (uint32_t)delay;
    out->has_relay = relay_count == 1;
    out->pair_round = (uint32_t)pair_round;
  }
  kp_mp_doc_free(&doc);
  sodium_memzero(plain, sizeof(plain));
  return err;
}

/* ---- Probes ------------------------------------------------------------------------------- */

#define PROBE_NONCE_AT 10
#define PROBE_ECHO_AT 18
#define PROBE_OBSERVED_AT 26
#define PROBE_MAC_AT 45

static void probe_mac(const uint8_t *head, const uint8_t key[32], uint8_t out[16]) {
  crypto_generichash(out, 16, head, PROBE_MAC_AT, key, 32);
}

void kp_probe_encode(const kp_probe_t *p, const uint8_t key[32], uint8_t out[KP_PROBE_LEN]) {
  memset(out, 0, KP_PROBE_LEN);
  out[0] = KP_PROBE_FIRST_BYTE;
  out[1] = p->flags;
  for (int i = 0; i < 8; i++) out[2 + i] = (uint8_t)(p->conn_id >> (8 * (7 - i)));
  memcpy(out + PROBE_NONCE_AT, p->nonce, KP_PROBE_NONCE_LEN);
  memcpy(out + PROBE_ECHO_AT, p->echo, KP_PROBE_NONCE_LEN);
  if (p->has_observed)
    out[PROBE_OBSERVED_AT] =
        (uint8_t)kp_addr_encode_compact(&p->observed, out + PROBE_OBSERVED_AT + 1);
  probe_mac(out, key, out + PROBE_MAC_AT);
}

int kp_probe_peek(const uint8_t *buf, size_t len, uint64_t *conn_id, uint8_t *flags) {
  if (!kp_probe_is_packet(buf, len)) return KP_EMALFORMED;
  *flags = buf[1];
  *conn_id = 0;
  for (int i = 0; i < 8; i++) *conn_id = *conn_id << 8 | buf[2 + i];
  return 0;
}

int kp_probe_decode(const uint8_t *buf, size_t len, const uint8_t key[32], kp_probe_t *out) {
  uint8_t mac[16];
  memset(out, 0, sizeof(*out));
  if (kp_probe_peek(buf, len, &out->conn_id, &out->flags)) return KP_EMALFORMED;
  probe_mac(buf, key, mac);
  if (sodium_memcmp(mac, buf + PROBE_MAC_AT, 16)) return KP_EMALFORMED;
  memcpy(out->nonce, buf + PROBE_NONCE_AT, KP_PROBE_NONCE_LEN);
  memcpy(out->echo, buf + PROBE_ECHO_AT, KP_PROBE_NONCE_LEN);
  uint8_t olen = buf[PROBE_OBSERVED_AT];
  if (olen) {
    if (kp_addr_decode_compact(&out->observed, buf + PROBE_OBSERVED_AT + 1, olen))
      return KP_EMALFORMED;
    out->has_observed = true;
  }
  return 0;
}

/* ---- Derivations ---------------------------------------------------------------------------- */

void kp_hs_derive(const uint8_t secret[64], const char *label, uint8_t out[32]) {
  crypto_generichash(out, 32, (const uint8_t *)label, strlen(label), secret, 64);
}

const char *kp_punch_name(kp_punch_t punch) {
  switch (punch) {
    case KP_PUNCH_LAN: return "lan";
    case KP_PUNCH_OPEN: return "open";
    case KP_PUNCH_SIMULTANEOUS: return "simultaneous";
    case KP_PUNCH_BIRTHDAY: return "birthday";
    case KP_PUNCH_RELAYED: return "relayed";
    default: return "none";
  }
}
