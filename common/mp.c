/* SPDX-License-Identifier: MIT */
#include "common/mp.h"

#include "kadpunch_base.h"

static int wbuf_write(void *data, const char *buf, size_t len) {
  kp_wbuf_t *w = data;
  kp_wbuf_put(w, buf, len);
  return w->overflow ? -1 : 0;
}

void kp_mp_packer_init(msgpack_packer *pk, kp_wbuf_t *w) {
  msgpack_packer_init(pk, w, wbuf_write);
}

static uint64_t be(const uint8_t *p, unsigned n) {
  uint64_t v = 0;
  for (unsigned i = 0; i < n; i++) v = v << 8 | p[i];
  return v;
}

/* Size of the header and payload of the value starting at p[0], and how
 * many child values it contains (containers) in *children. Returns false for
 * bytes msgpack reserves or types we never accept (ext). */
static bool classify(const uint8_t *p, size_t left, size_t *head, uint64_t *payload,
                     uint64_t *children, bool *truncated) {
  uint8_t b = p[0];
  *children = 0;
  *payload = 0;
  *head = 1;
  *truncated = false;
  if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) return true;
  if ((b & 0xf0) == 0x80) {
    *children = 2u * (b & 0x0f);
    return true;
  }
  if ((b & 0xf0) == 0x90) {
    *children = b & 0x0f;
    return true;
  }
  if ((b & 0xe0) == 0xa0) {
    *payload = b & 0x1f;
    return true;
  }
  unsigned lenbytes = 0;
  switch (b) {
    case 0xca: *payload = 4; return true;
    case 0xcb: *payload = 8; return true;
    case 0xcc:
    case 0xd0: *payload = 1; return true;
    case 0xcd:
    case 0xd1: *payload = 2; return true;
    case 0xce:
    case 0xd2: *payload = 4; return true;
    case 0xcf:
    case 0xd3: *payload = 8; return true;
    case 0xc4:
    case 0xd9: lenbytes = 1; break;
    case 0xc5:
    case 0xda:
    case 0xdc:
    case 0xde: lenbytes = 2; break;
    case 0xc6:
    case 0xdb:
    case 0xdd:
    case 0xdf: lenbytes = 4; break;
    default: return false; /* 0xc1, ext and fixext */
  }
  if (left < 1 + lenbytes) {
    *truncated = true;
    return true;
  }
  uint64_t n = be(p + 1, lenbytes);
  *head = 1 + lenbytes;
  if (b == 0xdc || b == 0xdd)
    *children = n;
  else if (b == 0xde || b == 0xdf)
    *children = 2 * n;
  else
    *payload = n;
  return true;
}

int kp_mp_check(const uint8_t *data, size_t len, unsigned max_depth) {
  /* remaining[d] = values still expected in the container open at depth d. */
  uint64_t remaining[16];
  unsigned depth = 0;
  size_t pos = 0;
  if (max_depth > 15) max_depth = 15;
  remaining[0] = 1;
  while (depth > 0 || remaining[0] > 0) {
    if (remaining[depth] == 0) {
      depth--;
      continue;
    }
    if (pos >= len) return KP_ETRUNCATED;
    size_t head;
    uint64_t payload, children;
    bool truncated;
    if (!classify(data + pos, len - pos, &head, &payload, &children, &truncated))
      return KP_EMALFORMED;
    if (truncated) return KP_ETRUNCATED;
    remaining[depth]--;
    if (head + payload > len - pos) return KP_ETRUNCATED;
    pos += head + (size_t)payload;
    if (children) {
      /* Every child takes at least one byte, so more children than bytes
       * left can never parse: reject before anyone allocates for them. */
      if (children > len - pos) return KP_ETRUNCATED;
      if (depth + 1 > max_depth) return KP_EMALFORMED;
      remaining[++depth] = children;
    }
  }
  return pos == len ? 0 : KP_EMALFORMED;
}

int kp_mp_doc_parse(kp_mp_doc_t *doc, const uint8_t *data, size_t len, unsigned max_depth,
                    const msgpack_object **root) {
  *root = NULL;
  int err = kp_mp_check(data, len, max_depth);
  if (err) return err;
  msgpack_unpacked_init(&doc->unpacked);
  size_t off = 0;
  msgpack_unpack_return r = msgpack_unpack_next(&doc->unpacked, (const char *)data, len, &off);
  if (r != MSGPACK_UNPACK_SUCCESS || off != len) {
    msgpack_unpacked_destroy(&doc->unpacked);
    return r == MSGPACK_UNPACK_NOMEM_ERROR ? KP_ENOMEM : KP_EMALFORMED;
  }
  *root = &doc->unpacked.data;
  return 0;
}

void kp_mp_doc_free(kp_mp_doc_t *doc) {
  msgpack_unpacked_destroy(&doc->unpacked);
}

bool kp_mp_is_nil(const msgpack_object *o) {
  return o->type == MSGPACK_OBJECT_NIL;
}

int kp_mp_uint(const msgpack_object *o, uint64_t max, uint64_t *out) {
  *out = 0;
  if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > max) return KP_EFIELD;
  *out = o->via.u64;
  return 0;
}

int kp_mp_bin(const msgpack_object *o, size_t min, size_t max, const uint8_t **p, size_t *n) {
  *p = NULL;
  *n = 0;
  if (o->type != MSGPACK_OBJECT_BIN) return KP_EFIELD;
  if (o->via.bin.size < min || o->via.bin.size > max) return KP_EFIELD;
  *p = (const uint8_t *)o->via.bin.ptr;
  *n = o->via.bin.size;
  return 0;
}

int kp_mp_bin_opt(const msgpack_object *o, size_t min, size_t max, const uint8_t **p, size_t *n) {
  if (kp_mp_is_nil(o)) {
    *p = NULL;
    *n = 0;
    return 0;
  }
  return kp_mp_bin(o, min, max, p, n);
}

int kp_mp_fixed(const msgpack_object *o, void *out, size_t n) {
  const uint8_t *p;
  size_t got;
  int err = kp_mp_bin(o, n, n, &p, &got);
  if (!err) memcpy(out, p, n);
  return err;
}

int kp_mp_fixed_opt(const msgpack_object *o, void *out, size_t n, bool *present) {
  *present = false;
  if (kp_mp_is_nil(o)) return 0;
  int err = kp_mp_fixed(o, out, n);
  *present = err == 0;
  return err;
}

void kp_mp_pack_bin(msgpack_packer *pk, const void *p, size_t n) {
  msgpack_pack_bin(pk, n);
  msgpack_pack_bin_body(pk, p, n);
}

void kp_mp_pack_bin_opt(msgpack_packer *pk, const void *p, size_t n) {
  if (p)
    kp_mp_pack_bin(pk, p, n);
  else
    msgpack_pack_nil(pk);
}
