/* SPDX-License-Identifier: MIT */
/* tcp_pump: a TCP echo client that watches for stalls (the NAT lab's
 * durability tests, tests/nat/survive.sh).
 *
 *   tcp_pump ADDR:PORT BYTES [RATE_MBPS]
 *
 * Connects to ADDR:PORT (`kadpunch connect --listen` in front of a TCP echo
 * behind `kadpunch serve --forward`), writes BYTES of a known pattern, at
 * most RATE_MBPS megabytes a second if given (so faults land mid-transfer),
 * and checks every byte that comes back. Prints "progress N MS" to stderr
 * every 4 MiB echoed and "gap G N MS" after each read that came G >= 200 ms
 * after the one before (N: bytes echoed by then, MS: since the start), and
 * at the end one JSON line on stdout: whether the
 * echo was complete and exact, and the longest gap between two reads (what
 * a user of the forwarded connection would see as a stall). Every wait is
 * bounded: the run gives up after 240 s. Exit 0 only if the echo was
 * complete and exact. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "tests/harness/pattern.h"

#define CHUNK (64 * 1024)
#define IN_FLIGHT (8u << 20) /* written and not yet echoed, at most */
#define PROGRESS_EVERY (4u << 20)
#define GIVE_UP_MS 240000
#define TICK_MS 10

typedef struct pump_s {
  uv_loop_t *loop;
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_timer_t tick, give_up;
  uint64_t total, written, echoed, mismatches, rate; /* rate: bytes per second, 0: unpaced */
  uint64_t started_ms, last_read_ms, max_gap_ms, next_progress;
  unsigned writes;
  int status;
  bool done;
  char rbuf[CHUNK];
} pump_t;

typedef struct wreq_s {
  uv_write_t req;
  pump_t *p;
  char data[CHUNK];
} wreq_t;

static void finish(pump_t *p, int status) {
  if (p->done) return;
  p->done = true;
  p->status = status;
  uv_timer_stop(&p->tick);
  uv_timer_stop(&p->give_up);
  uv_close((uv_handle_t *)&p->tick, NULL);
  uv_close((uv_handle_t *)&p->give_up, NULL);
  uv_close((uv_handle_t *)&p->tcp, NULL);
}

static void fill(pump_t *p);

static void on_written(uv_write_t *req, int status) {
  wreq_t *w = req->data;
  pump_t *p = w->p;
  free(w);
  p->writes--;
  if (status) {
    finish(p, status);
    return;
  }
  if (!p->done) fill(p);
}

/* Writes what the pace and the in-flight bound allow. */
static void fill(pump_t *p) {
  uint64_t now = uv_now(p->loop);
  while (!p->done && p->written < p->total && p->written - p->echoed < IN_FLIGHT &&
         p->writes < 64) {
    if (p->rate && p->written >= (now - p->started_ms) * p->rate / 1000 + CHUNK) break;
    size_t n = p->total - p->written < CHUNK ? (size_t)(p->total - p->written) : CHUNK;
    wreq_t *w = malloc(sizeof(*w));
    if (!w) {
      finish(p, UV_ENOMEM);
      return;
    }
    w->p = p;
    w->req.data = w;
    for (size_t off = 0; off < n;) {
      size_t avail;
      const uint8_t *src = kp_pattern_at(0, p->written + off, &avail);
      if (avail > n - off) avail = n - off;
      memcpy(w->data + off, src, avail);
      off += avail;
    }
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    int err = uv_write(&w->req, (uv_stream_t *)&p->tcp, &b, 1, on_written);
    if (err) {
      free(w);
      finish(p, err);
      return;
    }
    p->writes++;
    p->written += n;
  }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  pump_t *p = h->data;
  (void)hint;
  *buf = uv_buf_init(p->rbuf, sizeof(p->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  pump_t *p = s->data;
  if (n == 0) return;
  if (n < 0) {
    finish(p, p->echoed == p->total ? 0 : (int)n);
    return;
  }
  uint64_t now = uv_now(p->loop);
  uint64_t gap = now - p->last_read_ms;
  if (gap > p->max_gap_ms) p->max_gap_ms = gap;
  /* A stall worth naming: how long, and when it ended. */
  if (gap >= 200)
    fprintf(stderr, "gap %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", gap, p->echoed,
            now - p->started_ms);
  p->last_read_ms = now;
  p->mismatches += kp_pattern_mismatches(0, p->echoed, (const uint8_t *)buf->base, (size_t)n);
  p->echoed += (uint64_t)n;
  while (p->echoed >= p->next_progress) {
    fprintf(stderr, "progress %" PRIu64 " %" PRIu64 "\n", p->echoed, now - p->started_ms);
    p->next_progress += PROGRESS_EVERY;
  }
  if (p->echoed >= p->total) {
    finish(p, 0);
    return;
  }
  fill(p);
}

static void on_tick(uv_timer_t *t) {
  fill(t->data);
}

static void on_give_up(uv_timer_t *t) {
  finish(t->data, UV_ETIMEDOUT);
}

static void on_connect(uv_connect_t *req, int status) {
  pump_t *p = req->data;
  if (status) {
    finish(p, status);
    return;
  }
  uv_update_time(p->loop);
  p->started_ms = p->last_read_ms = uv_now(p->loop);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  fprintf(stderr, "start %lld.%03ld\n", (long long)ts.tv_sec, ts.tv_nsec / 1000000);
  uv_read_start((uv_stream_t *)&p->tcp, on_alloc, on_read);
  uv_timer_start(&p->tick, on_tick, TICK_MS, TICK_MS);
  fill(p);
}

int main(int argc, char **argv) {
  struct sockaddr_in addr;
  char host[64];
  const char *colon = argc >= 3 ? strrchr(argv[1], ':') : NULL;
  if (argc < 3 || argc > 4 || !colon || (size_t)(colon - argv[1]) >= sizeof(host)) {
    fprintf(stderr, "usage: tcp_pump ADDR:PORT BYTES [RATE_MBPS]\n");
    return 2;
  }
  memcpy(host, argv[1], (size_t)(colon - argv[1]));
  host[colon - argv[1]] = 0;
  if (uv_ip4_addr(host, atoi(colon + 1), &addr)) {
    fprintf(stderr, "tcp_pump: bad address %s\n", argv[1]);
    return 2;
  }
  pump_t p = {.total = strtoull(argv[2], NULL, 10), .next_progress = PROGRESS_EVERY};
  if (argc == 4) p.rate = strtoull(argv[3], NULL, 10) * 1000000;
  p.loop = uv_default_loop();
  uv_tcp_init(p.loop, &p.tcp);
  uv_tcp_nodelay(&p.tcp, 1);
  p.tcp.data = &p;
  uv_timer_init(p.loop, &p.tick);
  p.tick.data = &p;
  uv_timer_init(p.loop, &p.give_up);
  p.give_up.data = &p;
  uv_timer_start(&p.give_up, on_give_up, GIVE_UP_MS, 0);
  p.connect.data = &p;
  int err = uv_tcp_connect(&p.connect, &p.tcp, (const struct sockaddr *)&addr, on_connect);
  if (err) finish(&p, err);
  uv_run(p.loop, UV_RUN_DEFAULT);
  bool ok = !p.status && p.echoed == p.total && !p.mismatches;
  double secs = (double)(p.last_read_ms - p.started_ms) / 1000;
  printf("{\"ok\":%s,\"error\":\"%s\",\"bytes\":%" PRIu64 ",\"mismatches\":%" PRIu64
         ",\"max_stall_ms\":%" PRIu64 ",\"seconds\":%.2f}\n",
         ok ? "true" : "false", p.status ? uv_err_name(p.status) : "", p.echoed, p.mismatches,
         p.max_gap_ms, secs);
  uv_loop_close(p.loop);
  return ok ? 0 : 1;
}
