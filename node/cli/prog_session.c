/* SPDX-License-Identifier: MIT */
/* The command shell both programs share (prog.h): a loop, SIGINT and
 * SIGTERM, runs in slices, and a close that checks nothing was left open. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "node/cli/prog.h"
#include "node/testnet.h"

static void on_signal(uv_signal_t *sig, int signum) {
  kp_prog_session_t *s = sig->data;
  (void)signum;
  s->signalled = true;
  if (s->on_signal) s->on_signal(s);
  uv_stop(sig->loop);
}

void kp_prog_session_init(kp_prog_session_t *s) {
  memset(s, 0, sizeof(*s));
  uv_loop_init(&s->loop);
  uv_signal_init(&s->loop, &s->sigint);
  uv_signal_init(&s->loop, &s->sigterm);
  s->sigint.data = s->sigterm.data = s;
  uv_signal_start(&s->sigint, on_signal, SIGINT);
  uv_signal_start(&s->sigterm, on_signal, SIGTERM);
}

bool kp_prog_session_run(kp_prog_session_t *s, bool (*pred)(void *ctx), void *ctx,
                         unsigned timeout_ms) {
  uint64_t start = uv_now(&s->loop);
  while (!s->signalled) {
    if (pred && pred(ctx)) return true;
    uint64_t spent = uv_now(&s->loop) - start;
    if (timeout_ms && spent >= timeout_ms) return false;
    unsigned slice = timeout_ms && timeout_ms - spent < 100 ? (unsigned)(timeout_ms - spent) : 100;
    if (!kp_testnet_run_until(&s->loop, pred, ctx, slice) && s->signalled) break;
  }
  return pred && pred(ctx);
}

static void on_node_closed(kp_node_t *node) {
  (void)node;
}

int kp_prog_session_close(kp_prog_session_t *s, const char *who) {
  if (s->node) kp_node_close(s->node, on_node_closed);
  s->node = NULL;
  if (!uv_is_closing((uv_handle_t *)&s->sigint)) uv_close((uv_handle_t *)&s->sigint, NULL);
  if (!uv_is_closing((uv_handle_t *)&s->sigterm)) uv_close((uv_handle_t *)&s->sigterm, NULL);
  uv_run(&s->loop, UV_RUN_DEFAULT);
  int rc = uv_loop_close(&s->loop);
  if (rc) fprintf(stderr, "%s: the event loop did not close cleanly: %s\n", who, uv_strerror(rc));
  return rc ? KP_EXIT_FAIL : KP_EXIT_OK;
}
