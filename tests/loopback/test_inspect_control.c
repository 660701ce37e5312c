/* SPDX-License-Identifier: MIT */
/* The control socket (node/control.h) and kadpunch-inspect's table,
 * records and stats over it: answers that match the node's real state,
 * the socket's mode, its bounds, and plain errors when there is no socket,
 * a stale one, something else at the path, or no permission. */
#include <errno.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "dht/dht_id.h"
#include "node/control.h"
#include "node/node_internal.h"
#include "node/testnet.h"
#include "tests/harness/test.h"
#include "tests/loopback/inspect_run.h"
#include "tests/loopback/inspect_shapes.h"
#include "tests/loopback/test_node.h"
#include "tests/loopback/testnet_up.h"

void test_control_socket(void);
void test_control_errors(void);
void test_control_in_dht_node(void);

/* kadpunch-inspect CMD --control path [--json] (run as uid, from bin if
 * not NULL); returns the result. */
static void inspect_as(uv_loop_t *loop, const char *bin, const char *cmd, const char *path,
                       bool json, unsigned uid, kp_it_result_t *r) {
  const char *argv[] = {bin ? bin : KP_INSPECT, cmd, "--control", path,
                        json ? "--json" : NULL, NULL};
  kp_it_run(loop, argv, 20000, uid, r);
}

static void inspect(uv_loop_t *loop, const char *cmd, const char *path, bool json,
                    kp_it_result_t *r) {
  inspect_as(loop, NULL, cmd, path, json, 0, r);
}

static kp_json_t *inspect_json(uv_loop_t *loop, const char *cmd, const char *path) {
  kp_it_result_t r;
  inspect(loop, cmd, path, true, &r);
  KP_CHECK_MSG(r.status == 0, "%s: exit %d: %s", cmd, r.status, r.err);
  kp_json_t *j = kp_it_json(r.out, r.out_len);
  kp_it_result_free(&r);
  return j;
}

static void expect_failure(uv_loop_t *loop, const char *bin, const char *path, unsigned uid,
                           const char *says) {
  kp_it_result_t r;
  inspect_as(loop, bin, "stats", path, false, uid, &r);
  KP_CHECK_MSG(r.status == 1 && strstr(r.err, says), "exit %d (want 1), stderr lacks '%s': %s",
               r.status, says, r.err);
  kp_it_result_free(&r);
}

static void check_mode_0600(const char *path) {
  struct stat st;
  KP_CHECK(stat(path, &st) == 0);
  KP_CHECK(S_ISSOCK(st.st_mode));
  KP_CHECK_MSG((st.st_mode & 07777) == 0600, "mode %o", (unsigned)(st.st_mode & 07777));
}

/* ---- Answers that match the node ---------------------------------------------- */

static void check_table(uv_loop_t *loop, kp_node_t *node, const char *path) {
  kp_json_t *j = inspect_json(loop, "table", path);
  kp_it_shape(j, KP_IT_CTL_TABLE, "table");
  const kp_dht_table_t *t = kp_dht_table(kp__node_dht(node));
  char id[2 * KP_ID_LEN + 1], addr[KP_ADDR_STRLEN];
  KP_CHECK(!strcmp(kp_json_get_str(j, "id"), kp_dht_id_hex(kp_node_id(node), KP_ID_LEN, id)));
  KP_CHECK(kp_json_get_bool(j, "member", false));
  KP_CHECK_EQ(kp_json_get_num(j, "count", 0), t->count);
  const kp_json_t *nodes = kp_json_get(j, "nodes"), *buckets = kp_json_get(j, "buckets");
  KP_CHECK_EQ(nodes->len, t->count);
  size_t in_buckets = 0;
  for (const kp_json_t *b = buckets->child; b; b = b->next) {
    kp_it_shape(b, KP_IT_CTL_BUCKET, "table.buckets[]");
    in_buckets += (size_t)kp_json_get_num(b, "count", 0);
  }
  KP_CHECK_EQ(in_buckets, t->count);
  /* Each real entry, with its address and bucket. */
  for (uint32_t i = 0; i < t->count; i++) {
    kp_addr_t a;
    uint8_t eid[KP_ID_LEN];
    kp_dht_entry_addr(t, kp_dht_table_at(t, i), &a);
    kp_dht_id_from_addr(&a, eid);
    kp_dht_id_hex(eid, KP_ID_LEN, id);
    const kp_json_t *n = nodes->child;
    while (n && strcmp(kp_json_get_str(n, "id"), id)) n = n->next;
    KP_CHECK_MSG(n, "entry %s missing from the answer", id);
    kp_it_shape(n, KP_IT_CTL_ENTRY, "table.nodes[]");
    KP_CHECK(!strcmp(kp_json_get_str(n, "addr"), kp_addr_format(&a, addr, sizeof(addr))));
    KP_CHECK_EQ(kp_json_get_num(n, "bucket", -1), kp_dht_table_bucket_of(t, eid));
  }
  kp_json_free(j);
  kp_it_result_t r;
  inspect(loop, "table", path, false, &r);
  KP_CHECK_MSG(r.status == 0 && strstr(r.out, "routing table of"), "%s%s", r.out, r.err);
  kp_it_result_free(&r);
}

static void check_records(uv_loop_t *loop, const char *path, const char *key) {
  kp_json_t *j = inspect_json(loop, "records", path);
  kp_it_shape(j, KP_IT_CTL_RECORDS, "records");
  KP_CHECK(kp_json_get_num(j, "count", 0) >= 1);
  const kp_json_t *found = NULL;
  for (const kp_json_t *rec = kp_json_get(j, "records")->child; rec; rec = rec->next) {
    const char *pk = kp_json_get_str(rec, "public_key");
    if (pk && !strcmp(pk, key)) found = rec;
  }
  KP_CHECK_MSG(found, "our announcement is not among the records");
  kp_it_shape(found, KP_IT_CTL_ANNOUNCE, "records.records[]");
  KP_CHECK(!strcmp(kp_json_get_str(found, "kind"), "announce"));
  KP_CHECK(kp_json_get_bool(found, "signature_ok", false));
  KP_CHECK(kp_json_get(found, "relays")->len >= 1);
  KP_CHECK(!strcmp(kp_json_get_str(found, "data"), "x"));
  kp_json_free(j);
}

static void check_stats(uv_loop_t *loop, kp_node_t *node, const char *path) {
  kp_json_t *j = inspect_json(loop, "stats", path);
  kp_it_shape(j, KP_IT_CTL_STATS, "stats");
  kp_it_shape(kp_json_get(j, "counters"), KP_IT_CTL_COUNTERS, "stats.counters");
  kp_it_shape(kp_json_get(j, "store"), KP_IT_CTL_STORE, "stats.store");
  kp_node_stats_t st;
  kp_node_stats(node, &st);
  KP_CHECK_EQ(kp_json_get_num(j, "table_size", 0), st.table_size);
  KP_CHECK(kp_json_get_num(kp_json_get(j, "counters"), "requests_in", 0) > 0);
  KP_CHECK(kp_json_get_num(kp_json_get(j, "store"), "records", 0) >= 1);
  kp_json_free(j);
}

/* ---- The protocol itself, from a client on the test's loop ---------------------- */

typedef struct raw_s {
  uv_pipe_t pipe;
  uv_connect_t connect;
  uv_write_t write;
  int connected; /* 0 waiting, 1 yes, negative error */
  bool eof;
  size_t len;
  char buf[8192];
} raw_t;

static void raw_on_connect(uv_connect_t *req, int status) {
  raw_t *r = req->data;
  r->connected = status ? status : 1;
}

static void raw_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  raw_t *r = h->data;
  (void)size;
  *buf = uv_buf_init(r->buf + r->len, (unsigned)(sizeof(r->buf) - 1 - r->len));
}

static void raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  raw_t *r = s->data;
  (void)buf;
  if (n < 0) r->eof = true;
  if (n > 0) r->buf[r->len += (size_t)n] = '\0';
}

static bool raw_connected(void *ctx) {
  return ((raw_t *)ctx)->connected != 0;
}

static bool raw_has_line(void *ctx) {
  raw_t *r = ctx;
  return r->eof || memchr(r->buf, '\n', r->len);
}

static void raw_open(uv_loop_t *loop, raw_t *r, const char *path) {
  memset(r, 0, sizeof(*r));
  uv_pipe_init(loop, &r->pipe, 0);
  r->pipe.data = r->connect.data = r;
  uv_pipe_connect(&r->connect, &r->pipe, path, raw_on_connect);
  KP_CHECK(kp_testnet_run_until(loop, raw_connected, r, 5000));
  KP_CHECK_EQ(r->connected, 1);
  uv_read_start((uv_stream_t *)&r->pipe, raw_alloc, raw_read);
}

/* Sends text (which must outlive the write) and returns the answer line. */
static kp_json_t *raw_ask(uv_loop_t *loop, raw_t *r, const char *text, size_t len) {
  if (len) {
    uv_buf_t b = uv_buf_init((char *)text, (unsigned)len);
    KP_CHECK_OK(uv_write(&r->write, (uv_stream_t *)&r->pipe, &b, 1, NULL));
  }
  KP_CHECK(kp_testnet_run_until(loop, raw_has_line, r, 5000));
  char *nl = memchr(r->buf, '\n', r->len);
  KP_CHECK_MSG(nl, "no answer line (eof %d): %s", r->eof, r->buf);
  kp_json_t *j = kp_it_json(r->buf, (size_t)(nl - r->buf));
  r->len = 0;
  return j;
}

static void raw_close(uv_loop_t *loop, raw_t *r) {
  uv_close((uv_handle_t *)&r->pipe, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
}

static void expect_error(kp_json_t *j, const char *says) {
  kp_it_shape(j, KP_IT_CTL_ERROR, "error answer");
  KP_CHECK(!kp_json_get_bool(j, "ok", true));
  KP_CHECK_MSG(strstr(kp_json_get_str(j, "error"), says), "error '%s' lacks '%s'",
               kp_json_get_str(j, "error"), says);
  kp_json_free(j);
}

static void check_protocol(uv_loop_t *loop, const char *path) {
  static char big[KP_CONTROL_MAX_REQUEST + 100];
  raw_t *r = calloc(KP_CONTROL_MAX_CONNS + 1, sizeof(*r));
  raw_open(loop, &r[0], path);
  expect_error(raw_ask(loop, &r[0], "{\"cmd\":\"nope\"}\n", 15), "unknown command 'nope'");
  expect_error(raw_ask(loop, &r[0], "not json\n", 9), "not JSON");
  expect_error(raw_ask(loop, &r[0], "[1,2]\n", 6), "string \"cmd\"");
  kp_json_t *j = raw_ask(loop, &r[0], "{\"cmd\":\"commands\"}\r\n", 20);
  kp_it_shape(j, KP_IT_CTL_COMMANDS, "commands");
  KP_CHECK_EQ(kp_json_get(j, "commands")->len, 4);
  kp_json_free(j);
  /* A request past the bound is answered with an error, and the end. */
  memset(big, 'x', sizeof(big));
  expect_error(raw_ask(loop, &r[0], big, sizeof(big)), "longer than 4096 bytes");
  raw_close(loop, &r[0]);
  kp_testnet_run_until(loop, NULL, NULL, 200); /* the server sees it go */
  /* KP_CONTROL_MAX_CONNS at once are served; one more is told why it is not. */
  for (int i = 0; i <= KP_CONTROL_MAX_CONNS; i++) raw_open(loop, &r[i], path);
  expect_error(raw_ask(loop, &r[KP_CONTROL_MAX_CONNS], "", 0), "too many control connections");
  j = raw_ask(loop, &r[0], "{\"cmd\":\"stats\"}\n", 16);
  KP_CHECK(kp_json_get_bool(j, "ok", false));
  kp_json_free(j);
  for (int i = 0; i <= KP_CONTROL_MAX_CONNS; i++) raw_close(loop, &r[i]);
  uv_run(loop, UV_RUN_NOWAIT);
  free(r);
}

void test_control_socket(void) {
  signal(SIGPIPE, SIG_IGN); /* the control's owner must (node/control.h) */
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_t tn;
  kp_test_testnet_up(&loop, 30, 20000, &tn);
  kp_node_t *node = tn.nodes[1];
  char path[128], key[KP_KEY_TEXT_LEN + 1];
  snprintf(path, sizeof(path), "%s/ctl.sock", kp_it_dir());
  kp_control_t *ctl;
  KP_CHECK_OK(kp_control_start(node, path, &ctl));
  check_mode_0600(path);
  /* A record for it to hold: under its own id, it is the closest node. */
  kp_announce_t *a = kp_it_announce(&tn, tn.nodes[2], kp_node_id(node), "x", key);
  check_table(&loop, node, path);
  check_records(&loop, path, key);
  check_stats(&loop, node, path);
  check_protocol(&loop, path);
  kp_announce_stop(a, false);
  kp_control_close(ctl);
  KP_CHECK(access(path, F_OK) != 0 && errno == ENOENT); /* unlinked at once */
  kp_testnet_destroy(&tn);
  kp_test_check_loop_closes(&loop);
}

/* ---- Errors ------------------------------------------------------------------- */

/* A unix socket file nobody listens on, as a process that died leaves it. */
static void make_stale_socket(const char *path) {
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  KP_CHECK(strlen(path) < sizeof(a.sun_path));
  memcpy(a.sun_path, path, strlen(path) + 1);
  KP_CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
  close(fd);
}

void test_control_errors(void) {
  signal(SIGPIPE, SIG_IGN);
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_node_options_t o;
  kp_node_options_init(&o);
  o.bind = "127.0.0.1:0";
  kp_node_t *node;
  KP_CHECK_OK(kp_node_create(&loop, &o, &node));
  char path[128], file[128];
  snprintf(path, sizeof(path), "%s/node.sock", kp_it_dir());
  snprintf(file, sizeof(file), "%s/not-a-socket", kp_it_dir());
  kp_control_t *ctl = (kp_control_t *)1;

  expect_failure(&loop, NULL, path, 0, "no kadpunch node is running with control socket");
  /* Something else at the path is never replaced. */
  FILE *f = fopen(file, "w");
  KP_CHECK(f && fputs("precious\n", f) >= 0 && fclose(f) == 0);
  KP_CHECK_ERR(kp_control_start(node, file, &ctl), UV_EEXIST);
  KP_CHECK(ctl == NULL);
  size_t len;
  char *kept = kp_it_read_file(file, &len);
  KP_CHECK(kept && !strcmp(kept, "precious\n"));
  free(kept);
  expect_failure(&loop, NULL, file, 0, "is not a socket");
  /* A stale socket: the client says so; a new control replaces it. */
  make_stale_socket(path);
  expect_failure(&loop, NULL, path, 0, "stale socket");
  KP_CHECK_OK(kp_control_start(node, path, &ctl));
  check_mode_0600(path);
  kp_control_t *second;
  KP_CHECK_ERR(kp_control_start(node, path, &second), UV_EADDRINUSE);
  char long_path[200];
  memset(long_path, 'a', sizeof(long_path) - 1);
  long_path[sizeof(long_path) - 1] = '\0';
  KP_CHECK_ERR(kp_control_start(node, long_path, &second), UV_ENAMETOOLONG);
  /* Another user gets a plain permission error. Root passes file modes,
   * so as root the client runs as nobody (from a copy it may execute, in a
   * directory it may enter but not list): only the socket's 0600 stops it.
   * Otherwise the socket is made 000 for us. */
  if (geteuid() == 0) {
    char copy[160];
    snprintf(copy, sizeof(copy), "%s/inspect-copy", kp_it_dir());
    KP_CHECK_EQ(kp_test_sh("cp '%s' '%s' && chmod 0755 '%s' && chmod 0711 '%s'", KP_INSPECT, copy,
                           copy, kp_it_dir()),
                0);
    expect_failure(&loop, copy, path, 65534, "permission denied on");
    KP_CHECK(chmod(kp_it_dir(), 0700) == 0);
  } else {
    KP_CHECK(chmod(path, 0) == 0);
    expect_failure(&loop, NULL, path, 0, "permission denied on");
    KP_CHECK(chmod(path, 0600) == 0);
  }
  kp_control_close(ctl);
  KP_CHECK(access(path, F_OK) != 0);
  kp_node_close(node, NULL);
  kp_test_check_loop_closes(&loop);
}

/* `kadpunch dht-node --control`: the node operators run, inspected. */
void test_control_in_dht_node(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  char path[128], file[128];
  snprintf(path, sizeof(path), "%s/dht-node.sock", kp_it_dir());
  snprintf(file, sizeof(file), "%s/plain-file", kp_it_dir());
  const char *argv[] = {KP_BINARY,  "dht-node",  "--bind", "127.0.0.1:0",
                        "--member", "--control", path,     NULL};
  kp_test_child_t *c = kp_test_spawn(&loop, argv);
  KP_CHECK(kp_test_child_wait_output(&loop, c, "control socket", 10000));
  check_mode_0600(path);
  /* Clients that hang up before their answers: the node lives on. */
  raw_t *raw = calloc(1, sizeof(*raw));
  static const char three[] = "{\"cmd\":\"table\"}\n{\"cmd\":\"table\"}\n{\"cmd\":\"table\"}\n";
  for (int i = 0; i < 20; i++) {
    raw_open(&loop, raw, path);
    uv_buf_t b = uv_buf_init((char *)three, sizeof(three) - 1);
    KP_CHECK_OK(uv_write(&raw->write, (uv_stream_t *)&raw->pipe, &b, 1, NULL));
    raw_close(&loop, raw);
  }
  free(raw);
  kp_testnet_run_until(&loop, NULL, NULL, 300);
  kp_json_t *j = inspect_json(&loop, "stats", path);
  kp_it_shape(j, KP_IT_CTL_STATS, "stats");
  KP_CHECK(kp_json_get_bool(j, "member", false));
  kp_json_free(j);
  KP_CHECK_EQ(kp_test_child_stop(&loop, c, 10000), 0);
  KP_CHECK(access(path, F_OK) != 0); /* it cleans up after itself */
  /* A path holding something else stops it with the reason. */
  FILE *f = fopen(file, "w");
  KP_CHECK(f && fclose(f) == 0);
  const char *bad[] = {KP_BINARY, "dht-node", "--bind", "127.0.0.1:0", "--control", file, NULL};
  kp_it_result_t r;
  kp_it_run(&loop, bad, 10000, 0, &r);
  KP_CHECK_MSG(r.status == 2 && strstr(r.err, "exists and is not a socket"), "exit %d: %s",
               r.status, r.err);
  kp_it_result_free(&r);
  kp_test_check_loop_closes(&loop);
}
