/* SPDX-License-Identifier: MIT */
/* A flood of handshake messages at a server (`kadpunch serve`, its own
 * process, so its descriptors and memory can be read from /proc): 10000
 * datagrams per second for 10 s from 256 source addresses, a mix of valid
 * hellos under fresh keys (one in ten, one in three the first second; each
 * a real session if the server let it), undecryptable ones and replays. The server's descriptor
 * count must not move, its memory must stay flat once its fixed tables are touched, and a
 * legitimate client must still connect in the middle of it. */
#include <inttypes.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dht/dht_msg.h"
#include "holepunch/hs_msg.h"
#include "holepunch/hs_noise.h"
#include "node/node_internal.h"
#include "node/testnet.h"
#include "tests/harness/test.h"
#include "tests/loopback/test_node.h"
#include "tests/loopback/testnet_up.h"

#define SOURCES 256
/* Datagrams per second. Under AddressSanitizer the server's crypto runs
 * three to four times slower and the machine may be shared: a third of
 * the rate, the same mix (that build checks memory, not capacity). */
#if defined(__SANITIZE_ADDRESS__)
#define RATE 3000
#else
#define RATE 10000
#endif
#define VALID_EVERY 10 /* one datagram in ten is a valid hello under a fresh key */
#define FLOOD_MS 10000
/* The first second, one in three: the server's admission passes a fixed
 * number of hellos per second to its crypto, and this many valid ones
 * fill every session slot (and so make the table's pages resident) well
 * before the half-way mark, however loaded the machine. */
#define PREFILL_MS 1000
#define PREFILL_EVERY 3
#define VALID_COUNT                                                                                \
  (RATE / PREFILL_EVERY * PREFILL_MS / 1000 + RATE / VALID_EVERY * (FLOOD_MS / 1000 + 2))

typedef struct flood_s {
  int fds[SOURCES];
  struct sockaddr_in server;
  uint8_t target[KP_ID_LEN];
  uint8_t server_key[KP_PUBLIC_KEY_LEN];
  uint8_t replay[1400];
  size_t replay_len;
  /* Made before the flood, so sending them costs only the sending. */
  uint8_t (*hellos)[600];
  uint16_t *hello_len;
  size_t hello_next;
  uint64_t sent, delivered, valid, start;
  uv_timer_t timer;
} flood_t;

static size_t frame(flood_t *f, const uint8_t *data, size_t len, uint8_t *out, size_t cap) {
  uint8_t val[1024];
  size_t vlen, n;
  kp_hs_wire_t w = {.mode = KP_HS_FROM_CLIENT, .data = data, .len = len};
  KP_CHECK_OK(kp_hs_wire_encode(&w, val, sizeof(val), &vlen));
  kp_dht_msg_t m = {.type = KP_DHT_REQUEST,
                    .tid = (uint16_t)f->sent,
                    .command = KP_DHT_CMD_PEER_HANDSHAKE,
                    .has_target = true,
                    .value = val,
                    .value_len = vlen};
  kp_addr_from_sockaddr(&m.to, (const struct sockaddr *)&f->server);
  memcpy(m.target, f->target, KP_ID_LEN);
  KP_CHECK_OK(kp_dht_msg_encode(&m, out, cap, &n));
  return n;
}

/* A hello a real client would send, from a key made up on the spot. */
static size_t valid_hello(flood_t *f, uint8_t *out, size_t cap) {
  kp_keypair_t kp;
  kp_keypair_generate(&kp);
  kp_hs_hello_t h = {.version = KP_HS_VERSION,
                     .nat = KP_NAT_CONSISTENT,
                     .conn_id = f->sent + 1,
                     .ciphers = 1,
                     .timestamp = kp__node_wall_ms(NULL)};
  memcpy(h.client_key, kp.public_key, KP_PUBLIC_KEY_LEN);
  uint8_t payload[KP_HS_PAYLOAD_MAX], msg[KP_HS_MAX_DATA], e[32];
  size_t plen, mlen;
  kp_noise_t st;
  randombytes_buf(e, sizeof(e));
  KP_CHECK_OK(kp_hs_hello_encode(&h, payload, sizeof(payload), &plen));
  KP_CHECK_OK(kp_noise_init_initiator(&st, &kp, f->server_key,
                                      (const uint8_t *)"kadpunch/handshake/v1", 21));
  KP_CHECK_OK(kp_noise_write_msg1(&st, e, payload, plen, msg, sizeof(msg), &mlen));
  kp_noise_clear(&st);
  return frame(f, msg, mlen, out, cap);
}

static void on_flood_tick(uv_timer_t *t) {
  flood_t *f = t->data;
  uint8_t pkt[1400];
  /* Catch up with the clock, whatever the timer's jitter. */
  uint64_t due = (uv_now(t->loop) - f->start) * RATE / 1000;
  unsigned n = due > f->sent ? (unsigned)(due - f->sent) : 0;
  for (unsigned i = 0; i < n && i < RATE / 10; i++) {
    size_t len;
    bool prefill = f->sent < (uint64_t)RATE * PREFILL_MS / 1000;
    unsigned kind = f->sent % (prefill ? PREFILL_EVERY : VALID_EVERY);
    if (kind == 0 && f->hello_next < VALID_COUNT) {
      len = f->hello_len[f->hello_next];
      memcpy(pkt, f->hellos[f->hello_next++], len);
      f->valid++;
      if (!f->replay_len) memcpy(f->replay, pkt, f->replay_len = len);
    } else if (kind % 3 == 1 && f->replay_len) {
      memcpy(pkt, f->replay, len = f->replay_len);
    } else {
      uint8_t junk[120];
      randombytes_buf(junk, sizeof(junk));
      len = frame(f, junk, sizeof(junk), pkt, sizeof(pkt));
    }
    int fd = f->fds[f->sent % SOURCES];
    if (sendto(fd, pkt, len, 0, (struct sockaddr *)&f->server, sizeof(f->server)) > 0)
      f->delivered++;
    f->sent++;
  }
}

static long proc_value(int pid, const char *what) {
  char cmd[160], out[64];
  if (!strcmp(what, "fds"))
    snprintf(cmd, sizeof(cmd), "ls /proc/%d/fd | wc -l", pid);
  else
    snprintf(cmd, sizeof(cmd), "awk '/^VmRSS/ {print $2}' /proc/%d/status", pid);
  FILE *p = popen(cmd, "r");
  KP_CHECK(p != NULL);
  long v = fgets(out, sizeof(out), p) ? atol(out) : -1;
  pclose(p);
  return v;
}

void test_handshake_flood(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_t tn;
  kp_test_testnet_up(&loop, 20, 20000, &tn);
  char boot[64], dir[] = "/tmp/kp-flood-XXXXXX", skey[256], sbind[64], out[8192];
  snprintf(boot, sizeof(boot), "%s", tn.bootstrap);
  KP_CHECK(mkdtemp(dir) != NULL);
  snprintf(skey, sizeof(skey), "%s/server", dir);
  char spk[KP_KEY_TEXT_LEN + 1];
  kp_test_keygen(&loop, skey, spk);
  int port = kp_test_free_udp_port();
  snprintf(sbind, sizeof(sbind), "127.0.0.1:%d", port);
  const char *serve[] = {KP_BINARY, "serve",       "--key", skey, "--bind",
                         sbind,     "--bootstrap", boot,    NULL};
  kp_test_child_t *server = kp_test_spawn(&loop, serve);
  KP_CHECK(kp_test_child_wait_output(&loop, server, "serving", 10000));
  kp_testnet_run_until(&loop, NULL, NULL, 1000);
  int pid = kp_test_child_pid(server);

  flood_t *f = calloc(1, sizeof(*f));
  f->server = (struct sockaddr_in){.sin_family = AF_INET,
                                   .sin_port = htons((uint16_t)port),
                                   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  KP_CHECK_OK(kp_key_from_text(spk, f->server_key));
  kp_target_from_key(f->server_key, f->target);
  for (int i = 0; i < SOURCES; i++) {
    /* 127.1.0.1 ... : as many "attackers", each under the per-IP rates. */
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(0x7f010000u + 1 + (uint32_t)i)};
    f->fds[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    KP_CHECK(f->fds[i] >= 0 && bind(f->fds[i], (struct sockaddr *)&a, sizeof(a)) == 0);
  }
  /* A first connection before the flood: the server's connection
   * endpoint (and its timer descriptor) exists from then on. */
  char cbind[] = "127.0.0.77:0";
  const char *connect[] = {KP_BINARY, "connect",     spk,  "--bind", cbind,
                           "--json",  "--bootstrap", boot, NULL};
  KP_CHECK_EQ(kp_test_run_cli(&loop, connect, out, sizeof(out), 30000), 0);
  f->hellos = malloc(VALID_COUNT * sizeof(*f->hellos));
  f->hello_len = malloc(VALID_COUNT * sizeof(*f->hello_len));
  for (size_t i = 0; i < VALID_COUNT; i++) {
    f->hello_len[i] = (uint16_t)valid_hello(f, f->hellos[i], sizeof(f->hellos[i]));
    f->sent++; /* distinct tids and conn ids */
  }
  f->sent = 0;
  long fds0 = proc_value(pid, "fds"), rss0 = proc_value(pid, "rss");
  uv_timer_init(&loop, &f->timer);
  f->timer.data = f;
  /* The loop's clock stood still while the hellos were made (seconds of
   * X25519): from a stale start the first ticks would catch up in a burst
   * of tens of thousands of datagrams, not flood at RATE. */
  uv_update_time(&loop);
  f->start = uv_now(&loop);
  uv_timer_start(&f->timer, on_flood_tick, 0, 5);
  uint64_t t0 = f->start;
  /* The server's fixed tables (1024 session slots, the rate counters) fill
   * in the first seconds and their pages become resident; after that its
   * memory must not move at all. */
  long rss_half = 0, fds_max = fds0, rss_max = rss0, rss_max_late = 0;
  bool connected = false;
  while (uv_now(&loop) - t0 < FLOOD_MS) {
    kp_testnet_run_until(&loop, NULL, NULL, 1000);
    long fds = proc_value(pid, "fds"), rss = proc_value(pid, "rss");
    if (fds > fds_max) fds_max = fds;
    if (rss > rss_max) rss_max = rss;
    /* The half-way mark comes after the client's connection, whose state
     * the server keeps: from there on nothing may grow. */
    if (!rss_half && connected && uv_now(&loop) - t0 >= FLOOD_MS / 2) rss_half = rss;
    if (rss_half && rss > rss_max_late) rss_max_late = rss;
    if (!connected && uv_now(&loop) - t0 > FLOOD_MS * 3 / 10) {
      /* In the thick of it: a real client still gets through. */
      int rc = kp_test_run_cli(&loop, connect, out, sizeof(out), 30000);
      KP_CHECK_MSG(rc == 0, "%s", out);
      KP_CHECK_MSG(strstr(out, "\"ok\":true"), "%s", out);
      connected = true;
    }
  }
  uv_timer_stop(&f->timer);
  double secs = (double)(uv_now(&loop) - t0) / 1000.0;
  printf("flood: %" PRIu64 " datagrams in %.1f s (%.0f/s, %" PRIu64
         " valid hellos); server fds %ld -> max %ld, RSS %ld KiB at start, %ld KiB half way, "
         "max %ld KiB\n",
         f->delivered, secs, (double)f->delivered / secs, f->valid, fds0, fds_max, rss0, rss_half,
         rss_max);
  KP_CHECK(connected);
  KP_CHECK((double)f->delivered / secs > RATE * 0.95);
  KP_CHECK_EQ(fds_max, fds0);
  /* Bounded by the fixed tables, and flat in the second half (allocator
   * noise aside). Under AddressSanitizer every free goes to a 256 MB
   * quarantine first, so memory is judged in the normal build only. */
#if !defined(__SANITIZE_ADDRESS__)
  KP_CHECK_MSG(rss_max - rss0 < 4096, "RSS grew %ld KiB during the flood", rss_max - rss0);
  KP_CHECK_MSG(rss_max_late - rss_half < 256, "RSS grew %ld KiB in the second half",
               rss_max_late - rss_half);
#endif
  KP_CHECK_EQ(kp_test_child_stop(&loop, server, 10000), 0);
  for (int i = 0; i < SOURCES; i++) close(f->fds[i]);
  uv_close((uv_handle_t *)&f->timer, NULL);
  kp_testnet_destroy(&tn);
  kp_test_check_loop_closes(&loop);
  free(f->hellos);
  free(f->hello_len);
  free(f);
  kp_test_sh("rm -rf %s", dir);
}
