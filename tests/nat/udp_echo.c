/* SPDX-License-Identifier: MIT */
/* udp_echo ADDR:PORT: a UDP echo server for the tests (every datagram back
 * to its sender). Runs until killed. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
  char host[128];
  const char *colon = argc == 2 ? strrchr(argv[1], ':') : NULL;
  if (!colon || (size_t)(colon - argv[1]) >= sizeof(host)) {
    fprintf(stderr, "usage: udp_echo ADDR:PORT\n");
    return 2;
  }
  memcpy(host, argv[1], (size_t)(colon - argv[1]));
  host[colon - argv[1]] = '\0';
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof(ss));
  socklen_t len;
  struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
  if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)atoi(colon + 1));
    len = sizeof(*a4);
  } else if (host[0] == '[' && (host[strlen(host) - 1] = '\0', 1) &&
             inet_pton(AF_INET6, host + 1, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)atoi(colon + 1));
    len = sizeof(*a6);
  } else {
    fprintf(stderr, "udp_echo: bad address %s\n", argv[1]);
    return 2;
  }
  int fd = socket(ss.ss_family, SOCK_DGRAM, 0);
  int big = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
  if (fd < 0 || bind(fd, (struct sockaddr *)&ss, len)) {
    perror("udp_echo: bind");
    return 1;
  }
  printf("udp echo on %s\n", argv[1]);
  fflush(stdout);
  static char buf[65536];
  for (;;) {
    struct sockaddr_storage from;
    socklen_t flen = sizeof(from);
    ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &flen);
    if (n >= 0) sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, flen);
  }
}
