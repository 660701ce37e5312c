/* lan_httpd ADDR:PORT NAME: the NAT lab's web server on a site's LAN.
 * Answers every request (read up to its blank line, 4 KiB and 2 s at most)
 * with 200 and the body "hello from NAME\n", then closes. One connection
 * at a time; runs until killed. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  const char *colon = argc == 3 ? strrchr(argv[1], ':') : NULL;
  char host[64];
  if (!colon || (size_t)(colon - argv[1]) >= sizeof(host)) {
    fprintf(stderr, "usage: lan_httpd ADDR:PORT NAME\n");
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
  char body[300], resp[600], req[4096];
  snprintf(body, sizeof(body), "hello from %s\n", argv[2]);
  int rlen = snprintf(resp, sizeof(resp),
                      "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n\r\n%s",
                      strlen(body), body);
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
    if (write(c, resp, (size_t)rlen) < 0) { /* the client went away */
    }
    close(c);
  }
}
