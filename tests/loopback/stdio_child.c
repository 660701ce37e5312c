/* SPDX-License-Identifier: MIT */
/* Programs on real pipes and on files (stdio_child.h). */
#include "tests/loopback/stdio_child.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "node/testnet.h"
#include "tests/harness/pattern.h"
#include "tests/harness/test.h"
#include "tests/loopback/test_node.h"

#define QUEUE_MAX (1u << 20)
#define CHUNK 65536

typedef struct wreq_s {
  uv_write_t req;
  kp_stdio_child_t *p;
  size_t len;
} wreq_t;

static void on_exit_cb(uv_process_t *proc, int64_t status, int sig) {
  kp_stdio_child_t *p = proc->data;
  kp_test_track_child(proc->pid, false);
  p->exited = true;
  p->status = sig ? 128 + sig : (int)status;
}

static void on_closed(uv_handle_t *h) {
  kp_stdio_child_t *p = h->data;
  p->open--;
}

static void close_h(kp_stdio_child_t *p, void *h) {
  (void)p;
  if (!uv_is_closing(h)) uv_close(h, on_closed);
}

static void pump(kp_stdio_child_t *p);

static void on_written(uv_write_t *req, int status) {
  wreq_t *w = (wreq_t *)req;
  kp_stdio_child_t *p = w->p;
  p->written += w->len;
  free(w);
  if (status) {
    close_h(p, &p->in); /* the child is gone or stopped reading */
    return;
  }
  pump(p);
}

static void pump(kp_stdio_child_t *p) {
  if (uv_is_closing((uv_handle_t *)&p->in)) return;
  while (p->queued < p->tx_len && p->queued - p->written < QUEUE_MAX) {
    size_t avail;
    const uint8_t *d = kp_pattern_at(p->tx_id, p->queued, &avail);
    size_t n = avail < CHUNK ? avail : CHUNK;
    if (n > p->tx_len - p->queued) n = (size_t)(p->tx_len - p->queued);
    wreq_t *w = calloc(1, sizeof(*w));
    w->p = p;
    w->len = n;
    uv_buf_t b = uv_buf_init((char *)d, (unsigned)n);
    if (uv_write(&w->req, (uv_stream_t *)&p->in, &b, 1, on_written)) {
      free(w);
      close_h(p, &p->in);
      return;
    }
    p->queued += n;
  }
  /* Closing our end of the pipe is the child's EOF. */
  if (p->written == p->tx_len && p->close_stdin) close_h(p, &p->in);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  kp_stdio_child_t *p = h->data;
  (void)suggested;
  if (h == (uv_handle_t *)&p->errp)
    *buf = uv_buf_init(p->err + p->err_len, (unsigned)(sizeof(p->err) - 1 - p->err_len));
  else
    *buf = uv_buf_init(p->buf, sizeof(p->buf));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  kp_stdio_child_t *p = s->data;
  bool is_err = s == (uv_stream_t *)&p->errp;
  if (n > 0 && is_err) {
    p->err_len += (size_t)n;
    p->err[p->err_len] = '\0';
    if (p->err_len + 1 >= sizeof(p->err)) close_h(p, s);
  } else if (n > 0) {
    p->mismatches += kp_pattern_mismatches(p->tx_id, p->received, (uint8_t *)buf->base, (size_t)n);
    p->received += (uint64_t)n;
  } else if (n < 0) {
    if (!is_err) p->out_eof = n == UV_EOF;
    close_h(p, s);
  }
}

static void open_pipe(uv_loop_t *loop, kp_stdio_child_t *p, uv_pipe_t *h, int fd, bool read) {
  uv_pipe_init(loop, h, 0);
  h->data = p;
  KP_CHECK_OK(uv_pipe_open(h, fd));
  if (read) uv_read_start((uv_stream_t *)h, on_alloc, on_read);
}

kp_stdio_child_t *kp_stdio_child_spawn(uv_loop_t *loop, const char *const *argv, uint64_t id,
                                       uint64_t len, bool close_stdin) {
  kp_stdio_child_t *p = calloc(1, sizeof(*p));
  KP_CHECK(p != NULL);
  p->tx_id = id;
  p->tx_len = len;
  p->close_stdin = close_stdin;
  int in[2], out[2], err[2];
  KP_CHECK(!pipe2(in, O_CLOEXEC) && !pipe2(out, O_CLOEXEC) && !pipe2(err, O_CLOEXEC));
  uv_stdio_container_t stdio[3] = {{.flags = UV_INHERIT_FD, .data.fd = in[0]},
                                   {.flags = UV_INHERIT_FD, .data.fd = out[1]},
                                   {.flags = UV_INHERIT_FD, .data.fd = err[1]}};
  uv_process_options_t o = {0};
  o.file = argv[0];
  o.args = (char **)argv;
  o.exit_cb = on_exit_cb;
  o.stdio = stdio;
  o.stdio_count = 3;
  p->proc.data = p;
  KP_CHECK_OK(uv_spawn(loop, &p->proc, &o));
  kp_test_track_child(p->proc.pid, true);
  close(in[0]);
  close(out[1]);
  close(err[1]);
  open_pipe(loop, p, &p->in, in[1], false);
  open_pipe(loop, p, &p->out, out[0], true);
  open_pipe(loop, p, &p->errp, err[0], true);
  p->open = 4;
  pump(p);
  return p;
}

static bool child_done(void *ctx) {
  kp_stdio_child_t *p = ctx;
  return p->exited && uv_is_closing((uv_handle_t *)&p->out) &&
         uv_is_closing((uv_handle_t *)&p->errp);
}

int kp_stdio_child_wait(uv_loop_t *loop, kp_stdio_child_t *p, unsigned timeout_ms) {
  int status;
  if (kp_testnet_run_until(loop, child_done, p, timeout_ms)) {
    status = p->status;
  } else {
    uv_process_kill(&p->proc, SIGKILL);
    kp_testnet_run_until(loop, child_done, p, 5000);
    status = -1;
  }
  close_h(p, &p->in);
  close_h(p, &p->out);
  close_h(p, &p->errp);
  close_h(p, &p->proc);
  while (p->open) uv_run(loop, UV_RUN_ONCE);
  if (status) printf("child exited %d; stderr:\n%s\n", status, p->err);
  return status;
}

void kp_stdio_child_free(kp_stdio_child_t *p) {
  free(p);
}

static void on_file_exit(uv_process_t *proc, int64_t status, int sig) {
  int *out = proc->data;
  *out = sig ? 128 + sig : (int)status;
}

static bool file_child_done(void *ctx) {
  return *(int *)ctx != -2;
}

int kp_stdio_child_files(uv_loop_t *loop, const char *const *argv, const char *in, const char *out,
                         unsigned timeout_ms) {
  int fin = open(in, O_RDONLY | O_CLOEXEC);
  int fout = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  KP_CHECK(fin >= 0 && fout >= 0);
  uv_stdio_container_t stdio[3] = {{.flags = UV_INHERIT_FD, .data.fd = fin},
                                   {.flags = UV_INHERIT_FD, .data.fd = fout},
                                   {.flags = UV_INHERIT_FD, .data.fd = 2}};
  uv_process_options_t o = {0};
  uv_process_t proc;
  int status = -2;
  o.file = argv[0];
  o.args = (char **)argv;
  o.exit_cb = on_file_exit;
  o.stdio = stdio;
  o.stdio_count = 3;
  proc.data = &status;
  KP_CHECK_OK(uv_spawn(loop, &proc, &o));
  close(fin);
  close(fout);
  if (!kp_testnet_run_until(loop, file_child_done, &status, timeout_ms)) {
    uv_process_kill(&proc, SIGKILL);
    kp_testnet_run_until(loop, file_child_done, &status, 5000);
    status = -1;
  }
  uv_close((uv_handle_t *)&proc, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  return status;
}

void kp_stdio_write_pattern_file(const char *path, uint64_t id, uint64_t len) {
  FILE *fp = fopen(path, "w");
  KP_CHECK(fp != NULL);
  for (uint64_t off = 0; off < len;) {
    size_t avail;
    const uint8_t *d = kp_pattern_at(id, off, &avail);
    size_t n = avail < len - off ? avail : (size_t)(len - off);
    KP_CHECK_EQ(fwrite(d, 1, n, fp), n);
    off += n;
  }
  KP_CHECK_EQ(fclose(fp), 0);
}

void kp_stdio_check_pattern_file(const char *path, uint64_t id, uint64_t len) {
  FILE *fp = fopen(path, "r");
  KP_CHECK(fp != NULL);
  static uint8_t buf[65536];
  uint64_t off = 0, bad = 0;
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), fp)) > 0) {
    bad += kp_pattern_mismatches(id, off, buf, n);
    off += n;
  }
  fclose(fp);
  KP_CHECK_MSG(off == len && bad == 0, "%s: %" PRIu64 " bytes of %" PRIu64 ", %" PRIu64 " wrong",
               path, off, len, bad);
}
