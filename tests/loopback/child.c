/* SPDX-License-Identifier: MIT */
/* Running the kadpunch program from tests, on a libuv loop. */
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "node/testnet.h"
#include "tests/harness/test.h"
#include "tests/loopback/test_node.h"

/* stdout and stderr arrive on two pipes in no defined order between them:
 * each has its own buffer, and callers get stdout then stderr. */
typedef struct stream_buf_s {
  uv_pipe_t pipe;
  struct kp_test_child_s *child;
  size_t len;
  char buf[32768];
} stream_buf_t;

struct kp_test_child_s {
  uv_process_t proc;
  stream_buf_t out, err;
  int open_pipes;
  bool exited;
  int status;
};

void kp_test_check_loop_closes(uv_loop_t *loop) {
  uv_run(loop, UV_RUN_DEFAULT);
  KP_CHECK_EQ(uv_loop_close(loop), 0);
}

/* The children running: a test that fails exits at once, and what it
 * started must not outlive it (a server still bound, still sending). */
#define MAX_LIVE 64
static int live[MAX_LIVE];

static void kill_live(void) {
  for (int i = 0; i < MAX_LIVE; i++)
    if (live[i] > 0) kill(live[i], SIGKILL);
}

void kp_test_track_child(int pid, bool add) {
  static bool registered;
  if (!registered) atexit(kill_live);
  registered = true;
  for (int i = 0; i < MAX_LIVE; i++) {
    if (add ? live[i] == 0 : live[i] == pid) {
      live[i] = add ? pid : 0;
      return;
    }
  }
}

static void on_exit_cb(uv_process_t *p, int64_t status, int signal) {
  kp_test_child_t *c = p->data;
  kp_test_track_child(p->pid, false);
  c->exited = true;
  c->status = signal ? 128 + signal : (int)status;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  stream_buf_t *b = h->data;
  (void)suggested;
  *buf = uv_buf_init(b->buf + b->len, (unsigned)(sizeof(b->buf) - 1 - b->len));
}

static void on_pipe_closed(uv_handle_t *h) {
  stream_buf_t *b = h->data;
  b->child->open_pipes--;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  stream_buf_t *b = s->data;
  (void)buf;
  if (n > 0) {
    b->len += (size_t)n;
    b->buf[b->len] = '\0';
  }
  if (n < 0 || b->len + 1 >= sizeof(b->buf)) uv_close((uv_handle_t *)s, on_pipe_closed);
}

kp_test_child_t *kp_test_spawn(uv_loop_t *loop, const char *const *argv) {
  kp_test_child_t *c = calloc(1, sizeof(*c));
  KP_CHECK(c != NULL);
  stream_buf_t *bufs[2] = {&c->out, &c->err};
  for (int i = 0; i < 2; i++) {
    uv_pipe_init(loop, &bufs[i]->pipe, 0);
    bufs[i]->pipe.data = bufs[i];
    bufs[i]->child = c;
  }
  c->proc.data = c;
  uv_stdio_container_t stdio[3] = {
      {.flags = UV_IGNORE},
      {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&c->out.pipe},
      {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&c->err.pipe}};
  uv_process_options_t o = {0};
  o.file = argv[0];
  o.args = (char **)argv;
  o.exit_cb = on_exit_cb;
  o.stdio = stdio;
  o.stdio_count = 3;
  KP_CHECK_OK(uv_spawn(loop, &c->proc, &o));
  kp_test_track_child(c->proc.pid, true);
  c->open_pipes = 2;
  uv_read_start((uv_stream_t *)&c->out.pipe, on_alloc, on_read);
  uv_read_start((uv_stream_t *)&c->err.pipe, on_alloc, on_read);
  return c;
}

static bool output_has(const kp_test_child_t *c, const char *text) {
  return strstr(c->out.buf, text) || strstr(c->err.buf, text);
}

static bool has_text(void *ctx) {
  void **args = ctx;
  kp_test_child_t *c = args[0];
  return output_has(c, args[1]) || c->exited;
}

/* The last n bytes of a buffer, for a log. */
static const char *tail_of(const stream_buf_t *b, size_t n, int *len) {
  size_t from = b->len > n ? b->len - n : 0;
  *len = (int)(b->len - from);
  return b->buf + from;
}

bool kp_test_child_wait_output(uv_loop_t *loop, kp_test_child_t *c, const char *text,
                               unsigned timeout_ms) {
  void *args[2] = {c, (void *)text};
  kp_testnet_run_until(loop, has_text, args, timeout_ms);
  if (output_has(c, text)) return true;
  /* A child that did not say it says why in the test's log. */
  int olen, elen;
  const char *out = tail_of(&c->out, 4096, &olen), *err = tail_of(&c->err, 4096, &elen);
  printf("child %s without saying \"%s\"; stdout:\n%.*s\nstderr:\n%.*s\n",
         c->exited ? "exited" : "still running", text, olen, out, elen, err);
  return false;
}

static bool finished(void *ctx) {
  kp_test_child_t *c = ctx;
  return c->exited && c->open_pipes == 0;
}

static int reap(uv_loop_t *loop, kp_test_child_t *c, unsigned timeout_ms) {
  if (!kp_testnet_run_until(loop, finished, c, timeout_ms)) {
    uv_process_kill(&c->proc, SIGKILL);
    kp_testnet_run_until(loop, finished, c, 5000);
    c->status = -1;
  }
  int status = c->status;
  uv_close((uv_handle_t *)&c->proc, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  return status;
}

int kp_test_child_stop(uv_loop_t *loop, kp_test_child_t *c, unsigned timeout_ms) {
  if (!c->exited) uv_process_kill(&c->proc, SIGTERM);
  int status = reap(loop, c, timeout_ms);
  /* A child that failed says why in the test's log. */
  if (status)
    printf("child exited %d; stdout:\n%.*s\nstderr:\n%.*s\n", status, (int)c->out.len, c->out.buf,
           (int)c->err.len, c->err.buf);
  free(c);
  return status;
}

int kp_test_run_cli(uv_loop_t *loop, const char *const *argv, char *out, size_t cap,
                    unsigned timeout_ms) {
  uv_loop_t own;
  if (!loop) {
    uv_loop_init(&own);
    loop = &own;
  }
  kp_test_child_t *c = kp_test_spawn(loop, argv);
  int status = reap(loop, c, timeout_ms);
  snprintf(out, cap, "%s%s", c->out.buf, c->err.buf);
  free(c);
  if (loop == &own) kp_test_check_loop_closes(&own);
  return status;
}

bool kp_test_wait_announced(uv_loop_t *loop, const char *bootstrap, const char *pk,
                            unsigned timeout_ms) {
  const char *argv[] = {KP_BINARY, "lookup",      "--key-of", pk,
                        "--json",  "--bootstrap", bootstrap,  NULL};
  uint64_t end = uv_now(loop) + timeout_ms;
  char out[8192];
  do {
    if (kp_test_run_cli(loop, argv, out, sizeof(out), 10000) == 0 && !strstr(out, "\"found\":0"))
      return true;
    kp_testnet_run_until(loop, NULL, NULL, 200);
    uv_update_time(loop);
  } while (uv_now(loop) < end);
  printf("%s not found through %s in %u ms:\n%s\n", pk, bootstrap, timeout_ms, out);
  return false;
}

int kp_test_child_pid(const kp_test_child_t *c) {
  return c->proc.pid;
}

const char *kp_test_child_stdout(const kp_test_child_t *c) {
  return c->out.buf;
}

/* A port of that socket type free on 127.0.0.1 a moment ago (bound, read,
 * closed): nothing listens there (nor, a moment later, will). */
static int free_port(int type) {
  int fd = socket(AF_INET, type, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof(a);
  KP_CHECK(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
  KP_CHECK(getsockname(fd, (struct sockaddr *)&a, &alen) == 0);
  close(fd);
  return ntohs(a.sin_port);
}

int kp_test_free_udp_port(void) {
  return free_port(SOCK_DGRAM);
}

int kp_test_free_tcp_port(void) {
  return free_port(SOCK_STREAM);
}

void kp_test_keygen(uv_loop_t *loop, const char *path, char pk[KP_KEY_TEXT_LEN + 1]) {
  char out[1024];
  const char *argv[] = {KP_BINARY, "keygen", "-o", path, NULL};
  KP_CHECK_EQ(kp_test_run_cli(loop, argv, out, sizeof(out), 10000), 0);
  memcpy(pk, out, KP_KEY_TEXT_LEN);
  pk[KP_KEY_TEXT_LEN] = '\0';
}
