/* SPDX-License-Identifier: MIT */
/* The service manager's readiness protocol (sd_notify(3)): one datagram
 * to the unix socket $NOTIFY_SOCKET names ("@..." is an abstract one). No
 * library: it is a sendto. Nothing happens without the variable. */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "node/cli/cli.h"

void kp_cli_notify(const char *state) {
  const char *path = getenv("NOTIFY_SOCKET");
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  size_t n = path ? strlen(path) : 0;
  if (!n || (path[0] != '/' && path[0] != '@') || n >= sizeof(a.sun_path)) return;
  memcpy(a.sun_path, path, n);
  if (path[0] == '@') a.sun_path[0] = '\0';
  socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&a, len) < 0)
    fprintf(stderr, "kadpunch: NOTIFY_SOCKET %s: %s\n", path, strerror(errno));
  close(fd);
}
