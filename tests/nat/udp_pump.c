/* SPDX-License-Identifier: MIT */
/* udp_pump ADDR:PORT COUNT [SIZE [WINDOW [TIMEOUT_MS]]]: sends COUNT
 * datagrams of SIZE bytes (default 200) to a UDP echo (directly, or
 * through `kadpunch connect --listen-udp`), at most WINDOW (default 64)
 * unanswered at once, and reports what came back: one line
 *
 *   sent N received R lost L reordered O duplicates D rtt_us p50 A p99 B max C rate R/s
 *
 * A datagram is lost when its answer has not come 1 s after it left (the
 * window then moves on). Each carries its sequence number and is checked
 * byte for byte. Exits 0 when every datagram came back, 1 otherwise, 2 on
 * bad arguments; the whole run is bounded by TIMEOUT_MS (default 60000). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LOSS_US 1000000ull

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static int parse_addr(const char *text, struct sockaddr_storage *ss, socklen_t *len) {
  char host[128];
  const char *colon = strrchr(text, ':');
  if (!colon || (size_t)(colon - text) >= sizeof(host)) return -1;
  memcpy(host, text, (size_t)(colon - text));
  host[colon - text] = '\0';
  int port = atoi(colon + 1);
  memset(ss, 0, sizeof(*ss));
  struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
  char *h = host;
  if (h[0] == '[') {
    h++;
    h[strlen(h) - 1] = '\0';
  }
  if (inet_pton(AF_INET, h, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    *len = sizeof(*a4);
    return 0;
  }
  if (inet_pton(AF_INET6, h, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)port);
    *len = sizeof(*a6);
    return 0;
  }
  return -1;
}

static void fill(uint8_t *buf, size_t size, uint64_t seq) {
  for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(seq >> (56 - 8 * i));
  for (size_t i = 8; i < size; i++) buf[i] = (uint8_t)(seq * 31 + i);
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  struct sockaddr_storage to;
  socklen_t tolen;
  if (argc < 3 || parse_addr(argv[1], &to, &tolen)) {
    fprintf(stderr, "usage: udp_pump ADDR:PORT COUNT [SIZE [WINDOW [TIMEOUT_MS]]]\n");
    return 2;
  }
  uint64_t count = strtoull(argv[2], NULL, 10);
  size_t size = argc > 3 ? (size_t)atoi(argv[3]) : 200;
  uint64_t window = argc > 4 ? strtoull(argv[4], NULL, 10) : 64;
  uint64_t limit_us = (argc > 5 ? strtoull(argv[5], NULL, 10) : 60000) * 1000;
  if (!count || count > 10000000 || size < 8 || size > 65000 || !window) return 2;
  int fd = socket(to.ss_family, SOCK_DGRAM, 0);
  /* Room for a whole window of answers: a small datagram takes most of a
   * kilobyte of the receive buffer, and the default holds about 256. */
  int big = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
  if (fd < 0 || connect(fd, (struct sockaddr *)&to, tolen)) {
    perror("udp_pump: socket");
    return 1;
  }
  uint64_t *sent_at = calloc(count, sizeof(uint64_t));
  uint8_t *got = calloc(count, 1);
  uint32_t *rtts = calloc(count, sizeof(uint32_t));
  uint8_t *buf = malloc(size), *in = malloc(65536);
  if (!sent_at || !got || !rtts || !buf || !in) return 1;
  uint64_t next = 0, oldest = 0, received = 0, lost = 0, reordered = 0, dups = 0, bad = 0;
  uint64_t high = 0, start = now_us();
  static uint8_t want[65536];
  bool any = false;
  while (now_us() - start < limit_us) {
    uint64_t now = now_us();
    /* Slide past what came back or timed out. */
    while (oldest < next && (got[oldest] || now - sent_at[oldest] > LOSS_US)) {
      if (!got[oldest]) lost++;
      oldest++;
    }
    if (oldest == count) break;
    while (next < count && next - oldest < window) {
      fill(buf, size, next);
      sent_at[next] = now_us();
      if (send(fd, buf, size, 0) < 0 && errno != ECONNREFUSED) break;
      next++;
    }
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 10) <= 0) continue;
    ssize_t n;
    while ((n = recv(fd, in, 65536, MSG_DONTWAIT)) > 0) {
      uint64_t seq = 0;
      for (int i = 0; i < 8 && n >= 8; i++) seq = seq << 8 | in[i];
      fill(want, size, seq);
      if (n != (ssize_t)size || seq >= next || memcmp(in, want, size)) {
        bad++;
        continue;
      }
      if (got[seq]) {
        dups++;
        continue;
      }
      got[seq] = 1;
      rtts[received++] = (uint32_t)(now_us() - sent_at[seq]);
      if (any && seq < high) reordered++;
      if (!any || seq > high) high = seq;
      any = true;
    }
  }
  /* What never came back (or never left) before the time ran out. */
  lost = count - received;
  double secs = (double)(now_us() - start) / 1e6;
  qsort(rtts, received, sizeof(uint32_t), cmp_u32);
  uint32_t p50 = received ? rtts[received / 2] : 0, p99 = received ? rtts[received * 99 / 100] : 0;
  uint32_t max = received ? rtts[received - 1] : 0;
  printf("sent %llu received %llu lost %llu reordered %llu duplicates %llu corrupt %llu "
         "rtt_us p50 %u p99 %u max %u rate %.0f/s\n",
         (unsigned long long)next, (unsigned long long)received, (unsigned long long)lost,
         (unsigned long long)reordered, (unsigned long long)dups, (unsigned long long)bad, p50, p99,
         max, secs > 0 ? (double)received / secs : 0.0);
  /* Everything freed: under the sanitizers a leak at exit is a failure. */
  free(sent_at);
  free(got);
  free(rtts);
  free(buf);
  free(in);
  close(fd);
  return received == count && !dups && !bad ? 0 : 1;
}
