/* SPDX-License-Identifier: MIT */
/* The proxy session's codec (proxy_msg.h; docs/protocol.md, "Proxying"). */
#include "proxy/proxy_msg.h"

#include <sodium.h>
#include <string.h>

#include "kadpunch_base.h"

static void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put64(uint8_t *p, uint64_t v) {
  put32(p, (uint32_t)(v >> 32));
  put32(p + 4, (uint32_t)v);
}

static uint64_t get64(const uint8_t *p) {
  return (uint64_t)get32(p) << 32 | get32(p + 4);
}

const char *kp_proxy_reason_name(uint8_t reason) {
  static const char *const names[] = {"ok",
                                      "key not allowed",
                                      "full",
                                      "key holds its allocations",
                                      "IP holds its share",
                                      "rate",
                                      "expired",
                                      "quota",
                                      "version",
                                      "no address of that family"};
  return reason <= KP_PROXY_REASON_MAX ? names[reason] : "unknown";
}

static bool all_zero(const uint8_t *p, size_t n) {
  uint8_t acc = 0;
  for (size_t i = 0; i < n; i++) acc |= p[i];
  return acc == 0;
}

int kp_proxy_dgram_decode(const uint8_t *in, size_t len, kp_proxy_dgram_t *out) {
  memset(out, 0, sizeof(*out));
  if (!kp_proxy_is_packet(in, len)) return KP_EMALFORMED;
  out->type = in[1];
  switch (in[1]) {
    case KP_PROXY_KEY_REQ:
      return len == KP_PROXY_KEY_LEN && all_zero(in + 2, len - 2) ? 0 : KP_EMALFORMED;
    case KP_PROXY_KEY:
      if (len != KP_PROXY_KEY_LEN) return KP_EMALFORMED;
      if (in[2] != KP_PROXY_VERSION) return KP_EVERSION;
      out->key = in + 4;
      return 0;
    case KP_PROXY_HELLO: {
      if (len != KP_PROXY_HELLO_LEN) return KP_EMALFORMED;
      size_t n = (size_t)in[6] << 8 | in[7];
      if (n == 0 || n > len - KP_PROXY_HELLO_HEAD) return KP_EMALFORMED;
      if (!all_zero(in + KP_PROXY_HELLO_HEAD + n, len - KP_PROXY_HELLO_HEAD - n))
        return KP_EMALFORMED;
      out->sender = get32(in + 2);
      out->noise = in + KP_PROXY_HELLO_HEAD;
      out->noise_len = n;
      return 0;
    }
    case KP_PROXY_WELCOME:
      if (len <= KP_PROXY_WELCOME_HEAD || len > KP_PROXY_HELLO_LEN) return KP_EMALFORMED;
      out->receiver = get32(in + 2);
      out->sender = get32(in + 6);
      out->noise = in + KP_PROXY_WELCOME_HEAD;
      out->noise_len = len - KP_PROXY_WELCOME_HEAD;
      return 0;
    case KP_PROXY_REFUSED:
      if (len != KP_PROXY_REFUSED_LEN || !in[6] || in[6] > KP_PROXY_REASON_MAX)
        return KP_EMALFORMED;
      out->receiver = get32(in + 2);
      out->reason = in[6];
      return 0;
    case KP_PROXY_DATA:
      if (len < KP_PROXY_DATA_HEAD + KP_PROXY_TAG_LEN + 2 || len > KP_PROXY_MAX_DATAGRAM)
        return KP_EMALFORMED;
      out->receiver = get32(in + 2);
      out->counter = get64(in + 6);
      out->sealed = in + KP_PROXY_DATA_HEAD;
      out->sealed_len = len - KP_PROXY_DATA_HEAD;
      return 0;
    case KP_PROXY_PASS: return kp_proxy_pass_decode(in, len, out) ? 0 : KP_EMALFORMED;
    default: return KP_EMALFORMED;
  }
}

bool kp_proxy_pass_decode(const uint8_t *in, size_t len, kp_proxy_dgram_t *out) {
  if (len <= KP_PROXY_PASS_HEAD || len - KP_PROXY_PASS_HEAD > KP_PROXY_MAX_PASS_PAYLOAD ||
      in[0] != KP_PROXY_MAGIC || in[1] != KP_PROXY_PASS)
    return false;
  out->type = KP_PROXY_PASS;
  out->receiver = get32(in + 2);
  out->token = get64(in + 6);
  out->payload = in + KP_PROXY_PASS_HEAD;
  out->payload_len = len - KP_PROXY_PASS_HEAD;
  return true;
}

void kp_proxy_pass_head(uint32_t receiver, uint64_t token, uint8_t out[KP_PROXY_PASS_HEAD]) {
  out[0] = KP_PROXY_MAGIC;
  out[1] = KP_PROXY_PASS;
  put32(out + 2, receiver);
  put64(out + 6, token);
}

size_t kp_proxy_pass_encode(uint32_t receiver, uint64_t token, const uint8_t *data, size_t len,
                            uint8_t *out, size_t cap) {
  if (!len || len > KP_PROXY_MAX_PASS_PAYLOAD || KP_PROXY_PASS_HEAD + len > cap) return 0;
  kp_proxy_pass_head(receiver, token, out);
  memcpy(out + KP_PROXY_PASS_HEAD, data, len);
  return KP_PROXY_PASS_HEAD + len;
}

void kp_proxy_key_req_encode(uint8_t out[KP_PROXY_KEY_LEN]) {
  memset(out, 0, KP_PROXY_KEY_LEN);
  out[0] = KP_PROXY_MAGIC;
  out[1] = KP_PROXY_KEY_REQ;
}

void kp_proxy_key_encode(const uint8_t key[32], uint8_t out[KP_PROXY_KEY_LEN]) {
  memset(out, 0, KP_PROXY_KEY_LEN);
  out[0] = KP_PROXY_MAGIC;
  out[1] = KP_PROXY_KEY;
  out[2] = KP_PROXY_VERSION;
  memcpy(out + 4, key, 32);
}

size_t kp_proxy_hello_encode(uint32_t sender, const uint8_t *msg, size_t len,
                             uint8_t out[KP_PROXY_HELLO_LEN]) {
  if (!len || len > KP_PROXY_HELLO_LEN - KP_PROXY_HELLO_HEAD) return 0;
  memset(out, 0, KP_PROXY_HELLO_LEN);
  out[0] = KP_PROXY_MAGIC;
  out[1] = KP_PROXY_HELLO;
  put32(out + 2, sender);
  out[6] = (uint8_t)(len >> 8), out[7] = (uint8_t)len;
  memcpy(out + KP_PROXY_HELLO_HEAD, msg, len);
  return KP_PROXY_HELLO_LEN;
}

size_t kp_proxy_welcome_encode(uint32_t receiver, uint32_t sender, const uint8_t *msg, size_t len,
                               uint8_t *out, size_t cap) {
  size_t n = KP_PROXY_WELCOME_HEAD + len;
  if (!len || n > cap || n > KP_PROXY_HELLO_LEN) return 0;
  out[0] = KP_PROXY_MAGIC;
  out[1] = KP_PROXY_WELCOME;
  put32(out + 2, receiver);
  put32(out + 6, sender);
  memcpy(out + KP_PROXY_WELCOME_HEAD, msg, len);
  return n;
}

void kp_proxy_refused_encode(uint32_t receiver, uint8_t reason, uint8_t out[KP_PROXY_REFUSED_LEN]) {
  out[0] = KP_PROXY_MAGIC;
  out[1] = KP_PROXY_REFUSED;
  put32(out + 2, receiver);
  out[6] = reason;
}

/* ---- Bodies ------------------------------------------------------------------------------- */

static size_t put_addr(const kp_addr_t *a, uint8_t *out) {
  size_t n = kp_addr_encode_compact(a, out + 1);
  out[0] = (uint8_t)n;
  return n ? n + 1 : 0;
}

static size_t get_addr(const uint8_t *in, size_t len, kp_addr_t *a) {
  if (len < 1) return 0;
  size_t n = in[0];
  if ((n != KP_ADDR_COMPACT_V4 && n != KP_ADDR_COMPACT_V6) || n > len - 1) return 0;
  if (kp_addr_decode_compact(a, in + 1, n)) return 0;
  return n + 1;
}

size_t kp_proxy_body_encode(const kp_proxy_body_t *b, uint8_t *out, size_t cap) {
  uint8_t tmp[KP_PROXY_MAX_DATAGRAM];
  size_t n = 2, a;
  if (b->channel >= KP_PROXY_CHANNELS) return 0;
  tmp[0] = b->op;
  tmp[1] = b->channel;
  switch (b->op) {
    case KP_PROXY_OP_OPEN: /* family 0: without one (the session's), as decoded */
      if (b->family && b->family != KP_AF_INET && b->family != KP_AF_INET6) return 0;
      if (b->family) tmp[n++] = b->family;
      break;
    case KP_PROXY_OP_REFRESH:
    case KP_PROXY_OP_PING:
    case KP_PROXY_OP_PONG: break;
    case KP_PROXY_OP_CLOSE: tmp[n++] = b->reason; break;
    case KP_PROXY_OP_OPENED:
      if (!(a = put_addr(&b->addr, tmp + n))) return 0;
      n += a;
      put32(tmp + n, b->lifetime_s);
      n += 4;
      break;
    case KP_PROXY_OP_BIND:
    case KP_PROXY_OP_UNBIND:
      put64(tmp + n, b->token);
      n += 8;
      if (b->op == KP_PROXY_OP_UNBIND) break;
      if (!(a = put_addr(&b->addr, tmp + n))) return 0;
      n += a;
      break;
    case KP_PROXY_OP_SEND:
    case KP_PROXY_OP_RECV:
      if (!(a = put_addr(&b->addr, tmp + n))) return 0;
      n += a;
      if (!b->len || b->len > KP_PROXY_MAX_PAYLOAD) return 0;
      memcpy(tmp + n, b->data, b->len);
      n += b->len;
      break;
    default: return 0;
  }
  if (n > cap) return 0;
  memcpy(out, tmp, n);
  return n;
}

int kp_proxy_body_decode(const uint8_t *in, size_t len, kp_proxy_body_t *out) {
  memset(out, 0, sizeof(*out));
  if (len < 2 || in[1] >= KP_PROXY_CHANNELS) return KP_EMALFORMED;
  out->op = in[0];
  out->channel = in[1];
  size_t n = 2, a;
  switch (in[0]) {
    case KP_PROXY_OP_OPEN: /* family 0: a peer from before families (the session's) */
      if (len == 2) return 0;
      if (len != 3 || (in[2] != KP_AF_INET && in[2] != KP_AF_INET6)) return KP_EMALFORMED;
      out->family = in[2];
      return 0;
    case KP_PROXY_OP_REFRESH:
    case KP_PROXY_OP_PING:
    case KP_PROXY_OP_PONG: return len == 2 ? 0 : KP_EMALFORMED;
    case KP_PROXY_OP_CLOSE:
      if (len != 3 || in[2] > KP_PROXY_REASON_MAX) return KP_EMALFORMED;
      out->reason = in[2];
      return 0;
    case KP_PROXY_OP_OPENED:
      if (!(a = get_addr(in + n, len - n, &out->addr)) || len != n + a + 4) return KP_EMALFORMED;
      out->lifetime_s = get32(in + n + a);
      return 0;
    case KP_PROXY_OP_UNBIND:
      if (len != n + 8) return KP_EMALFORMED;
      out->token = get64(in + n);
      return 0;
    case KP_PROXY_OP_BIND:
      if (len < n + 8) return KP_EMALFORMED;
      out->token = get64(in + n);
      n += 8;
      if (!(a = get_addr(in + n, len - n, &out->addr)) || len != n + a) return KP_EMALFORMED;
      return 0;
    case KP_PROXY_OP_SEND:
    case KP_PROXY_OP_RECV:
      if (!(a = get_addr(in + n, len - n, &out->addr))) return KP_EMALFORMED;
      n += a;
      if (len == n || len - n > KP_PROXY_MAX_PAYLOAD) return KP_EMALFORMED;
      out->data = in + n;
      out->len = len - n;
      return 0;
    default: return KP_EMALFORMED;
  }
}

/* ---- Replay window and sealing --------------------------------------------------------------- */

bool kp_proxy_replay_fresh(const kp_proxy_replay_t *w, uint64_t counter) {
  if (counter == UINT64_MAX) return false;
  if (counter >= w->top) return true;
  if (w->top - counter > KP_PROXY_REPLAY_WINDOW) return false;
  uint64_t i = counter % KP_PROXY_REPLAY_WINDOW;
  return !(w->bits[i / 64] >> (i % 64) & 1);
}

void kp_proxy_replay_mark(kp_proxy_replay_t *w, uint64_t counter) {
  if (counter >= w->top) {
    /* Clear the bits of the counters the window slides past. */
    uint64_t gap = counter + 1 - w->top;
    if (gap >= KP_PROXY_REPLAY_WINDOW) {
      memset(w->bits, 0, sizeof(w->bits));
    } else {
      for (uint64_t c = w->top; c <= counter; c++) {
        uint64_t i = c % KP_PROXY_REPLAY_WINDOW;
        w->bits[i / 64] &= ~((uint64_t)1 << (i % 64));
      }
    }
    w->top = counter + 1;
  }
  uint64_t i = counter % KP_PROXY_REPLAY_WINDOW;
  w->bits[i / 64] |= (uint64_t)1 << (i % 64);
}

static void nonce_of(uint64_t counter, uint8_t nonce[12]) {
  memset(nonce, 0, 4);
  put64(nonce + 4, counter);
}

size_t kp_proxy_seal(kp_proxy_keys_t *k, uint32_t receiver, const uint8_t *body, size_t len,
                     uint8_t *out, size_t cap) {
  size_t n = KP_PROXY_DATA_HEAD + len + KP_PROXY_TAG_LEN;
  if (n > cap || n > KP_PROXY_MAX_DATAGRAM) return 0;
  uint64_t counter = k->next_tx++;
  out[0] = KP_PROXY_MAGIC;
  out[1] = KP_PROXY_DATA;
  put32(out + 2, receiver);
  put64(out + 6, counter);
  uint8_t nonce[12];
  nonce_of(counter, nonce);
  unsigned long long clen;
  crypto_aead_chacha20poly1305_ietf_encrypt(out + KP_PROXY_DATA_HEAD, &clen, body, len, out,
                                            KP_PROXY_DATA_HEAD, NULL, nonce, k->tx);
  return n;
}

long kp_proxy_open(kp_proxy_keys_t *k, const uint8_t *raw, const kp_proxy_dgram_t *d, uint8_t *body,
                   bool *replayed) {
  *replayed = false;
  if (!kp_proxy_replay_fresh(&k->rx_seen, d->counter)) {
    *replayed = true;
    return -1;
  }
  uint8_t nonce[12];
  nonce_of(d->counter, nonce);
  unsigned long long mlen;
  if (crypto_aead_chacha20poly1305_ietf_decrypt(body, &mlen, NULL, d->sealed, d->sealed_len, raw,
                                                KP_PROXY_DATA_HEAD, nonce, k->rx))
    return -1;
  kp_proxy_replay_mark(&k->rx_seen, d->counter);
  return (long)mlen;
}
