/* SPDX-License-Identifier: MIT */
/* The crawler behind `kadpunch-inspect crawl`: walks the whole DHT from a
 * few starting nodes by asking every node it hears of for the nodes it
 * knows, at a bounded rate, until nobody is left to ask or a bound stops it.
 *
 * Each node is asked FIND_NODE for its own id first (its neighbourhood: a
 * node knows every node near it), then for a random id in each of its top
 * buckets (0 .. depth, where depth follows log2(nodes / k) as the count
 * grows), so every bucket of every table is seen. Requests to one node go
 * one at a time; the crawl as a whole keeps `parallel` in flight and sends
 * at most `rate` a second. A node is given up on after two requests (each
 * with the DHT's retries) that got no answer. */
#ifndef KP_INSPECT_CRAWL_H
#define KP_INSPECT_CRAWL_H

#include "tools/inspect/inspect.h"

typedef enum { KP_CRAWL_NEW = 0, KP_CRAWL_ANSWERED, KP_CRAWL_SILENT } kp_crawl_state_t;

typedef struct kp_crawl_node_s {
  kp_addr_t addr;
  uint8_t id[KP_ID_LEN]; /* BLAKE2b of the address, as every member's */
  uint8_t state;         /* kp_crawl_state_t */
  bool member;           /* answered with its (verified) id */
  bool relay;            /* announced as a blind relay (kp_crawl_mark_relays) */
  bool proxy;            /* announced as a proxy (kp_crawl_mark_proxies) */
  bool queued, busy;
  uint8_t probes; /* requests finished (answered or given up on) */
  uint8_t fails;
  uint16_t hops; /* referrals from a starting node (0) */
  float rtt_ms;  /* the lowest first-try round trip; negative: none */
} kp_crawl_node_t;

typedef struct kp_crawl_opts_s {
  unsigned rate;         /* requests per second */
  unsigned parallel;     /* requests in flight */
  unsigned max_nodes;    /* nodes tracked; more are counted, not asked */
  uint64_t max_requests; /* then the crawl stops */
  unsigned timeout_ms;   /* then the crawl stops */
  int buckets;           /* bucket probes per node; negative: follow the network's size */
} kp_crawl_opts_t;

void kp_crawl_opts_init(kp_crawl_opts_t *o);

typedef struct kp_crawl_slot_s kp_crawl_slot_t;

typedef struct kp_crawl_s {
  kp_inspect_session_t *s;
  kp_crawl_opts_t o;
  kp_crawl_node_t *nodes;
  size_t count;
  uint32_t *index; /* open addressing over nodes, by address */
  size_t index_cap;
  uint8_t index_key[16];
  uint32_t *queue; /* ring of node indices waiting for their next request */
  size_t q_head, q_len;
  kp_crawl_slot_t *slots; /* requests in flight */
  unsigned inflight;
  unsigned depth;
  uint64_t requests, answers, timeouts, over_max_nodes;
  double tokens;
  uint64_t refilled_ns, started_ns, ended_ns;
  uv_timer_t pacer;
  bool finished;
  const char *stopped_by;                /* NULL: ran out of nodes to ask */
  void (*on_tick)(struct kp_crawl_s *c); /* progress, every pacer tick */
  void *data;
} kp_crawl_t;

/* Starts crawling from seeds on the session's node. Returns 0 or
 * UV_ENOMEM. c must stay put until kp_crawl_free. */
int kp_crawl_start(kp_crawl_t *c, kp_inspect_session_t *s, const kp_addr_t *seeds, size_t n,
                   const kp_crawl_opts_t *o);
/* For kp_inspect_session_run: the crawl is over. */
bool kp_crawl_finished(void *c);
/* Ends the crawl now (why: "signal", ...); requests in flight are dropped
 * as they come back. */
void kp_crawl_stop(kp_crawl_t *c, const char *why);
/* After kp_crawl_finished and the session's close (whose loop completes
 * the pacer's close and cancels what was still in flight). */
void kp_crawl_free(kp_crawl_t *c);

/* Requests planned per node at the current depth. */
unsigned kp_crawl_planned(const kp_crawl_t *c);

/* ---- The report (crawl_report.c, crawl_svg.c) ---------------------------- */

typedef struct kp_crawl_summary_s {
  size_t found, answered, members, silent, unasked;
  size_t relays;  /* nodes announced as blind relays */
  size_t proxies; /* nodes announced as proxies */
  unsigned max_hops;
  uint64_t datagrams; /* sent, retries included (the caller fills it in) */
  double duration_s;
  size_t rtt_samples;
  double p50, p90, p99, max;  /* ms */
  unsigned sectors, covered;  /* the id space in 2^n sectors, and those holding nodes */
  double largest_gap, gap_at; /* fractions of the ring (first 64 bits of ids) */
  double expected_gap;        /* the mean largest gap of as many random ids */
} kp_crawl_summary_t;

/* Everything but datagrams. Returns 0 or UV_ENOMEM. */
int kp_crawl_summarise(const kp_crawl_t *c, kp_crawl_summary_t *s);
void kp_crawl_print_text(const kp_crawl_t *c, const kp_crawl_summary_t *s, const char *from,
                         bool list);
int kp_crawl_print_json(const kp_crawl_t *c, const kp_crawl_summary_t *s, const char *from);
/* The network on the keyspace ring, one <circle class="node"> per node
 * found. Returns 0 or an exit code after saying why the file failed. */
int kp_crawl_svg(const kp_crawl_t *c, const kp_crawl_summary_t *s, const char *from,
                 const char *path);
/* Looks up the relays' topic ("kadpunch/relays/v1", docs/protocol.md
 * "Relaying") from the session's node and marks the crawled nodes at the
 * addresses those records name (a node stores such a record only from
 * the address it names). Returns how many were marked. */
size_t kp_crawl_mark_relays(kp_crawl_t *c, kp_inspect_session_t *s);
/* The same for the proxies' topic ("kadpunch/proxies/v1", docs/protocol.md
 * "Proxying"; stored, too, only from the address a record names). */
size_t kp_crawl_mark_proxies(kp_crawl_t *c, kp_inspect_session_t *s);
/* The ring position of an id: its first 64 bits as a fraction of a turn. */
double kp_crawl_ring_pos(const uint8_t id[KP_ID_LEN]);

#endif
