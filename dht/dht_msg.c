/* SPDX-License-Identifier: MIT */
#include "dht/dht_msg.h"

#include <string.h>

#include "common/mp.h"

/* Field positions in the array (docs/protocol.md, "DHT messages"). */
enum {
  F_VERSION,
  F_TYPE,
  F_TID,
  F_TO,
  F_ID,
  F_TOKEN,
  F_COMMAND,
  F_TARGET,
  F_NODES,
  F_VALUE,
  F_ERROR,
  F_PADDING
};

static void pack_padding(msgpack_packer *pk, size_t n) {
  static const uint8_t zeros[256];
  msgpack_pack_bin(pk, n);
  while (n) {
    size_t chunk = n < sizeof(zeros) ? n : sizeof(zeros);
    msgpack_pack_bin_body(pk, zeros, chunk);
    n -= chunk;
  }
}

int kp_dht_msg_encode(const kp_dht_msg_t *m, uint8_t *buf, size_t cap, size_t *len) {
  uint8_t to[KP_ADDR_COMPACT_MAX];
  size_t to_len = kp_addr_encode_compact(&m->to, to);
  size_t step = kp_addr_compact_len(m->to.family);
  *len = 0;
  if (!to_len) return KP_EBADADDR;
  if (m->nodes_len > KP_DHT_MAX_NODES * step || m->nodes_len % step) return KP_EFIELD;
  if (m->value && m->value_len > KP_DHT_MAX_VALUE) return KP_ETOOBIG;

  kp_wbuf_t w;
  kp_wbuf_init(&w, buf, cap < KP_DHT_MAX_DATAGRAM ? cap : KP_DHT_MAX_DATAGRAM);
  msgpack_packer pk;
  kp_mp_packer_init(&pk, &w);
  bool padded = m->type == KP_DHT_REQUEST && m->padding > 0;
  msgpack_pack_array(&pk, padded ? KP_DHT_MSG_FIELDS + 1 : KP_DHT_MSG_FIELDS);
  msgpack_pack_uint8(&pk, KP_DHT_VERSION);
  msgpack_pack_uint8(&pk, m->type);
  msgpack_pack_uint16(&pk, m->tid);
  kp_mp_pack_bin(&pk, to, to_len);
  kp_mp_pack_bin_opt(&pk, m->has_id ? m->id : NULL, KP_ID_LEN);
  kp_mp_pack_bin_opt(&pk, m->has_token ? m->token : NULL, sizeof(m->token));
  msgpack_pack_uint8(&pk, m->command);
  kp_mp_pack_bin_opt(&pk, m->has_target ? m->target : NULL, KP_ID_LEN);
  kp_mp_pack_bin_opt(&pk, m->nodes_len ? m->nodes : NULL, m->nodes_len);
  kp_mp_pack_bin_opt(&pk, m->value, m->value_len);
  msgpack_pack_uint8(&pk, m->type == KP_DHT_RESPONSE ? m->error : 0);
  if (padded) pack_padding(&pk, m->padding);
  if (w.overflow) return KP_ETOOBIG;
  *len = w.len;
  return 0;
}

int kp_dht_msg_encode_min(const kp_dht_msg_t *msg, size_t min_len, uint8_t *buf, size_t cap,
                          size_t *len) {
  int err = kp_dht_msg_encode(msg, buf, cap, len);
  if (err || msg->type != KP_DHT_REQUEST || *len >= min_len) return err;
  if (min_len > KP_DHT_MAX_DATAGRAM) min_len = KP_DHT_MAX_DATAGRAM;
  /* The pad field costs its own header: 2 bytes for bin8, 3 for bin16. */
  size_t missing = min_len - *len;
  size_t pad = missing <= 3 ? 1 : missing - 2;
  if (pad > 255) pad = missing - 3 > 256 ? missing - 3 : 256;
  kp_dht_msg_t padded = *msg;
  padded.padding = pad;
  return kp_dht_msg_encode(&padded, buf, cap, len);
}

size_t kp_dht_msg_reply_bound(int family, size_t nodes_count, size_t value_len) {
  /* array(1) version(1) type(1) tid(3) to(2+18) id(2+32) token(2+32)
   * command(2) target(1: nil in replies) nodes(3+n) value(3+v) error(2). */
  size_t fixed = 1 + 1 + 1 + 3 + 2 + kp_addr_compact_len(family) + 34 + 34 + 2 + 1 + 2;
  size_t nodes = nodes_count ? 3 + nodes_count * kp_addr_compact_len(family) : 1;
  size_t value = value_len ? 3 + value_len : 1;
  return fixed + nodes + value;
}

static int decode_fields(const msgpack_object *o, size_t n, int family, kp_dht_msg_t *m) {
  uint64_t v;
  const uint8_t *p;
  size_t plen;
  int err;

  if ((err = kp_mp_uint(&o[F_TYPE], KP_DHT_RESPONSE, &v))) return err;
  m->type = (uint8_t)v;
  if (n > KP_DHT_MSG_FIELDS && m->type != KP_DHT_REQUEST) return KP_EFIELD;
  if ((err = kp_mp_uint(&o[F_TID], UINT16_MAX, &v))) return err;
  m->tid = (uint16_t)v;

  size_t step = kp_addr_compact_len(family);
  if ((err = kp_mp_bin(&o[F_TO], step, step, &p, &plen))) return err;
  if (kp_addr_decode_compact(&m->to, p, plen)) return KP_EFIELD;

  if ((err = kp_mp_fixed_opt(&o[F_ID], m->id, KP_ID_LEN, &m->has_id))) return err;
  if ((err = kp_mp_fixed_opt(&o[F_TOKEN], m->token, sizeof(m->token), &m->has_token))) return err;
  if ((err = kp_mp_uint(&o[F_COMMAND], UINT8_MAX, &v))) return err;
  m->command = (uint8_t)v;
  if ((err = kp_mp_fixed_opt(&o[F_TARGET], m->target, KP_ID_LEN, &m->has_target))) return err;

  if ((err = kp_mp_bin_opt(&o[F_NODES], step, KP_DHT_MAX_NODES * step, &m->nodes, &m->nodes_len)))
    return err;
  if (m->nodes_len % step) return KP_EFIELD;
  if ((err = kp_mp_bin_opt(&o[F_VALUE], 0, KP_DHT_MAX_VALUE, &m->value, &m->value_len))) return err;
  if ((err = kp_mp_uint(&o[F_ERROR], UINT8_MAX, &v))) return err;
  m->error = (uint8_t)v;
  if (m->type == KP_DHT_REQUEST && m->error) return KP_EFIELD;

  if (n > KP_DHT_MSG_FIELDS) {
    if ((err = kp_mp_bin(&o[F_PADDING], 0, KP_DHT_MAX_DATAGRAM, &p, &plen))) return err;
    m->padding = plen;
  }
  return 0;
}

int kp_dht_msg_decode(const uint8_t *data, size_t len, int family, kp_dht_msg_t *m) {
  memset(m, 0, sizeof(*m));
  if (len > KP_DHT_MAX_DATAGRAM) return KP_ETOOBIG;
  if (family != KP_AF_INET && family != KP_AF_INET6) return KP_EBADADDR;

  kp_mp_doc_t doc;
  const msgpack_object *root;
  int err = kp_mp_doc_parse(&doc, data, len, 1, &root);
  if (err) return err;

  if (root->type != MSGPACK_OBJECT_ARRAY || root->via.array.size == 0) {
    err = KP_EMALFORMED;
    goto out;
  }
  const msgpack_object *o = root->via.array.ptr;
  size_t n = root->via.array.size;
  uint64_t version;
  /* The version comes first so a future layout is reported as such. */
  if (kp_mp_uint(&o[F_VERSION], UINT8_MAX, &version)) {
    err = KP_EFIELD;
    goto out;
  }
  if (version != KP_DHT_VERSION) {
    err = KP_EVERSION;
    goto out;
  }
  if (n != KP_DHT_MSG_FIELDS && n != KP_DHT_MSG_FIELDS + 1) {
    err = KP_EMALFORMED;
    goto out;
  }
  err = decode_fields(o, n, family, m);

out:
  kp_mp_doc_free(&doc);
  if (err) {
    memset(m, 0, sizeof(*m));
  }
  return err;
}
