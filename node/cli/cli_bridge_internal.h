/* SPDX-License-Identifier: MIT */
/* The inside of a bridge (cli_bridge.h), shared by cli_bridge.c (the two
 * directions, TCP) and cli_bridge_stdio.c (stdin and stdout). Never
 * included above node/cli. */
#ifndef KP_CLI_BRIDGE_INTERNAL_H
#define KP_CLI_BRIDGE_INTERNAL_H

#include "node/cli/cli_bridge.h"

#define KP_CLI_BRIDGE_READ_SIZE 65536

/* A handle of the local side: a TCP connection, stdin or stdout as a pipe,
 * socket or terminal, or the idle handle that reads a regular file. */
typedef union local_handle_u {
  uv_handle_t handle;
  uv_stream_t stream;
  uv_tcp_t tcp;
  uv_pipe_t pipe;
  uv_tty_t tty;
  uv_idle_t idle;
} local_handle_t;

struct kp_cli_bridge_s {
  kp_cli_bridge_t *prev, *next;
  kp_cli_bridges_t *list;
  uv_loop_t *loop;
  kp_cli_bridge_done_cb done;
  void *data;
  kp_stream_t *stream; /* ours until its close callback */
  const kp_conn_t *conn;
  local_handle_t rd_h, wr_h; /* a TCP connection uses rd_h both ways */
  bool rd_open, wr_open;     /* initialized, not yet closing */
  unsigned handles;          /* initialized, close callback still to come */
  bool tcp, connected;
  uv_stream_t *wr; /* where stream data goes; NULL: wr_fd, a file */
  int rd_fd, wr_fd;
  uv_connect_t connect_req;
  uv_shutdown_t shutdown_req;
  size_t local_queued; /* bytes in uv_write requests */
  bool reading, stream_paused;
  bool local_eof; /* read EOF locally and ended the stream */
  bool shut_done; /* the stream's EOF reached the local side */
  bool closing;
  int status;
  uint64_t reset_code;
  kp_cli_bridge_connect_cb connect_cb; /* a preamble's: told of the connect */
  char *pre_local, *pre_stream;        /* bytes behind a preamble, sent first */
  size_t pre_local_len, pre_stream_len;
  char scratch[KP_CLI_BRIDGE_READ_SIZE];
};

/* cli_bridge.c: what reading the local side leads to, and teardown. */
void kp__cli_bridge_to_stream(kp_cli_bridge_t *b, const char *data, size_t len);
void kp__cli_bridge_local_eof(kp_cli_bridge_t *b);
void kp__cli_bridge_fail(kp_cli_bridge_t *b, int status, uint64_t code);

/* cli_bridge_stdio.c: a regular file as stdin (read from rd_h, an idle
 * handle) or stdout (wr_fd, written at once); fd 0 or 1 let go of. */
void kp__cli_bridge_file_readable(uv_idle_t *h);
void kp__cli_bridge_to_file(kp_cli_bridge_t *b, const char *data, size_t len);
void kp__cli_bridge_detach_fd(int fd);

#endif
