/* SPDX-License-Identifier: MIT */
/* --metrics on serve, relay and dht-node: every line of each exposition
 * parsed here by the text format's rules (docs/metrics.md), the counters a
 * ping moves moved, `promtool check metrics` (Debian's prometheus package)
 * when it is installed; and the HTTP responder's answers to what is not a
 * metrics request, and its connection limit. */
#include <ctype.h>
#include <math.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "tests/harness/test.h"
#include "tests/loopback/test_metrics.h"
#include "tests/loopback/test_node.h"
#include "tests/loopback/testnet_up.h"

#define NODES 8
#define MAX_FAMILIES 128

/* One request on a fresh TCP connection to 127.0.0.1:port; the whole
 * answer (head and body) into out. Returns its length. */
static size_t http(int port, const char *request, char *out, size_t cap) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  KP_CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
  struct timeval tv = {.tv_sec = 10};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  /* (A connection the endpoint closed at once may refuse the write.) */
  if (send(fd, request, strlen(request), MSG_NOSIGNAL) != (ssize_t)strlen(request)) {
    close(fd);
    out[0] = '\0';
    return 0;
  }
  size_t n = 0;
  for (ssize_t r; n + 1 < cap && (r = read(fd, out + n, cap - 1 - n)) > 0;) n += (size_t)r;
  out[n] = '\0';
  close(fd);
  return n;
}

typedef struct family_s {
  char name[128];
  char type[16];
  bool help;
} family_t;

typedef struct expo_s {
  family_t fam[MAX_FAMILIES];
  size_t count;
  unsigned samples;
  /* The histogram being read: its last bucket and whether +Inf came. */
  char hist[128];
  double last_bucket, inf;
} expo_t;

static bool name_ok(const char *s, size_t n) {
  if (!n || !(isalpha((unsigned char)s[0]) || s[0] == '_' || s[0] == ':')) return false;
  for (size_t i = 1; i < n; i++)
    if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == ':')) return false;
  return true;
}

static family_t *family(expo_t *e, const char *name, size_t n) {
  for (size_t i = 0; i < e->count; i++)
    if (strlen(e->fam[i].name) == n && !memcmp(e->fam[i].name, name, n)) return &e->fam[i];
  return NULL;
}

/* "# HELP name text" or "# TYPE name type": declared once each, TYPE
 * before any sample. */
static void comment(expo_t *e, const char *line) {
  bool help = !strncmp(line, "# HELP ", 7), type = !strncmp(line, "# TYPE ", 7);
  KP_CHECK_MSG(help || type, "a comment that is neither HELP nor TYPE: %s", line);
  const char *name = line + 7, *sp = strchr(name, ' ');
  KP_CHECK_MSG(sp && name_ok(name, (size_t)(sp - name)), "bad name: %s", line);
  family_t *f = family(e, name, (size_t)(sp - name));
  if (!f) {
    KP_CHECK(e->count < MAX_FAMILIES);
    f = &e->fam[e->count++];
    snprintf(f->name, sizeof(f->name), "%.*s", (int)(sp - name), name);
  }
  if (help) {
    KP_CHECK_MSG(!f->help && sp[1], "HELP twice or empty: %s", line);
    f->help = true;
  } else {
    KP_CHECK_MSG(!f->type[0], "TYPE twice: %s", line);
    KP_CHECK_MSG(!strcmp(sp + 1, "counter") || !strcmp(sp + 1, "gauge") ||
                     !strcmp(sp + 1, "histogram"),
                 "type: %s", line);
    snprintf(f->type, sizeof(f->type), "%s", sp + 1);
  }
}

/* {a="x",b="y"}: names, quoted values with \\ \" \n escapes; returns past
 * the brace; le gets the "le" label's value if there is one. */
static const char *labels(const char *p, char *le, size_t le_cap) {
  le[0] = '\0';
  KP_CHECK(*p == '{');
  p++;
  while (*p != '}') {
    const char *n = p;
    while (isalnum((unsigned char)*p) || *p == '_') p++;
    KP_CHECK_MSG(p > n && name_ok(n, (size_t)(p - n)) && p[0] == '=' && p[1] == '"', "label at: %s",
                 n);
    bool is_le = p - n == 2 && !memcmp(n, "le", 2);
    p += 2;
    size_t vlen = 0;
    while (*p != '"') {
      KP_CHECK_MSG(*p && *p != '\n', "unterminated label value");
      if (*p == '\\') {
        KP_CHECK(p[1] == '\\' || p[1] == '"' || p[1] == 'n');
        p++;
      }
      if (is_le && vlen + 1 < le_cap) le[vlen++] = *p;
      p++;
    }
    if (is_le) le[vlen] = '\0';
    p++;
    if (*p == ',') p++;
  }
  return p + 1;
}

static double number(const char *text) {
  if (!strcmp(text, "+Inf")) return INFINITY;
  char *end;
  double v = strtod(text, &end);
  KP_CHECK_MSG(*text && !*end && !isnan(v), "not a number: '%s'", text);
  return v;
}

/* name{labels} value: its family typed; a histogram's buckets rise and
 * its +Inf bucket equals its _count. */
static void sample(expo_t *e, const char *line) {
  const char *p = line;
  while (*p && *p != '{' && *p != ' ') p++;
  size_t n = (size_t)(p - line);
  KP_CHECK_MSG(name_ok(line, n), "bad sample name: %s", line);
  char le[32] = "";
  if (*p == '{') p = labels(p, le, sizeof(le));
  KP_CHECK_MSG(*p == ' ', "no value: %s", line);
  double v = number(p + 1);
  KP_CHECK_MSG(v >= 0, "a negative counter or gauge: %s", line);
  family_t *f = family(e, line, n);
  const char *suffix = NULL;
  static const char *const hs[] = {"_bucket", "_sum", "_count"};
  for (size_t i = 0; !f && i < 3; i++) {
    size_t sl = strlen(hs[i]);
    if (n > sl && !memcmp(line + n - sl, hs[i], sl) && (f = family(e, line, n - sl)))
      suffix = hs[i];
  }
  KP_CHECK_MSG(f && f->type[0], "a sample of an undeclared family: %s", line);
  KP_CHECK_MSG(!strcmp(f->type, "histogram") == (suffix != NULL), "suffix vs type: %s", line);
  if (suffix && !strcmp(suffix, "_bucket")) {
    KP_CHECK_MSG(le[0], "a bucket without le: %s", line);
    if (strcmp(e->hist, f->name)) {
      snprintf(e->hist, sizeof(e->hist), "%s", f->name);
      e->last_bucket = 0;
      e->inf = -1;
    }
    KP_CHECK_MSG(v >= e->last_bucket, "buckets must rise: %s", line);
    e->last_bucket = v;
    if (!strcmp(le, "+Inf")) e->inf = v;
  } else if (suffix && !strcmp(suffix, "_count")) {
    KP_CHECK_MSG(!strcmp(e->hist, f->name) && e->inf == v, "+Inf bucket != count: %s", line);
  }
  e->samples++;
}

void kp_test_metrics_check(const char *body, unsigned *families, unsigned *samples) {
  expo_t *e = calloc(1, sizeof(*e));
  KP_CHECK(e != NULL);
  size_t len = strlen(body);
  KP_CHECK_MSG(len && body[len - 1] == '\n', "the exposition must end with a newline");
  char *copy = strdup(body);
  for (char *line = strtok(copy, "\n"); line; line = strtok(NULL, "\n")) {
    KP_CHECK_MSG(*line, "an empty line");
    if (line[0] == '#')
      comment(e, line);
    else
      sample(e, line);
  }
  for (size_t i = 0; i < e->count; i++)
    KP_CHECK_MSG(e->fam[i].help && e->fam[i].type[0], "%s: HELP and TYPE", e->fam[i].name);
  *families = (unsigned)e->count;
  *samples = e->samples;
  free(copy);
  free(e);
}

/* The value of the sample line that starts with prefix ("name{...} "),
 * or -1. */
static double value_of(const char *body, const char *prefix) {
  for (const char *at = strstr(body, prefix); at; at = strstr(at + 1, prefix))
    if (at == body || at[-1] == '\n') return strtod(at + strlen(prefix), NULL);
  return -1;
}

/* The body of GET /metrics, checked line by line (and by promtool if
 * there is one). */
static char *scrape(int port, const char *who) {
  static char out[1 << 20];
  size_t n = http(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", out, sizeof(out));
  KP_CHECK_MSG(n && !strncmp(out, "HTTP/1.1 200 OK\r\n", 17) &&
                   strstr(out, "Content-Type: text/plain; version=0.0.4"),
               "%s: %.200s", who, out);
  char *body = strstr(out, "\r\n\r\n");
  KP_CHECK(body);
  body += 4;
  KP_CHECK_EQ(value_of(out, "Content-Length: "), (double)strlen(body));
  unsigned families, samples;
  kp_test_metrics_check(body, &families, &samples);
  printf("%s: %u families, %u samples, every line well-formed\n", who, families, samples);
  if (access("/usr/bin/promtool", X_OK) == 0) {
    char path[64] = "/tmp/kp-metrics-XXXXXX";
    int fd = mkstemp(path);
    KP_CHECK(fd >= 0 && write(fd, body, strlen(body)) == (ssize_t)strlen(body));
    close(fd);
    KP_CHECK_EQ(kp_test_sh("promtool check metrics < %s", path), 0);
    unlink(path);
    printf("%s: promtool check metrics: fine\n", who);
  } else {
    printf("%s: promtool not installed (Debian: prometheus): checked here only\n", who);
  }
  return body;
}

static int port_of(kp_test_child_t *c) {
  const char *at = strstr(kp_test_child_stdout(c), "metrics on http://127.0.0.1:");
  KP_CHECK_MSG(at, "%s", kp_test_child_stdout(c));
  return atoi(at + strlen("metrics on http://127.0.0.1:"));
}

/* serve, relay and dht-node each serve a well-formed exposition; a ping
 * moves serve's counters; the relay answers on its control socket too. */
void test_metrics_exposition(void) {
  uv_loop_t loop;
  kp_testnet_t tn;
  uv_loop_init(&loop);
  kp_test_testnet_up(&loop, NODES, 20000, &tn);
  char dir[] = "/tmp/kp-met-XXXXXX", skey[64], ckey[64], spk[KP_KEY_TEXT_LEN + 1],
       cpk[KP_KEY_TEXT_LEN + 1], sock[96], out[8192];
  KP_CHECK(mkdtemp(dir) != NULL);
  snprintf(skey, sizeof(skey), "%s/s", dir);
  snprintf(ckey, sizeof(ckey), "%s/c", dir);
  snprintf(sock, sizeof(sock), "%s/relay.sock", dir);
  kp_test_keygen(&loop, skey, spk);
  kp_test_keygen(&loop, ckey, cpk);
  const char *serve[] = {KP_BINARY,     "serve",       "--key",  skey,
                         "--bootstrap", tn.bootstrap,  "--bind", "127.0.0.1:0",
                         "--metrics",   "127.0.0.1:0", NULL};
  const char *relay[] = {KP_BINARY,     "relay",      "--bind",    "127.0.0.1:0",
                         "--bootstrap", tn.bootstrap, "--metrics", "127.0.0.1:0",
                         "--control",   sock,         NULL};
  const char *dht[] = {KP_BINARY,    "dht-node",  "--bind", "127.0.0.1:0", "--bootstrap",
                       tn.bootstrap, "--metrics", "0",      NULL};
  kp_test_child_t *s = kp_test_spawn(&loop, serve), *r = kp_test_spawn(&loop, relay),
                  *d = kp_test_spawn(&loop, dht);
  KP_CHECK(kp_test_child_wait_output(&loop, s, "metrics on", 15000));
  KP_CHECK(kp_test_child_wait_output(&loop, r, "metrics on", 15000));
  KP_CHECK(kp_test_child_wait_output(&loop, d, "metrics on", 15000));
  kp_testnet_run_until(&loop, NULL, NULL, 1000);
  const char *ping[] = {KP_BINARY, "ping", spk, "--key", ckey, "--bootstrap", tn.bootstrap, NULL};
  KP_CHECK_EQ(kp_test_run_cli(&loop, ping, out, sizeof(out), 30000), 0);

  char *body = scrape(port_of(s), "serve");
  KP_CHECK_MSG(value_of(body, "kadpunch_serve_connections_total{path=\"lan\"} ") == 1 &&
                   value_of(body, "kadpunch_serve_connect_seconds_count ") == 1 &&
                   value_of(body, "kadpunch_datagrams_total{direction=\"in\"} ") > 0 &&
                   value_of(body, "kadpunch_store_records ") >= 0,
               "%s", body);
  /* The ping's hello was let in and its punch found a path. */
  KP_CHECK_MSG(value_of(body, "kadpunch_serve_handshakes_total{outcome=\"accepted\"} ") == 1 &&
                   value_of(body, "kadpunch_serve_handshakes_total{outcome=\"bad\"} ") == 0 &&
                   value_of(body, "kadpunch_serve_punches_total{outcome=\"path\"} ") == 1 &&
                   value_of(body, "kadpunch_serve_punches_total{outcome=\"timeout\"} ") == 0 &&
                   value_of(body, "kadpunch_serve_handshakes_in_progress ") >= 0,
               "%s", body);
  body = scrape(port_of(r), "relay");
  KP_CHECK_MSG(value_of(body, "kadpunch_relay_sessions ") == 0 &&
                   value_of(body, "kadpunch_relay_refused_total{reason=\"full\"} ") == 0,
               "%s", body);
  body = scrape(port_of(d), "dht-node");
  KP_CHECK_MSG(value_of(body, "kadpunch_dht_responses_total ") > 0 &&
                   value_of(body, "kadpunch_relay_sessions ") < 0,
               "%s", body);
  const char *stats[] = {KP_INSPECT, "stats", "--control", sock, "--json", NULL};
  KP_CHECK_EQ(kp_test_run_cli(&loop, stats, out, sizeof(out), 10000), 0);
  KP_CHECK_MSG(strstr(out, "\"relay\":{\"sessions\":0"), "%s", out);

  /* A server through a proxy says how its session is. */
  char pbind[32];
  snprintf(pbind, sizeof(pbind), "127.0.0.1:%d", kp_testnet_free_port());
  const char *proxy[] = {KP_BINARY, "proxy", "--bind", pbind, "--bootstrap", tn.bootstrap, NULL};
  kp_test_child_t *p = kp_test_spawn(&loop, proxy);
  KP_CHECK(kp_test_child_wait_output(&loop, p, "proxying on", 15000));
  const char *pserve[] = {KP_BINARY, "serve", "--key",     ckey,        "--bootstrap", tn.bootstrap,
                          "--proxy", pbind,   "--private", "--metrics", "127.0.0.1:0", NULL};
  kp_test_child_t *ps = kp_test_spawn(&loop, pserve);
  KP_CHECK(kp_test_child_wait_output(&loop, ps, "metrics on", 15000));
  KP_CHECK(kp_test_child_wait_output(&loop, ps, "serving", 15000));
  body = scrape(port_of(ps), "serve --proxy");
  KP_CHECK_MSG(value_of(body, "kadpunch_proxy_link_up ") == 1 &&
                   value_of(body, "kadpunch_proxy_link_tcp ") == 0 &&
                   value_of(body, "kadpunch_proxy_link_own ") == 0 &&
                   value_of(body, "kadpunch_proxy_link_falls_total ") == 0 &&
                   value_of(body, "kadpunch_proxy_link_trials_total{over=\"udp\"} ") == 0 &&
                   value_of(body, "kadpunch_proxy_link_trials_total{over=\"tcp\"} ") == 0 &&
                   value_of(body, "kadpunch_proxy_link_moves_total{to=\"udp\"} ") == 0 &&
                   value_of(body, "kadpunch_proxy_link_moves_total{to=\"tcp\"} ") == 0,
               "%s", body);
  body = scrape(port_of(s), "serve");
  KP_CHECK_MSG(value_of(body, "kadpunch_proxy_link_up ") < 0, "%s", body); /* not proxied */
  KP_CHECK_EQ(kp_test_child_stop(&loop, ps, 10000), 0);
  KP_CHECK_EQ(kp_test_child_stop(&loop, p, 10000), 0);
  KP_CHECK_EQ(kp_test_child_stop(&loop, s, 10000), 0);
  KP_CHECK_EQ(kp_test_child_stop(&loop, r, 10000), 0);
  KP_CHECK_EQ(kp_test_child_stop(&loop, d, 10000), 0);
  kp_testnet_destroy(&tn);
  kp_test_check_loop_closes(&loop);
  kp_test_sh("rm -rf %s", dir);
}

/* What is not GET /metrics gets its status and the connection closes;
 * a head that never ends is refused; connections past 16 are closed at
 * once, and the endpoint serves again once they are gone. */
void test_metrics_http_errors(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  const char *dht[] = {KP_BINARY, "dht-node", "--bind", "127.0.0.1:0", "--metrics", "0", NULL};
  kp_test_child_t *d = kp_test_spawn(&loop, dht);
  KP_CHECK(kp_test_child_wait_output(&loop, d, "metrics on", 15000));
  int port = port_of(d);
  static char out[1 << 16];
  const struct {
    const char *request, *status;
  } cases[] = {
      {"GET /nope HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found\r\n"},
      {"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "HTTP/1.1 405 Method Not Allowed"},
      {"garbage\r\n\r\n", "HTTP/1.1 400 Bad Request\r\n"},
      {"GET /metrics HTTP/9.9\r\n\r\n", "HTTP/1.1 400 Bad Request\r\n"},
      {"HEAD /metrics HTTP/1.0\n\n", "HTTP/1.1 200 OK\r\n"},
      {"GET /metrics?name[]=x HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK\r\n"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    http(port, cases[i].request, out, sizeof(out));
    KP_CHECK_MSG(!strncmp(out, cases[i].status, strlen(cases[i].status)), "%s -> %.80s",
                 cases[i].request, out);
  }
  KP_CHECK(strstr(out, "# TYPE kadpunch_info gauge"));
  http(port, "HEAD /metrics HTTP/1.1\r\n\r\n", out, sizeof(out));
  KP_CHECK_MSG(!strstr(out, "# TYPE"), "HEAD sent a body");
  char *big = malloc(9000);
  memset(big, 'a', 8999);
  big[8999] = '\0';
  memcpy(big, "GET /metrics HTTP/1.1\r\nX: ", 26);
  http(port, big, out, sizeof(out));
  free(big);
  KP_CHECK_MSG(!strncmp(out, "HTTP/1.1 431 ", 13), "%.80s", out);

  /* 16 idle connections hold every place; the 17th is closed unanswered. */
  int idle[16];
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  for (int i = 0; i < 16; i++) {
    idle[i] = socket(AF_INET, SOCK_STREAM, 0);
    KP_CHECK(connect(idle[i], (struct sockaddr *)&a, sizeof(a)) == 0);
  }
  kp_testnet_run_until(&loop, NULL, NULL, 300);
  KP_CHECK_EQ(http(port, "GET /metrics HTTP/1.1\r\n\r\n", out, sizeof(out)), 0);
  for (int i = 0; i < 16; i++) close(idle[i]);
  kp_testnet_run_until(&loop, NULL, NULL, 300);
  http(port, "GET /metrics HTTP/1.1\r\n\r\n", out, sizeof(out));
  KP_CHECK_MSG(!strncmp(out, "HTTP/1.1 200 OK\r\n", 17), "%.80s", out);
  KP_CHECK_EQ(kp_test_child_stop(&loop, d, 10000), 0);
  kp_test_check_loop_closes(&loop);
}

/* kadpunch proxy --metrics and --control: a peer on the allow list talks
 * to a server through the proxy, one that is not is refused; the proxy's
 * exposition is well-formed (and promtool's), counts the session, the
 * allocation, the bytes both ways and the refusal by its reason; and
 * kadpunch-inspect reads the proxy node's stats and table. */
void test_metrics_proxy(void) {
  uv_loop_t loop;
  kp_testnet_t tn;
  uv_loop_init(&loop);
  kp_test_testnet_up(&loop, NODES, 20000, &tn);
  char dir[] = "/tmp/kp-metp-XXXXXX", skey[64], ckey[64], okey[64], sock[96], pbind[64],
       spk[KP_KEY_TEXT_LEN + 1], cpk[KP_KEY_TEXT_LEN + 1], opk[KP_KEY_TEXT_LEN + 1];
  static char out[1 << 16];
  KP_CHECK(mkdtemp(dir) != NULL);
  snprintf(skey, sizeof(skey), "%s/s", dir);
  snprintf(ckey, sizeof(ckey), "%s/c", dir);
  snprintf(okey, sizeof(okey), "%s/o", dir);
  snprintf(sock, sizeof(sock), "%s/proxy.sock", dir);
  snprintf(pbind, sizeof(pbind), "127.0.0.1:%d", kp_testnet_free_port());
  kp_test_keygen(&loop, skey, spk);
  kp_test_keygen(&loop, ckey, cpk);
  kp_test_keygen(&loop, okey, opk);
  const char *proxy[] = {KP_BINARY,    "proxy",   "--bind", pbind,       "--bootstrap",
                         tn.bootstrap, "--allow", cpk,      "--metrics", "127.0.0.1:0",
                         "--control",  sock,      NULL};
  const char *serve[] = {KP_BINARY, "serve", "--key", skey, "--bootstrap", tn.bootstrap, NULL};
  kp_test_child_t *p = kp_test_spawn(&loop, proxy), *s = kp_test_spawn(&loop, serve);
  KP_CHECK(kp_test_child_wait_output(&loop, p, "metrics on", 15000));
  KP_CHECK(kp_test_child_wait_output(&loop, s, "serving", 15000));
  kp_testnet_run_until(&loop, NULL, NULL, 1000);
  int port = port_of(p);
  char *body = scrape(port, "proxy (idle)");
  KP_CHECK_MSG(value_of(body, "kadpunch_proxy_sessions ") == 0 &&
                   value_of(body, "kadpunch_proxy_welcomed_total ") == 0 &&
                   value_of(body, "kadpunch_proxy_left_sessions_ended_total ") == 0 &&
                   value_of(body, "kadpunch_dht_routing_table_nodes ") > 0,
               "%s", body);

  static const char message[] = "metrics-through-the-proxy";
  const char *allowed[] = {KP_BINARY, "connect", spk,   "--key",       ckey,         "--message",
                           message,   "--proxy", pbind, "--bootstrap", tn.bootstrap, NULL};
  int rc = kp_test_run_cli(&loop, allowed, out, sizeof(out), 30000);
  KP_CHECK_MSG(rc == 0 && strstr(out, "proxied via") && strstr(out, "25 bytes back"), "%d: %s", rc,
               out);
  const char *refused[] = {KP_BINARY, "connect", spk,   "--key",       okey,         "--message",
                           message,   "--proxy", pbind, "--bootstrap", tn.bootstrap, NULL};
  rc = kp_test_run_cli(&loop, refused, out, sizeof(out), 30000);
  KP_CHECK_MSG(rc != 0 && strstr(out, "key not allowed"), "%d: %s", rc, out);

  body = scrape(port, "proxy");
  KP_CHECK_MSG(value_of(body, "kadpunch_proxy_welcomed_total ") == 1 &&
                   value_of(body, "kadpunch_proxy_allocation_events_total{event=\"opened\"} ") >=
                       1 &&
                   value_of(body, "kadpunch_proxy_bytes_total{direction=\"out\"} ") > 0 &&
                   value_of(body, "kadpunch_proxy_bytes_total{direction=\"in\"} ") > 0 &&
                   value_of(body, "kadpunch_proxy_refused_total{reason=\"not_allowed\"} ") >= 1 &&
                   value_of(body, "kadpunch_proxy_refused_total{reason=\"full\"} ") == 0 &&
                   value_of(body, "kadpunch_proxy_dropped_total{reason=\"scope\"} ") >= 0 &&
                   value_of(body, "kadpunch_proxy_session_dropped_total{reason=\"forged\"} ") >= 0,
               "%s", body);

  const char *stats[] = {KP_INSPECT, "stats", "--control", sock, "--json", NULL};
  KP_CHECK_EQ(kp_test_run_cli(&loop, stats, out, sizeof(out), 10000), 0);
  KP_CHECK_MSG(strstr(out, "\"packets_in\":"), "%s", out);
  const char *table[] = {KP_INSPECT, "table", "--control", sock, NULL};
  KP_CHECK_EQ(kp_test_run_cli(&loop, table, out, sizeof(out), 10000), 0);
  KP_CHECK_MSG(strstr(out, "127.0.0.1:"), "%s", out);

  KP_CHECK_EQ(kp_test_child_stop(&loop, p, 10000), 0);
  KP_CHECK_EQ(kp_test_child_stop(&loop, s, 10000), 0);
  kp_testnet_destroy(&tn);
  kp_test_check_loop_closes(&loop);
  kp_test_sh("rm -rf %s", dir);
}
