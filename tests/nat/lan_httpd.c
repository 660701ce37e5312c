/* SPDX-License-Identifier: MIT */
/* lan_httpd ADDR:PORT NAME [BYTES]: the NAT lab's web server on a site's
 * LAN. Answers every request (read up to its blank line, 4 KiB and 2 s at
 * most) with 200 and the body "hello from NAME\n", or BYTES zero bytes
 * (for throughput: tools/bench_socks.sh), then closes. One connection at
 * a time; runs until killed. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  const char *colon = argc == 3 || argc == 4 ? strrchr(argv[1], ':') : NULL;
  char host[64];
  if (!colon || (size_t)(colon - argv[1]) >= sizeof(host)) {
    fprintf(stderr, "usage: lan_httpd ADDR:PORT NAME [BYTES]\n");
    return 2;
  }
  memcpy(host, argv[1], (size_t)(colon - argv[1]));
  host[colon - argv[1]] = '\0';
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
  int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (inet_pton(AF_INET, host, &a.sin_addr) != 1 || fd < 0 ||
      bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 64)) {
    perror("lan_httpd: bind");
    return 1;
  }
  printf("http on %s as %s\n", argv[1], argv[2]);
  fflush(stdout);
  static char zeros[1 << 16];
  char body[300], resp[600], req[4096];
  unsigned long long bulk = argc == 4 ? strtoull(argv[3], NULL, 10) : 0;
  snprintf(body, sizeof(body), "hello from %s\n", argv[2]);
  int rlen = snprintf(resp, sizeof(resp),
                      "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %llu\r\n"
                      "Connection: close\r\n\r\n%s",
                      bulk ? bulk : (unsigned long long)strlen(body), bulk ? "" : body);
  for (;;) {
    int c = accept(fd, NULL, NULL);
    if (c < 0) continue;
    struct timeval tv = {2, 0};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    size_t got = 0;
    while (got < sizeof(req) - 1) {
      ssize_t n = read(c, req + got, sizeof(req) - 1 - got);
      if (n <= 0) break;
      got += (size_t)n;
      req[got] = '\0';
      if (strstr(req, "\r\n\r\n")) break;
    }
    ssize_t w = write(c, resp, (size_t)rlen);
    for (unsigned long long left = bulk; w > 0 && left;) {
      size_t n = left < sizeof(zeros) ? (size_t)left : sizeof(zeros);
      if ((w = write(c, zeros, n)) > 0) left -= (unsigned long long)w;
    }
    close(c);
  }
}
