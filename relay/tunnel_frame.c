/* SPDX-License-Identifier: MIT */
/* Tunnel frames (relay/tunnel_frame.h): the codec. */
#include "relay/tunnel_frame.h"

#include <string.h>

/* ---- Codec ---------------------------------------------------------------------------- */

size_t kp_tunnel_frame_encode(const kp_tunnel_frame_t *f, uint8_t *out) {
  size_t n = KP_TUNNEL_FRAME_HEAD;
  out[2] = f->type;
  out[3] = (uint8_t)(f->channel >> 8);
  out[4] = (uint8_t)f->channel;
  switch (f->type) {
    case KP_TUNNEL_OPENED:
      if (!f->addr.family) return 0;
      n += kp_addr_encode_compact(&f->addr, out + n);
      break;
    case KP_TUNNEL_REFUSED: out[n++] = f->reason; break;
    case KP_TUNNEL_DATA:
      if (!f->addr.family || f->len > KP_TUNNEL_MAX_DATAGRAM) return 0;
      out[n] = (uint8_t)kp_addr_encode_compact(&f->addr, out + n + 1);
      n += 1 + out[n];
      memcpy(out + n, f->data, f->len);
      n += f->len;
      break;
    default: break;
  }
  out[0] = (uint8_t)((n - 2) >> 8);
  out[1] = (uint8_t)(n - 2);
  return n;
}

int kp_tunnel_frame_decode(const uint8_t *buf, size_t len, kp_tunnel_frame_t *out, size_t *used) {
  if (len < 2) return 0;
  size_t body = (size_t)buf[0] << 8 | buf[1];
  if (body < KP_TUNNEL_FRAME_HEAD - 2 || body > KP_TUNNEL_FRAME_MAX - 2) return -1;
  if (len < 2 + body) return 0;
  memset(out, 0, sizeof(*out));
  out->type = buf[2];
  out->channel = (uint16_t)(buf[3] << 8 | buf[4]);
  const uint8_t *p = buf + KP_TUNNEL_FRAME_HEAD, *end = buf + 2 + body;
  size_t rest = (size_t)(end - p);
  switch (out->type) {
    case KP_TUNNEL_OPEN:
    case KP_TUNNEL_CLOSE:
      if (rest) return -1;
      break;
    case KP_TUNNEL_OPENED:
      if (kp_addr_decode_compact(&out->addr, p, rest)) return -1;
      break;
    case KP_TUNNEL_REFUSED:
      if (rest != 1) return -1;
      out->reason = p[0];
      break;
    case KP_TUNNEL_DATA:
      if (rest < 1 || p[0] > rest - 1 || kp_addr_decode_compact(&out->addr, p + 1, p[0])) return -1;
      out->data = p + 1 + p[0];
      out->len = rest - 1 - p[0];
      /* A short (IPv4) address leaves room for more than a datagram. */
      if (out->len > KP_TUNNEL_MAX_DATAGRAM) return -1;
      break;
    default: return -1;
  }
  if (out->channel >= KP_TUNNEL_CHANNELS) return -1;
  *used = 2 + body;
  return 1;
}
