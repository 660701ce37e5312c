/* SPDX-License-Identifier: MIT */
/* kadpunch connect KEY --stdio: stdin and stdout joined to one stream of a
 * connection by key (cli_bridge.c), which is what ssh's ProxyCommand runs:
 *
 *   ssh -o ProxyCommand='kadpunch connect %h --stdio' KEY
 *
 * stdout carries the peer's bytes and nothing else; every message goes to
 * stderr. It exits 0 once both directions have ended (our EOF delivered and
 * acknowledged, the peer's EOF written out), 1 with the reason otherwise. */
#include <signal.h>
#include <string.h>

#include "node/cli/cli.h"
#include "node/cli/cli_bridge.h"

typedef struct stdio_s {
  const kp_cli_connect_args_t *a;
  kp_cli_bridges_t bridges;
  kp_cli_bridge_t *b; /* NULL once done */
  kp_conn_t *conn;
  bool done, reported;
  int status;
  uint64_t reset_code;
} stdio_t;

static void on_bridge_done(kp_cli_bridge_t *b, int status, uint64_t reset_code) {
  stdio_t *st = kp_cli_bridge_get_data(b);
  st->b = NULL;
  st->done = true;
  st->status = status;
  st->reset_code = reset_code;
}

static void on_conn_close(kp_conn_t *conn, int status, uint64_t code) {
  stdio_t *st = kp_conn_get_data(conn);
  (void)code;
  /* A stream not being read (stdout is slow) hears of it only so. */
  if (st->b) kp_cli_bridge_abort(st->b, status ? status : KP_ECLOSED);
  if (st->a->verbose) kp_cli_print_conn_stats(stderr, "kadpunch connect: ", conn);
  kp_conn_close(conn, 0);
  st->conn = NULL;
}

static void on_connected(kp_node_t *node, int status, kp_conn_t *conn,
                         const kp_connect_info_t *info, void *arg) {
  stdio_t *st = arg;
  (void)node;
  if (status) {
    kp_cli_print_connect_error(st->a->key_text, status, info);
    st->reported = true;
    if (st->b) kp_cli_bridge_abort(st->b, status);
    return;
  }
  st->conn = conn;
  kp_conn_set_data(conn, st);
  if (st->a->verbose) {
    fprintf(stderr, "connected to %s\n", st->a->key_text);
    kp_cli_print_info(stderr, info, true);
  }
  int err = st->b ? kp_cli_bridge_open(st->b, conn) : 0;
  if (err) kp_cli_bridge_abort(st->b, err);
}

static bool is_done(void *ctx) {
  return ((stdio_t *)ctx)->done;
}

/* stdin and stdout, then the connection. Returns 0 or an exit code. */
static int start(stdio_t *st, kp_cli_session_t *s, const kp_keypair_t *kp) {
  int err = kp_cli_bridge_new(&s->loop, &st->bridges, on_bridge_done, st, &st->b);
  if (err) {
    fprintf(stderr, "kadpunch connect: %s\n", uv_strerror(err));
    return KP_EXIT_FAIL;
  }
  if ((err = kp_cli_bridge_open_stdio(st->b))) {
    fprintf(stderr, "kadpunch connect: --stdio: stdin or stdout cannot be used: %s\n",
            uv_strerror(err));
    kp_cli_bridge_abort(st->b, err);
    return KP_EXIT_FAIL;
  }
  kp_conn_callbacks_t cb = {.on_close = on_conn_close,
                            .on_path = st->a->verbose ? kp_cli_print_path_change : NULL};
  if ((err = kp_node_connect_with(s->node, kp, st->a->server_key, &st->a->opts, &cb, on_connected,
                                  st))) {
    fprintf(stderr, "kadpunch connect: %s\n", kp_strerror(err));
    kp_cli_bridge_abort(st->b, err);
    return KP_EXIT_FAIL;
  }
  return 0;
}

int kp_cli_connect_stdio(kp_cli_connect_args_t *a) {
  /* A reader that went away is an error on a write, not a signal. */
  signal(SIGPIPE, SIG_IGN);
  stdio_t st = {.a = a};
  kp_keypair_t kp;
  kp_cli_session_t s;
  int rc = kp_cli_identity(a->key_path, &kp, "connect");
  if (rc) return rc;
  a->net.identity = &kp; /* what a proxy sees */
  if ((rc = kp_cli_session_open(&s, &a->net, "connect"))) {
    kp_keypair_wipe(&kp);
    return rc;
  }
  rc = start(&st, &s, &kp);
  kp_keypair_wipe(&kp);
  if (!rc) {
    kp_cli_session_run(&s, is_done, &st, 0);
    if (st.b) kp_cli_bridge_abort(st.b, UV_ECANCELED); /* a signal */
    /* Its handles close, and done fires, on the next ticks. */
    s.signalled = false;
    kp_cli_session_run(&s, is_done, &st, 1000);
    if (st.status && !st.reported) {
      char why[160];
      fprintf(stderr, "kadpunch connect: %s: %s\n", a->key_text,
              kp_cli_bridge_why(st.status, st.reset_code, why, sizeof(why)));
    }
    rc = st.status ? KP_EXIT_FAIL : KP_EXIT_OK;
  }
  if (st.conn && a->verbose) kp_cli_print_conn_stats(stderr, "kadpunch connect: ", st.conn);
  if (st.conn) kp_conn_close(st.conn, 0);
  /* Let the close reach the peer. */
  s.signalled = false;
  kp_cli_session_run(&s, NULL, NULL, 100);
  int closed = kp_cli_session_close(&s);
  return rc ? rc : closed;
}
