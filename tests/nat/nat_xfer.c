/* SPDX-License-Identifier: MIT */
/* nat_xfer: a transfer through the NAT lab that watches the path.
 *
 *   nat_xfer KEY BOOTSTRAP[,BOOTSTRAP...] BYTES
 *
 * Connects by key to `kadpunch serve` (an echo), writes BYTES of a known
 * pattern on one stream and checks every byte that comes back. While it
 * runs it prints to stderr "progress N MS" every 4 MiB echoed and "path
 * direct|relay ADDR N MS" whenever the connection moves (N: bytes echoed by
 * then, MS: since the transfer began). At the end one JSON line on stdout: whether every byte came
 * back exact, the strategy it connected with, how many moves, and the longest gap between two reads
 * (the stall a user would notice). Every wait is bounded: the whole run gives up after 120 s. Exit
 * 0 only if the echo was complete and exact. With $KP_XFER_PROXY ([KEY@]ADDR:PORT) the node speaks
 * through that proxy (it connects once the DHT answers through it), and the JSON says so; with
 * $KP_XFER_PRIVATE set as well, it never goes direct. Bootstrap nodes of both families make it a
 * dual-stack node. $KP_XFER_RATE (bytes a second) paces the writes, so a fault can land
 * mid-transfer. $KP_XFER_DEBUG (by hand) logs the node's
 * lines at debug level with the loop's time, and its counters every second. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/addr.h"
#include "kadpunch.h"
#include "tests/harness/pattern.h"

#define CHUNK (64 * 1024)
#define PROGRESS_EVERY (4u << 20)
#define GIVE_UP_MS 120000
#define PACE_MS 10
#define MAX_BOOT 4

typedef struct xfer_s {
  kp_node_t *node;
  kp_conn_t *conn;
  kp_stream_t *stream;
  uint64_t total, written, echoed, mismatches;
  uint64_t last_read_us, max_gap_us, started_us, next_progress;
  unsigned moves, direct_moves;
  int status;
  bool done;
  kp_connect_info_t info;
  uv_timer_t give_up;
  uint64_t rate; /* bytes a second; 0: as fast as it goes */
  uv_timer_t pace;
} xfer_t;

typedef struct write_s {
  kp_write_t req;
  uv_buf_t buf;
} write_t;

static uint64_t now_us(void) {
  return uv_hrtime() / 1000;
}

static void finish(xfer_t *x, int status) {
  if (x->done) return;
  x->done = true;
  if (!x->status) x->status = status;
  uv_timer_stop(&x->give_up);
  if (x->conn) kp_conn_close(x->conn, 0);
  x->conn = NULL;
  kp_node_close(x->node, NULL);
  uv_close((uv_handle_t *)&x->give_up, NULL);
  if (x->rate) uv_close((uv_handle_t *)&x->pace, NULL);
}

static void on_write(kp_write_t *req, int status) {
  free(req);
  (void)status; /* a failure shows as a short echo */
}

/* What the pace allows written by now. */
static uint64_t allowed(const xfer_t *x) {
  if (!x->rate) return UINT64_MAX;
  return x->rate * (now_us() - x->started_us) / 1000000 + CHUNK;
}

static void feed(xfer_t *x) {
  while (x->stream && x->written < x->total && x->written < allowed(x) &&
         kp_stream_is_writable(x->stream)) {
    size_t avail;
    const uint8_t *p = kp_pattern_at(0, x->written, &avail);
    uint64_t n = x->total - x->written;
    if (n > avail) n = avail;
    if (n > CHUNK) n = CHUNK;
    write_t *w = malloc(sizeof(*w));
    if (!w) abort();
    w->buf = uv_buf_init((char *)p, (unsigned)n);
    if (kp_stream_write(&w->req, x->stream, &w->buf, 1, on_write)) {
      free(w);
      finish(x, UV_EPIPE);
      return;
    }
    x->written += n;
  }
  if (x->stream && x->written == x->total) kp_stream_end(x->stream);
}

static void on_drain(kp_stream_t *s) {
  feed(kp_stream_get_data(s));
}

static void on_pace(uv_timer_t *t) {
  xfer_t *x = t->data;
  if (!x->done) feed(x);
}

static void on_read(kp_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  xfer_t *x = kp_stream_get_data(s);
  uint64_t now = now_us();
  if (x->last_read_us && now - x->last_read_us > x->max_gap_us)
    x->max_gap_us = now - x->last_read_us;
  x->last_read_us = now;
  if (n > 0) {
    x->mismatches += kp_pattern_mismatches(0, x->echoed, (const uint8_t *)buf->base, (size_t)n);
    x->echoed += (uint64_t)n;
    if (x->echoed >= x->next_progress) {
      fprintf(stderr, "progress %" PRIu64 " %" PRIu64 "\n", x->echoed,
              (now - x->started_us) / 1000);
      x->next_progress += PROGRESS_EVERY;
    }
    return;
  }
  kp_stream_close(s, NULL);
  x->stream = NULL;
  finish(x, n == UV_EOF ? 0 : (int)n);
}

static void on_path(kp_conn_t *conn, const kp_path_event_t *ev) {
  xfer_t *x = kp_conn_get_data(conn);
  char text[KP_ADDR_STRLEN];
  kp_addr_format(&ev->remote, text, sizeof(text));
  if (ev->why == KP_PATH_LOST || ev->why == KP_PATH_BACK) {
    fprintf(stderr, "path %s %s %" PRIu64 " %" PRIu64 "\n",
            ev->why == KP_PATH_LOST ? "lost" : "back", text, x->echoed,
            (now_us() - x->started_us) / 1000);
    return;
  }
  x->moves++;
  if (ev->direct) x->direct_moves++;
  fprintf(stderr, "path %s %s %" PRIu64 " %" PRIu64 " %s\n", ev->direct ? "direct" : "relay", text,
          x->echoed, (now_us() - x->started_us) / 1000, kp_path_why_str(ev->why));
}

static void on_close(kp_conn_t *conn, int status, uint64_t code) {
  xfer_t *x = kp_conn_get_data(conn);
  (void)code;
  if (!x->done) finish(x, status ? status : KP_ECLOSED);
}

static void on_connected(kp_node_t *node, int status, kp_conn_t *conn,
                         const kp_connect_info_t *info, void *arg) {
  xfer_t *x = arg;
  (void)node;
  x->info = *info;
  if (status) {
    finish(x, status);
    return;
  }
  x->conn = conn;
  kp_conn_set_data(conn, x);
  fprintf(stderr, "connected %s\n", kp_punch_name(info->punch));
  int err = kp_stream_open(conn, &x->stream);
  if (err) {
    finish(x, err);
    return;
  }
  kp_stream_set_data(x->stream, x);
  kp_stream_set_drain_cb(x->stream, on_drain);
  kp_stream_read_start(x->stream, on_read);
  x->started_us = now_us();
  if (x->rate) uv_timer_start(&x->pace, on_pace, PACE_MS, PACE_MS);
  feed(x);
}

static void on_give_up(uv_timer_t *t) {
  finish(t->data, UV_ETIMEDOUT);
}

typedef struct start_s {
  xfer_t *x;
  uint8_t key[KP_PUBLIC_KEY_LEN];
  uv_timer_t timer;
} start_t;

static void start_connect(xfer_t *x, const uint8_t key[KP_PUBLIC_KEY_LEN]) {
  kp_keypair_t self;
  kp_keypair_generate(&self);
  kp_conn_callbacks_t cb = {.on_close = on_close, .on_path = on_path};
  int err = kp_node_connect(x->node, &self, key, &cb, on_connected, x);
  kp_keypair_wipe(&self);
  if (err) finish(x, err);
}

/* Through a proxy the node's first DHT requests wait for the session and
 * its allocation: connect once the DHT has answered. */
static void on_start_poll(uv_timer_t *t) {
  start_t *s = t->data;
  kp_node_stats_t st;
  if (s->x->done) {
    uv_close((uv_handle_t *)t, NULL);
    return;
  }
  kp_node_stats(s->x->node, &st);
  if (!st.responses_in) return;
  uv_close((uv_handle_t *)t, NULL);
  start_connect(s->x, s->key);
}

/* KP_XFER_DEBUG: the node's counters every second. */
static void on_stats(uv_timer_t *t) {
  xfer_t *x = t->data;
  kp_node_stats_t st;
  if (x->done) { /* the node is closing */
    uv_close((uv_handle_t *)t, NULL);
    return;
  }
  kp_node_stats(x->node, &st);
  fprintf(stderr,
          "%" PRIu64 " stats: packets %" PRIu64 " in %" PRIu64 " out, requests %" PRIu64
          " out, responses %" PRIu64 " in, timeouts %" PRIu64 ", unmatched %" PRIu64
          ", rate %" PRIu64 ", send drops %" PRIu64 ", other %" PRIu64 ", table %u, inflight %u\n",
          uv_now(t->loop), st.packets_in, st.packets_out, st.requests_out, st.responses_in,
          st.timeouts, st.drops_unmatched, st.drops_rate, st.drops_send, st.drops_other,
          st.table_size, st.inflight);
}

/* KP_XFER_DEBUG: the node's lines with the loop's time (ms). */
static void log_stamped(void *ctx, kp_log_level_t level, const char *line) {
  (void)level;
  fprintf(stderr, "%" PRIu64 " %s\n", uv_now(ctx), line);
}

int main(int argc, char **argv) {
  uint8_t key[KP_PUBLIC_KEY_LEN];
  if (argc != 4 || kp_key_from_text(argv[1], key)) {
    fprintf(stderr, "usage: nat_xfer KEY BOOTSTRAP[,BOOTSTRAP...] BYTES\n");
    return 2;
  }
  xfer_t x = {.total = strtoull(argv[3], NULL, 10), .next_progress = PROGRESS_EVERY};
  const char *rate = getenv("KP_XFER_RATE");
  if (rate) x.rate = strtoull(rate, NULL, 10);
  uv_loop_t *loop = uv_default_loop();
  const char *boot[MAX_BOOT];
  size_t boot_count = 0;
  bool v4 = false, v6 = false;
  for (char *save = NULL, *b = strtok_r(argv[2], ",", &save); b && boot_count < MAX_BOOT;
       b = strtok_r(NULL, ",", &save)) {
    boot[boot_count++] = b;
    *(b[0] == '[' ? &v6 : &v4) = true;
  }
  kp_node_options_t o;
  kp_node_options_init(&o);
  o.bind = v4 || !v6 ? "0.0.0.0:0" : "[::]:0";
  o.bind_also = v4 && v6 ? "[::]:0" : NULL;
  o.bootstrap = boot;
  o.bootstrap_count = boot_count;
  o.mode = KP_NODE_EPHEMERAL;
  o.proxy = getenv("KP_XFER_PROXY");
  o.proxy_private = getenv("KP_XFER_PRIVATE") != NULL;
  if (getenv("KP_XFER_DEBUG")) { /* by hand, to see a run's steps */
    o.log_level = KP_LOG_DEBUG;
    o.log_cb = log_stamped;
    o.log_ctx = loop;
  }
  int err = kp_node_create(loop, &o, &x.node);
  if (err) {
    fprintf(stderr, "nat_xfer: %s\n", kp_strerror(err));
    return 1;
  }
  uv_timer_t stats;
  if (getenv("KP_XFER_DEBUG")) {
    uv_timer_init(loop, &stats);
    stats.data = &x;
    uv_timer_start(&stats, on_stats, 1000, 1000);
    uv_unref((uv_handle_t *)&stats);
  }
  uv_timer_init(loop, &x.give_up);
  x.give_up.data = &x;
  if (x.rate) {
    uv_timer_init(loop, &x.pace);
    x.pace.data = &x;
  }
  uv_timer_start(&x.give_up, on_give_up, GIVE_UP_MS, 0);
  start_t start = {.x = &x};
  memcpy(start.key, key, sizeof(key));
  if (o.proxy) {
    uv_timer_init(loop, &start.timer);
    start.timer.data = &start;
    uv_timer_start(&start.timer, on_start_poll, 50, 50);
  } else {
    start_connect(&x, key);
  }
  uv_run(loop, UV_RUN_DEFAULT);
  double secs = x.started_us ? (double)(x.last_read_us - x.started_us) / 1e6 : 0;
  bool ok = !x.status && x.echoed == x.total && !x.mismatches;
  char proxy[KP_ADDR_STRLEN] = "";
  char path[KP_ADDR_STRLEN] = "";
  if (x.info.proxy.family) kp_addr_format(&x.info.proxy, proxy, sizeof(proxy));
  if (x.info.path.family) kp_addr_format(&x.info.path, path, sizeof(path));
  printf("{\"ok\":%s,\"proxy\":\"%s\",\"path\":\"%s\",\"error\":\"%s\",\"strategy\":\"%s\","
         "\"bytes\":%" PRIu64 ",\"mismatches\":%" PRIu64
         ",\"moves\":%u,\"direct_moves\":%u,\"max_stall_ms\":%" PRIu64 ",\"seconds\":%.2f}\n",
         ok ? "true" : "false", proxy, path, x.status ? kp_err_name(x.status) : "",
         x.info.proxy.family ? "proxied" : kp_punch_name(x.info.punch), x.echoed, x.mismatches,
         x.moves, x.direct_moves, x.max_gap_us / 1000, secs);
  uv_loop_close(loop);
  return ok ? 0 : 1;
}
