/* SPDX-License-Identifier: MIT */
/* serve's UDP flows (cli_socks.h): a client's datagrams for a UDP service
 * carry a flow id (one per program talking through `connect --listen-udp`,
 * one per SOCKS UDP association), and each (connection, flow) gets a UDP
 * socket of its own here, so the service's replies find their way back.
 * Like a NAT's mappings they are bounded (KP_CLI_UDP_FLOWS_MAX in all,
 * KP_CLI_UDP_FLOWS_PER_CONN per connection: the least recently used makes
 * room) and end when idle.
 *
 * --forward-udp: each flow's socket is connected to the one target.
 * SOCKS: each datagram names its destination (RFC 1928's address after
 * the flow id), checked against the allow list like a CONNECT; replies
 * from addresses the list does not allow are dropped, the others carry
 * their source back to the client. */
#include <stdlib.h>
#include <string.h>

#include "node/cli/cli_socks.h"

#define BUCKETS 1024
#define DATAGRAM_MAX 65535

typedef struct flow_s flow_t;
struct flow_s {
  flow_t *hnext;
  flow_t *prev, *next; /* least recently used first */
  kp_cli_udp_flows_t *owner;
  kp_conn_t *conn;
  uint64_t id;
  uv_udp_t sock;
  int family;
  uint64_t last_ms;
  bool logged; /* a refused destination was logged for this flow */
};

struct kp_cli_udp_flows_s {
  uv_loop_t *loop;
  bool socks;
  struct sockaddr_storage target;
  kp_cli_socks_allow_t allow;
  unsigned idle_ms;
  flow_t *buckets[BUCKETS];
  flow_t *head, *tail;
  unsigned open, closing;
  uv_timer_t timer;
  bool timer_open, stopped;
  kp_cli_udp_stats_t stats;
  uint8_t rx[DATAGRAM_MAX];
  uint8_t tx[DATAGRAM_MAX];
};

static size_t bucket(const kp_conn_t *conn, uint64_t id) {
  uint64_t h = ((uint64_t)(uintptr_t)conn ^ id * 0x9e3779b97f4a7c15ull) * 0xff51afd7ed558ccdull;
  return (size_t)(h >> 32) % BUCKETS;
}

static flow_t *find(kp_cli_udp_flows_t *f, const kp_conn_t *conn, uint64_t id) {
  for (flow_t *x = f->buckets[bucket(conn, id)]; x; x = x->hnext)
    if (x->conn == conn && x->id == id) return x;
  return NULL;
}

static void lru_unlink(kp_cli_udp_flows_t *f, flow_t *x) {
  if (x->prev)
    x->prev->next = x->next;
  else
    f->head = x->next;
  if (x->next)
    x->next->prev = x->prev;
  else
    f->tail = x->prev;
  x->prev = x->next = NULL;
}

static void lru_append(kp_cli_udp_flows_t *f, flow_t *x) {
  x->prev = f->tail;
  x->next = NULL;
  if (f->tail)
    f->tail->next = x;
  else
    f->head = x;
  f->tail = x;
}

static void on_sock_closed(uv_handle_t *h) {
  flow_t *x = h->data;
  x->owner->closing--;
  free(x);
}

static void close_flow(kp_cli_udp_flows_t *f, flow_t *x) {
  for (flow_t **p = &f->buckets[bucket(x->conn, x->id)]; *p; p = &(*p)->hnext) {
    if (*p == x) {
      *p = x->hnext;
      break;
    }
  }
  lru_unlink(f, x);
  f->open--;
  f->closing++;
  uv_close((uv_handle_t *)&x->sock, on_sock_closed);
}

/* ---- From the service back to the client ------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  flow_t *x = h->data;
  (void)suggested;
  *buf = uv_buf_init((char *)x->owner->rx, sizeof(x->owner->rx));
}

static void on_service_recv(uv_udp_t *h, ssize_t n, const uv_buf_t *buf,
                            const struct sockaddr *from, unsigned flags) {
  flow_t *x = h->data;
  kp_cli_udp_flows_t *f = x->owner;
  (void)flags;
  if (n < 0 || !from) return; /* nothing more, or an ICMP error: UDP's way */
  size_t len = kp_cli_udp_put_flow(f->tx, x->id);
  if (f->socks) {
    kp_cli_socks_addr_t src;
    kp_cli_socks_addr_from_sockaddr(&src, from);
    if (!kp_cli_socks_allowed(&f->allow, NULL, from)) {
      f->stats.dropped++;
      return;
    }
    len += kp_cli_socks_put_addr(f->tx + len, &src);
  }
  if (len + (size_t)n > kp_conn_datagram_max(x->conn)) {
    f->stats.dropped++; /* too big for the path's packets */
    return;
  }
  memcpy(f->tx + len, buf->base, (size_t)n);
  if (kp_conn_datagram_send(x->conn, f->tx, len + (size_t)n)) {
    f->stats.dropped++;
    return;
  }
  f->stats.from_service++;
  x->last_ms = uv_now(f->loop);
  lru_unlink(f, x);
  lru_append(f, x);
}

/* ---- From the client to the service ---------------------------------------------------------- */

/* Room for one more flow of conn: the least recently used of its own
 * past its share, else of all past the total. */
static void make_room(kp_cli_udp_flows_t *f, const kp_conn_t *conn) {
  unsigned mine = 0;
  flow_t *oldest_mine = NULL;
  for (flow_t *x = f->head; x; x = x->next) {
    if (x->conn != conn) continue;
    if (!oldest_mine) oldest_mine = x;
    mine++;
  }
  flow_t *victim = mine >= KP_CLI_UDP_FLOWS_PER_CONN ? oldest_mine
                   : f->open >= KP_CLI_UDP_FLOWS_MAX ? f->head
                                                     : NULL;
  if (victim) {
    f->stats.flows_evicted++;
    close_flow(f, victim);
  }
}

static flow_t *open_flow(kp_cli_udp_flows_t *f, kp_conn_t *conn, uint64_t id, int family) {
  make_room(f, conn);
  flow_t *x = calloc(1, sizeof(*x));
  if (!x) return NULL;
  x->owner = f;
  x->conn = conn;
  x->id = id;
  x->family = family;
  if (uv_udp_init_ex(f->loop, &x->sock, (unsigned)family)) {
    free(x);
    return NULL;
  }
  x->sock.data = x;
  int err = 0;
  if (!f->socks) err = uv_udp_connect(&x->sock, (const struct sockaddr *)&f->target);
  int size = KP_CLI_UDP_SOCKET_BUFFER;
  if (!err) uv_recv_buffer_size((uv_handle_t *)&x->sock, &size); /* best effort */
  if (!err) err = uv_udp_recv_start(&x->sock, on_alloc, on_service_recv);
  size_t b = bucket(conn, id);
  x->hnext = f->buckets[b];
  f->buckets[b] = x;
  lru_append(f, x);
  f->open++;
  f->stats.flows_opened++;
  if (err) {
    close_flow(f, x);
    return NULL;
  }
  return x;
}

static void start_timer(kp_cli_udp_flows_t *f);

void kp_cli_udp_flows_input(kp_cli_udp_flows_t *f, kp_conn_t *conn, const uint8_t *data,
                            size_t len) {
  uint64_t id;
  start_timer(f);
  size_t used = kp_cli_udp_get_flow(data, len, &id);
  struct sockaddr_storage dst;
  kp_cli_socks_addr_t a;
  if (!used || f->stopped || !f->timer_open) {
    f->stats.dropped++;
    return;
  }
  if (f->socks) {
    int n = kp_cli_socks_parse_addr(data + used, len - used, &a);
    /* Names are not resolved for datagrams (one lookup per datagram would
     * be the resolver's flood): SOCKS UDP takes addresses. */
    if (n <= 0 || !kp_cli_socks_addr_to_sockaddr(&a, &dst)) {
      f->stats.dropped++;
      return;
    }
    used += (size_t)n;
  } else {
    dst = f->target;
  }
  flow_t *x = find(f, conn, id);
  if (f->socks && !kp_cli_socks_allowed(&f->allow, NULL, (const struct sockaddr *)&dst)) {
    if (!x || !x->logged) {
      char text[300];
      fprintf(stderr, "kadpunch serve: socks udp: datagrams to %s refused: %s\n",
              kp_cli_socks_addr_text(&a, text, sizeof(text)),
              kp_cli_socks_reply_text(KP_CLI_SOCKS_NOT_ALLOWED));
      fflush(stderr);
      if (x) x->logged = true;
    }
    f->stats.dropped++;
    return;
  }
  if (!x) x = open_flow(f, conn, id, dst.ss_family);
  if (!x || x->family != dst.ss_family) {
    f->stats.dropped++;
    return;
  }
  uv_buf_t b = uv_buf_init((char *)data + used, (unsigned)(len - used));
  int err = uv_udp_try_send(&x->sock, &b, 1, f->socks ? (const struct sockaddr *)&dst : NULL);
  if (err < 0) {
    f->stats.dropped++; /* the socket buffer is full: dropped, as a router would */
    return;
  }
  f->stats.to_service++;
  x->last_ms = uv_now(f->loop);
  lru_unlink(f, x);
  lru_append(f, x);
}

/* ---- Idle flows, the service's life -------------------------------------------------------- */

static void on_tick(uv_timer_t *t) {
  kp_cli_udp_flows_t *f = t->data;
  uint64_t now = uv_now(f->loop);
  /* Least recently used first: the scan stops at the first fresh one. */
  while (f->head && f->head->last_ms + f->idle_ms <= now) {
    f->stats.flows_idle++;
    close_flow(f, f->head);
  }
}

int kp_cli_udp_flows_new(uv_loop_t *loop, const struct sockaddr *target,
                         const kp_cli_socks_allow_t *allow, unsigned idle_ms,
                         kp_cli_udp_flows_t **out) {
  kp_cli_udp_flows_t *f = calloc(1, sizeof(*f));
  *out = f;
  if (!f) return UV_ENOMEM;
  f->loop = loop;
  f->socks = target == NULL;
  if (target)
    memcpy(&f->target, target,
           target->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                         : sizeof(struct sockaddr_in));
  if (allow) f->allow = *allow;
  f->idle_ms = idle_ms ? idle_ms : KP_CLI_UDP_IDLE_MS;
  return 0;
}

/* The timer starts with the first datagram's loop (the service is made
 * before serve's loop runs). */
static void start_timer(kp_cli_udp_flows_t *f) {
  if (f->timer_open || f->stopped) return;
  uv_timer_init(f->loop, &f->timer);
  f->timer.data = f;
  f->timer_open = true;
  unsigned every_ms = f->idle_ms / 4 < 1000 ? f->idle_ms / 4 : 1000;
  uv_timer_start(&f->timer, on_tick, every_ms ? every_ms : 1, every_ms ? every_ms : 1);
}

void kp_cli_udp_flows_conn_closed(kp_cli_udp_flows_t *f, const kp_conn_t *conn) {
  for (flow_t *x = f->head, *next; x; x = next) {
    next = x->next;
    if (x->conn == conn) close_flow(f, x);
  }
}

void kp_cli_udp_flows_stats(const kp_cli_udp_flows_t *f, kp_cli_udp_stats_t *out) {
  *out = f->stats;
  out->open = f->open;
}

void kp_cli_udp_flows_stop(kp_cli_udp_flows_t *f) {
  f->stopped = true;
  while (f->head) close_flow(f, f->head);
  if (f->timer_open) uv_close((uv_handle_t *)&f->timer, NULL);
}

void kp_cli_udp_flows_free(kp_cli_udp_flows_t *f) {
  free(f);
}
