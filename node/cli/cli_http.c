/* SPDX-License-Identifier: MIT */
/* The metrics endpoint's request reader (cli_http.h). Only the request
 * line matters: "METHOD SP TARGET SP HTTP/1.x CRLF" (RFC 9112 3), then
 * header lines up to an empty line, which are skipped. A bare LF ends a
 * line too (RFC 9112 2.2 allows a recipient to accept it). */
#include <stdbool.h>
#include <string.h>

#include "node/cli/cli_http.h"

/* The end of the head: the index just past the blank line, or 0. */
static size_t head_end(const char *buf, size_t len) {
  for (size_t i = 0; i < len; i++) {
    if (buf[i] != '\n') continue;
    if (i + 1 < len && buf[i + 1] == '\n') return i + 2;
    if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n') return i + 3;
  }
  return 0;
}

static bool tchar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         (c && strchr("!#$%&'*+-.^_`|~", c));
}

kp_cli_http_result_t kp_cli_http_parse(const char *buf, size_t len) {
  size_t cap = len < KP_CLI_HTTP_HEAD_MAX ? len : KP_CLI_HTTP_HEAD_MAX;
  if (!head_end(buf, cap))
    return len >= KP_CLI_HTTP_HEAD_MAX ? KP_CLI_HTTP_TOO_LARGE : KP_CLI_HTTP_INCOMPLETE;
  const char *eol = memchr(buf, '\n', cap);
  size_t line = (size_t)(eol - buf);
  if (line && buf[line - 1] == '\r') line--;
  /* METHOD */
  size_t m = 0;
  while (m < line && tchar(buf[m])) m++;
  if (!m || m >= line || buf[m] != ' ') return KP_CLI_HTTP_BAD_REQUEST;
  /* TARGET: visible ASCII up to the next space */
  size_t t = m + 1, t_end = t;
  while (t_end < line && buf[t_end] > 0x20 && buf[t_end] < 0x7f) t_end++;
  if (t_end == t || t_end >= line || buf[t_end] != ' ') return KP_CLI_HTTP_BAD_REQUEST;
  /* VERSION: exactly HTTP/1.0 or HTTP/1.1 */
  size_t v = t_end + 1;
  if (line - v != 8 || memcmp(buf + v, "HTTP/1.", 7) || (buf[v + 7] != '0' && buf[v + 7] != '1'))
    return KP_CLI_HTTP_BAD_REQUEST;
  bool get = m == 3 && !memcmp(buf, "GET", 3), head = m == 4 && !memcmp(buf, "HEAD", 4);
  if (!get && !head) return KP_CLI_HTTP_BAD_METHOD;
  size_t path_len = t_end - t;
  const char *q = memchr(buf + t, '?', path_len);
  if (q) path_len = (size_t)(q - (buf + t));
  bool metrics = path_len == 8 && !memcmp(buf + t, "/metrics", 8);
  if (!metrics) return KP_CLI_HTTP_NOT_FOUND;
  return get ? KP_CLI_HTTP_GET_METRICS : KP_CLI_HTTP_HEAD_METRICS;
}

int kp_cli_http_status(kp_cli_http_result_t r, const char **reason) {
  switch (r) {
    case KP_CLI_HTTP_GET_METRICS:
    case KP_CLI_HTTP_HEAD_METRICS: *reason = "OK"; return 200;
    case KP_CLI_HTTP_NOT_FOUND: *reason = "Not Found"; return 404;
    case KP_CLI_HTTP_BAD_METHOD: *reason = "Method Not Allowed"; return 405;
    case KP_CLI_HTTP_TOO_LARGE: *reason = "Request Header Fields Too Large"; return 431;
    default: *reason = "Bad Request"; return 400;
  }
}
