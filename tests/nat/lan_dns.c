/* SPDX-License-Identifier: MIT */
/* lan_dns ADDR:PORT NAME=IPV4...: the NAT lab's DNS server for a site's
 * LAN. Answers A queries for the names given (case does not matter) with
 * their address, other types of a known name with no records, and unknown
 * names with NXDOMAIN (RFC 1035 section 4.1). One question per query;
 * anything else gets FORMERR or nothing. Runs until killed. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define MAX_NAMES 16

static struct {
  char name[256];
  uint8_t ip[4];
} names[MAX_NAMES];
static int name_count;

/* The question's name as dotted text; the bytes it took, 0 if bad. */
static size_t read_name(const uint8_t *p, size_t len, char *out) {
  size_t i = 0, o = 0;
  while (i < len && p[i]) {
    size_t l = p[i];
    if (l > 63 || i + 1 + l > len || o + l + 2 > 255) return 0;
    if (o) out[o++] = '.';
    memcpy(out + o, p + i + 1, l);
    o += l;
    i += 1 + l;
  }
  if (i >= len) return 0;
  out[o] = '\0';
  return i + 1;
}

static size_t answer(const uint8_t *q, size_t n, uint8_t *r) {
  if (n < 12 || (q[2] & 0x80) || q[4] || q[5] != 1) return 0;
  char name[256];
  size_t nl = read_name(q + 12, n - 12, name);
  if (!nl || 12 + nl + 4 > n) return 0;
  uint16_t type = (uint16_t)(q[12 + nl] << 8 | q[13 + nl]);
  size_t qlen = 12 + nl + 4;
  memcpy(r, q, qlen);
  r[2] = (uint8_t)(0x84 | (q[2] & 0x01)); /* QR, AA, RD copied */
  r[3] = 0x00;
  r[6] = r[7] = r[8] = r[9] = r[10] = r[11] = 0;
  int found = -1;
  for (int i = 0; i < name_count; i++)
    if (!strcasecmp(names[i].name, name)) found = i;
  if (found < 0) {
    r[3] = 3; /* NXDOMAIN */
    return qlen;
  }
  if (type != 1) return qlen; /* a known name, no records of that type */
  r[7] = 1;
  const uint8_t rr[] = {0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4};
  memcpy(r + qlen, rr, sizeof(rr));
  memcpy(r + qlen + sizeof(rr), names[found].ip, 4);
  return qlen + sizeof(rr) + 4;
}

int main(int argc, char **argv) {
  const char *colon = argc >= 2 ? strrchr(argv[1], ':') : NULL;
  char host[64];
  if (!colon || (size_t)(colon - argv[1]) >= sizeof(host)) {
    fprintf(stderr, "usage: lan_dns ADDR:PORT NAME=IPV4...\n");
    return 2;
  }
  memcpy(host, argv[1], (size_t)(colon - argv[1]));
  host[colon - argv[1]] = '\0';
  for (int i = 2; i < argc && name_count < MAX_NAMES; i++) {
    char *eq = strchr(argv[i], '=');
    if (!eq || (size_t)(eq - argv[i]) >= sizeof(names[0].name) ||
        inet_pton(AF_INET, eq + 1, names[name_count].ip) != 1) {
      fprintf(stderr, "lan_dns: bad NAME=IPV4 %s\n", argv[i]);
      return 2;
    }
    memcpy(names[name_count].name, argv[i], (size_t)(eq - argv[i]));
    name_count++;
  }
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (inet_pton(AF_INET, host, &a.sin_addr) != 1 || fd < 0 ||
      bind(fd, (struct sockaddr *)&a, sizeof(a))) {
    perror("lan_dns: bind");
    return 1;
  }
  printf("dns on %s, %d names\n", argv[1], name_count);
  fflush(stdout);
  for (;;) {
    uint8_t q[512], r[600];
    struct sockaddr_storage from;
    socklen_t flen = sizeof(from);
    ssize_t n = recvfrom(fd, q, sizeof(q), 0, (struct sockaddr *)&from, &flen);
    if (n <= 0) continue;
    size_t len = answer(q, (size_t)n, r);
    if (len) sendto(fd, r, len, 0, (struct sockaddr *)&from, flen);
  }
}
