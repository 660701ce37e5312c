/* SPDX-License-Identifier: MIT */
/* Fuzz target: every SOCKS5 decoder (node/cli/cli_socks_codec.h), which
 * read what a local program sends `connect --socks` and what a client's
 * stream brings `serve --socks`, the flow id and address in front of a
 * UDP service's datagrams, and the allow-list rules of serve's command
 * line. A message that decodes must not claim more bytes than it
 * was given, must encode back to the same bytes (but RSV), and its prefix
 * must ask for more; an address that decodes must be printable. */
#include <string.h>

#include "node/cli/cli_socks_allow.h"
#include "node/cli/cli_socks_codec.h"
#include "tests/fuzz/fuzz.h"

static void request(const uint8_t *data, size_t size) {
  uint8_t cmd;
  kp_cli_socks_addr_t a;
  int n = kp_cli_socks_parse_request(data, size, &cmd, &a);
  KP_FUZZ_ASSERT(n <= (int)size);
  KP_FUZZ_ASSERT(n > 0 || n == 0 || n == KP_CLI_SOCKS_EVERSION || n == -KP_CLI_SOCKS_BAD_ADDRESS ||
                 n == -KP_CLI_SOCKS_FAILURE);
  if (n <= 0) return;
  uint8_t out[KP_CLI_SOCKS_MSG_MAX];
  size_t m = kp_cli_socks_put_request(out, cmd, &a);
  KP_FUZZ_ASSERT(m == (size_t)n && !memcmp(out, data, 2) && !memcmp(out + 3, data + 3, m - 3));
  KP_FUZZ_ASSERT(kp_cli_socks_parse_request(data, (size_t)n - 1, &cmd, &a) == 0);
  char text[300];
  kp_cli_socks_parse_request(data, size, &cmd, &a);
  KP_FUZZ_ASSERT(strlen(kp_cli_socks_addr_text(&a, text, sizeof(text))) < sizeof(text) - 1);
  struct sockaddr_storage ss;
  if (kp_cli_socks_addr_to_sockaddr(&a, &ss)) {
    kp_cli_socks_addr_t back;
    kp_cli_socks_addr_from_sockaddr(&back, (struct sockaddr *)&ss);
    KP_FUZZ_ASSERT(back.port == a.port);
  }
}

static void others(const uint8_t *data, size_t size) {
  bool no_auth;
  int n = kp_cli_socks_parse_greeting(data, size, &no_auth);
  KP_FUZZ_ASSERT(n <= (int)size && n <= KP_CLI_SOCKS_GREETING_MAX);
  uint8_t rep;
  kp_cli_socks_addr_t a;
  n = kp_cli_socks_parse_reply(data, size, &rep, &a);
  KP_FUZZ_ASSERT(n <= (int)size && n <= KP_CLI_SOCKS_MSG_MAX);
  n = kp_cli_socks_parse_udp(data, size, &a);
  KP_FUZZ_ASSERT(n == -1 || (n > 0 && n <= (int)size));
  if (n > 0) {
    uint8_t out[KP_CLI_SOCKS_MSG_MAX];
    KP_FUZZ_ASSERT(kp_cli_socks_put_udp(out, &a) == (size_t)n);
  }
  /* As a --socks-allow rule, and the rule against the address. */
  char text[300];
  size_t len = size < sizeof(text) - 1 ? size : sizeof(text) - 1;
  memcpy(text, data, len);
  text[len] = '\0';
  kp_cli_socks_rule_t r;
  char err[256];
  if (kp_cli_socks_rule_parse(text, &r, err, sizeof(err))) {
    kp_cli_socks_allow_t allow = {.count = 1};
    allow.rules[0] = r;
    struct sockaddr_storage ss;
    kp_cli_socks_addr_t dst = {.type = KP_CLI_SOCKS_ATYP_IPV4, .ip = {127, 0, 0, 1}, .port = 80};
    kp_cli_socks_addr_to_sockaddr(&dst, &ss);
    bool ok = kp_cli_socks_allowed(&allow, "x.lan", (struct sockaddr *)&ss);
    /* Loopback passes only a rule inside 127.0.0.0/8. */
    KP_FUZZ_ASSERT(!ok || (!r.is_name && r.prefix >= 8 && r.ip[0] == 127));
  }
}

/* A datagram of a UDP service as serve reads it: a flow id, then (SOCKS)
 * an address; the flow id encodes back to the same number. */
static void service_datagram(const uint8_t *data, size_t size) {
  uint64_t flow;
  size_t used = kp_cli_udp_get_flow(data, size, &flow);
  KP_FUZZ_ASSERT(used <= size && used <= 8);
  if (!used) return;
  uint8_t out[8];
  uint64_t back;
  KP_FUZZ_ASSERT(kp_cli_udp_get_flow(out, kp_cli_udp_put_flow(out, flow), &back) && back == flow);
  kp_cli_socks_addr_t a;
  int n = kp_cli_socks_parse_addr(data + used, size - used, &a);
  KP_FUZZ_ASSERT(n <= (int)(size - used));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  request(data, size);
  others(data, size);
  service_datagram(data, size);
  return 0;
}

size_t kp_fuzz_seeds(kp_fuzz_seed_t *seeds, size_t cap) {
  static const uint8_t s1[] = {5, 1, 0, 3, 7, 'w', 'e', 'b', '.', 'l', 'a', 'n', 0, 80};
  static const uint8_t s2[] = {5, 1, 0, 1, 10, 1, 0, 3, 0x1f, 0x90};
  static const uint8_t s3[] = {5, 3, 0, 4, 0xfd, 0, 0, 0, 0, 0, 0,
                               0, 0, 0, 0, 0,    0, 0, 0, 1, 1, 0xbb};
  static const uint8_t s4[] = {0, 0, 0, 1, 10, 1, 0, 4, 0, 53, 'q', 'u', 'e', 'r', 'y'};
  static const uint8_t s5[] = "192.168.1.0/24:22,80,443";
  static const uint8_t s6[] = "[fd00::]/64:8000-8100";
  static const uint8_t s7[] = "127.0.0.1:8080";
  static const uint8_t s8[] = {5, 2, 0, 2};
  const kp_fuzz_seed_t all[] = {{s1, sizeof(s1)},     {s2, sizeof(s2)},     {s3, sizeof(s3)},
                                {s4, sizeof(s4)},     {s5, sizeof(s5) - 1}, {s6, sizeof(s6) - 1},
                                {s7, sizeof(s7) - 1}, {s8, sizeof(s8)}};
  size_t n = 0;
  for (; n < cap && n < sizeof(all) / sizeof(all[0]); n++) seeds[n] = all[n];
  return n;
}
