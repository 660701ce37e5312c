/* SPDX-License-Identifier: MIT */
/* Talking to a running node's control socket (node/control.h). */
#ifndef KP_INSPECT_CONTROL_CLIENT_H
#define KP_INSPECT_CONTROL_CLIENT_H

#include <stddef.h>

#include "tools/inspect/inspect.h"

/* $KADPUNCH_CONTROL, else ~/.kadpunch/control.sock. */
const char *kp_inspect_control_default(void);

/* Sends request (a JSON line, newline included) to the socket at path and
 * reads the answer line into *line (kp_free it; NUL-terminated, len bytes).
 * Returns 0, or an exit code after saying what went wrong in words an
 * operator can act on (no node running, permission, stale socket, not a
 * socket, no answer within 10 s). */
int kp_inspect_control_ask(const char *cmd, const char *path, const char *request, char **line,
                           size_t *len);

#endif
