/* SPDX-License-Identifier: MIT */
/* stdin and stdout as the local side of a bridge (connect --stdio). Pipes,
 * sockets and terminals are libuv streams. Regular files (and devices such
 * as /dev/null) cannot be polled: they are read from an idle handle and
 * written with plain write(2), which for them never waits long. */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "node/cli/cli_bridge_internal.h"

/* libuv never closes fds 0 to 2, but whoever reads our stdout waits for
 * its end: fd now points at /dev/null, which closes the pipe (and keeps
 * the number taken, so no socket opened later becomes "stdout"). */
void kp__cli_bridge_detach_fd(int fd) {
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null < 0) return;
  dup2(null, fd);
  close(null);
}

void kp__cli_bridge_file_readable(uv_idle_t *h) {
  kp_cli_bridge_t *b = h->data;
  ssize_t n;
  do n = read(b->rd_fd, b->scratch, sizeof(b->scratch));
  while (n < 0 && errno == EINTR);
  if (n > 0)
    kp__cli_bridge_to_stream(b, b->scratch, (size_t)n);
  else if (n == 0)
    kp__cli_bridge_local_eof(b);
  else
    kp__cli_bridge_fail(b, -errno, KP_CLI_RESET_LOCAL);
}

void kp__cli_bridge_to_file(kp_cli_bridge_t *b, const char *data, size_t len) {
  while (len) {
    ssize_t n = write(b->wr_fd, data, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      kp__cli_bridge_fail(b, -errno, KP_CLI_RESET_LOCAL);
      return;
    }
    data += n;
    len -= (size_t)n;
  }
}

/* fd as a libuv stream if it can be polled; a regular file or a device
 * otherwise (read from an idle handle, written directly). */
static int open_fd(kp_cli_bridge_t *b, int fd, local_handle_t *h, bool *open) {
  int err;
  switch (uv_guess_handle(fd)) {
    case UV_TTY: err = uv_tty_init(b->loop, &h->tty, fd, 0); break;
    case UV_NAMED_PIPE:
    case UV_TCP: err = uv_pipe_init(b->loop, &h->pipe, 0); break;
    case UV_FILE:
      if (fd == 1) {
        b->wr_fd = fd;
        return 0;
      }
      b->rd_fd = fd;
      err = uv_idle_init(b->loop, &h->idle);
      break;
    default: return UV_EBADF; /* closed, or a datagram socket */
  }
  if (err) return err;
  b->handles++;
  *open = true;
  h->handle.data = b;
  if (h->handle.type == UV_NAMED_PIPE) err = uv_pipe_open(&h->pipe, fd);
  return err;
}

int kp_cli_bridge_open_stdio(kp_cli_bridge_t *b) {
  int err = open_fd(b, 0, &b->rd_h, &b->rd_open);
  if (err) return err;
  if ((err = open_fd(b, 1, &b->wr_h, &b->wr_open))) return err;
  if (b->wr_open) b->wr = &b->wr_h.stream;
  return 0;
}
