/* SPDX-License-Identifier: MIT */
/* What the two programs, kadpunch (node/cli/) and kadpunch-inspect
 * (tools/inspect/), share as programs: one list of exit codes, and the
 * client side of a running node's control socket (node/control.h). */
#ifndef KP_PROG_H
#define KP_PROG_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "kadpunch.h"

/* Exit codes of both programs, documented in README.md and each
 * command's --help. */
enum {
  KP_EXIT_OK = 0,
  KP_EXIT_FAIL = 1,  /* the operation failed (network, peer, timeout) */
  KP_EXIT_USAGE = 2, /* bad command line or configuration */
};

/* A command's loop, its node (if any) and SIGINT/SIGTERM: the shell both
 * programs run their commands in (kadpunch's kp_cli_session_open and
 * kadpunch-inspect's kp_inspect_session_open make the node in it). */
typedef struct kp_prog_session_s {
  uv_loop_t loop;
  kp_node_t *node; /* the caller's, closed by kp_prog_session_close */
  uv_signal_t sigint, sigterm;
  bool signalled;                                 /* a signal came: runs return at once */
  void (*on_signal)(struct kp_prog_session_s *s); /* then, if set */
  void *data;
} kp_prog_session_t;

/* Zeroes s, starts its loop and its two signal handlers. */
void kp_prog_session_init(kp_prog_session_t *s);
/* Runs the loop until pred(ctx) holds (pred NULL: until the timeout), a
 * signal comes, or timeout_ms pass (0: no limit), in slices of at most
 * 100 ms so pred and the clock are looked at. Returns whether pred holds. */
bool kp_prog_session_run(kp_prog_session_t *s, bool (*pred)(void *ctx), void *ctx,
                         unsigned timeout_ms);
/* Closes the node, the signal handlers and the loop (run dry first).
 * KP_EXIT_OK, or KP_EXIT_FAIL after saying "WHO: the event loop did not
 * close cleanly". */
int kp_prog_session_close(kp_prog_session_t *s, const char *who);

/* How long a control request may take before it counts as unanswered. */
#define KP_PROG_CONTROL_TIMEOUT_MS 10000

/* $KADPUNCH_CONTROL, else ~/.kadpunch/control.sock: where both programs
 * look for a running node's control socket unless told. */
const char *kp_prog_control_default(void);

/* Sends request (one JSON line, newline included) to the control socket at
 * path and reads the answer line into *line (free it with kp_free;
 * NUL-terminated, *len bytes). Returns 0, or KP_EXIT_FAIL after saying on
 * stderr, as "WHO: ...", what went wrong in words an operator can act on:
 * no node running there, permission (with who may ask), a stale socket,
 * not a socket, no answer within the timeout. Blocking. */
int kp_prog_control_ask(const char *who, const char *path, const char *request, char **line,
                        size_t *len);

#endif
