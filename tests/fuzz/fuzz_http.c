/* SPDX-License-Identifier: MIT */
/* Fuzz target: the request reader of the metrics endpoint (--metrics,
 * node/cli/cli_http.c), which anyone who can reach its TCP port feeds. It
 * answers every input with one result, reads nothing past what it was
 * given (ASan), and agrees with itself on every prefix: a complete head
 * never turns incomplete with more bytes. */
#include <stdlib.h>
#include <string.h>

#include "node/cli/cli_http.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* An exact-size copy: a read past the end is ASan's to catch. */
  char *buf = malloc(size ? size : 1);
  if (!buf) return 0;
  if (size) memcpy(buf, data, size);
  kp_cli_http_result_t r = kp_cli_http_parse(buf, size);
  KP_FUZZ_ASSERT(r >= KP_CLI_HTTP_INCOMPLETE && r <= KP_CLI_HTTP_TOO_LARGE);
  if (r != KP_CLI_HTTP_INCOMPLETE) {
    const char *reason = NULL;
    int code = kp_cli_http_status(r, &reason);
    KP_FUZZ_ASSERT(code >= 200 && code < 600 && reason && *reason);
  }
  if (size < KP_CLI_HTTP_HEAD_MAX) KP_FUZZ_ASSERT(r != KP_CLI_HTTP_TOO_LARGE);
  /* Once decided, more bytes change nothing. */
  for (size_t cut = 0; cut < size && size < 512; cut += 7) {
    kp_cli_http_result_t p = kp_cli_http_parse(buf, cut);
    KP_FUZZ_ASSERT(p == KP_CLI_HTTP_INCOMPLETE || p == r);
  }
  free(buf);
  return 0;
}

size_t kp_fuzz_seeds(kp_fuzz_seed_t *seeds, size_t cap) {
  static const char *const s[] = {
      "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9100\r\nAccept: text/plain\r\n\r\n",
      "GET /metrics?x=1 HTTP/1.0\n\n",
      "HEAD /metrics HTTP/1.1\r\n\r\n",
      "POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
      "GET / HTTP/1.1\r\n\r\n",
      "GET /metrics HTTP/2.0\r\n\r\n",
      "\r\n\r\n",
  };
  size_t n = 0;
  for (; n < sizeof(s) / sizeof(s[0]) && n < cap; n++)
    seeds[n] = (kp_fuzz_seed_t){(const uint8_t *)s[n], strlen(s[n])};
  return n;
}
