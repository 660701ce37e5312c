/* SPDX-License-Identifier: MIT */
/* What the subcommands read from the command line (targets, addresses) and
 * how they write JSON. */
#include <netdb.h>
#include <string.h>

#include "common/addr.h"
#include "tools/inspect/inspect.h"

static int hex_digit(char c) {
  return c >= '0' && c <= '9'   ? c - '0'
         : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                : -1;
}

static bool parse_hex_id(const char *text, uint8_t id[KP_ID_LEN]) {
  if (strlen(text) != 2 * KP_ID_LEN) return false;
  for (size_t i = 0; i < KP_ID_LEN; i++) {
    int hi = hex_digit(text[2 * i]), lo = hex_digit(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    id[i] = (uint8_t)(hi << 4 | lo);
  }
  return true;
}

int kp_inspect_target(const char *cmd, const char *text, bool force_topic,
                      uint8_t target[KP_ID_LEN], const char **kind) {
  uint8_t pk[KP_PUBLIC_KEY_LEN];
  if (!text || !*text) return kp_inspect_usage(cmd, "a TARGET is required");
  if (!force_topic && parse_hex_id(text, target)) {
    *kind = "id";
  } else if (!force_topic && strlen(text) == KP_KEY_TEXT_LEN && kp_key_from_text(text, pk) == 0) {
    kp_target_from_key(pk, target);
    *kind = "key";
  } else {
    kp_target_from_topic(text, strlen(text), target);
    *kind = "topic";
  }
  return 0;
}

int kp_inspect_resolve(const char *text, kp_addr_t *out) {
  memset(out, 0, sizeof(*out));
  if (kp_addr_parse(out, text) == 0) return out->port ? 0 : KP_EBADADDR;
  char host[256];
  const char *colon = strrchr(text, ':');
  if (!colon || colon == text || (size_t)(colon - text) >= sizeof(host) || !colon[1])
    return KP_EBADADDR;
  memcpy(host, text, (size_t)(colon - text));
  host[colon - text] = '\0';
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_socktype = SOCK_DGRAM;
  int rc = getaddrinfo(host, colon + 1, &hints, &res);
  if (rc) return rc == EAI_NONAME ? KP_ENOTFOUND : KP_EBADADDR;
  int err = KP_ENOTFOUND;
  for (struct addrinfo *ai = res; ai && err; ai = ai->ai_next)
    if (kp_addr_from_sockaddr(out, ai->ai_addr) == 0 && out->port) err = 0;
  freeaddrinfo(res);
  return err;
}

const char *kp_inspect_hex(const uint8_t *p, size_t n, char *buf) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    buf[2 * i] = digits[p[i] >> 4];
    buf[2 * i + 1] = digits[p[i] & 15];
  }
  buf[2 * n] = '\0';
  return buf;
}

int kp_inspect_print_json(kp_jw_t *w, const char *cmd) {
  if (w->failed) {
    kp_jw_free(w);
    return kp_inspect_fail(cmd, "out of memory writing the JSON report");
  }
  fwrite(w->buf, 1, w->len, stdout);
  fputc('\n', stdout);
  fflush(stdout);
  kp_jw_free(w);
  return KP_EXIT_OK;
}

void kp_inspect_jw_addr(kp_jw_t *w, const char *key, const kp_addr_t *a) {
  char text[KP_ADDR_STRLEN];
  kp_jw_key(w, key);
  if (a && kp_addr_is_set(a))
    kp_jw_str(w, kp_addr_format(a, text, sizeof(text)));
  else
    kp_jw_null(w);
}
