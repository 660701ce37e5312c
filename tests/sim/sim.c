#include "tests/sim/sim.h"

#include <stdlib.h>
#include <string.h>

/* ---- Event queue: a binary heap ordered by (time, sequence) -------------- */

typedef enum { EV_PACKET, EV_TIMER } ev_kind_t;

typedef struct event_s {
  uint64_t at;
  uint64_t seq;
  ev_kind_t kind;
  kp_sim_timer_fn fn; /* EV_TIMER */
  void *ctx;
  kp_addr_t from;    /* EV_PACKET: source as the receiver sees it */
  kp_addr_t to;      /* EV_PACKET: destination on the internet side */
  kp_sim_nat_t *lan; /* EV_PACKET: between two hosts behind this NAT */
  size_t len;
  uint8_t *data;
} event_t;

typedef struct mapping_s {
  kp_addr_t inside; /* host address:port */
  kp_addr_t dest;   /* RANDOM: the one destination this mapping serves */
  uint16_t port;    /* external port */
  kp_addr_t *seen;  /* destinations sent to (for filtering) */
  size_t seen_count;
} mapping_t;

struct kp_sim_nat_s {
  kp_sim_t *sim;
  kp_addr_t public_ip;
  kp_sim_mapping_t mapping;
  kp_sim_filter_t filter;
  mapping_t *maps;
  size_t map_count;
  uint16_t next_port;
  kp_sim_nat_t *next;
};

struct kp_sim_socket_s {
  kp_sim_t *sim;
  kp_addr_t addr;
  kp_sim_nat_t *nat;
  kp_sim_recv_fn recv;
  void *ctx;
  kp_sim_socket_t *next;
};

struct kp_sim_s {
  uint64_t now;
  uint64_t seq;
  kp_rng_seeded_t rng;
  kp_sim_link_t link;
  kp_sim_stats_t stats;
  event_t *heap;
  size_t heap_len, heap_cap;
  uint64_t *cancelled; /* timer ids (seq) cancelled before they fired */
  size_t cancelled_len, cancelled_cap;
  kp_sim_socket_t *sockets;
  kp_sim_nat_t *nats;
  kp_sim_tap_fn tap;
  void *tap_ctx;
  kp_sim_drop_fn drop;
  void *drop_ctx;
};

void kp_sim_set_tap(kp_sim_t *sim, kp_sim_tap_fn fn, void *ctx) {
  sim->tap = fn;
  sim->tap_ctx = ctx;
}

void kp_sim_set_drop(kp_sim_t *sim, kp_sim_drop_fn fn, void *ctx) {
  sim->drop = fn;
  sim->drop_ctx = ctx;
}

static bool before(const event_t *a, const event_t *b) {
  return a->at < b->at || (a->at == b->at && a->seq < b->seq);
}

static void heap_push(kp_sim_t *sim, event_t ev) {
  if (sim->heap_len == sim->heap_cap) {
    sim->heap_cap = sim->heap_cap ? sim->heap_cap * 2 : 1024;
    sim->heap = realloc(sim->heap, sim->heap_cap * sizeof(event_t));
    if (!sim->heap) abort();
  }
  size_t i = sim->heap_len++;
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!before(&ev, &sim->heap[parent])) break;
    sim->heap[i] = sim->heap[parent];
    i = parent;
  }
  sim->heap[i] = ev;
}

static event_t heap_pop(kp_sim_t *sim) {
  event_t top = sim->heap[0];
  event_t last = sim->heap[--sim->heap_len];
  size_t i = 0;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    const event_t *best = &last;
    if (l < sim->heap_len && before(&sim->heap[l], best)) m = l, best = &sim->heap[l];
    if (r < sim->heap_len && before(&sim->heap[r], best)) m = r;
    if (m == i) break;
    sim->heap[i] = sim->heap[m];
    i = m;
  }
  if (sim->heap_len) sim->heap[i] = last;
  return top;
}

/* ---- Setup ------------------------------------------------------------- */

kp_sim_t *kp_sim_new(uint64_t seed) {
  kp_sim_t *sim = calloc(1, sizeof(*sim));
  if (!sim) abort();
  kp_rng_seeded_init(&sim->rng, seed);
  sim->link.latency_min_ms = 10;
  sim->link.latency_max_ms = 30;
  return sim;
}

void kp_sim_free(kp_sim_t *sim) {
  for (size_t i = 0; i < sim->heap_len; i++) free(sim->heap[i].data);
  free(sim->heap);
  free(sim->cancelled);
  while (sim->sockets) kp_sim_socket_free(sim->sockets);
  while (sim->nats) {
    kp_sim_nat_t *n = sim->nats;
    sim->nats = n->next;
    kp_sim_nat_flush(n);
    free(n);
  }
  free(sim);
}

uint64_t kp_sim_now(const kp_sim_t *sim) {
  return sim->now;
}

kp_rng_t kp_sim_rng(kp_sim_t *sim) {
  return kp_rng_seeded(&sim->rng);
}

void kp_sim_set_link(kp_sim_t *sim, const kp_sim_link_t *link) {
  sim->link = *link;
}

const kp_sim_stats_t *kp_sim_stats(const kp_sim_t *sim) {
  return &sim->stats;
}

kp_sim_nat_t *kp_sim_nat_new(kp_sim_t *sim, const kp_addr_t *public_ip, kp_sim_mapping_t mapping,
                             kp_sim_filter_t filter) {
  kp_sim_nat_t *nat = calloc(1, sizeof(*nat));
  if (!nat) abort();
  nat->sim = sim;
  nat->public_ip = *public_ip;
  nat->public_ip.port = 0;
  nat->mapping = mapping;
  nat->filter = filter;
  nat->next_port = 20000;
  nat->next = sim->nats;
  sim->nats = nat;
  return nat;
}

void kp_sim_nat_set_filter(kp_sim_nat_t *nat, kp_sim_filter_t filter) {
  nat->filter = filter;
}

void kp_sim_nat_flush(kp_sim_nat_t *nat) {
  for (size_t i = 0; i < nat->map_count; i++) free(nat->maps[i].seen);
  free(nat->maps);
  nat->maps = NULL;
  nat->map_count = 0;
}

kp_sim_socket_t *kp_sim_socket_new(kp_sim_t *sim, const kp_addr_t *addr, kp_sim_nat_t *nat,
                                   kp_sim_recv_fn recv, void *ctx) {
  kp_sim_socket_t *s = calloc(1, sizeof(*s));
  if (!s) abort();
  s->sim = sim;
  s->addr = *addr;
  s->nat = nat;
  s->recv = recv;
  s->ctx = ctx;
  s->next = sim->sockets;
  sim->sockets = s;
  return s;
}

void kp_sim_socket_free(kp_sim_socket_t *sock) {
  for (kp_sim_socket_t **p = &sock->sim->sockets; *p; p = &(*p)->next) {
    if (*p == sock) {
      *p = sock->next;
      break;
    }
  }
  free(sock);
}

const kp_addr_t *kp_sim_socket_addr(const kp_sim_socket_t *sock) {
  return &sock->addr;
}

void kp_sim_socket_move(kp_sim_socket_t *sock, const kp_addr_t *addr, kp_sim_nat_t *nat) {
  sock->addr = *addr;
  sock->nat = nat;
}

/* ---- NAT behaviour --------------------------------------------------------- */

static bool port_in_use(const kp_sim_nat_t *nat, uint16_t port) {
  for (size_t i = 0; i < nat->map_count; i++)
    if (nat->maps[i].port == port) return true;
  return false;
}

static mapping_t *find_mapping(kp_sim_nat_t *nat, const kp_addr_t *inside, const kp_addr_t *dest) {
  for (size_t i = 0; i < nat->map_count; i++) {
    mapping_t *m = &nat->maps[i];
    if (!kp_addr_eq(&m->inside, inside)) continue;
    if (nat->mapping == KP_SIM_MAP_RANDOM && !kp_addr_eq(&m->dest, dest)) continue;
    return m;
  }
  return NULL;
}

static mapping_t *outbound(kp_sim_nat_t *nat, const kp_addr_t *inside, const kp_addr_t *dest) {
  mapping_t *m = find_mapping(nat, inside, dest);
  if (!m) {
    uint16_t port;
    if (nat->mapping == KP_SIM_MAP_NONE) {
      port = inside->port;
    } else if (nat->mapping == KP_SIM_MAP_CONSISTENT && !port_in_use(nat, inside->port)) {
      port = inside->port; /* port-preserving, like MASQUERADE */
    } else {
      kp_rng_t rng = kp_rng_seeded(&nat->sim->rng);
      do port = (uint16_t)(1024 + kp_rng_below(&rng, 64511));
      while (port_in_use(nat, port));
    }
    nat->maps = realloc(nat->maps, (nat->map_count + 1) * sizeof(mapping_t));
    if (!nat->maps) abort();
    m = &nat->maps[nat->map_count++];
    memset(m, 0, sizeof(*m));
    m->inside = *inside;
    m->dest = *dest;
    m->port = port;
  }
  for (size_t i = 0; i < m->seen_count; i++)
    if (kp_addr_eq(&m->seen[i], dest)) return m;
  m->seen = realloc(m->seen, (m->seen_count + 1) * sizeof(kp_addr_t));
  if (!m->seen) abort();
  m->seen[m->seen_count++] = *dest;
  return m;
}

static bool filter_allows(const kp_sim_nat_t *nat, const mapping_t *m, const kp_addr_t *from) {
  if (nat->filter == KP_SIM_FILTER_OPEN) return true;
  for (size_t i = 0; i < m->seen_count; i++) {
    if (nat->filter == KP_SIM_FILTER_ADDRESS && kp_addr_same_ip(&m->seen[i], from)) return true;
    if (nat->filter == KP_SIM_FILTER_PORT && kp_addr_eq(&m->seen[i], from)) return true;
  }
  return false;
}

/* ---- Sending and delivery -------------------------------------------------- */

static double uniform(kp_sim_t *sim) {
  return (double)(kp_rng_seeded_next(&sim->rng) >> 11) / 9007199254740992.0;
}

static void schedule_packet(kp_sim_t *sim, const kp_addr_t *from, const kp_addr_t *to,
                            kp_sim_nat_t *lan, const uint8_t *data, size_t len) {
  unsigned span = sim->link.latency_max_ms - sim->link.latency_min_ms;
  kp_rng_t rng = kp_rng_seeded(&sim->rng);
  event_t ev = {0};
  /* A LAN is one switch away: 1 ms. */
  ev.at =
      sim->now + (lan ? 1 : sim->link.latency_min_ms + (span ? kp_rng_below(&rng, span + 1) : 0));
  ev.lan = lan;
  ev.seq = ++sim->seq;
  ev.kind = EV_PACKET;
  ev.from = *from;
  ev.to = *to;
  ev.len = len;
  ev.data = malloc(len ? len : 1);
  if (!ev.data) abort();
  memcpy(ev.data, data, len);
  heap_push(sim, ev);
}

static bool on_lan(const kp_sim_t *sim, const kp_sim_nat_t *nat, const kp_addr_t *to) {
  for (const kp_sim_socket_t *s = sim->sockets; s; s = s->next)
    if (s->nat == nat && kp_addr_eq(&s->addr, to)) return true;
  return false;
}

void kp_sim_send(kp_sim_socket_t *sock, const kp_addr_t *to, const uint8_t *data, size_t len) {
  kp_sim_t *sim = sock->sim;
  kp_addr_t from = sock->addr;
  sim->stats.sent++;
  if (sim->tap) sim->tap(sim->tap_ctx, &sock->addr, to, data, len);
  if (sim->drop && sim->drop(sim->drop_ctx, &sock->addr, to, data, len)) {
    sim->stats.lost++;
    return;
  }
  kp_sim_nat_t *lan = NULL;
  if (sock->nat && sock->nat->mapping != KP_SIM_MAP_NONE && on_lan(sim, sock->nat, to)) {
    /* Another host on the same LAN: no translation. */
    lan = sock->nat;
  } else if (sock->nat) {
    if (kp_addr_same_ip(&sock->nat->public_ip, to)) {
      /* No hairpinning: a NAT drops what its own hosts send to its outside. */
      sim->stats.filtered++;
      return;
    }
    mapping_t *m = outbound(sock->nat, &sock->addr, to);
    from = sock->nat->public_ip;
    from.port = m->port;
  }
  if (uniform(sim) < sim->link.loss) {
    sim->stats.lost++;
    return;
  }
  schedule_packet(sim, &from, to, lan, data, len);
  if (sim->link.duplicate > 0 && uniform(sim) < sim->link.duplicate)
    schedule_packet(sim, &from, to, lan, data, len);
}

/* The socket a packet reaches, or NULL (counted as filtered or unroutable). */
static kp_sim_socket_t *route(kp_sim_t *sim, const kp_addr_t *to, const kp_addr_t *from) {
  /* A NAT's public address first: translate back, then filter. */
  for (kp_sim_nat_t *nat = sim->nats; nat; nat = nat->next) {
    if (!kp_addr_same_ip(&nat->public_ip, to)) continue;
    for (size_t i = 0; i < nat->map_count; i++) {
      mapping_t *m = &nat->maps[i];
      if (m->port != to->port) continue;
      if (!filter_allows(nat, m, from)) {
        sim->stats.filtered++;
        return NULL;
      }
      for (kp_sim_socket_t *s = sim->sockets; s; s = s->next)
        if (s->nat == nat && kp_addr_eq(&s->addr, &m->inside)) return s;
      sim->stats.unroutable++;
      return NULL;
    }
    /* No mapping: unsolicited. Only a NONE-mapping NAT with open filtering
     * (no firewall at all) lets it through to a socket bound there. */
    if (nat->mapping != KP_SIM_MAP_NONE || nat->filter != KP_SIM_FILTER_OPEN) {
      sim->stats.filtered++;
      return NULL;
    }
  }
  for (kp_sim_socket_t *s = sim->sockets; s; s = s->next) {
    if (!kp_addr_eq(&s->addr, to)) continue;
    if (s->nat && s->nat->mapping != KP_SIM_MAP_NONE) continue; /* private: not reachable */
    return s;
  }
  sim->stats.unroutable++;
  return NULL;
}

static kp_sim_socket_t *route_lan(kp_sim_t *sim, kp_sim_nat_t *lan, const kp_addr_t *to) {
  for (kp_sim_socket_t *s = sim->sockets; s; s = s->next)
    if (s->nat == lan && kp_addr_eq(&s->addr, to)) return s;
  sim->stats.unroutable++;
  return NULL;
}

static void deliver(kp_sim_t *sim, event_t *ev) {
  kp_sim_socket_t *s = ev->lan ? route_lan(sim, ev->lan, &ev->to) : route(sim, &ev->to, &ev->from);
  if (!s) return;
  sim->stats.delivered++;
  s->recv(s->ctx, s, &ev->from, ev->data, ev->len, sim->now);
}

uint64_t kp_sim_timer(kp_sim_t *sim, uint64_t at, kp_sim_timer_fn fn, void *ctx) {
  event_t ev = {0};
  ev.at = at < sim->now ? sim->now : at;
  ev.seq = ++sim->seq;
  ev.kind = EV_TIMER;
  ev.fn = fn;
  ev.ctx = ctx;
  heap_push(sim, ev);
  return ev.seq;
}

void kp_sim_timer_cancel(kp_sim_t *sim, uint64_t id) {
  if (sim->cancelled_len == sim->cancelled_cap) {
    sim->cancelled_cap = sim->cancelled_cap ? sim->cancelled_cap * 2 : 64;
    sim->cancelled = realloc(sim->cancelled, sim->cancelled_cap * sizeof(uint64_t));
    if (!sim->cancelled) abort();
  }
  sim->cancelled[sim->cancelled_len++] = id;
}

static bool take_cancelled(kp_sim_t *sim, uint64_t id) {
  for (size_t i = 0; i < sim->cancelled_len; i++) {
    if (sim->cancelled[i] == id) {
      sim->cancelled[i] = sim->cancelled[--sim->cancelled_len];
      return true;
    }
  }
  return false;
}

static void run_one(kp_sim_t *sim) {
  event_t ev = heap_pop(sim);
  if (ev.at > sim->now) sim->now = ev.at;
  if (ev.kind == EV_PACKET) {
    deliver(sim, &ev);
    free(ev.data);
  } else if (!take_cancelled(sim, ev.seq)) {
    ev.fn(ev.ctx, sim->now);
  }
}

size_t kp_sim_run_until(kp_sim_t *sim, uint64_t until) {
  size_t n = 0;
  while (sim->heap_len && sim->heap[0].at <= until) {
    run_one(sim);
    n++;
  }
  if (sim->now < until) sim->now = until;
  return n;
}

bool kp_sim_run_while(kp_sim_t *sim, uint64_t until, bool (*pred)(void *ctx), void *ctx) {
  if (pred(ctx)) return true;
  while (sim->heap_len && sim->heap[0].at <= until) {
    run_one(sim);
    if (pred(ctx)) return true;
  }
  if (sim->now < until) sim->now = until;
  return pred(ctx);
}

void kp_sim_jump(kp_sim_t *sim, uint64_t to) {
  if (to <= sim->now) return;
  sim->now = to;
  /* Everything that fell due while asleep happens "now", in its old order
   * (the sequence numbers keep it); re-heap since keys changed. */
  event_t *old = sim->heap;
  size_t n = sim->heap_len;
  sim->heap = NULL;
  sim->heap_len = sim->heap_cap = 0;
  for (size_t i = 0; i < n; i++) {
    if (old[i].at < to) old[i].at = to;
    heap_push(sim, old[i]);
  }
  free(old);
}
