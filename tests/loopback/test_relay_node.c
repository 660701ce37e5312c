/* SPDX-License-Identifier: MIT */
/* A relay as a node runs it (node/node_relay*.c), on loopback: its TCP
 * port under a peer that sends and never reads, and which relay records
 * the DHT stores. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "node/testnet.h"
#include "relay/uv/tunnel.h"
#include "tests/harness/test.h"
#include "tests/loopback/test_node.h"
#include "tests/loopback/testnet_up.h"
#include "tests/unit/test_relay.h"

static long rss_kib(int pid) {
  char path[64], line[256];
  snprintf(path, sizeof(path), "/proc/%d/status", pid);
  FILE *f = fopen(path, "r");
  KP_CHECK(f != NULL);
  long v = -1;
  while (fgets(line, sizeof(line), f))
    if (!strncmp(line, "VmRSS:", 6)) v = atol(line + 6);
  fclose(f);
  return v;
}

/* 100 MiB of OPEN frames for a channel that is already open, each of which
 * makes the relay answer REFUSED, from a link that never reads a byte. The
 * relay stops reading that link once its answers back up, closes it when
 * they stay unread, and its memory does not grow meanwhile. */
void test_tcp_control_flood_bounded(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_t tn;
  kp_test_testnet_up(&loop, 4, 10000, &tn);
  int port = kp_test_free_udp_port();
  char bind[64];
  snprintf(bind, sizeof(bind), "127.0.0.1:%d", port);
  const char *argv[] = {KP_BINARY,    "relay",   "--bind", bind, "--bootstrap",
                        tn.bootstrap, "--every", "1",      NULL};
  kp_test_child_t *relay = kp_test_spawn(&loop, argv);
  KP_CHECK(kp_test_child_wait_output(&loop, relay, "relaying on", 10000));
  int pid = kp_test_child_pid(relay);
  long rss0 = rss_kib(pid);

  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int small = 4096;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)); /* reads nothing anyway */
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  KP_CHECK_EQ(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  fcntl(fd, F_SETFL, O_NONBLOCK);
  static uint8_t chunk[64 * 1024];
  size_t n = 0, frame = 0;
  kp_tunnel_frame_t f = {.type = KP_TUNNEL_OPEN, .channel = 0};
  while (n + KP_TUNNEL_FRAME_HEAD <= sizeof(chunk))
    n += frame = kp_tunnel_frame_encode(&f, chunk + n);
  size_t total = 0, goal = 100u << 20;
  uint64_t t0 = kp_test_now_ms(), last_progress = t0;
  bool closed = false;
  long rss_max = rss0;
  while (total < goal && !closed && kp_test_now_ms() - t0 < 60000) {
    ssize_t w = write(fd, chunk, n);
    if (w > 0) {
      total += (size_t)w;
      last_progress = kp_test_now_ms();
    } else if (w < 0 && (errno == EPIPE || errno == ECONNRESET)) {
      closed = true;
    } else {
      /* Blocked: the relay stopped reading us. Let it run its second. */
      struct pollfd p = {.fd = fd, .events = POLLOUT};
      poll(&p, 1, 100);
      uv_run(&loop, UV_RUN_NOWAIT);
      if (kp_test_now_ms() - last_progress > 15000) break;
    }
    long rss = rss_kib(pid);
    if (rss > rss_max) rss_max = rss;
  }
  /* Closed by now if not before: it has left its answers unread for over
   * ten seconds. */
  char buf[1];
  for (int i = 0; i < 30 && !closed; i++) {
    uv_run(&loop, UV_RUN_NOWAIT);
    ssize_t w = write(fd, chunk, frame);
    if (w < 0 && (errno == EPIPE || errno == ECONNRESET)) closed = true;
    if (!closed && recv(fd, buf, 1, MSG_DONTWAIT | MSG_PEEK) == 0) closed = true;
    if (!closed) usleep(500 * 1000);
    long rss = rss_kib(pid);
    if (rss > rss_max) rss_max = rss;
  }
  printf("control flood: %zu MiB written in %.1f s, link %s; relay RSS %ld KiB at start, max %ld "
         "KiB\n",
         total >> 20, (double)(kp_test_now_ms() - t0) / 1000, closed ? "closed" : "open", rss0,
         rss_max);
  KP_CHECK(closed);
  KP_CHECK_MSG(rss_max - rss0 < 8 * 1024, "the relay grew %ld KiB", rss_max - rss0);
  KP_CHECK_MSG(kp_test_child_wait_output(&loop, relay, "1 closed unread", 5000), "%s",
               kp_test_child_stdout(relay));
  close(fd);
  KP_CHECK_EQ(kp_test_child_stop(&loop, relay, 10000), 0);
  kp_testnet_destroy(&tn);
  kp_test_check_loop_closes(&loop);
}

typedef struct found_s {
  kp_addr_t addrs[8];
  size_t count;
  bool done;
  int status;
  unsigned stored;
  bool announced;
} found_t;

static void on_record(kp_node_t *node, const kp_record_t *rec, void *arg) {
  found_t *f = arg;
  char text[KP_ADDR_STRLEN];
  (void)node;
  if (f->count < 8 && rec->data_len < sizeof(text)) {
    memcpy(text, rec->data, rec->data_len);
    text[rec->data_len] = '\0';
    if (!kp_addr_parse(&f->addrs[f->count], text)) f->count++;
  }
}

static void on_lookup_done(kp_node_t *node, int status, size_t found,
                           const kp_node_query_stats_t *stats, void *arg) {
  found_t *f = arg;
  (void)node, (void)found, (void)stats;
  f->status = status;
  f->done = true;
}

static void on_announced(kp_announce_t *a, int status, unsigned stored) {
  found_t *f = kp_announce_get_data(a);
  f->status = status;
  f->stored = stored;
  f->announced = true;
}

static bool lookup_done(void *arg) {
  return ((found_t *)arg)->done;
}

static bool announce_done(void *arg) {
  return ((found_t *)arg)->announced;
}

static void relay_records(uv_loop_t *loop, kp_node_t *from, found_t *f) {
  uint8_t target[KP_ID_LEN];
  static const char topic[] = "kadpunch/relays/v1";
  kp_target_from_topic(topic, sizeof(topic) - 1, target);
  memset(f, 0, sizeof(*f));
  KP_CHECK_OK(kp_node_lookup(from, target, on_record, on_lookup_done, f));
  kp_testnet_run_until(loop, lookup_done, f, 10000);
  KP_CHECK(f->done);
}

/* A relay record names the address that announced it, or no node stores
 * it: nobody can steer peers' pairing at an address that never offered to
 * relay. A real relay's record is found. */
void test_record_origin_checked(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_t tn;
  kp_test_testnet_up(&loop, 12, 20000, &tn);
  /* A node that is no relay announces one at a victim's address. */
  kp_node_t *liar = tn.nodes[5];
  kp_addr_t victim;
  kp_node_local_addr(tn.nodes[7], &victim);
  char text[KP_ADDR_STRLEN];
  kp_addr_format(&victim, text, sizeof(text));
  uint8_t target[KP_ID_LEN];
  static const char topic[] = "kadpunch/relays/v1";
  kp_target_from_topic(topic, sizeof(topic) - 1, target);
  kp_keypair_t kp;
  kp_keypair_generate(&kp);
  found_t f = {0};
  kp_announce_t *a;
  KP_CHECK_OK(kp_node_announce(liar, target, &kp, text, strlen(text), on_announced, &a));
  kp_announce_set_data(a, &f);
  kp_testnet_run_until(&loop, announce_done, &f, 10000);
  printf("a record naming another address: %s, stored by %u nodes\n", kp_err_name(f.status),
         f.stored);
  KP_CHECK(f.announced && f.stored == 0);
  kp_announce_stop(a, false);
  found_t got;
  relay_records(&loop, tn.nodes[2], &got);
  KP_CHECK_EQ(got.count, 0);

  /* A real relay: its own address, announced from it. */
  kp_node_options_t o;
  kp_node_options_init(&o);
  char port[32];
  snprintf(port, sizeof(port), "127.0.0.1:%d", kp_testnet_free_port());
  const char *boot = tn.bootstrap;
  o.bind = port;
  o.bootstrap = &boot;
  o.bootstrap_count = 1;
  o.mode = KP_NODE_MEMBER;
  o.relay = true;
  kp_node_t *relay;
  KP_CHECK_OK(kp_node_create(&loop, &o, &relay));
  kp_addr_t ra;
  kp_node_local_addr(relay, &ra);
  uint64_t t0 = kp_test_now_ms();
  do {
    kp_testnet_run_until(&loop, NULL, NULL, 500);
    relay_records(&loop, tn.nodes[2], &got);
  } while (got.count == 0 && kp_test_now_ms() - t0 < 20000);
  KP_CHECK_EQ(got.count, 1);
  KP_CHECK(kp_addr_eq(&got.addrs[0], &ra));
  kp_node_close(relay, NULL);
  kp_testnet_destroy(&tn);
  kp_test_check_loop_closes(&loop);
}
