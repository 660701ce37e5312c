/* SPDX-License-Identifier: MIT */
/* The client side of a node's control socket (node/control.h), for both
 * programs: one request, one answer line, and plain words for everything
 * that can go wrong on the way. Blocking, with a deadline: a command that
 * asks has nothing else to do meanwhile. */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "node/cli/prog.h"

/* A full routing table is about 1 MB; an answer past this is not one. */
#define ANSWER_MAX (64u << 20)

const char *kp_prog_control_default(void) {
  static char path[4096];
  const char *env = getenv("KADPUNCH_CONTROL");
  if (env && *env) return env;
  const char *home = getenv("HOME");
  snprintf(path, sizeof(path), "%s/.kadpunch/control.sock", home && *home ? home : ".");
  return path;
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int
fail(const char *who, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s: ", who);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  return KP_EXIT_FAIL;
}

static int connect_error(const char *who, const char *path, int e) {
  switch (e) {
    case ENOENT:
      return fail(who,
                  "no kadpunch node is running with control socket %s (start one "
                  "with --control %s, e.g. kadpunch dht-node --control %s)",
                  path, path, path);
    case EACCES:
    case EPERM:
      return fail(who,
                  "permission denied on %s: the control socket is owner-only (mode "
                  "0600, in a directory of its owner); run this as the user that runs "
                  "the node",
                  path);
    case ECONNREFUSED:
      return fail(who,
                  "nothing answers on %s: a stale socket left by a node that stopped "
                  "(start one with --control %s)",
                  path, path);
    case ENOTSOCK: return fail(who, "%s is not a socket (is --control the right path?)", path);
    case ENAMETOOLONG:
      return fail(who, "%s: too long for a unix socket path (107 bytes at most)", path);
    default: return fail(who, "cannot connect to %s: %s", path, strerror(e));
  }
}

static int open_socket(const char *who, const char *path, int *fd_out) {
  struct stat st;
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(a.sun_path)) return connect_error(who, path, ENAMETOOLONG);
  if (stat(path, &st)) return connect_error(who, path, errno);
  if (!S_ISSOCK(st.st_mode)) return connect_error(who, path, ENOTSOCK);
  memcpy(a.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(who, "socket: %s", strerror(errno));
  if (connect(fd, (struct sockaddr *)&a, sizeof(a))) {
    int e = errno;
    close(fd);
    return connect_error(who, path, e);
  }
  *fd_out = fd;
  return 0;
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Reads up to the first newline; 0, or an exit code after saying why. */
static int read_line(const char *who, const char *path, int fd, unsigned timeout_ms, char **out,
                     size_t *out_len) {
  size_t len = 0, cap = 65536;
  char *buf = kp_malloc(cap);
  if (!buf) return fail(who, "out of memory");
  uint64_t deadline_ms = now_ms() + timeout_ms;
  int rc;
  for (;;) {
    char *nl = memchr(buf, '\n', len);
    if (nl) {
      *nl = '\0';
      *out = buf;
      *out_len = (size_t)(nl - buf);
      return 0;
    }
    uint64_t now = now_ms();
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (now >= deadline_ms || poll(&p, 1, (int)(deadline_ms - now)) == 0) {
      rc = fail(who, "no answer from %s within %u s", path, timeout_ms / 1000);
      break;
    }
    if (len + 1 >= cap) {
      char *grown = cap < ANSWER_MAX ? kp_realloc(buf, cap * 2) : NULL;
      if (!grown) {
        rc = fail(who, "the answer from %s is too large", path);
        break;
      }
      buf = grown, cap *= 2;
    }
    ssize_t n = read(fd, buf + len, cap - len - 1);
    if (n > 0) {
      len += (size_t)n;
    } else if (n == 0 || errno != EINTR) {
      rc = fail(who, "the node closed the connection without answering%s",
                n == 0 ? " (too many control connections at once?)" : "");
      break;
    }
  }
  kp_free(buf);
  return rc;
}

int kp_prog_control_ask(const char *who, const char *path, const char *request, char **line,
                        size_t *len) {
  int fd, rc = open_socket(who, path, &fd);
  if (rc) return rc;
  size_t n = strlen(request);
  const char *p = request;
  while (n) {
    /* MSG_NOSIGNAL: a node that hung up is an error to report, not SIGPIPE. */
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      close(fd);
      return fail(who, "cannot send to %s: %s", path, strerror(errno));
    }
    p += w, n -= (size_t)w;
  }
  rc = read_line(who, path, fd, KP_PROG_CONTROL_TIMEOUT_MS, line, len);
  close(fd);
  return rc;
}
