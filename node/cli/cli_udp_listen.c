/* SPDX-License-Identifier: MIT */
/* connect --listen-udp ADDR:PORT: a local UDP port whose every sender
 * (address and port) is a flow of the one kadpunch connection. A
 * datagram that arrives goes to the peer as a datagram of the connection,
 * behind its flow's id (docs/protocol.md, "UDP services"); what the peer
 * sends back on that flow goes to the sender from this port, so a DNS
 * client, a game or WireGuard sees an ordinary UDP server. Flows are
 * bounded (KP_CLI_UDP_LISTEN_FLOWS: the least recently used makes room)
 * and forgotten after KP_CLI_UDP_IDLE_MS unused; datagrams that arrive
 * while there is no connection start one and are dropped (UDP's way). */
#include <stdlib.h>
#include <string.h>

#include "node/cli/cli.h"
#include "node/cli/cli_socks.h"

#define BUCKETS 512

typedef struct lflow_s lflow_t;
struct lflow_s {
  lflow_t *hnext;
  lflow_t *prev, *next; /* least recently used first */
  uint64_t id;
  struct sockaddr_storage from;
  uint64_t last_ms;
};

struct kp_cli_udp_listen_s {
  uv_loop_t *loop;
  kp_cli_link_t link;
  uv_udp_t sock;
  uv_timer_t timer;
  lflow_t *by_addr[BUCKETS];
  lflow_t *head, *tail;
  unsigned count;
  uint64_t next_id;
  kp_cli_udp_listen_stats_t stats;
  uint8_t rx[65536];
  uint8_t tx[65536 + 8];
};

static size_t addr_len(const struct sockaddr *sa) {
  return sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

static size_t bucket_of(const struct sockaddr *sa) {
  const uint8_t *p = (const uint8_t *)sa;
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < addr_len(sa); i++) h = (h ^ p[i]) * 1099511628211ull;
  return (size_t)(h % BUCKETS);
}

static lflow_t *by_addr(kp_cli_udp_listen_t *u, const struct sockaddr *sa) {
  for (lflow_t *f = u->by_addr[bucket_of(sa)]; f; f = f->hnext)
    if (!memcmp(&f->from, sa, addr_len(sa))) return f;
  return NULL;
}

static void unlink_lru(kp_cli_udp_listen_t *u, lflow_t *f) {
  if (f->prev)
    f->prev->next = f->next;
  else
    u->head = f->next;
  if (f->next)
    f->next->prev = f->prev;
  else
    u->tail = f->prev;
}

static void touch(kp_cli_udp_listen_t *u, lflow_t *f) {
  unlink_lru(u, f);
  f->prev = u->tail;
  f->next = NULL;
  if (u->tail)
    u->tail->next = f;
  else
    u->head = f;
  u->tail = f;
  f->last_ms = uv_now(u->loop);
}

static void forget(kp_cli_udp_listen_t *u, lflow_t *f) {
  for (lflow_t **p = &u->by_addr[bucket_of((struct sockaddr *)&f->from)]; *p; p = &(*p)->hnext) {
    if (*p == f) {
      *p = f->hnext;
      break;
    }
  }
  unlink_lru(u, f);
  u->count--;
  free(f);
}

static lflow_t *new_flow(kp_cli_udp_listen_t *u, const struct sockaddr *sa) {
  if (u->count >= KP_CLI_UDP_LISTEN_FLOWS) {
    u->stats.flows_evicted++;
    forget(u, u->head);
  }
  lflow_t *f = calloc(1, sizeof(*f));
  if (!f) return NULL;
  memcpy(&f->from, sa, addr_len(sa));
  f->id = u->next_id++;
  size_t b = bucket_of(sa);
  f->hnext = u->by_addr[b];
  u->by_addr[b] = f;
  f->prev = u->tail;
  if (u->tail)
    u->tail->next = f;
  else
    u->head = f;
  u->tail = f;
  u->count++;
  u->stats.flows_opened++;
  return f;
}

static void free_data(uv_handle_t *h) {
  free(h->data);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  kp_cli_udp_listen_t *u = h->data;
  (void)suggested;
  *buf = uv_buf_init((char *)u->rx, sizeof(u->rx));
}

static void on_local(uv_udp_t *h, ssize_t n, const uv_buf_t *buf, const struct sockaddr *from,
                     unsigned flags) {
  kp_cli_udp_listen_t *u = h->data;
  (void)flags;
  if (n < 0 || !from) return;
  kp_conn_t *conn = u->link.conn(u->link.ctx);
  lflow_t *f = by_addr(u, from);
  if (!f) f = new_flow(u, from);
  if (!conn || !f) {
    u->stats.dropped++;
    return;
  }
  touch(u, f);
  size_t len = kp_cli_udp_put_flow(u->tx, f->id);
  memcpy(u->tx + len, buf->base, (size_t)n);
  if (kp_conn_datagram_send(conn, u->tx, len + (size_t)n))
    u->stats.dropped++; /* too big for the path, or the queue is full: counted there too */
  else
    u->stats.to_peer++;
}

void kp_cli_udp_listen_datagram(kp_cli_udp_listen_t *u, const uint8_t *data, size_t len) {
  uint64_t id;
  size_t used = kp_cli_udp_get_flow(data, len, &id);
  lflow_t *f = NULL;
  /* The flows are few (256): a walk from the newest finds the busy ones
   * first. */
  for (lflow_t *x = u->tail; x && used; x = x->prev)
    if (x->id == id) {
      f = x;
      break;
    }
  if (!f) {
    u->stats.dropped++; /* malformed, or its sender was forgotten */
    return;
  }
  uv_buf_t b = uv_buf_init((char *)data + used, (unsigned)(len - used));
  if (uv_udp_try_send(&u->sock, &b, 1, (const struct sockaddr *)&f->from) < 0) {
    u->stats.dropped++;
    return;
  }
  u->stats.from_peer++;
}

static void on_tick(uv_timer_t *t) {
  kp_cli_udp_listen_t *u = t->data;
  uint64_t now = uv_now(u->loop);
  while (u->head && u->head->last_ms + KP_CLI_UDP_IDLE_MS <= now) forget(u, u->head);
}

int kp_cli_udp_listen_new(uv_loop_t *loop, const struct sockaddr *addr, const kp_cli_link_t *link,
                          kp_cli_udp_listen_t **out, char bound[64]) {
  kp_cli_udp_listen_t *u = calloc(1, sizeof(*u));
  *out = NULL;
  if (!u) return UV_ENOMEM;
  u->loop = loop;
  u->link = *link;
  uv_udp_init(loop, &u->sock);
  u->sock.data = u;
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  int err = uv_udp_bind(&u->sock, addr, 0);
  int size = KP_CLI_UDP_SOCKET_BUFFER;
  if (!err) uv_recv_buffer_size((uv_handle_t *)&u->sock, &size); /* best effort */
  size = KP_CLI_UDP_SOCKET_BUFFER;
  if (!err) uv_send_buffer_size((uv_handle_t *)&u->sock, &size);
  if (!err) err = uv_udp_getsockname(&u->sock, (struct sockaddr *)&ss, &len);
  if (!err) err = uv_udp_recv_start(&u->sock, on_alloc, on_local);
  if (err) {
    /* The handle closes on the loop's next run; the memory goes with it. */
    uv_close((uv_handle_t *)&u->sock, free_data);
    return err;
  }
  kp_cli_sockaddr_format(&ss, bound);
  uv_timer_init(loop, &u->timer);
  u->timer.data = u;
  uv_timer_start(&u->timer, on_tick, 1000, 1000);
  *out = u;
  return 0;
}

void kp_cli_udp_listen_stats(const kp_cli_udp_listen_t *u, kp_cli_udp_listen_stats_t *out) {
  *out = u->stats;
}

void kp_cli_udp_listen_stop(kp_cli_udp_listen_t *u) {
  while (u->head) forget(u, u->head);
  uv_close((uv_handle_t *)&u->sock, NULL);
  uv_close((uv_handle_t *)&u->timer, NULL);
}

void kp_cli_udp_listen_free(kp_cli_udp_listen_t *u) {
  free(u);
}
