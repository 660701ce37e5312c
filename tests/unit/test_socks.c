/* SPDX-License-Identifier: MIT */
/* The SOCKS5 codec and the allow list of `serve --socks` (node/cli). */
#include <netinet/in.h>
#include <string.h>

#include "node/cli/cli_socks_allow.h"
#include "node/cli/cli_socks_codec.h"
#include "tests/harness/test.h"

/* Every message: its golden bytes, every truncation asks for more. */
static void test_socks_codec(void) {
  bool no_auth;
  const uint8_t greet[] = {5, 2, 2, 0};
  KP_CHECK_EQ(kp_cli_socks_parse_greeting(greet, sizeof(greet), &no_auth), 4);
  KP_CHECK(no_auth);
  const uint8_t greet_auth[] = {5, 1, 2};
  KP_CHECK_EQ(kp_cli_socks_parse_greeting(greet_auth, 3, &no_auth), 3);
  KP_CHECK(!no_auth);
  for (size_t n = 0; n < sizeof(greet); n++)
    KP_CHECK_EQ(kp_cli_socks_parse_greeting(greet, n, &no_auth), 0);
  const uint8_t socks4[] = {4, 1, 0, 80, 10, 0, 0, 1, 0};
  KP_CHECK_EQ(kp_cli_socks_parse_greeting(socks4, sizeof(socks4), &no_auth), KP_CLI_SOCKS_EVERSION);

  /* CONNECT to web.lan:80, to 10.1.0.3:8080 and to [fd00::1]:443. */
  const uint8_t name[] = {5, 1, 0, 3, 7, 'w', 'e', 'b', '.', 'l', 'a', 'n', 0, 80};
  const uint8_t v4[] = {5, 1, 0, 1, 10, 1, 0, 3, 0x1f, 0x90};
  uint8_t v6[22] = {5, 1, 0, 4, 0xfd};
  v6[19] = 1;
  v6[20] = 1;
  v6[21] = 0xbb;
  const uint8_t *msgs[] = {name, v4, v6};
  const size_t lens[] = {sizeof(name), sizeof(v4), sizeof(v6)};
  for (int m = 0; m < 3; m++) {
    uint8_t cmd;
    kp_cli_socks_addr_t a;
    KP_CHECK_EQ(kp_cli_socks_parse_request(msgs[m], lens[m], &cmd, &a), (int)lens[m]);
    KP_CHECK_EQ(cmd, KP_CLI_SOCKS_CONNECT);
    uint8_t out[KP_CLI_SOCKS_MSG_MAX];
    KP_CHECK_EQ(kp_cli_socks_put_request(out, cmd, &a), lens[m]);
    KP_CHECK_MEM(out, msgs[m], lens[m]);
    for (size_t n = 0; n < lens[m]; n++)
      KP_CHECK_EQ(kp_cli_socks_parse_request(msgs[m], n, &cmd, &a), 0);
  }
  uint8_t cmd;
  kp_cli_socks_addr_t a;
  char text[300];
  KP_CHECK_EQ(kp_cli_socks_parse_request(name, sizeof(name), &cmd, &a), (int)sizeof(name));
  KP_CHECK_EQ(strcmp(kp_cli_socks_addr_text(&a, text, sizeof(text)), "web.lan:80"), 0);
  KP_CHECK_EQ(kp_cli_socks_parse_request(v6, sizeof(v6), &cmd, &a), (int)sizeof(v6));
  KP_CHECK_EQ(strcmp(kp_cli_socks_addr_text(&a, text, sizeof(text)), "[fd00::1]:443"), 0);

  /* Bad version, bad address type, names no host has. */
  const uint8_t badver[] = {4, 1, 0, 1, 1, 2, 3, 4, 0, 80};
  KP_CHECK_EQ(kp_cli_socks_parse_request(badver, sizeof(badver), &cmd, &a), KP_CLI_SOCKS_EVERSION);
  const uint8_t badtype[] = {5, 1, 0, 2, 1, 2, 3, 4, 0, 80};
  KP_CHECK_EQ(kp_cli_socks_parse_request(badtype, sizeof(badtype), &cmd, &a),
              -KP_CLI_SOCKS_BAD_ADDRESS);
  const uint8_t empty[] = {5, 1, 0, 3, 0, 0, 80};
  KP_CHECK_EQ(kp_cli_socks_parse_request(empty, sizeof(empty), &cmd, &a), -KP_CLI_SOCKS_FAILURE);
  const uint8_t nul[] = {5, 1, 0, 3, 3, 'a', 0, 'b', 0, 80};
  KP_CHECK_EQ(kp_cli_socks_parse_request(nul, sizeof(nul), &cmd, &a), -KP_CLI_SOCKS_FAILURE);

  /* Replies, and UDP headers. */
  uint8_t out[KP_CLI_SOCKS_MSG_MAX];
  const uint8_t refused[] = {5, 2, 0, 1, 0, 0, 0, 0, 0, 0};
  KP_CHECK_EQ(kp_cli_socks_put_reply(out, KP_CLI_SOCKS_NOT_ALLOWED, NULL), sizeof(refused));
  KP_CHECK_MEM(out, refused, sizeof(refused));
  uint8_t rep;
  KP_CHECK_EQ(kp_cli_socks_parse_reply(refused, sizeof(refused), &rep, &a), (int)sizeof(refused));
  KP_CHECK_EQ(rep, KP_CLI_SOCKS_NOT_ALLOWED);
  const uint8_t udp[] = {0, 0, 0, 1, 10, 1, 0, 4, 0, 53, 'q'};
  KP_CHECK_EQ(kp_cli_socks_parse_udp(udp, sizeof(udp), &a), 10);
  KP_CHECK_EQ(a.port, 53);
  KP_CHECK_EQ(kp_cli_socks_put_udp(out, &a), 10);
  KP_CHECK_MEM(out, udp, 10);
  const uint8_t frag[] = {0, 0, 1, 1, 10, 1, 0, 4, 0, 53, 'q'};
  KP_CHECK_EQ(kp_cli_socks_parse_udp(frag, sizeof(frag), &a), -1);
  for (size_t n = 0; n < 10; n++) KP_CHECK_EQ(kp_cli_socks_parse_udp(udp, n, &a), -1);
  KP_CHECK_EQ(kp_cli_socks_reply_for(UV_ECONNREFUSED), KP_CLI_SOCKS_REFUSED);
  KP_CHECK_EQ(kp_cli_socks_reply_for(UV_EAI_NONAME), KP_CLI_SOCKS_HOST_UNREACHABLE);
}

static struct sockaddr_storage sa(const char *ip, int port) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof(ss));
  if (uv_ip4_addr(ip, port, (struct sockaddr_in *)&ss))
    KP_CHECK_OK(uv_ip6_addr(ip, port, (struct sockaddr_in6 *)&ss));
  return ss;
}

static bool allowed(const kp_cli_socks_allow_t *a, const char *name, const char *ip, int port) {
  struct sockaddr_storage ss = sa(ip, port);
  return kp_cli_socks_allowed(a, name, (struct sockaddr *)&ss);
}

static void test_socks_allow(void) {
  kp_cli_socks_allow_t a = {0};
  char err[256];
  /* Nothing listed: nothing allowed. */
  KP_CHECK(!allowed(&a, NULL, "192.168.1.7", 22));
  KP_CHECK(kp_cli_socks_allow_add(&a, "192.168.1.0/24:22,80,443", err, sizeof(err)));
  KP_CHECK(kp_cli_socks_allow_add(&a, "nas.lan:445", err, sizeof(err)));
  KP_CHECK(kp_cli_socks_allow_add(&a, "*.lab:8000-8100", err, sizeof(err)));
  KP_CHECK(kp_cli_socks_allow_add(&a, "[fd00::]/64:*", err, sizeof(err)));
  KP_CHECK(kp_cli_socks_allow_add(&a, "0.0.0.0/0:25", err, sizeof(err)));
  KP_CHECK(allowed(&a, NULL, "192.168.1.7", 22));
  KP_CHECK(allowed(&a, "anything", "192.168.1.7", 443));
  KP_CHECK(!allowed(&a, NULL, "192.168.1.7", 23));
  KP_CHECK(!allowed(&a, NULL, "192.168.2.7", 22));
  KP_CHECK(allowed(&a, NULL, "::ffff:192.168.1.9", 80)); /* mapped is IPv4 */
  KP_CHECK(allowed(&a, "NAS.lan", "10.9.9.9", 445));
  KP_CHECK(allowed(&a, "nas.lan.", "10.9.9.9", 445));
  KP_CHECK(!allowed(&a, NULL, "10.9.9.9", 445)); /* by address: no rule */
  KP_CHECK(!allowed(&a, "xnas.lan", "10.9.9.9", 445));
  KP_CHECK(allowed(&a, "a.b.lab", "10.9.9.9", 8050));
  KP_CHECK(!allowed(&a, "lab", "10.9.9.9", 8050));
  KP_CHECK(allowed(&a, NULL, "fd00::42", 9));
  KP_CHECK(!allowed(&a, NULL, "fd01::42", 9));
  /* Special addresses: neither 0.0.0.0/0 nor a name opens them. */
  KP_CHECK(allowed(&a, NULL, "203.0.113.5", 25));
  const char *specials[] = {"127.0.0.1", "127.9.9.9", "169.254.1.1", "0.0.0.0",
                            "224.0.0.1", "::1",       "fe80::1",     "::"};
  for (size_t i = 0; i < sizeof(specials) / sizeof(specials[0]); i++) {
    struct sockaddr_storage ss = sa(specials[i], 445);
    KP_CHECK_MSG(kp_cli_socks_special((struct sockaddr *)&ss), "%s", specials[i]);
    KP_CHECK_MSG(!allowed(&a, "nas.lan", specials[i], 445), "%s", specials[i]);
    KP_CHECK_MSG(!allowed(&a, NULL, specials[i], 25), "%s", specials[i]);
  }
  KP_CHECK(!allowed(&a, NULL, "::ffff:127.0.0.1", 25));
  /* Listed inside the range, they pass. */
  KP_CHECK(kp_cli_socks_allow_add(&a, "127.0.0.1:8080", err, sizeof(err)));
  KP_CHECK(kp_cli_socks_allow_add(&a, "[::1]:8080", err, sizeof(err)));
  KP_CHECK(allowed(&a, NULL, "127.0.0.1", 8080));
  KP_CHECK(allowed(&a, NULL, "::1", 8080));
  KP_CHECK(!allowed(&a, NULL, "127.0.0.2", 8080));
  KP_CHECK(!allowed(&a, "localhost", "127.0.0.2", 8080));
  /* Bad rules say why. */
  const char *bad[] = {"192.168.1.0/24",
                       "192.168.1.0/33:22",
                       "host:0",
                       "host:70000",
                       "host:22,",
                       "host:80-22",
                       ":22",
                       "ho st:22",
                       "[fd00::1:22",
                       "nas.lan/24:22",
                       "*.:22",
                       "fd00::1:22",
                       "10.0.0.1/x:22",
                       "h:1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    kp_cli_socks_rule_t r;
    err[0] = '\0';
    KP_CHECK_MSG(!kp_cli_socks_rule_parse(bad[i], &r, err, sizeof(err)), "%s", bad[i]);
    KP_CHECK_MSG(err[0], "%s", bad[i]);
  }
  /* The table is bounded. */
  kp_cli_socks_allow_t full = {0};
  for (int i = 0; i < KP_CLI_SOCKS_RULES_MAX; i++)
    KP_CHECK(kp_cli_socks_allow_add(&full, "10.0.0.1:1", err, sizeof(err)));
  KP_CHECK(!kp_cli_socks_allow_add(&full, "10.0.0.1:1", err, sizeof(err)));
}

static const kp_test_case_t cases[] = {
    KP_CASE(socks_codec, unit, 10),
    KP_CASE(socks_allow, unit, 10),
};
KP_TEST_MAIN(cases)
