/* SPDX-License-Identifier: MIT */
/* A node for the length of a command, stopped by SIGINT/SIGTERM, and
 * single requests from it with their round trips. */
#include <string.h>

#include "common/alloc.h"
#include "node/node_internal.h"
#include "node/testnet.h"
#include "tools/inspect/inspect.h"

static bool reached_dht(void *ctx) {
  kp_node_stats_t st;
  kp_node_stats(ctx, &st);
  return st.responses_in > 0;
}

int kp_inspect_session_open(kp_inspect_session_t *s, const kp_inspect_opts_t *o, int family,
                            const char *const *hosts, size_t count, unsigned wait_ms) {
  kp_prog_session_init(s);
  kp_node_options_t no;
  kp_node_options_init(&no);
  no.bind = o->bind ? o->bind : family == KP_AF_INET6 ? "[::]:0" : "0.0.0.0:0";
  /* An inspector asks; it never enters anyone's routing table. */
  no.mode = KP_NODE_EPHEMERAL;
  /* Only `nat` reports what the gateway offers; the rest need no mapping. */
  no.port_mapping = !strcmp(o->cmd, "nat");
  no.log_level = o->log_level;
  no.bootstrap = hosts;
  no.bootstrap_count = count;
  int err = kp_node_create(&s->loop, &no, &s->node);
  if (err) {
    kp_prog_session_close(s, "kadpunch-inspect");
    return err;
  }
  if (count && !kp_inspect_session_run(s, reached_dht, s->node, wait_ms)) {
    err = s->signalled ? UV_ECANCELED : KP_ENONODES;
    kp_inspect_session_close(s);
    return err;
  }
  return 0;
}

int kp_inspect_session_error(const kp_inspect_opts_t *o, int err) {
  switch (err) {
    case UV_ECANCELED: return KP_EXIT_FAIL;
    case KP_ENONODES:
      return kp_inspect_fail(o->cmd,
                             "no DHT node answered (bootstrap: %s); check the address, and "
                             "whether this network lets UDP out",
                             o->bootstrap);
    case KP_EBADADDR:
    case KP_ECONFIG:
      fprintf(stderr, "kadpunch-inspect %s: invalid --bind or --bootstrap address\n", o->cmd);
      return KP_EXIT_USAGE;
    default:
      return kp_inspect_fail(o->cmd, "cannot start a node on %s: %s", o->bind ? o->bind : "any",
                             kp_strerror(err));
  }
}

bool kp_inspect_session_run(kp_inspect_session_t *s, bool (*pred)(void *ctx), void *ctx,
                            unsigned timeout_ms) {
  /* Here 0 ms is no time at all (an interval of 0), not "no limit". */
  if (!timeout_ms) return pred && pred(ctx);
  return kp_prog_session_run(s, pred, ctx, timeout_ms);
}

int kp_inspect_session_close(kp_inspect_session_t *s) {
  return kp_prog_session_close(s, "kadpunch-inspect");
}

kp_dht_t *kp_inspect_dht(kp_inspect_session_t *s) {
  return kp__node_dht(s->node);
}

static bool is_v6_literal(const char *host) {
  return host[0] == '[';
}

static bool is_v4_literal(const char *host) {
  kp_addr_t a;
  return kp_addr_parse(&a, host) == 0 && a.family == KP_AF_INET;
}

size_t kp_inspect_hosts(const kp_inspect_opts_t *o, int family, char text[1024], const char **hosts,
                        size_t cap) {
  snprintf(text, 1024, "%s", o->bootstrap);
  size_t n = 0;
  for (char *tok = strtok(text, ","); tok && n < cap; tok = strtok(NULL, ",")) {
    if (family == KP_AF_INET && is_v6_literal(tok)) continue;
    if (family == KP_AF_INET6 && is_v4_literal(tok)) continue;
    hosts[n++] = tok;
  }
  return n;
}

int kp_inspect_bootstrap_family(const kp_inspect_opts_t *o) {
  return is_v6_literal(o->bootstrap) ? KP_AF_INET6 : KP_AF_INET;
}

/* ---- Single requests ------------------------------------------------------------ */

typedef struct request_s {
  kp_inspect_reply_cb cb;
  void *arg;
  uint64_t sent_ns;
} request_t;

static void on_reply(void *arg, kp_dht_req_t *req, int status, const kp_dht_msg_t *resp,
                     const kp_addr_t *from, uint64_t now) {
  request_t *r = arg;
  (void)now;
  unsigned sends = req ? req->sends : 0;
  double rtt = sends == 1 ? (double)(uv_hrtime() - r->sent_ns) / 1e6 : -1;
  kp_inspect_reply_cb cb = r->cb;
  void *cb_arg = r->arg;
  kp_free(r);
  cb(cb_arg, status, status ? NULL : resp, from, rtt, sends);
}

int kp_inspect_request(kp_inspect_session_t *s, const kp_addr_t *to, uint8_t command,
                       const uint8_t *target, kp_inspect_reply_cb cb, void *arg,
                       kp_dht_req_t **out) {
  request_t *r = kp_malloc(sizeof(*r));
  if (!r) return UV_ENOMEM;
  r->cb = cb;
  r->arg = arg;
  r->sent_ns = uv_hrtime();
  kp_node_t *node = s->node;
  int err;
  KP_NODE_FEED(node, err = kp_dht_request(node->dht, to, command, target, NULL, 0, NULL, on_reply,
                                          r, kp__node_now(node), out));
  if (err) kp_free(r);
  return err;
}
