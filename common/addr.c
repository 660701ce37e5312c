/* SPDX-License-Identifier: MIT */
#include "common/addr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t ip_len(int family) {
  return family == KP_AF_INET ? 4 : family == KP_AF_INET6 ? 16 : 0;
}

size_t kp_addr_compact_len(int family) {
  size_t n = ip_len(family);
  return n ? n + 2 : 0;
}

size_t kp_addr_encode_compact(const kp_addr_t *addr, uint8_t *out) {
  size_t n = ip_len(addr->family);
  if (!n) return 0;
  memcpy(out, addr->ip, n);
  out[n] = (uint8_t)(addr->port >> 8);
  out[n + 1] = (uint8_t)addr->port;
  return n + 2;
}

int kp_addr_decode_compact(kp_addr_t *out, const uint8_t *in, size_t len) {
  memset(out, 0, sizeof(*out));
  if (len != KP_ADDR_COMPACT_V4 && len != KP_ADDR_COMPACT_V6) return KP_EBADADDR;
  size_t n = len - 2;
  out->family = n == 4 ? KP_AF_INET : KP_AF_INET6;
  memcpy(out->ip, in, n);
  out->port = (uint16_t)(in[n] << 8 | in[n + 1]);
  return 0;
}

bool kp_addr_same_host(const kp_addr_t *a, const kp_addr_t *b) {
  if (a->family != b->family) return false;
  return a->family == KP_AF_INET ? kp_addr_same_ip(a, b) : !memcmp(a->ip, b->ip, 8);
}

bool kp_addr_same_ip(const kp_addr_t *a, const kp_addr_t *b) {
  if (a->family != b->family) return false;
  /* Fixed-size compares the compiler inlines: this runs for every datagram
   * matched against requests, sockets and tables. */
  if (a->family == KP_AF_INET) {
    uint32_t x, y;
    memcpy(&x, a->ip, 4);
    memcpy(&y, b->ip, 4);
    return x == y;
  }
  if (a->family == KP_AF_INET6) return memcmp(a->ip, b->ip, 16) == 0;
  return true; /* both unset */
}

bool kp_addr_eq(const kp_addr_t *a, const kp_addr_t *b) {
  return a->port == b->port && kp_addr_same_ip(a, b);
}

int kp_addr_cmp(const kp_addr_t *a, const kp_addr_t *b) {
  if (a->family != b->family) return a->family < b->family ? -1 : 1;
  int c = memcmp(a->ip, b->ip, ip_len(a->family));
  if (c) return c < 0 ? -1 : 1;
  if (a->port != b->port) return a->port < b->port ? -1 : 1;
  return 0;
}

uint64_t kp_addr_hash(const kp_addr_t *addr, const uint8_t key[16]) {
  uint8_t buf[KP_ADDR_COMPACT_MAX];
  uint8_t h[crypto_shorthash_BYTES];
  size_t n = kp_addr_encode_compact(addr, buf);
  crypto_shorthash(h, buf, n, key);
  uint64_t v;
  memcpy(&v, h, sizeof(v));
  return v;
}

void kp_addr_set_v4(kp_addr_t *out, uint32_t ip, uint16_t port) {
  memset(out, 0, sizeof(*out));
  out->family = KP_AF_INET;
  out->port = port;
  out->ip[0] = (uint8_t)(ip >> 24);
  out->ip[1] = (uint8_t)(ip >> 16);
  out->ip[2] = (uint8_t)(ip >> 8);
  out->ip[3] = (uint8_t)ip;
}

bool kp_addr_is_set(const kp_addr_t *addr) {
  return addr->family == KP_AF_INET || addr->family == KP_AF_INET6;
}

bool kp_addr_is_any(const kp_addr_t *addr) {
  static const uint8_t zero[16];
  return kp_addr_is_set(addr) && memcmp(addr->ip, zero, ip_len(addr->family)) == 0;
}

bool kp_addr_is_loopback(const kp_addr_t *addr) {
  if (addr->family == KP_AF_INET) return addr->ip[0] == 127;
  static const uint8_t lo6[16] = {[15] = 1};
  return addr->family == KP_AF_INET6 && memcmp(addr->ip, lo6, 16) == 0;
}

bool kp_addr_is_private(const kp_addr_t *addr) {
  const uint8_t *ip = addr->ip;
  if (addr->family == KP_AF_INET) {
    return ip[0] == 10 || (ip[0] == 172 && (ip[1] & 0xf0) == 16) ||
           (ip[0] == 192 && ip[1] == 168) || (ip[0] == 169 && ip[1] == 254) ||
           (ip[0] == 100 && (ip[1] & 0xc0) == 64);
  }
  if (addr->family == KP_AF_INET6)
    return (ip[0] & 0xfe) == 0xfc || (ip[0] == 0xfe && (ip[1] & 0xc0) == 0x80);
  return false;
}

int kp_addr_from_sockaddr(kp_addr_t *out, const struct sockaddr *sa) {
  memset(out, 0, sizeof(*out));
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    out->family = KP_AF_INET;
    memcpy(out->ip, &in->sin_addr, 4);
    out->port = ntohs(in->sin_port);
    return 0;
  }
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    out->family = KP_AF_INET6;
    memcpy(out->ip, &in6->sin6_addr, 16);
    out->port = ntohs(in6->sin6_port);
    return 0;
  }
  return KP_EBADADDR;
}

socklen_t kp_addr_to_sockaddr(const kp_addr_t *addr, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof(*ss));
  if (addr->family == KP_AF_INET) {
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    in->sin_family = AF_INET;
    in->sin_port = htons(addr->port);
    memcpy(&in->sin_addr, addr->ip, 4);
    return sizeof(*in);
  }
  if (addr->family == KP_AF_INET6) {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(addr->port);
    memcpy(&in6->sin6_addr, addr->ip, 16);
    return sizeof(*in6);
  }
  return 0;
}

static int parse_port(const char *s, uint16_t *port) {
  if (!*s || strlen(s) > 5) return KP_EBADADDR;
  unsigned long v = 0;
  for (const char *p = s; *p; p++) {
    if (*p < '0' || *p > '9') return KP_EBADADDR;
    v = v * 10 + (unsigned long)(*p - '0');
  }
  if (v > 65535) return KP_EBADADDR;
  *port = (uint16_t)v;
  return 0;
}

int kp_addr_parse(kp_addr_t *out, const char *text) {
  char host[INET6_ADDRSTRLEN + 1];
  const char *port_text = NULL;
  memset(out, 0, sizeof(*out));
  if (!text) return KP_EBADADDR;
  size_t len = strlen(text);

  if (text[0] == '[') {
    const char *close = strchr(text, ']');
    if (!close || (size_t)(close - text - 1) >= sizeof(host)) return KP_EBADADDR;
    memcpy(host, text + 1, (size_t)(close - text - 1));
    host[close - text - 1] = '\0';
    if (close[1] == ':')
      port_text = close + 2;
    else if (close[1] != '\0')
      return KP_EBADADDR;
  } else {
    const char *colon = strchr(text, ':');
    if (colon && strchr(colon + 1, ':')) colon = NULL; /* bare IPv6 without a port */
    size_t hlen = colon ? (size_t)(colon - text) : len;
    if (hlen >= sizeof(host)) return KP_EBADADDR;
    memcpy(host, text, hlen);
    host[hlen] = '\0';
    if (colon) port_text = colon + 1;
  }

  if (port_text && parse_port(port_text, &out->port)) return KP_EBADADDR;
  if (inet_pton(AF_INET, host, out->ip) == 1) {
    out->family = KP_AF_INET;
    return 0;
  }
  if (inet_pton(AF_INET6, host, out->ip) == 1) {
    out->family = KP_AF_INET6;
    return 0;
  }
  memset(out, 0, sizeof(*out));
  return KP_EBADADDR;
}

char *kp_addr_format(const kp_addr_t *addr, char *buf, size_t size) {
  char ip[INET6_ADDRSTRLEN];
  if (!size) return buf;
  if (addr->family == KP_AF_INET) {
    inet_ntop(AF_INET, addr->ip, ip, sizeof(ip));
    snprintf(buf, size, "%s:%u", ip, addr->port);
  } else if (addr->family == KP_AF_INET6) {
    inet_ntop(AF_INET6, addr->ip, ip, sizeof(ip));
    snprintf(buf, size, "[%s]:%u", ip, addr->port);
  } else {
    snprintf(buf, size, "(none)");
  }
  return buf;
}
