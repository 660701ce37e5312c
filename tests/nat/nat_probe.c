/* SPDX-License-Identifier: MIT */
/* nat_probe: checks that a NAT lab router behaves as its kind claims, in
 * RFC 4787 terms (tests/nat/lab.sh runs it before any test trusts a router).
 *
 *   nat_probe reflect A:PORT B:PORT
 *       On the public side: answers "map" with the address the datagram came
 *       from, and "poke" by sending from the *other* address to the sender
 *       (a packet the NAT never saw the host send to). Runs until killed.
 *   nat_probe check A:PORT B:PORT
 *       On a host: one socket asks both reflectors for its mapped address,
 *       then asks A to poke it from B. Prints one line:
 *         mapping=none|consistent|random filtering=open|closed
 *       or "udp=blocked" when no reflector answers. Every wait is bounded. */
#include <arpa/inet.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int parse(const char *text, struct sockaddr_in *out) {
  char ip[64];
  const char *colon = strrchr(text, ':');
  if (!colon || colon - text >= (long)sizeof(ip)) return -1;
  memcpy(ip, text, (size_t)(colon - text));
  ip[colon - text] = '\0';
  memset(out, 0, sizeof(*out));
  out->sin_family = AF_INET;
  out->sin_port = htons((uint16_t)atoi(colon + 1));
  return inet_pton(AF_INET, ip, &out->sin_addr) == 1 ? 0 : -1;
}

static int udp_socket(const struct sockaddr_in *bind_to) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0 || bind(fd, (const struct sockaddr *)bind_to, sizeof(*bind_to))) {
    perror("nat_probe: socket");
    exit(2);
  }
  return fd;
}

static const char *fmt(const struct sockaddr_in *a, char *buf, size_t cap) {
  char ip[32];
  inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
  snprintf(buf, cap, "%s:%u", ip, ntohs(a->sin_port));
  return buf;
}

static int reflect(const char *a, const char *b) {
  struct sockaddr_in addr[2];
  if (parse(a, &addr[0]) || parse(b, &addr[1])) return 2;
  struct pollfd pfd[2] = {{udp_socket(&addr[0]), POLLIN, 0}, {udp_socket(&addr[1]), POLLIN, 0}};
  for (;;) {
    if (poll(pfd, 2, -1) < 0) return 1;
    for (int i = 0; i < 2; i++) {
      if (!(pfd[i].revents & POLLIN)) continue;
      char buf[128], text[64];
      struct sockaddr_in from;
      socklen_t flen = sizeof(from);
      ssize_t n = recvfrom(pfd[i].fd, buf, sizeof(buf) - 1, 0, (struct sockaddr *)&from, &flen);
      if (n <= 0) continue;
      buf[n] = '\0';
      if (!strcmp(buf, "map")) {
        fmt(&from, text, sizeof(text));
        sendto(pfd[i].fd, text, strlen(text), 0, (struct sockaddr *)&from, flen);
      } else if (!strcmp(buf, "poke")) {
        sendto(pfd[1 - i].fd, "poked", 5, 0, (struct sockaddr *)&from, flen);
      }
    }
  }
}

/* Sends msg to `to` until an answer arrives (3 tries, 300 ms each). */
static bool ask(int fd, const struct sockaddr_in *to, const char *msg, char *reply, size_t cap) {
  for (int attempt = 0; attempt < 3; attempt++) {
    sendto(fd, msg, strlen(msg), 0, (const struct sockaddr *)to, sizeof(*to));
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 300) == 1) {
      ssize_t n = recv(fd, reply, cap - 1, 0);
      if (n > 0) {
        reply[n] = '\0';
        return true;
      }
    }
  }
  return false;
}

static int check(const char *a, const char *b) {
  struct sockaddr_in r[2], any = {.sin_family = AF_INET};
  if (parse(a, &r[0]) || parse(b, &r[1])) return 2;
  int fd = udp_socket(&any);
  /* Our own address towards the reflectors, to tell "no translation". */
  int probe = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in self, bound;
  socklen_t len = sizeof(self);
  connect(probe, (struct sockaddr *)&r[0], sizeof(r[0]));
  getsockname(probe, (struct sockaddr *)&self, &len);
  close(probe);
  len = sizeof(bound);
  getsockname(fd, (struct sockaddr *)&bound, &len);
  self.sin_port = bound.sin_port;
  char m1[64], m2[64], own[64];
  if (!ask(fd, &r[0], "map", m1, sizeof(m1)) || !ask(fd, &r[1], "map", m2, sizeof(m2))) {
    printf("udp=blocked\n");
    return 0;
  }
  fmt(&self, own, sizeof(own));
  const char *mapping = !strcmp(m1, own) && !strcmp(m2, own) ? "none"
                        : !strcmp(m1, m2)                    ? "consistent"
                                                             : "random";
  /* Filtering: a fresh socket sends to A only, then asks A to answer from
   * B, an address it never sent to. Only endpoint-independent filtering
   * (an open host, or a full-cone NAT) lets that in. */
  int fresh = udp_socket(&any);
  char tmp[64];
  bool got = false;
  if (ask(fresh, &r[0], "map", tmp, sizeof(tmp))) {
    for (int attempt = 0; attempt < 3 && !got; attempt++) {
      sendto(fresh, "poke", 4, 0, (const struct sockaddr *)&r[0], sizeof(r[0]));
      struct pollfd p = {fresh, POLLIN, 0};
      char buf[64];
      while (!got && poll(&p, 1, 300) == 1) {
        ssize_t n = recv(fresh, buf, sizeof(buf) - 1, 0);
        if (n > 0) buf[n] = '\0';
        got = n == 5 && !strcmp(buf, "poked");
      }
    }
  }
  printf("mapping=%s filtering=%s mapped=%s,%s\n", mapping, got ? "open" : "closed", m1, m2);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 4 && !strcmp(argv[1], "reflect")) return reflect(argv[2], argv[3]);
  if (argc == 4 && !strcmp(argv[1], "check")) return check(argv[2], argv[3]);
  fprintf(stderr, "usage: nat_probe reflect|check A:PORT B:PORT\n");
  return 2;
}
