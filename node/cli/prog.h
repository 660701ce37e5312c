/* What the two programs, kadpunch (node/cli/) and kadpunch-inspect
 * (tools/inspect/), share as programs: one list of exit codes, and the
 * client side of a running node's control socket (node/control.h). */
#ifndef KP_PROG_H
#define KP_PROG_H

#include <stddef.h>

/* Exit codes of both programs, documented in README.md and each
 * command's --help. */
enum {
  KP_EXIT_OK = 0,
  KP_EXIT_FAIL = 1,  /* the operation failed (network, peer, timeout) */
  KP_EXIT_USAGE = 2, /* bad command line or configuration */
};

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
