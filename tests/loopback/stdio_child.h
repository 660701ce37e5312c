/* SPDX-License-Identifier: MIT */
/* A program run with its stdin, stdout and stderr on real pipes (pipe(2),
 * as ssh's ProxyCommand gives them), or on regular files: the test writes
 * patterned bytes to its stdin and checks every byte of its stdout. */
#ifndef KP_TEST_STDIO_CHILD_H
#define KP_TEST_STDIO_CHILD_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct kp_stdio_child_s {
  uv_process_t proc;
  uv_pipe_t in, out, errp;
  unsigned open; /* handles not yet closed */
  bool exited;
  int status;
  uint64_t tx_id, tx_len, queued, written;
  bool close_stdin;
  uint64_t received, mismatches; /* stdout, against pattern tx_id */
  bool out_eof;
  char err[16384]; /* stderr */
  size_t err_len;
  char buf[65536];
} kp_stdio_child_t;

/* Starts argv; writes len bytes of pattern id to its stdin, then closes
 * stdin if close_stdin (else it stays open until the child exits). */
kp_stdio_child_t *kp_stdio_child_spawn(uv_loop_t *loop, const char *const *argv, uint64_t id,
                                       uint64_t len, bool close_stdin);
/* Runs loop until the child exited and its stdout and stderr ended (it is
 * killed, by its PID, after timeout_ms: -1). Returns the exit status
 * (128 + signal if killed by one). */
int kp_stdio_child_wait(uv_loop_t *loop, kp_stdio_child_t *p, unsigned timeout_ms);
void kp_stdio_child_free(kp_stdio_child_t *p);

/* argv with stdin from the file in and stdout to the file out (created);
 * stderr is the test's. Returns the exit status, -1 after timeout_ms. */
int kp_stdio_child_files(uv_loop_t *loop, const char *const *argv, const char *in, const char *out,
                         unsigned timeout_ms);

/* A file of len bytes of pattern id; a check that a file is exactly that. */
void kp_stdio_write_pattern_file(const char *path, uint64_t id, uint64_t len);
void kp_stdio_check_pattern_file(const char *path, uint64_t id, uint64_t len);

#endif
