/* SPDX-License-Identifier: MIT */
/* The bootstrap list as addresses, resolved before the node starts: a name
 * with several A or AAAA records stands for all of them (one public node
 * per record, as DNS round robin publishes them), and a name that does not
 * resolve is a configuration error said at once, not a 10 s wait for
 * answers that cannot come. */
#include <netdb.h>
#include <string.h>
#include <sys/socket.h>

#include "common/addr.h"
#include "node/cli/cli.h"

/* HOST:PORT or [HOST]:PORT split; false if it is neither. */
static bool split_host_port(const char *text, char *host, size_t cap, const char **port) {
  const char *colon = strrchr(text, ':');
  if (!colon || colon == text || !colon[1]) return false;
  const char *start = text;
  size_t len = (size_t)(colon - text);
  if (text[0] == '[') {
    if (colon[-1] != ']') return false;
    start++;
    len -= 2;
  }
  if (!len || len >= cap) return false;
  memcpy(host, start, len);
  host[len] = '\0';
  *port = colon + 1;
  return true;
}

/* One entry: numeric as it is, a name as each of its addresses of family.
 * Returns 0 or an exit code after printing why. */
static int resolve_one(const char *entry, int family, char out[][KP_ADDR_STRLEN], size_t cap,
                       size_t *n, const char *cmd) {
  kp_addr_t addr;
  if (kp_addr_parse(&addr, entry) == 0) {
    if (!addr.port) return kp_cli_usage_error(cmd, "--bootstrap '%s': a port is required", entry);
    if (*n < cap) kp_addr_format(&addr, out[(*n)++], KP_ADDR_STRLEN);
    return 0;
  }
  char host[256];
  const char *port;
  unsigned long port_no;
  if (!split_host_port(entry, host, sizeof(host), &port) ||
      !kp_cli_parse_uint(port, 1, 65535, &port_no))
    return kp_cli_usage_error(cmd, "--bootstrap '%s': expected HOST:PORT", entry);
  struct addrinfo hints = {.ai_family = family, .ai_socktype = SOCK_DGRAM}, *res = NULL;
  int rc = getaddrinfo(host, port, &hints, &res);
  if (rc) {
    fprintf(stderr, "kadpunch %s: bootstrap node %s: cannot resolve %s: %s\n", cmd, entry, host,
            gai_strerror(rc));
    return KP_EXIT_USAGE;
  }
  size_t before = *n;
  for (struct addrinfo *ai = res; ai && *n < cap; ai = ai->ai_next) {
    if (kp_addr_from_sockaddr(&addr, ai->ai_addr)) continue;
    char text[KP_ADDR_STRLEN];
    kp_addr_format(&addr, text, sizeof(text));
    bool seen = false; /* getaddrinfo repeats an address per protocol */
    for (size_t i = before; i < *n && !seen; i++) seen = !strcmp(out[i], text);
    if (!seen) memcpy(out[(*n)++], text, sizeof(text));
  }
  freeaddrinfo(res);
  if (*n == before) {
    fprintf(stderr, "kadpunch %s: bootstrap node %s: no %s address\n", cmd, entry,
            family == AF_INET6  ? "IPv6"
            : family == AF_INET ? "IPv4"
                                : "IP");
    return KP_EXIT_USAGE;
  }
  return 0;
}

int kp_cli_bootstrap_resolve(const char *list, int family, char out[][KP_ADDR_STRLEN], size_t cap,
                             size_t *count, const char *cmd) {
  char copy[1024];
  const char *entries[KP_CLI_BOOTSTRAP_MAX];
  *count = 0;
  snprintf(copy, sizeof(copy), "%s", list);
  size_t n = kp_cli_split_list(copy, entries, KP_CLI_BOOTSTRAP_MAX);
  for (size_t i = 0; i < n; i++) {
    int rc = resolve_one(entries[i], family, out, cap, count, cmd);
    if (rc) return rc;
  }
  return 0;
}
