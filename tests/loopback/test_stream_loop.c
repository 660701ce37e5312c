/* SPDX-License-Identifier: MIT */
/* The data plane on real sockets: loopback, and loopback inside a network
 * namespace that drops datagrams at random (iptables statistic). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/harness/test.h"
#include "tests/loopback/xfer.h"

#define MIB (1024ull * 1024)

static void report(xfer_t *x, const char *what, uint64_t bytes, uint64_t ms) {
  kp_conn_stats_t st;
  kp_conn_stats(x->side[0].conn, &st);
  kp_endpoint_stats_t es, er;
  kp_endpoint_stats(x->side[0].ep, &es);
  kp_endpoint_stats(x->side[1].ep, &er);
  printf("%s: %.1f MB in %.2f s = %.0f MB/s; srtt %" PRIu64 " us, cwnd %" PRIu64
         ", mtu %u, lost %" PRIu64 ", cuts %" PRIu64 ", timeouts %" PRIu64 ", gso sends %" PRIu64
         ", gro %" PRIu64 "\n",
         what, (double)bytes / 1e6, (double)ms / 1e3, (double)bytes / 1e3 / (double)ms, st.srtt_us,
         st.cwnd, st.mtu, st.packets_lost, st.congestion_events, st.probe_timeouts, es.gso_sends,
         er.gro_receives);
}

/* 1 GiB one way, byte for byte. */
static void test_gigabyte(void) {
  xfer_t x;
  xfer_init(&x, "127.0.0.1:0", 0);
  xfer_open(&x, 0, 1024 * MIB);
  uint64_t t0 = kp_test_now_ms();
  KP_CHECK(xfer_run(&x, 120000));
  report(&x, "1 GiB", 1024 * MIB, kp_test_now_ms() - t0);
  xfer_finish(&x);
}

/* Loopback in a namespace of our own, dropping a share of UDP datagrams
 * at random. Loopback passes GSO batches whole, so iptables would see (and
 * drop) a 64 KiB batch as one packet; capping the device's GSO segments
 * at 1 makes the kernel split batches before the rule, as a real link
 * would before the wire: each datagram takes its own chance. */
static void lossy_gigabyte(double loss) {
  kp_test_enter_netns();
  KP_CHECK_EQ(kp_test_sh("ip link set dev lo gso_max_segs 1"), 0);
  KP_CHECK_EQ(kp_test_sh("iptables -A INPUT -i lo -p udp -m statistic --mode random "
                         "--probability %.3f -j DROP",
                         loss),
              0);
  xfer_t x;
  xfer_init(&x, "127.0.0.1:0", kp_cipher_preferred());
  xfer_open(&x, 0, 1024 * MIB);
  uint64_t t0 = kp_test_now_ms();
  KP_CHECK(xfer_run(&x, 400000));
  char what[32];
  snprintf(what, sizeof(what), "1 GiB, %.0f%% loss", loss * 100);
  report(&x, what, 1024 * MIB, kp_test_now_ms() - t0);
  kp_conn_stats_t st;
  kp_conn_stats(x.side[0].conn, &st);
  KP_CHECK(st.packets_lost > 0); /* the rule did bite */
  xfer_finish(&x);
}

static void test_loss_1_percent(void) {
  lossy_gigabyte(0.01);
}

static void test_loss_5_percent(void) {
  lossy_gigabyte(0.05);
}

/* ---- The API's promises ---------------------------------------------------- */

typedef struct {
  int read_status, write_status, writes_done, closed, drains;
  uint64_t read_bytes, reset_code;
  bool write_cb_inside_call;
} probe_t;

static bool in_call;

static void probe_read(kp_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  probe_t *p = kp_stream_get_data(s);
  (void)buf;
  if (nread > 0) {
    p->read_bytes += (uint64_t)nread;
  } else {
    KP_CHECK_EQ(p->read_status, 0); /* nothing after EOF or an error */
    p->read_status = (int)nread;
    if (nread == KP_ERESET) p->reset_code = kp_stream_reset_code(s);
  }
}

static void probe_write(kp_write_t *req, int status) {
  probe_t *p = req->data;
  if (in_call) p->write_cb_inside_call = true;
  p->writes_done++;
  if (status && !p->write_status) p->write_status = status;
}

static void probe_closed(kp_stream_t *s) {
  probe_t *p = kp_stream_get_data(s);
  p->closed++;
}

static void probe_drain(kp_stream_t *s) {
  probe_t *p = kp_stream_get_data(s);
  p->drains++;
}

static kp_stream_t *accepted[4];
static probe_t accepted_probe[4];
static unsigned accepted_count;

static void accept_stream(kp_conn_t *conn, kp_stream_t *s) {
  (void)conn;
  KP_CHECK(accepted_count < 4);
  kp_stream_set_data(s, &accepted_probe[accepted_count]);
  accepted[accepted_count++] = s;
  KP_CHECK_OK(kp_stream_read_start(s, probe_read));
}

typedef struct {
  uv_loop_t loop;
  kp_endpoint_t *ep[2];
  kp_conn_t *conn[2];
  int close_status[2];
  uint64_t close_code[2];
  bool over[2];
} duo_t;

static void duo_closed(kp_conn_t *conn, int status, uint64_t code) {
  duo_t *d = kp_conn_get_data(conn);
  int i = conn == d->conn[0] ? 0 : 1;
  d->over[i] = true;
  d->close_status[i] = status;
  d->close_code[i] = code;
}

static size_t duo_high_water;            /* 0: 64 KiB */
static kp_conn_datagram_cb duo_dgram[2]; /* each side's on_datagram (NULL: none) */

static void duo_open(duo_t *d, const char *bind, bool accept1, unsigned idle_ms) {
  memset(d, 0, sizeof(*d));
  memset(accepted_probe, 0, sizeof(accepted_probe));
  accepted_count = 0;
  KP_CHECK_OK(uv_loop_init(&d->loop));
  kp_addr_t addr[2];
  for (int i = 0; i < 2; i++) {
    KP_CHECK_OK(kp_endpoint_create(&d->loop, bind, &d->ep[i]));
    kp_endpoint_local_addr(d->ep[i], &addr[i]);
  }
  for (int i = 0; i < 2; i++) {
    kp_conn_options_t o;
    kp_conn_options_init(&o);
    o.initiator = i == 0;
    o.local_id = 7 + (uint64_t)i;
    o.remote_id = 8 - (uint64_t)i;
    memset(o.tx_key, 1 + i, 32);
    memset(o.rx_key, 2 - i, 32);
    o.remote = addr[1 - i];
    o.high_water = duo_high_water ? duo_high_water : 64 << 10;
    o.idle_timeout_ms = idle_ms;
    o.keepalive_ms = idle_ms / 3;
    kp_conn_callbacks_t cb = {i == 1 && accept1 ? accept_stream : NULL, duo_closed, NULL,
                              duo_dgram[i]};
    KP_CHECK_OK(kp_conn_open(d->ep[i], &o, &cb, &d->conn[i]));
    kp_conn_set_data(d->conn[i], d);
  }
}

static void run_until(uv_loop_t *loop, bool *flag, uint64_t ms) {
  uint64_t t0 = kp_test_now_ms();
  while (!*flag && kp_test_now_ms() - t0 < ms) uv_run(loop, UV_RUN_ONCE);
}

static void spin(uv_loop_t *loop, uint64_t ms) {
  uint64_t t0 = kp_test_now_ms();
  while (kp_test_now_ms() - t0 < ms) uv_run(loop, UV_RUN_NOWAIT);
}

static void duo_close(duo_t *d) {
  for (int i = 0; i < 2; i++) kp_endpoint_close(d->ep[i], NULL);
  for (unsigned i = 0; i < accepted_count; i++) kp_stream_close(accepted[i], NULL);
  uv_run(&d->loop, UV_RUN_DEFAULT);
  KP_CHECK_EQ(uv_loop_close(&d->loop), 0);
}

static uint8_t bytes[512 << 10];

/* Writes, backpressure, half-close, a lingering close, resets. */
static void test_api_streams(void) {
  duo_t d;
  duo_open(&d, "127.0.0.1:0", true, 30000);
  probe_t p0 = {0};
  kp_stream_t *s;
  KP_CHECK_OK(kp_stream_open(d.conn[0], &s));
  kp_stream_set_data(s, &p0);
  kp_stream_set_drain_cb(s, probe_drain);
  /* One write over the high-water mark: queued anyway, then not writable
   * until it drains. */
  kp_write_t w1 = {.data = &p0};
  uv_buf_t b = uv_buf_init((char *)bytes, sizeof(bytes));
  in_call = true;
  KP_CHECK_OK(kp_stream_write(&w1, s, &b, 1, probe_write));
  in_call = false;
  KP_CHECK(!kp_stream_is_writable(s));
  KP_CHECK_EQ(kp_stream_write_queue_size(s), sizeof(bytes));
  uint64_t t0 = kp_test_now_ms();
  while (!p0.drains && kp_test_now_ms() - t0 < 5000) uv_run(&d.loop, UV_RUN_ONCE);
  KP_CHECK_EQ(p0.drains, 1);
  KP_CHECK(kp_stream_is_writable(s));
  KP_CHECK(kp_stream_write_queue_size(s) <= (64 << 10) / 2);
  KP_CHECK_OK(kp_stream_end(s));
  kp_write_t w2 = {.data = &p0};
  KP_CHECK_EQ(kp_stream_write(&w2, s, &b, 1, probe_write), UV_EPIPE); /* after end */
  /* Close at once: what was written still arrives, and the close callback
   * comes after the write's. */
  kp_stream_close(s, probe_closed);
  bool done = false;
  t0 = kp_test_now_ms();
  while (!(done = accepted_count == 1 && accepted_probe[0].read_status == UV_EOF && p0.closed) &&
         kp_test_now_ms() - t0 < 5000)
    uv_run(&d.loop, UV_RUN_ONCE);
  KP_CHECK(done);
  KP_CHECK_EQ(accepted_probe[0].read_bytes, sizeof(bytes));
  KP_CHECK_EQ(p0.writes_done, 1);
  KP_CHECK_EQ(p0.write_status, 0);
  KP_CHECK(!p0.write_cb_inside_call);

  /* A reset: the peer's read fails with the code; our pending write fails
   * with UV_ECANCELED, from the loop, not from inside kp_stream_reset. */
  probe_t p1 = {0};
  KP_CHECK_OK(kp_stream_open(d.conn[0], &s));
  kp_stream_set_data(s, &p1);
  kp_write_t w3 = {.data = &p1};
  uv_buf_t many[64]; /* 32 MiB: still going when the reset comes */
  for (int i = 0; i < 64; i++) many[i] = b;
  KP_CHECK_OK(kp_stream_write(&w3, s, many, 64, probe_write));
  t0 = kp_test_now_ms();
  while (accepted_count < 2 && kp_test_now_ms() - t0 < 5000) uv_run(&d.loop, UV_RUN_ONCE);
  KP_CHECK_EQ(accepted_count, 2); /* the peer knows the stream */
  in_call = true;
  kp_stream_reset(s, 99);
  in_call = false;
  KP_CHECK_EQ(kp_stream_write(&w2, s, &b, 1, probe_write), UV_EPIPE);
  t0 = kp_test_now_ms();
  while ((accepted_count < 2 || !accepted_probe[1].read_status || !p1.writes_done) &&
         kp_test_now_ms() - t0 < 5000)
    uv_run(&d.loop, UV_RUN_ONCE);
  KP_CHECK_EQ(accepted_probe[1].read_status, KP_ERESET);
  KP_CHECK_EQ(accepted_probe[1].reset_code, 99);
  KP_CHECK_EQ(p1.write_status, UV_ECANCELED);
  KP_CHECK(!p1.write_cb_inside_call);
  kp_stream_close(s, NULL);

  /* The peer closes the connection with a code: our side hears it. */
  kp_conn_close(d.conn[1], 5);
  run_until(&d.loop, &d.over[0], 5000);
  KP_CHECK_ERR(d.close_status[0], KP_ECLOSED);
  KP_CHECK_EQ(d.close_code[0], 5);
  run_until(&d.loop, &d.over[1], 5000); /* after a short drain */
  KP_CHECK(d.over[1] && d.close_status[1] == 0);
  KP_CHECK_EQ(kp_stream_open(d.conn[0], &s), UV_EPIPE);
  duo_close(&d);
}

/* Writes are held until acknowledged, so the write queue's mark is never
 * below four congestion windows (else a long fat path would wait on its
 * own application): with a mark of one byte, 40 KiB of writes leave a new
 * connection (a 12 kB window) writable, and 64 KiB do not. */
static void test_api_high_water_cwnd(void) {
  duo_t d;
  duo_high_water = 1;
  duo_open(&d, "127.0.0.1:0", true, 30000);
  duo_high_water = 0;
  kp_stream_t *s;
  KP_CHECK_OK(kp_stream_open(d.conn[0], &s));
  probe_t p = {0};
  kp_stream_set_data(s, &p);
  kp_conn_stats_t st;
  kp_conn_stats(d.conn[0], &st);
  KP_CHECK_EQ(st.cwnd, 12000);
  kp_write_t w1 = {.data = &p}, w2 = {.data = &p};
  uv_buf_t b = uv_buf_init((char *)bytes, 40 << 10);
  KP_CHECK_OK(kp_stream_write(&w1, s, &b, 1, probe_write));
  KP_CHECK(kp_stream_is_writable(s));
  b.len = 24 << 10;
  KP_CHECK_OK(kp_stream_write(&w2, s, &b, 1, probe_write));
  KP_CHECK(!kp_stream_is_writable(s));
  uint64_t t0 = kp_test_now_ms();
  while (p.writes_done < 2 && kp_test_now_ms() - t0 < 5000) uv_run(&d.loop, UV_RUN_ONCE);
  KP_CHECK_EQ(p.writes_done, 2);
  KP_CHECK_EQ(p.write_status, 0);
  kp_stream_close(s, NULL);
  duo_close(&d);
}

/* Streams the peer does not accept are refused. */
static void test_api_refused(void) {
  duo_t d;
  duo_open(&d, "127.0.0.1:0", false, 1000);
  probe_t p = {0};
  kp_stream_t *s;
  KP_CHECK_OK(kp_stream_open(d.conn[0], &s));
  kp_stream_set_data(s, &p);
  KP_CHECK_OK(kp_stream_read_start(s, probe_read));
  kp_write_t w = {.data = &p};
  uv_buf_t b = uv_buf_init((char *)bytes, 1000);
  KP_CHECK_OK(kp_stream_write(&w, s, &b, 1, probe_write));
  uint64_t t0 = kp_test_now_ms();
  while ((!p.read_status || !p.writes_done) && kp_test_now_ms() - t0 < 5000)
    uv_run(&d.loop, UV_RUN_ONCE);
  KP_CHECK_EQ(p.read_status, KP_ERESET);
  KP_CHECK_EQ(p.reset_code, KP_STREAM_REFUSED);
  KP_CHECK_EQ(p.write_status, KP_ERESET);
  kp_stream_close(s, NULL);

  duo_close(&d);
}

/* A peer that stops answering is declared dead after the idle timeout:
 * here the "peer" is a socket nobody reads. */
static void test_api_dead_peer(void) {
  uv_loop_t loop;
  KP_CHECK_OK(uv_loop_init(&loop));
  int mute = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(sa);
  KP_CHECK(bind(mute, (struct sockaddr *)&sa, sizeof(sa)) == 0);
  KP_CHECK(getsockname(mute, (struct sockaddr *)&sa, &len) == 0);
  kp_endpoint_t *ep;
  KP_CHECK_OK(kp_endpoint_create(&loop, "127.0.0.1:0", &ep));
  duo_t d; /* for its close callback */
  memset(&d, 0, sizeof(d));
  kp_conn_options_t o;
  kp_conn_options_init(&o);
  o.initiator = true;
  o.local_id = 1;
  o.remote_id = 2;
  kp_addr_parse(&o.remote, "127.0.0.1:0");
  o.remote.port = ntohs(sa.sin_port);
  o.idle_timeout_ms = 1000;
  kp_conn_callbacks_t cb = {NULL, duo_closed, NULL, NULL};
  /* The idle clock starts when the connection is made. */
  uint64_t t0 = kp_test_now_ms();
  KP_CHECK_OK(kp_conn_open(ep, &o, &cb, &d.conn[0]));
  kp_conn_set_data(d.conn[0], &d);
  probe_t p = {0};
  kp_stream_t *s;
  KP_CHECK_OK(kp_stream_open(d.conn[0], &s));
  kp_stream_set_data(s, &p);
  KP_CHECK_OK(kp_stream_read_start(s, probe_read));
  kp_write_t w = {.data = &p};
  uv_buf_t b = uv_buf_init((char *)bytes, 1000);
  KP_CHECK_OK(kp_stream_write(&w, s, &b, 1, probe_write));
  run_until(&loop, &d.over[0], 5000);
  uint64_t took = kp_test_now_ms() - t0;
  printf("dead after %" PRIu64 " ms (idle timeout 1000 ms)\n", took);
  KP_CHECK(d.over[0]);
  KP_CHECK_ERR(d.close_status[0], KP_EPEERDEAD);
  /* Not before the timeout; after it by no more than a loaded machine's
   * scheduling delays. */
  KP_CHECK(took >= 1000 && took < 3000);
  KP_CHECK_ERR(p.read_status, KP_EPEERDEAD);
  KP_CHECK_ERR(p.write_status, KP_EPEERDEAD);
  kp_stream_close(s, NULL);
  kp_endpoint_close(ep, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  KP_CHECK_EQ(uv_loop_close(&loop), 0);
  close(mute);
}

/* Datagrams that are not ours are counted and dropped. */
static void test_api_stray_datagrams(void) {
  duo_t d;
  duo_open(&d, "127.0.0.1:0", true, 30000);
  int raw = socket(AF_INET, SOCK_DGRAM, 0);
  kp_addr_t to;
  kp_endpoint_local_addr(d.ep[1], &to);
  struct sockaddr_in sa = {
      .sin_family = AF_INET, .sin_port = htons(to.port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  uint8_t junk[64];
  memset(junk, 0x41, sizeof(junk)); /* a stream packet for connection 0x4141... */
  KP_CHECK(sendto(raw, junk, sizeof(junk), 0, (struct sockaddr *)&sa, sizeof(sa)) > 0);
  junk[1] = 0; /* ... and for connection 8, which exists: fails authentication */
  memset(junk + 2, 0, 7);
  junk[9] = 8;
  KP_CHECK(sendto(raw, junk, sizeof(junk), 0, (struct sockaddr *)&sa, sizeof(sa)) > 0);
  KP_CHECK(sendto(raw, "hello", 5, 0, (struct sockaddr *)&sa, sizeof(sa)) > 0);
  close(raw);
  spin(&d.loop, 50);
  kp_endpoint_stats_t st;
  kp_endpoint_stats(d.ep[1], &st);
  KP_CHECK_EQ(st.drops_unknown, 1);
  KP_CHECK_EQ(st.drops_other, 1);
  kp_conn_stats_t cs;
  kp_conn_stats(d.conn[1], &cs);
  KP_CHECK_EQ(cs.auth_failures, 1);
  duo_close(&d);
}

/* Closing the endpoint from inside its own callbacks: a write callback
 * (the state machine is mid-ack) and a stream's close callback. */
static kp_endpoint_t *close_target;
static int close_calls;

static void write_then_close(kp_write_t *req, int status) {
  (void)req, (void)status;
  close_calls++;
  kp_endpoint_close(close_target, NULL);
}

static void closed_then_close(kp_stream_t *s) {
  (void)s;
  close_calls++;
  kp_endpoint_close(close_target, NULL);
}

static void test_api_close_from_callbacks(void) {
  for (int round = 0; round < 2; round++) {
    duo_t d;
    duo_open(&d, "127.0.0.1:0", true, 30000);
    close_target = d.ep[0];
    close_calls = 0;
    kp_stream_t *s;
    KP_CHECK_OK(kp_stream_open(d.conn[0], &s));
    kp_write_t w = {0};
    uv_buf_t b = uv_buf_init((char *)bytes, sizeof(bytes));
    KP_CHECK_OK(kp_stream_write(&w, s, &b, 1, round == 0 ? write_then_close : NULL));
    if (round == 1) {
      spin(&d.loop, 20);
      kp_stream_close(s, closed_then_close);
    }
    uint64_t t0 = kp_test_now_ms();
    while (!close_calls && kp_test_now_ms() - t0 < 5000) uv_run(&d.loop, UV_RUN_ONCE);
    KP_CHECK_EQ(close_calls, 1);
    spin(&d.loop, 20);
    KP_CHECK(d.over[0]);
    KP_CHECK_ERR(d.close_status[0], UV_ECANCELED);
    if (round == 0) kp_stream_close(s, NULL);
    /* ep[0] is closed (and gone once the loop has run): the rest. */
    kp_endpoint_close(d.ep[1], NULL);
    for (unsigned i = 0; i < accepted_count; i++) kp_stream_close(accepted[i], NULL);
    uv_run(&d.loop, UV_RUN_DEFAULT);
    KP_CHECK_EQ(uv_loop_close(&d.loop), 0);
  }
}

/* IPv6 loopback. */
static void test_ipv6(void) {
  xfer_t x;
  xfer_init(&x, "[::1]:0", 0);
  x.side[1].reply_total = 16 * MIB;
  xfer_open(&x, 0, 16 * MIB);
  xfer_open(&x, 0, 16 * MIB);
  KP_CHECK(xfer_run(&x, 60000));
  xfer_finish(&x);
}

/* ---- Datagrams --------------------------------------------------------------------------- */

static unsigned dgram_back, dgram_bad;

static void dgram_echo(kp_conn_t *conn, const uint8_t *data, size_t len) {
  KP_CHECK_OK(kp_conn_datagram_send(conn, data, len));
}

static void dgram_check(kp_conn_t *conn, const uint8_t *data, size_t len) {
  (void)conn;
  for (size_t i = 0; i < len; i++)
    if (data[i] != (uint8_t)(len + i)) dgram_bad++;
  dgram_back++;
}

static bool dgrams_done(void *ctx) {
  return dgram_back >= *(unsigned *)ctx;
}

/* The public datagram API on real sockets: 2000 datagrams of every size
 * up to the limit echoed back byte-exact, at most 128 unanswered (the echo
 * sends each back at once, and both queues hold 256); the limit grows once
 * the path MTU is probed; past it, and after the close, sends are
 * refused. */
static void test_api_datagrams(void) {
  duo_dgram[0] = dgram_check;
  duo_dgram[1] = dgram_echo;
  dgram_back = dgram_bad = 0;
  duo_t d;
  duo_open(&d, "127.0.0.1:0", false, 30000);
  duo_dgram[0] = duo_dgram[1] = NULL;
  KP_CHECK_EQ(kp_conn_datagram_max(d.conn[0]), 1078);
  uint8_t buf[1400];
  KP_CHECK_EQ(kp_conn_datagram_send(d.conn[0], buf, 1079), UV_EMSGSIZE);
  unsigned sent = 0, want = 2000;
  uint64_t t0 = kp_test_now_ms();
  while (sent < want && kp_test_now_ms() - t0 < 20000) {
    size_t len = 1 + sent % 1078;
    for (size_t i = 0; i < len; i++) buf[i] = (uint8_t)(len + i);
    if (sent - dgram_back >= 128) {
      uv_run(&d.loop, UV_RUN_ONCE);
      continue;
    }
    KP_CHECK_OK(kp_conn_datagram_send(d.conn[0], buf, len));
    sent++;
    if (sent % 64 == 0) uv_run(&d.loop, UV_RUN_NOWAIT);
  }
  while (!dgrams_done(&want) && kp_test_now_ms() - t0 < 20000) uv_run(&d.loop, UV_RUN_ONCE);
  kp_conn_stats_t st;
  kp_conn_stats(d.conn[0], &st);
  printf("%u datagrams sent, %u back (%u bytes wrong); %" PRIu64 " lost, %" PRIu64
         " dropped; the limit now %zu bytes\n",
         sent, dgram_back, dgram_bad, st.datagrams_lost, st.datagrams_dropped,
         kp_conn_datagram_max(d.conn[0]));
  KP_CHECK_EQ(dgram_back, want);
  KP_CHECK_EQ(dgram_bad, 0);
  KP_CHECK_EQ(st.datagrams_sent, want);
  KP_CHECK_EQ(st.datagrams_received, want);
  /* Loopback carries 1472-byte datagrams: probing found them. */
  KP_CHECK_EQ(kp_conn_datagram_max(d.conn[0]), 1350);
  KP_CHECK_OK(kp_conn_datagram_send(d.conn[0], buf, 1350));
  kp_conn_close(d.conn[0], 0);
  KP_CHECK_EQ(kp_conn_datagram_send(d.conn[0], buf, 10), UV_EPIPE);
  duo_close(&d);
}

static const kp_test_case_t cases[] = {
    KP_CASE(gigabyte, loopback, 240),
    KP_CASE(loss_1_percent, loopback, 300),
    KP_CASE(loss_5_percent, loopback, 480),
    KP_CASE(api_streams, loopback, 30),
    KP_CASE(api_refused, loopback, 30),
    KP_CASE(api_dead_peer, loopback, 30),
    KP_CASE(api_stray_datagrams, loopback, 30),
    KP_CASE(ipv6, loopback, 60),
    KP_CASE(api_close_from_callbacks, loopback, 30),
    KP_CASE(api_high_water_cwnd, loopback, 30),
    KP_CASE(api_datagrams, loopback, 30),
};
KP_TEST_MAIN(cases)
