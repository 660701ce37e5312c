/* SPDX-License-Identifier: MIT */
#include "dht/dht_record.h"

#include <sodium.h>
#include <string.h>

#include "common/buf.h"
#include "common/mp.h"

/* Domain separation: every hash and signature names what it is for, so no
 * signed or hashed object can be passed off as another kind. Keys for
 * BLAKE2b must be at least 16 bytes. */
static const char domain_topic[] = "kadpunch/topic/v1";
static const char domain_peer[] = "kadpunch/peer/v1";
static const char domain_mutable_target[] = "kadpunch/mutable/v1";
static const char domain_immutable_target[] = "kadpunch/immutable/v1";
static const char sign_announce[] = "kadpunch/announce/v1";
static const char sign_unannounce[] = "kadpunch/unannounce/v1";
static const char sign_origin[] = "kadpunch/announce-origin/v1";
static const char sign_mutable[] = "kadpunch/mutable-value/v1";

/* Room for the longest signed message: domain, target, seq and a value. */
#define MAX_SIGNED (64 + KP_ID_LEN + 8 + KP_MUTABLE_MAX_VALUE)

static void keyed_hash(const char *domain, const void *a, size_t alen, const void *b, size_t blen,
                       uint8_t out[KP_ID_LEN]) {
  crypto_generichash_state st;
  crypto_generichash_init(&st, (const uint8_t *)domain, strlen(domain), KP_ID_LEN);
  if (alen) crypto_generichash_update(&st, a, alen);
  if (blen) crypto_generichash_update(&st, b, blen);
  crypto_generichash_final(&st, out, KP_ID_LEN);
}

void kp_target_from_topic(const void *topic, size_t len, uint8_t target[KP_ID_LEN]) {
  keyed_hash(domain_topic, topic, len, NULL, 0, target);
}

void kp_target_from_key(const uint8_t public_key[KP_PUBLIC_KEY_LEN], uint8_t target[KP_ID_LEN]) {
  keyed_hash(domain_peer, public_key, KP_PUBLIC_KEY_LEN, NULL, 0, target);
}

void kp_dht_target_mutable(const uint8_t public_key[KP_PUBLIC_KEY_LEN], const uint8_t *salt,
                           size_t salt_len, uint8_t target[KP_ID_LEN]) {
  keyed_hash(domain_mutable_target, public_key, KP_PUBLIC_KEY_LEN, salt, salt_len, target);
}

void kp_dht_target_immutable(const uint8_t *value, size_t len, uint8_t target[KP_ID_LEN]) {
  keyed_hash(domain_immutable_target, value, len, NULL, 0, target);
}

/* The bytes a signature covers: domain (with its NUL), target, body. */
static size_t signed_message(uint8_t *out, size_t cap, const char *domain,
                             const uint8_t target[KP_ID_LEN], const uint8_t *body, size_t len) {
  size_t dlen = strlen(domain) + 1;
  if (dlen + KP_ID_LEN + len > cap) return 0;
  memcpy(out, domain, dlen);
  memcpy(out + dlen, target, KP_ID_LEN);
  memcpy(out + dlen + KP_ID_LEN, body, len);
  return dlen + KP_ID_LEN + len;
}

static int sign(const char *domain, const uint8_t target[KP_ID_LEN], const uint8_t *body,
                size_t len, const uint8_t sk[KP_SECRET_KEY_LEN], uint8_t sig[KP_SIGNATURE_LEN]) {
  uint8_t msg[MAX_SIGNED];
  size_t n = signed_message(msg, sizeof(msg), domain, target, body, len);
  if (!n) return KP_ETOOBIG;
  crypto_sign_detached(sig, NULL, msg, n, sk);
  return 0;
}

static int verify(const char *domain, const uint8_t target[KP_ID_LEN], const uint8_t *body,
                  size_t len, const uint8_t pk[KP_PUBLIC_KEY_LEN],
                  const uint8_t sig[KP_SIGNATURE_LEN]) {
  uint8_t msg[MAX_SIGNED];
  size_t n = signed_message(msg, sizeof(msg), domain, target, body, len);
  if (!n) return KP_ETOOBIG;
  return crypto_sign_verify_detached(sig, msg, n, pk) == 0 ? 0 : KP_EBADSIG;
}

void kp_dht_origin_sign(const uint8_t target[KP_ID_LEN], const uint8_t token[32],
                        const uint8_t secret_key[KP_SECRET_KEY_LEN],
                        uint8_t proof[KP_ORIGIN_PROOF_LEN]) {
  sign(sign_origin, target, token, 32, secret_key, proof);
}

int kp_dht_origin_verify(const uint8_t target[KP_ID_LEN], const uint8_t token[32],
                         const uint8_t public_key[KP_PUBLIC_KEY_LEN],
                         const uint8_t proof[KP_ORIGIN_PROOF_LEN]) {
  return verify(sign_origin, target, token, 32, public_key, proof);
}

/* [body: bin, signature: bin 64] around a body packed by the caller. */
static int pack_signed(const uint8_t *body, size_t body_len, const uint8_t sig[KP_SIGNATURE_LEN],
                       uint8_t *buf, size_t cap, size_t *len) {
  kp_wbuf_t w;
  msgpack_packer pk;
  kp_wbuf_init(&w, buf, cap);
  kp_mp_packer_init(&pk, &w);
  msgpack_pack_array(&pk, 2);
  kp_mp_pack_bin(&pk, body, body_len);
  kp_mp_pack_bin(&pk, sig, KP_SIGNATURE_LEN);
  *len = w.overflow ? 0 : w.len;
  return w.overflow ? KP_ETOOBIG : 0;
}

/* Splits a parsed [body, signature]. */
static int unpack_signed(const msgpack_object *o, const uint8_t **body, size_t *body_len,
                         uint8_t sig[KP_SIGNATURE_LEN]) {
  if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 2) return KP_EMALFORMED;
  int err = kp_mp_bin(&o->via.array.ptr[0], 1, KP_RECORD_MAX_SIZE, body, body_len);
  if (!err) err = kp_mp_fixed(&o->via.array.ptr[1], sig, KP_SIGNATURE_LEN);
  return err;
}

static int check_version(const msgpack_object *o) {
  uint64_t v;
  if (kp_mp_uint(o, UINT8_MAX, &v)) return KP_EFIELD;
  return v == KP_RECORD_VERSION ? 0 : KP_EVERSION;
}

/* ---- Announce records ---------------------------------------------------- */

int kp_dht_record_encode(const kp_record_t *rec, const uint8_t target[KP_ID_LEN],
                         const uint8_t secret_key[KP_SECRET_KEY_LEN], uint8_t *buf, size_t cap,
                         size_t *len) {
  uint8_t body[KP_RECORD_MAX_SIZE];
  *len = 0;
  if (rec->relay_count > KP_RECORD_MAX_RELAYS || rec->data_len > KP_RECORD_MAX_DATA)
    return KP_ETOOBIG;
  kp_wbuf_t w;
  msgpack_packer pk;
  kp_wbuf_init(&w, body, sizeof(body));
  kp_mp_packer_init(&pk, &w);
  msgpack_pack_array(&pk, 5);
  msgpack_pack_uint8(&pk, KP_RECORD_VERSION);
  kp_mp_pack_bin(&pk, rec->public_key, KP_PUBLIC_KEY_LEN);
  msgpack_pack_uint64(&pk, rec->seq);
  msgpack_pack_array(&pk, rec->relay_count);
  for (size_t i = 0; i < rec->relay_count; i++) {
    uint8_t c[KP_ADDR_COMPACT_MAX];
    size_t n = kp_addr_encode_compact(&rec->relays[i], c);
    if (!n) return KP_EBADADDR;
    kp_mp_pack_bin(&pk, c, n);
  }
  kp_mp_pack_bin_opt(&pk, rec->data_len ? rec->data : NULL, rec->data_len);
  if (w.overflow) return KP_ETOOBIG;
  uint8_t sig[KP_SIGNATURE_LEN];
  int err = sign(sign_announce, target, body, w.len, secret_key, sig);
  return err ? err : pack_signed(body, w.len, sig, buf, cap, len);
}

static int decode_record_body(const uint8_t *body, size_t len, kp_record_t *out) {
  kp_mp_doc_t doc;
  const msgpack_object *root;
  int err = kp_mp_doc_parse(&doc, body, len, 2, &root);
  if (err) return err;
  const msgpack_object *f = root->via.array.ptr;
  if (root->type != MSGPACK_OBJECT_ARRAY || root->via.array.size != 5)
    err = KP_EMALFORMED;
  else if ((err = check_version(&f[0])) == 0 &&
           (err = kp_mp_fixed(&f[1], out->public_key, KP_PUBLIC_KEY_LEN)) == 0 &&
           (err = kp_mp_uint(&f[2], UINT64_MAX, &out->seq)) == 0) {
    if (f[3].type != MSGPACK_OBJECT_ARRAY || f[3].via.array.size > KP_RECORD_MAX_RELAYS) {
      err = KP_EFIELD;
    } else {
      out->relay_count = f[3].via.array.size;
      for (size_t i = 0; i < out->relay_count && !err; i++) {
        const uint8_t *a;
        size_t alen;
        err = kp_mp_bin(&f[3].via.array.ptr[i], KP_ADDR_COMPACT_V4, KP_ADDR_COMPACT_V6, &a, &alen);
        if (!err && kp_addr_decode_compact(&out->relays[i], a, alen)) err = KP_EFIELD;
      }
    }
    if (!err) err = kp_mp_bin_opt(&f[4], 1, KP_RECORD_MAX_DATA, &out->data, &out->data_len);
  }
  kp_mp_doc_free(&doc);
  return err;
}

/* Decodes one [body, signature] element; verifies it unless `wanted` says
 * the caller does not want it (then returns 1). */
static int record_from_object(const msgpack_object *o, const uint8_t target[KP_ID_LEN],
                              kp_dht_record_wanted_fn wanted, void *ctx, kp_record_t *out) {
  const uint8_t *body;
  size_t body_len;
  uint8_t sig[KP_SIGNATURE_LEN];
  memset(out, 0, sizeof(*out));
  int err = unpack_signed(o, &body, &body_len, sig);
  if (!err) err = decode_record_body(body, body_len, out);
  if (!err && wanted && !wanted(ctx, out->public_key, out->seq)) return 1;
  if (!err) err = verify(sign_announce, target, body, body_len, out->public_key, sig);
  if (err) memset(out, 0, sizeof(*out));
  return err;
}

int kp_dht_record_decode(const uint8_t *buf, size_t len, const uint8_t target[KP_ID_LEN],
                         kp_record_t *out) {
  kp_mp_doc_t doc;
  const msgpack_object *root;
  memset(out, 0, sizeof(*out));
  if (len > KP_RECORD_MAX_SIZE) return KP_ETOOBIG;
  int err = kp_mp_doc_parse(&doc, buf, len, 1, &root);
  if (err) return err;
  err = record_from_object(root, target, NULL, NULL, out);
  kp_mp_doc_free(&doc);
  return err;
}

int kp_dht_record_list_decode(const uint8_t *buf, size_t len, const uint8_t target[KP_ID_LEN],
                              kp_dht_record_wanted_fn wanted, kp_dht_record_fn fn, void *ctx,
                              unsigned *rejected) {
  kp_mp_doc_t doc;
  const msgpack_object *root;
  if (rejected) *rejected = 0;
  int err = kp_mp_doc_parse(&doc, buf, len, 2, &root);
  if (err) return err;
  if (root->type != MSGPACK_OBJECT_ARRAY) {
    kp_mp_doc_free(&doc);
    return KP_EMALFORMED;
  }
  int good = 0;
  for (uint32_t i = 0; i < root->via.array.size; i++) {
    const msgpack_object *o = &root->via.array.ptr[i];
    kp_record_t rec;
    int rc = record_from_object(o, target, wanted, ctx, &rec);
    if (rc == 1) continue; /* not wanted: never verified */
    if (rc) {

      if (rejected) (*rejected)++;
      continue;
    }

    good++;
    if (fn) fn(ctx, &rec);
  }
  kp_mp_doc_free(&doc);
  return good;
}

/* ---- Unannounce ---------------------------------------------------------- */

int kp_dht_unannounce_encode(const uint8_t public_key[KP_PUBLIC_KEY_LEN], uint64_t seq,
                             const uint8_t target[KP_ID_LEN],
                             const uint8_t secret_key[KP_SECRET_KEY_LEN], uint8_t *buf, size_t cap,
                             size_t *len) {
  uint8_t body[64];
  kp_wbuf_t w;
  msgpack_packer pk;
  *len = 0;
  kp_wbuf_init(&w, body, sizeof(body));
  kp_mp_packer_init(&pk, &w);
  msgpack_pack_array(&pk, 3);
  msgpack_pack_uint8(&pk, KP_RECORD_VERSION);
  kp_mp_pack_bin(&pk, public_key, KP_PUBLIC_KEY_LEN);
  msgpack_pack_uint64(&pk, seq);
  if (w.overflow) return KP_ETOOBIG;
  uint8_t sig[KP_SIGNATURE_LEN];
  int err = sign(sign_unannounce, target, body, w.len, secret_key, sig);
  return err ? err : pack_signed(body, w.len, sig, buf, cap, len);
}

int kp_dht_unannounce_decode(const uint8_t *buf, size_t len, const uint8_t target[KP_ID_LEN],
                             uint8_t public_key[KP_PUBLIC_KEY_LEN], uint64_t *seq) {
  kp_mp_doc_t doc, body_doc;
  const msgpack_object *root, *b;
  const uint8_t *body;
  size_t body_len;
  uint8_t sig[KP_SIGNATURE_LEN];
  int err = kp_mp_doc_parse(&doc, buf, len, 1, &root);
  if (err) return err;
  err = unpack_signed(root, &body, &body_len, sig);
  if (!err && !(err = kp_mp_doc_parse(&body_doc, body, body_len, 1, &b))) {
    if (b->type != MSGPACK_OBJECT_ARRAY || b->via.array.size != 3)
      err = KP_EMALFORMED;
    else if (!(err = check_version(&b->via.array.ptr[0])) &&
             !(err = kp_mp_fixed(&b->via.array.ptr[1], public_key, KP_PUBLIC_KEY_LEN)) &&
             !(err = kp_mp_uint(&b->via.array.ptr[2], UINT64_MAX, seq)))
      err = verify(sign_unannounce, target, body, body_len, public_key, sig);
    kp_mp_doc_free(&body_doc);
  }
  kp_mp_doc_free(&doc);
  return err;
}

/* ---- Mutable values ------------------------------------------------------------ */

/* The mutable signature covers seq (8 bytes, big-endian) then the value,
 * under the target (which binds the key and the salt). */
static int mutable_signed_body(const kp_dht_mutable_t *m, uint8_t *body, size_t cap, size_t *len) {
  if (m->value_len > KP_MUTABLE_MAX_VALUE || m->salt_len > KP_MUTABLE_MAX_SALT ||
      8 + m->value_len > cap)
    return KP_ETOOBIG;
  kp_wbuf_t w;
  kp_wbuf_init(&w, body, cap);
  kp_wbuf_put_u64(&w, m->seq);
  kp_wbuf_put(&w, m->value, m->value_len);
  *len = w.len;
  return 0;
}

int kp_dht_mutable_sign(kp_dht_mutable_t *m, const uint8_t secret_key[KP_SECRET_KEY_LEN]) {
  uint8_t body[8 + KP_MUTABLE_MAX_VALUE], target[KP_ID_LEN];
  size_t len;
  int err = mutable_signed_body(m, body, sizeof(body), &len);
  if (err) return err;
  kp_dht_target_mutable(m->public_key, m->salt, m->salt_len, target);
  return sign(sign_mutable, target, body, len, secret_key, m->signature);
}

int kp_dht_mutable_verify(const kp_dht_mutable_t *m) {
  uint8_t body[8 + KP_MUTABLE_MAX_VALUE], target[KP_ID_LEN];
  size_t len;
  int err = mutable_signed_body(m, body, sizeof(body), &len);
  if (err) return err;
  kp_dht_target_mutable(m->public_key, m->salt, m->salt_len, target);
  return verify(sign_mutable, target, body, len, m->public_key, m->signature);
}

int kp_dht_mutable_put_encode(const kp_dht_mutable_t *m, uint8_t *buf, size_t cap, size_t *len) {
  *len = 0;
  if (m->value_len > KP_MUTABLE_MAX_VALUE || m->salt_len > KP_MUTABLE_MAX_SALT ||
      m->salt_len + m->value_len > KP_MUTABLE_MAX_SALT_VALUE)
    return KP_ETOOBIG;
  kp_wbuf_t w;
  msgpack_packer pk;
  kp_wbuf_init(&w, buf, cap);
  kp_mp_packer_init(&pk, &w);
  msgpack_pack_array(&pk, 7);
  msgpack_pack_uint8(&pk, KP_RECORD_VERSION);
  kp_mp_pack_bin(&pk, m->public_key, KP_PUBLIC_KEY_LEN);
  kp_mp_pack_bin_opt(&pk, m->salt_len ? m->salt : NULL, m->salt_len);
  msgpack_pack_uint64(&pk, m->seq);
  kp_mp_pack_bin(&pk, m->value, m->value_len);
  kp_mp_pack_bin(&pk, m->signature, KP_SIGNATURE_LEN);
  if (m->has_cas)
    msgpack_pack_uint64(&pk, m->cas);
  else
    msgpack_pack_nil(&pk);
  *len = w.overflow ? 0 : w.len;
  return w.overflow ? KP_ETOOBIG : 0;
}

int kp_dht_mutable_put_decode(const uint8_t *buf, size_t len, kp_dht_mutable_t *m,
                              uint8_t target[KP_ID_LEN]) {
  kp_mp_doc_t doc;
  const msgpack_object *root;
  memset(m, 0, sizeof(*m));
  int err = kp_mp_doc_parse(&doc, buf, len, 1, &root);
  if (err) return err;
  const msgpack_object *f = root->via.array.ptr;
  if (root->type != MSGPACK_OBJECT_ARRAY || root->via.array.size != 7)
    err = KP_EMALFORMED;
  else if (!(err = check_version(&f[0])) &&
           !(err = kp_mp_fixed(&f[1], m->public_key, KP_PUBLIC_KEY_LEN)) &&
           !(err = kp_mp_bin_opt(&f[2], 1, KP_MUTABLE_MAX_SALT, &m->salt, &m->salt_len)) &&
           !(err = kp_mp_uint(&f[3], UINT64_MAX, &m->seq)) &&
           !(err = kp_mp_bin(&f[4], 0, KP_MUTABLE_MAX_VALUE, &m->value, &m->value_len)) &&
           !(err = kp_mp_fixed(&f[5], m->signature, KP_SIGNATURE_LEN))) {
    m->has_cas = !kp_mp_is_nil(&f[6]);
    if (m->has_cas) err = kp_mp_uint(&f[6], UINT64_MAX, &m->cas);
  }
  kp_mp_doc_free(&doc);
  if (!err) err = kp_dht_mutable_verify(m);
  if (!err) kp_dht_target_mutable(m->public_key, m->salt, m->salt_len, target);
  return err;
}

int kp_dht_mutable_reply_encode(const kp_dht_mutable_t *m, bool summary, uint8_t *buf, size_t cap,
                                size_t *len) {
  kp_wbuf_t w;
  msgpack_packer pk;
  kp_wbuf_init(&w, buf, cap);
  kp_mp_packer_init(&pk, &w);
  msgpack_pack_array(&pk, summary ? 1 : 3);
  msgpack_pack_uint64(&pk, m->seq);
  if (!summary) {
    kp_mp_pack_bin(&pk, m->value, m->value_len);
    kp_mp_pack_bin(&pk, m->signature, KP_SIGNATURE_LEN);
  }
  *len = w.overflow ? 0 : w.len;
  return w.overflow ? KP_ETOOBIG : 0;
}

int kp_dht_mutable_reply_decode(const uint8_t *buf, size_t len, kp_dht_mutable_t *m,
                                bool *summary) {
  kp_mp_doc_t doc;
  const msgpack_object *root;
  *summary = false;
  int err = kp_mp_doc_parse(&doc, buf, len, 1, &root);
  if (err) return err;
  const msgpack_object *f = root->via.array.ptr;
  if (root->type != MSGPACK_OBJECT_ARRAY ||
      (root->via.array.size != 1 && root->via.array.size != 3))
    err = KP_EMALFORMED;
  else if (!(err = kp_mp_uint(&f[0], UINT64_MAX, &m->seq))) {
    *summary = root->via.array.size == 1;
    if (!*summary && !(err = kp_mp_bin(&f[1], 0, KP_MUTABLE_MAX_VALUE, &m->value, &m->value_len)))
      err = kp_mp_fixed(&f[2], m->signature, KP_SIGNATURE_LEN);
  }
  kp_mp_doc_free(&doc);
  if (!err && !*summary) err = kp_dht_mutable_verify(m);
  return err;
}
