/* SPDX-License-Identifier: MIT */
/* serve --socks-allow rules (cli_socks_allow.h). */
#include "node/cli/cli_socks_allow.h"

#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

/* The special ranges: a destination in one passes only a rule inside it. */
typedef struct range_s {
  int family;
  uint8_t ip[16];
  unsigned prefix;
} range_t;

static const range_t special[] = {
    {AF_INET, {127}, 8},                 /* loopback */
    {AF_INET, {169, 254}, 16},           /* link-local */
    {AF_INET, {0}, 8},                   /* "this network": 0.0.0.0 is us */
    {AF_INET, {224}, 4},                 /* multicast */
    {AF_INET, {255, 255, 255, 255}, 32}, /* broadcast */
    {AF_INET6, {0}, 128},                /* :: */
    {AF_INET6, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 128}, /* ::1 */
    {AF_INET6, {0xfe, 0x80}, 10},                                      /* link-local */
    {AF_INET6, {0xff}, 8},                                             /* multicast */
};

static bool prefix_match(const uint8_t *a, const uint8_t *b, unsigned bits) {
  unsigned whole = bits / 8, rest = bits % 8;
  if (memcmp(a, b, whole)) return false;
  if (!rest) return true;
  uint8_t mask = (uint8_t)(0xff << (8 - rest));
  return (a[whole] & mask) == (b[whole] & mask);
}

/* The address's family and bytes, IPv4-mapped IPv6 as IPv4; and its port. */
static int addr_of(const struct sockaddr *sa, uint8_t ip[16], uint16_t *port) {
  static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  memset(ip, 0, 16);
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
    memcpy(ip, &s4->sin_addr, 4);
    *port = ntohs(s4->sin_port);
    return AF_INET;
  }
  const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
  *port = ntohs(s6->sin6_port);
  if (!memcmp(s6->sin6_addr.s6_addr, mapped, 12)) {
    memcpy(ip, s6->sin6_addr.s6_addr + 12, 4);
    return AF_INET;
  }
  memcpy(ip, s6->sin6_addr.s6_addr, 16);
  return AF_INET6;
}

static const range_t *special_range(int family, const uint8_t ip[16]) {
  for (size_t i = 0; i < sizeof(special) / sizeof(special[0]); i++)
    if (special[i].family == family && prefix_match(ip, special[i].ip, special[i].prefix))
      return &special[i];
  return NULL;
}

bool kp_cli_socks_special(const struct sockaddr *addr) {
  uint8_t ip[16];
  uint16_t port;
  int family = addr_of(addr, ip, &port);
  return special_range(family, ip) != NULL;
}

static bool port_ok(const kp_cli_socks_rule_t *r, uint16_t port) {
  for (unsigned i = 0; i < r->port_count; i++)
    if (port >= r->ports[i].lo && port <= r->ports[i].hi) return true;
  return false;
}

static bool name_match(const kp_cli_socks_rule_t *r, const char *name) {
  size_t n = strlen(name), rn = strlen(r->name);
  if (n && name[n - 1] == '.') n--; /* "nas.lan." is "nas.lan" */
  if (!r->any_sub) return n == rn && !strncasecmp(name, r->name, n);
  return n > rn && name[n - rn - 1] == '.' && !strncasecmp(name + n - rn, r->name, rn);
}

bool kp_cli_socks_allowed(const kp_cli_socks_allow_t *a, const char *name,
                          const struct sockaddr *addr) {
  uint8_t ip[16];
  uint16_t port;
  int family = addr_of(addr, ip, &port);
  const range_t *sp = special_range(family, ip);
  for (unsigned i = 0; i < a->count; i++) {
    const kp_cli_socks_rule_t *r = &a->rules[i];
    if (!port_ok(r, port)) continue;
    if (r->is_name) {
      if (name && !sp && name_match(r, name)) return true;
      continue;
    }
    if (r->family != family || !prefix_match(ip, r->ip, r->prefix)) continue;
    /* Listed: the rule itself lies inside the special range. */
    if (sp && (r->prefix < sp->prefix || !prefix_match(r->ip, sp->ip, sp->prefix))) continue;
    return true;
  }
  return false;
}

/* "22,80,443", "8000-8100" or "*". */
static bool parse_ports(const char *text, kp_cli_socks_rule_t *r, char *err, size_t errlen) {
  if (!strcmp(text, "*")) {
    r->ports[0].lo = 1;
    r->ports[0].hi = 65535;
    r->port_count = 1;
    return true;
  }
  const char *p = text;
  while (*p) {
    if (r->port_count == KP_CLI_SOCKS_PORT_RANGES) {
      snprintf(err, errlen, "at most %d ports or ranges", KP_CLI_SOCKS_PORT_RANGES);
      return false;
    }
    char *end;
    unsigned long lo = isdigit((unsigned char)*p) ? strtoul(p, &end, 10) : 0, hi = lo;
    if (!lo || lo > 65535) goto bad;
    p = end;
    if (*p == '-') {
      p++;
      hi = isdigit((unsigned char)*p) ? strtoul(p, &end, 10) : 0;
      if (hi < lo || hi > 65535) goto bad;
      p = end;
    }
    r->ports[r->port_count].lo = (uint16_t)lo;
    r->ports[r->port_count].hi = (uint16_t)hi;
    r->port_count++;
    if (*p == ',' && p[1]) {
      p++;
    } else if (*p) {
      goto bad;
    }
  }
  if (r->port_count) return true;
bad:
  snprintf(err, errlen, "'%s': ports are 1 to 65535, as a list (22,80), ranges (8000-8100) or *",
           text);
  return false;
}

static bool parse_name(const char *host, kp_cli_socks_rule_t *r) {
  if (!strncmp(host, "*.", 2)) {
    r->any_sub = true;
    host += 2;
  }
  size_t n = strlen(host);
  if (!n || n > 253 || host[0] == '.' || host[n - 1] == '.') return false;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)host[i];
    if (!isalnum(c) && c != '-' && c != '.' && c != '_') return false;
  }
  r->is_name = true;
  memcpy(r->name, host, n + 1);
  return true;
}

/* An address or ADDRESS/PREFIX. */
static bool parse_net(char *host, kp_cli_socks_rule_t *r) {
  char *slash = strchr(host, '/'), *end = NULL;
  unsigned long prefix = 0;
  bool ok = false;
  if (slash) {
    *slash = '\0';
    prefix = isdigit((unsigned char)slash[1]) ? strtoul(slash + 1, &end, 10) : 999;
    if (end && *end) prefix = 999;
  }
  if (uv_inet_pton(AF_INET, host, r->ip) == 0) {
    r->family = AF_INET;
    r->prefix = slash ? (unsigned)prefix : 32;
    ok = r->prefix <= 32;
  } else if (uv_inet_pton(AF_INET6, host, r->ip) == 0) {
    r->family = AF_INET6;
    r->prefix = slash ? (unsigned)prefix : 128;
    ok = r->prefix <= 128;
  }
  /* Not an address (nor a name: the slash goes back, and names have none). */
  if (!ok && slash) *slash = '/';
  return ok;
}

bool kp_cli_socks_rule_parse(const char *text, kp_cli_socks_rule_t *out, char *err, size_t errlen) {
  memset(out, 0, sizeof(*out));
  char buf[300], *host, *ports;
  if (strlen(text) >= sizeof(buf)) {
    snprintf(err, errlen, "too long");
    return false;
  }
  snprintf(buf, sizeof(buf), "%s", text);
  if (buf[0] == '[') {
    /* [v6]:ports or [v6]/64:ports, or [v6/64]:ports */
    char *close = strchr(buf, ']');
    if (!close) goto bad;
    *close = '\0';
    host = buf + 1;
    char *rest = close + 1;
    if (*rest == '/') {
      /* Move the prefix inside: "[fd00::]/64" -> "fd00::/64". */
      char *colon = strchr(rest, ':');
      if (!colon) goto bad;
      *colon = '\0';
      size_t hl = strlen(host);
      if (hl + strlen(rest) + 1 > sizeof(buf) - 2) goto bad;
      memmove(host + hl, rest, strlen(rest) + 1);
      ports = colon + 1;
    } else if (*rest == ':') {
      ports = rest + 1;
    } else {
      goto bad;
    }
  } else {
    char *colon = strrchr(buf, ':');
    if (!colon || strchr(buf, ':') != colon) goto bad;
    *colon = '\0';
    host = buf;
    ports = colon + 1;
  }
  if (!parse_ports(ports, out, err, errlen)) return false;
  if (parse_net(host, out) || parse_name(host, out)) return true;
bad:
  snprintf(err, errlen,
           "'%s': expected ADDRESS[/PREFIX]:PORTS, [IPv6][/PREFIX]:PORTS or NAME:PORTS "
           "(192.168.1.0/24:22,80,443; nas.lan:445; *.lan:*)",
           text);
  return false;
}

bool kp_cli_socks_allow_add(kp_cli_socks_allow_t *a, const char *text, char *err, size_t errlen) {
  if (a->count == KP_CLI_SOCKS_RULES_MAX) {
    snprintf(err, errlen, "at most %d rules", KP_CLI_SOCKS_RULES_MAX);
    return false;
  }
  if (!kp_cli_socks_rule_parse(text, &a->rules[a->count], err, errlen)) return false;
  a->count++;
  return true;
}
