/* SPDX-License-Identifier: MIT */
/* serve --forward HOST:PORT: every stream a client opens becomes one TCP
 * connection to HOST:PORT, carried by a bridge (cli_bridge.c). The target
 * is resolved once, at start: a forward names a fixed service, and a name
 * that does not resolve is a configuration error to report before joining
 * the DHT, not a surprise for the first client. */
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "node/cli/cli.h"
#include "node/cli/cli_bridge.h"

/* TCP connections at once, over all clients: each is a file descriptor,
 * and the default limit is 1024. A stream over it is refused. */
#define MAX_FORWARDS 512

struct kp_cli_forward_s {
  uv_loop_t *loop;
  struct sockaddr_storage addr;
  char text[64];
  kp_cli_bridges_t bridges;
};

/* "host:port" or "[v6]:port" into host and port (pointers into buf). */
static bool split(char *buf, char **host, char **port) {
  char *colon;
  if (buf[0] == '[') {
    char *end = strchr(buf, ']');
    if (!end || end[1] != ':') return false;
    *end = '\0';
    *host = buf + 1;
    colon = end + 1;
  } else {
    colon = strchr(buf, ':');
    if (!colon || strchr(colon + 1, ':')) return false;
    *host = buf;
  }
  *colon = '\0';
  *port = colon + 1;
  return **host != '\0';
}

const char *kp_cli_sockaddr_format(const struct sockaddr_storage *ss, char out[64]) {
  char ip[46] = "?"; /* INET6_ADDRSTRLEN */
  if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
    uv_ip6_name(a, ip, sizeof(ip));
    snprintf(out, 64, "[%s]:%u", ip, ntohs(a->sin6_port));
  } else {
    const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
    uv_ip4_name(a, ip, sizeof(ip));
    snprintf(out, 64, "%s:%u", ip, ntohs(a->sin_port));
  }
  return out;
}

int kp_cli_resolve(const char *target, int socktype, struct sockaddr_storage *out, const char *opt,
                   const char *cmd) {
  char buf[512], *host, *port;
  unsigned long p;
  if (strlen(target) >= sizeof(buf)) return kp_cli_usage_error(cmd, "%s: too long", opt);
  snprintf(buf, sizeof(buf), "%s", target);
  if (!split(buf, &host, &port))
    return kp_cli_usage_error(cmd, "%s '%s': expected HOST:PORT (an IPv6 address as [ADDR]:PORT)",
                              opt, target);
  if (!kp_cli_parse_uint(port, 1, 65535, &p))
    return kp_cli_usage_error(cmd, "%s '%s': the port must be 1 to 65535", opt, target);
  if (!strcmp(host, "localhost")) host = "127.0.0.1";
  struct addrinfo hints = {.ai_socktype = socktype, .ai_flags = AI_NUMERICSERV}, *res;
  int err = getaddrinfo(host, port, &hints, &res);
  if (err)
    return kp_cli_usage_error(cmd, "%s '%s': cannot resolve %s: %s", opt, target, host,
                              gai_strerror(err));
  memset(out, 0, sizeof(*out));
  memcpy(out, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  return 0;
}

static int resolve(const char *target, struct sockaddr_storage *out, const char *cmd) {
  return kp_cli_resolve(target, SOCK_STREAM, out, "--forward", cmd);
}

int kp_cli_forward_new(uv_loop_t *loop, const char *target, const char *cmd,
                       kp_cli_forward_t **out) {
  *out = NULL;
  struct sockaddr_storage addr;
  int rc = resolve(target, &addr, cmd);
  if (rc) return rc;
  kp_cli_forward_t *f = calloc(1, sizeof(*f));
  if (!f) {
    fprintf(stderr, "kadpunch %s: out of memory\n", cmd);
    return KP_EXIT_FAIL;
  }
  f->loop = loop;
  f->addr = addr;
  kp_cli_sockaddr_format(&addr, f->text);
  *out = f;
  return 0;
}

const char *kp_cli_forward_target(const kp_cli_forward_t *f) {
  return f->text;
}

/* A forward that failed on our side (the service refused, reset, ...) is
 * worth a line; ends the client asked for, and the client's errors, not. */
static void on_bridge_done(kp_cli_bridge_t *b, int status, uint64_t reset_code) {
  kp_cli_forward_t *f = kp_cli_bridge_get_data(b);
  (void)reset_code;
  if (status && status != UV_ECANCELED && status > KP__ERR_BASE) {
    fprintf(stderr, "kadpunch serve: forwarding to %s: %s\n", f->text, uv_strerror(status));
    fflush(stderr);
  }
}

void kp_cli_forward_stream(kp_conn_t *conn, kp_stream_t *s) {
  kp_cli_forward_stream_to(kp_conn_get_data(conn), conn, s);
}

void kp_cli_forward_stream_to(kp_cli_forward_t *f, kp_conn_t *conn, kp_stream_t *s) {
  kp_cli_bridge_t *b;
  (void)conn;
  if (!f || f->bridges.count >= MAX_FORWARDS ||
      kp_cli_bridge_new(f->loop, &f->bridges, on_bridge_done, f, &b)) {
    kp_stream_reset(s, KP_STREAM_REFUSED);
    kp_stream_close(s, NULL);
    return;
  }
  int err = kp_cli_bridge_connect(b, s, (const struct sockaddr *)&f->addr);
  if (err) kp_cli_bridge_abort(b, err);
}

void kp_cli_forward_conn_closed(kp_cli_forward_t *f, const kp_conn_t *conn) {
  kp_cli_bridges_abort(&f->bridges, conn, UV_ECANCELED);
}

void kp_cli_forward_stop(kp_cli_forward_t *f) {
  kp_cli_bridges_abort(&f->bridges, NULL, UV_ECANCELED);
}

void kp_cli_forward_free(kp_cli_forward_t *f) {
  free(f);
}
