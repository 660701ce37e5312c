/* SPDX-License-Identifier: MIT */
/* The one HTTP request a metrics endpoint understands (RFC 9112 section 3,
 * the request line; headers are read past, never interpreted): pure, so
 * the fuzz target drives it (tests/fuzz/fuzz_http.c). */
#ifndef KP_CLI_HTTP_H
#define KP_CLI_HTTP_H

#include <stddef.h>

/* A request head is at most this long; more is refused (431). */
#define KP_CLI_HTTP_HEAD_MAX 8192

typedef enum {
  KP_CLI_HTTP_INCOMPLETE = 0, /* no blank line yet: read more */
  KP_CLI_HTTP_GET_METRICS,    /* GET /metrics (a query string is ignored) */
  KP_CLI_HTTP_NOT_FOUND,      /* GET or HEAD of another path: 404 */
  KP_CLI_HTTP_HEAD_METRICS,   /* HEAD /metrics */
  KP_CLI_HTTP_BAD_METHOD,     /* a well-formed request line, another method: 405 */
  KP_CLI_HTTP_BAD_REQUEST,    /* not an HTTP/1.x request line: 400 */
  KP_CLI_HTTP_TOO_LARGE       /* no end of the head within KP_CLI_HTTP_HEAD_MAX: 431 */
} kp_cli_http_result_t;

/* What the len bytes received so far ask for. */
kp_cli_http_result_t kp_cli_http_parse(const char *buf, size_t len);

/* The status line's code and reason for a result (not INCOMPLETE). */
int kp_cli_http_status(kp_cli_http_result_t r, const char **reason);

#endif
