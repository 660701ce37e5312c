/* SPDX-License-Identifier: MIT */
/* The inspector's side of a node's control socket: the shared client
 * (node/cli/prog.h), with the inspector's name on its messages. */
#include <stdio.h>

#include "node/cli/prog.h"
#include "tools/inspect/control_client.h"

const char *kp_inspect_control_default(void) {
  return kp_prog_control_default();
}

int kp_inspect_control_ask(const char *cmd, const char *path, const char *request, char **line,
                           size_t *len) {
  char who[64];
  snprintf(who, sizeof(who), "kadpunch-inspect %s", cmd);
  return kp_prog_control_ask(who, path, request, line, len);
}
