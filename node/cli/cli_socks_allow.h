/* SPDX-License-Identifier: MIT */
/* Where `serve --socks` lets clients go: an explicit list of destinations
 * (`--socks-allow`), empty by default, so enabling SOCKS exposes nothing
 * until the owner names what may be reached.
 *
 * A rule is DESTINATION:PORTS. DESTINATION is an address (192.168.1.7,
 * [fd00::7]), a network (192.168.1.0/24, [fd00::]/64) or a host name
 * (nas.lan, or *.lan for every name under lan); PORTS is a list of ports
 * and ranges (22,80,443 or 8000-8100) or * for every port.
 *
 * A destination is allowed when a rule matches it: an address or network
 * rule holds the address it resolved to; a name rule matches the name the
 * client asked for (case does not matter). The server's own loopback and
 * link-local addresses (127.0.0.0/8, ::1, 169.254.0.0/16, fe80::/10), and
 * the addresses no connection should go to (0.0.0.0/8, ::, multicast,
 * broadcast), pass only an address rule that lies inside that range
 * itself: 0.0.0.0/0 does not open 127.0.0.1, and no name rule does (a
 * name that resolves to 127.0.0.1 stays refused, whatever a DNS server
 * says). Pure: no resolution happens here. */
#ifndef KP_CLI_SOCKS_ALLOW_H
#define KP_CLI_SOCKS_ALLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define KP_CLI_SOCKS_RULES_MAX 64
#define KP_CLI_SOCKS_PORT_RANGES 16

typedef struct kp_cli_socks_rule_s {
  bool is_name;
  bool any_sub; /* *.NAME: every name under NAME */
  char name[256];
  int family; /* AF_INET or AF_INET6 */
  uint8_t ip[16];
  unsigned prefix;
  struct {
    uint16_t lo, hi;
  } ports[KP_CLI_SOCKS_PORT_RANGES];
  unsigned port_count;
} kp_cli_socks_rule_t;

typedef struct kp_cli_socks_allow_s {
  kp_cli_socks_rule_t rules[KP_CLI_SOCKS_RULES_MAX];
  unsigned count;
} kp_cli_socks_allow_t;

/* Parses one rule; false with what is wrong in err. */
bool kp_cli_socks_rule_parse(const char *text, kp_cli_socks_rule_t *out, char *err, size_t errlen);
/* Adds a rule (text as above); false with err. */
bool kp_cli_socks_allow_add(kp_cli_socks_allow_t *a, const char *text, char *err, size_t errlen);

/* Whether a connection to addr (with its port) may be made for a client
 * that asked for name (NULL: it gave the address). */
bool kp_cli_socks_allowed(const kp_cli_socks_allow_t *a, const char *name,
                          const struct sockaddr *addr);

/* Whether addr is one of the special addresses above (loopback,
 * link-local, unspecified, multicast, broadcast). */
bool kp_cli_socks_special(const struct sockaddr *addr);

#endif
