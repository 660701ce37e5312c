/* SPDX-License-Identifier: MIT */
/* SOCKS5 messages (cli_socks_codec.h): RFC 1928 sections 3 to 7. */
#include "node/cli/cli_socks_codec.h"

#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "common/buf.h"
#include "stream/stream_frame.h"

/* A host name's bytes (RFC 1123 and what resolvers take): letters, digits,
 * '-', '.', '_'. Nothing else can name a host, and a NUL, a space or a
 * control byte in a name would be a way to confuse whoever logs it. */
static bool name_ok(const uint8_t *p, size_t n) {
  if (!n) return false;
  for (size_t i = 0; i < n; i++) {
    uint8_t c = p[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_';
    if (!ok) return false;
  }
  return true;
}

int kp_cli_socks_parse_addr(const uint8_t *p, size_t len, kp_cli_socks_addr_t *a) {
  memset(a, 0, sizeof(*a));
  if (len < 1) return 0;
  a->type = p[0];
  size_t n;
  switch (p[0]) {
    case KP_CLI_SOCKS_ATYP_IPV4:
      if (len < 1 + 4 + 2) return 0;
      memcpy(a->ip, p + 1, 4);
      n = 1 + 4;
      break;
    case KP_CLI_SOCKS_ATYP_IPV6:
      if (len < 1 + 16 + 2) return 0;
      memcpy(a->ip, p + 1, 16);
      n = 1 + 16;
      break;
    case KP_CLI_SOCKS_ATYP_NAME:
      if (len < 2) return 0;
      if (len < 2 + (size_t)p[1] + 2) return 0;
      if (!name_ok(p + 2, p[1])) return -KP_CLI_SOCKS_FAILURE;
      memcpy(a->name, p + 2, p[1]);
      a->name[p[1]] = '\0';
      n = 2 + (size_t)p[1];
      break;
    default: return -KP_CLI_SOCKS_BAD_ADDRESS;
  }
  a->port = (uint16_t)(p[n] << 8 | p[n + 1]);
  return (int)(n + 2);
}

int kp_cli_socks_parse_greeting(const uint8_t *p, size_t len, bool *no_auth) {
  *no_auth = false;
  if (len < 1) return 0;
  if (p[0] != KP_CLI_SOCKS_VERSION) return KP_CLI_SOCKS_EVERSION;
  if (len < 2 || len < 2 + (size_t)p[1]) return 0;
  for (size_t i = 0; i < p[1]; i++)
    if (p[2 + i] == 0) *no_auth = true;
  return 2 + p[1];
}

/* VER x RSV ATYP ...: the requests and replies share their layout. */
static int parse_message(const uint8_t *p, size_t len, uint8_t *second, kp_cli_socks_addr_t *a) {
  memset(a, 0, sizeof(*a));
  *second = 0;
  if (len < 1) return 0;
  if (p[0] != KP_CLI_SOCKS_VERSION) return KP_CLI_SOCKS_EVERSION;
  if (len < 3) return 0;
  *second = p[1];
  /* RSV is 0 by the RFC; what a peer puts there changes nothing here. */
  int n = kp_cli_socks_parse_addr(p + 3, len - 3, a);
  return n > 0 ? n + 3 : n;
}

int kp_cli_socks_parse_request(const uint8_t *p, size_t len, uint8_t *cmd,
                               kp_cli_socks_addr_t *dst) {
  return parse_message(p, len, cmd, dst);
}

int kp_cli_socks_parse_reply(const uint8_t *p, size_t len, uint8_t *rep, kp_cli_socks_addr_t *bnd) {
  int n = parse_message(p, len, rep, bnd);
  /* A reply carries an address (maybe 0.0.0.0:0), never a bad name. */
  return n == -KP_CLI_SOCKS_FAILURE ? -KP_CLI_SOCKS_BAD_ADDRESS : n;
}

int kp_cli_socks_parse_udp(const uint8_t *p, size_t len, kp_cli_socks_addr_t *addr) {
  memset(addr, 0, sizeof(*addr));
  /* Fragments (FRAG != 0) are optional in RFC 1928 and not taken here:
   * the datagram is dropped, which the RFC allows. */
  if (len < 3 || p[2] != 0) return -1;
  int n = kp_cli_socks_parse_addr(p + 3, len - 3, addr);
  return n > 0 ? n + 3 : -1;
}

size_t kp_cli_socks_put_addr(uint8_t *out, const kp_cli_socks_addr_t *a) {
  size_t n;
  out[0] = a->type;
  switch (a->type) {
    case KP_CLI_SOCKS_ATYP_IPV4:
      memcpy(out + 1, a->ip, 4);
      n = 5;
      break;
    case KP_CLI_SOCKS_ATYP_IPV6:
      memcpy(out + 1, a->ip, 16);
      n = 17;
      break;
    case KP_CLI_SOCKS_ATYP_NAME: {
      size_t len = strnlen(a->name, sizeof(a->name));
      if (!name_ok((const uint8_t *)a->name, len) || len > 255) return 0;
      out[1] = (uint8_t)len;
      memcpy(out + 2, a->name, len);
      n = 2 + len;
      break;
    }
    default: return 0;
  }
  out[n] = (uint8_t)(a->port >> 8);
  out[n + 1] = (uint8_t)a->port;
  return n + 2;
}

static size_t put_message(uint8_t *out, uint8_t second, const kp_cli_socks_addr_t *a) {
  out[0] = KP_CLI_SOCKS_VERSION;
  out[1] = second;
  out[2] = 0;
  size_t n = kp_cli_socks_put_addr(out + 3, a);
  return n ? n + 3 : 0;
}

size_t kp_cli_socks_put_request(uint8_t *out, uint8_t cmd, const kp_cli_socks_addr_t *dst) {
  return put_message(out, cmd, dst);
}

size_t kp_cli_socks_put_reply(uint8_t *out, uint8_t rep, const kp_cli_socks_addr_t *bnd) {
  kp_cli_socks_addr_t none = {.type = KP_CLI_SOCKS_ATYP_IPV4};
  return put_message(out, rep, bnd ? bnd : &none);
}

size_t kp_cli_socks_put_udp(uint8_t *out, const kp_cli_socks_addr_t *a) {
  out[0] = out[1] = out[2] = 0;
  size_t n = kp_cli_socks_put_addr(out + 3, a);
  return n ? n + 3 : 0;
}

static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

void kp_cli_socks_addr_from_sockaddr(kp_cli_socks_addr_t *out, const struct sockaddr *sa) {
  memset(out, 0, sizeof(*out));
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
    out->port = ntohs(s6->sin6_port);
    if (!memcmp(s6->sin6_addr.s6_addr, v4_mapped, 12)) {
      out->type = KP_CLI_SOCKS_ATYP_IPV4;
      memcpy(out->ip, s6->sin6_addr.s6_addr + 12, 4);
    } else {
      out->type = KP_CLI_SOCKS_ATYP_IPV6;
      memcpy(out->ip, s6->sin6_addr.s6_addr, 16);
    }
  } else {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
    out->type = KP_CLI_SOCKS_ATYP_IPV4;
    out->port = ntohs(s4->sin_port);
    memcpy(out->ip, &s4->sin_addr, 4);
  }
}

bool kp_cli_socks_addr_to_sockaddr(const kp_cli_socks_addr_t *a, struct sockaddr_storage *out) {
  memset(out, 0, sizeof(*out));
  if (a->type == KP_CLI_SOCKS_ATYP_IPV4) {
    struct sockaddr_in *s4 = (struct sockaddr_in *)out;
    s4->sin_family = AF_INET;
    s4->sin_port = htons(a->port);
    memcpy(&s4->sin_addr, a->ip, 4);
    return true;
  }
  if (a->type == KP_CLI_SOCKS_ATYP_IPV6) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)out;
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(a->port);
    memcpy(&s6->sin6_addr, a->ip, 16);
    return true;
  }
  return false;
}

const char *kp_cli_socks_addr_text(const kp_cli_socks_addr_t *a, char *buf, size_t size) {
  char ip[64] = "?";
  if (a->type == KP_CLI_SOCKS_ATYP_IPV4) {
    uv_inet_ntop(AF_INET, a->ip, ip, sizeof(ip));
    snprintf(buf, size, "%s:%u", ip, a->port);
  } else if (a->type == KP_CLI_SOCKS_ATYP_IPV6) {
    uv_inet_ntop(AF_INET6, a->ip, ip, sizeof(ip));
    snprintf(buf, size, "[%s]:%u", ip, a->port);
  } else {
    snprintf(buf, size, "%s:%u", a->name, a->port);
  }
  return buf;
}

const char *kp_cli_socks_reply_text(uint8_t rep) {
  switch (rep) {
    case KP_CLI_SOCKS_OK: return "succeeded";
    case KP_CLI_SOCKS_FAILURE: return "general SOCKS server failure";
    case KP_CLI_SOCKS_NOT_ALLOWED: return "connection not allowed by ruleset";
    case KP_CLI_SOCKS_NET_UNREACHABLE: return "network unreachable";
    case KP_CLI_SOCKS_HOST_UNREACHABLE: return "host unreachable";
    case KP_CLI_SOCKS_REFUSED: return "connection refused";
    case KP_CLI_SOCKS_TTL_EXPIRED: return "TTL expired";
    case KP_CLI_SOCKS_BAD_COMMAND: return "command not supported";
    case KP_CLI_SOCKS_BAD_ADDRESS: return "address type not supported";
  }
  return "unknown reply";
}

uint8_t kp_cli_socks_reply_for(int err) {
  switch (err) {
    case 0: return KP_CLI_SOCKS_OK;
    case UV_ECONNREFUSED: return KP_CLI_SOCKS_REFUSED;
    case UV_ENETUNREACH:
    case UV_ENETDOWN: return KP_CLI_SOCKS_NET_UNREACHABLE;
    case UV_EHOSTUNREACH:
    case UV_ETIMEDOUT:
    case UV_EAI_NONAME:
    case UV_EAI_AGAIN:
    case UV_EAI_FAIL:
    case UV_EAI_NODATA: return KP_CLI_SOCKS_HOST_UNREACHABLE;
    case UV_EAFNOSUPPORT:
    case UV_EAI_FAMILY: return KP_CLI_SOCKS_BAD_ADDRESS;
    case UV_EACCES:
    case UV_EPERM: return KP_CLI_SOCKS_NOT_ALLOWED;
  }
  return KP_CLI_SOCKS_FAILURE;
}

size_t kp_cli_udp_get_flow(const uint8_t *p, size_t len, uint64_t *flow) {
  kp_rbuf_t r;
  kp_rbuf_init(&r, p, len);
  *flow = kp_varint_get(&r);
  return r.error ? 0 : len - kp_rbuf_left(&r);
}

size_t kp_cli_udp_put_flow(uint8_t *out, uint64_t flow) {
  kp_wbuf_t w;
  kp_wbuf_init(&w, out, 8);
  kp_varint_put(&w, flow & KP_VARINT_MAX);
  return w.len;
}
