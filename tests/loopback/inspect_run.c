/* SPDX-License-Identifier: MIT */
/* Running kadpunch-inspect from tests, and checking its output
 * (inspect_run.h). */
#include "tests/loopback/inspect_run.h"
#include "tests/loopback/test_node.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "node/testnet.h"
#include "tests/harness/test.h"

static char dir[64];

static void remove_dir(void) {
  if (dir[0]) kp_test_sh("rm -rf '%s'", dir);
}

const char *kp_it_dir(void) {
  if (!dir[0]) {
    snprintf(dir, sizeof(dir), "/tmp/kp-inspect-XXXXXX");
    KP_CHECK(mkdtemp(dir) != NULL);
    atexit(remove_dir);
  }
  return dir;
}

char *kp_it_read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  size_t got;
  while (buf && (got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
    n += got;
    if (n + 1 == cap) buf = realloc(buf, cap *= 2);
  }
  fclose(f);
  if (!buf) return NULL;
  buf[n] = '\0';
  if (len) *len = n;
  return buf;
}

typedef struct child_s {
  uv_process_t proc;
  bool exited;
  int status;
} child_t;

static void on_exit_cb(uv_process_t *p, int64_t status, int signal) {
  child_t *c = p->data;
  kp_test_track_child(p->pid, false);
  c->exited = true;
  c->status = signal ? 128 + signal : (int)status;
}

static bool exited(void *ctx) {
  return ((child_t *)ctx)->exited;
}

void kp_it_run(uv_loop_t *loop, const char *const *argv, unsigned timeout_ms, unsigned uid,
               kp_it_result_t *r) {
  char out_path[128], err_path[128], home[128], path_env[] = "PATH=/usr/bin:/bin";
  static unsigned serial;
  snprintf(out_path, sizeof(out_path), "%s/out.%u", kp_it_dir(), serial);
  snprintf(err_path, sizeof(err_path), "%s/err.%u", kp_it_dir(), serial++);
  snprintf(home, sizeof(home), "HOME=%s", kp_it_dir());
  int out_fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  int err_fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  KP_CHECK(out_fd >= 0 && err_fd >= 0);
  char *env[] = {path_env, home, NULL};
  uv_stdio_container_t stdio[3] = {{.flags = UV_IGNORE},
                                   {.flags = UV_INHERIT_FD, .data.fd = out_fd},
                                   {.flags = UV_INHERIT_FD, .data.fd = err_fd}};
  uv_process_options_t o = {0};
  o.file = argv[0];
  o.args = (char **)argv;
  o.env = env;
  o.exit_cb = on_exit_cb;
  o.stdio = stdio;
  o.stdio_count = 3;
  if (uid) {
    o.flags = UV_PROCESS_SETUID | UV_PROCESS_SETGID;
    o.uid = uid;
    o.gid = uid;
  }
  child_t c = {0};
  c.proc.data = &c;
  KP_CHECK_OK(uv_spawn(loop, &c.proc, &o));
  kp_test_track_child(c.proc.pid, true);
  close(out_fd);
  close(err_fd);
  if (!kp_testnet_run_until(loop, exited, &c, timeout_ms)) {
    uv_process_kill(&c.proc, SIGKILL); /* our own child, by its pid */
    kp_testnet_run_until(loop, exited, &c, 5000);
    c.status = -1;
  }
  uv_close((uv_handle_t *)&c.proc, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  memset(r, 0, sizeof(*r));
  r->status = c.status;
  r->out = kp_it_read_file(out_path, &r->out_len);
  r->err = kp_it_read_file(err_path, NULL);
  KP_CHECK(r->out && r->err);
}

void kp_it_result_free(kp_it_result_t *r) {
  free(r->out);
  free(r->err);
  memset(r, 0, sizeof(*r));
}

kp_json_t *kp_it_json(const char *text, size_t len) {
  kp_json_t *v;
  size_t at = 0;
  int err = kp_json_parse(text, len, &v, &at);
  KP_CHECK_MSG(err == 0, "not JSON (%s at byte %zu of %zu): %.300s", kp_err_name(err), at, len,
               text + (at > 100 ? at - 100 : 0));
  return v;
}

static char type_letter(kp_json_type_t t) {
  static const char letters[] = "zbnsao"; /* in kp_json_type_t's order */
  return letters[t];
}

void kp_it_shape(const kp_json_t *obj, const char *spec, const char *where) {
  KP_CHECK_MSG(obj && obj->type == KP_JSON_OBJECT, "%s: not an object", where);
  size_t wanted = 0;
  char buf[2048];
  snprintf(buf, sizeof(buf), "%s", spec);
  for (char *tok = strtok(buf, " "); tok; tok = strtok(NULL, " ")) {
    char *colon = strchr(tok, ':');
    KP_CHECK(colon != NULL);
    *colon = '\0';
    const kp_json_t *v = kp_json_get(obj, tok);
    KP_CHECK_MSG(v, "%s: no \"%s\"", where, tok);
    KP_CHECK_MSG(strchr(colon + 1, type_letter(v->type)), "%s: \"%s\" is of type %c, not %s", where,
                 tok, type_letter(v->type), colon + 1);
    wanted++;
  }
  /* Members beyond the documented ones mean docs/inspect.md is out of date. */
  char padded[2100], key[128];
  snprintf(padded, sizeof(padded), " %s", spec);
  for (const kp_json_t *m = obj->child; m; m = m->next) {
    snprintf(key, sizeof(key), " %s:", m->key);
    KP_CHECK_MSG(strstr(padded, key), "%s: undocumented member \"%s\"", where, m->key);
  }
  KP_CHECK_MSG(obj->len == wanted, "%s: %zu members, %zu documented", where, obj->len, wanted);
}

/* The element name at p (after '<' or '</'): its length. */
static size_t name_len(const char *p) {
  size_t n = 0;
  while (p[n] && !strchr(" \t\r\n/>", p[n])) n++;
  return n;
}

size_t kp_it_svg_nodes(const char *svg) {
  const char *stack[64];
  size_t depth = 0, roots = 0, marks = 0;
  const char *p = svg;
  while ((p = strchr(p, '<'))) {
    if (!strncmp(p, "<?", 2) || !strncmp(p, "<!--", 4)) {
      const char *end = strstr(p, p[1] == '?' ? "?>" : "-->");
      KP_CHECK_MSG(end, "unterminated <? or <!--");
      p = end + 2;
      continue;
    }
    bool closing = p[1] == '/';
    const char *name = p + 1 + closing;
    size_t n = name_len(name);
    KP_CHECK_MSG(n > 0, "a tag without a name at byte %zu", (size_t)(p - svg));
    /* The tag's end: the first '>' outside quotes. */
    const char *q = name + n;
    char quote = 0;
    for (; *q && (quote || *q != '>'); q++)
      if (*q == '"' || *q == '\'') quote = quote == *q ? 0 : quote ? quote : *q;
    KP_CHECK_MSG(*q == '>', "unterminated tag at byte %zu", (size_t)(p - svg));
    if (closing) {
      KP_CHECK_MSG(depth && name_len(stack[depth - 1]) == n && !strncmp(stack[depth - 1], name, n),
                   "</%.*s> closes nothing open at byte %zu", (int)n, name, (size_t)(p - svg));
      depth--;
    } else {
      if (!depth) {
        roots++;
        KP_CHECK_MSG(n == 3 && !strncmp(name, "svg", 3), "the root is <%.*s>, not <svg>", (int)n,
                     name);
      }
      if (!strncmp(name + n, " class=\"node\"", 13)) marks++;
      if (q[-1] != '/') {
        KP_CHECK(depth < 64);
        stack[depth++] = name;
      }
    }
    p = q + 1;
  }
  KP_CHECK_MSG(depth == 0, "%zu elements left open", depth);
  KP_CHECK_EQ(roots, 1);
  return marks;
}

typedef struct announced_s {
  bool done;
  int status;
  unsigned stored;
} announced_t;

static void on_announce(kp_announce_t *a, int status, unsigned stored) {
  announced_t *s = kp_announce_get_data(a);
  if (!s || status == UV_ECANCELED || s->done) return;
  s->done = true;
  s->status = status;
  s->stored = stored;
}

static bool announce_done(void *ctx) {
  return ((announced_t *)ctx)->done;
}

kp_announce_t *kp_it_announce(kp_testnet_t *tn, kp_node_t *node, const uint8_t target[KP_ID_LEN],
                              const char *data, char key[KP_KEY_TEXT_LEN + 1]) {
  kp_keypair_t kp;
  kp_keypair_generate(&kp);
  kp_key_to_text(kp.public_key, key);
  announced_t st = {0};
  kp_announce_t *a;
  KP_CHECK_OK(kp_node_announce(node, target, &kp, data, strlen(data), on_announce, &a));
  kp_keypair_wipe(&kp);
  kp_announce_set_data(a, &st);
  KP_CHECK(kp_testnet_run_until(tn->loop, announce_done, &st, 20000));
  KP_CHECK_MSG(st.status == 0 && st.stored > 0, "announce: %s, stored on %u",
               kp_strerror(st.status), st.stored);
  kp_announce_set_data(a, NULL);
  return a;
}
