/* SPDX-License-Identifier: MIT */
/* Bulk flows sharing one simulated bottleneck (link.h), on a virtual
 * microsecond clock, for tests of the congestion controller: kadpunch
 * connections (side 0 writes without end, side 1 reads everything at once)
 * and Reno-like flows (a NewReno sender without SACK, ack-clocked and
 * unpaced, and a receiver that acks every packet: a loss-based TCP to
 * compete with). Each flow has its own pair of hosts behind the link's two
 * ends; what each receiving application got is sampled every
 * FLOWS_SAMPLE_US, and the bottleneck queue with it. */
#ifndef KP_TEST_FLOWS_H
#define KP_TEST_FLOWS_H

#include "stream/stream_conn.h"
#include "tests/sim/link.h"

#define FLOWS_MAX 4
#define FLOWS_SAMPLE_US 100000ull
#define FLOWS_SAMPLES 1200 /* two minutes */
#define RENO_WINDOW 16384  /* packets in flight at most */
#define RENO_PACKET 1472   /* bytes on the wire, as kadpunch's after MTU probing */
/* A kadpunch sender keeps this many writes of 64 KiB unacknowledged (32
 * MiB: far more than any window here, so the application never limits
 * it). They complete in order, so they live in a ring. */
#define FLOW_WRITES 512
#define FLOW_WRITE_BYTES 65536

typedef enum { FLOW_KADPUNCH, FLOW_RENO } flow_kind_t;

typedef struct reno_s {
  /* Sender: sequence numbers count packets. */
  double cwnd;
  uint64_t ssthresh, next, una, high, recover;
  unsigned dupacks;
  bool recovery, have_rtt;
  uint64_t srtt, rttvar, rto, rto_at;
  uint64_t sent_at[RENO_WINDOW];
  bool retransmitted[RENO_WINDOW]; /* no RTT sample from these (Karn) */
  uint64_t timeouts, fast_retransmits;
  /* Receiver. */
  uint64_t rcv_nxt;
  uint8_t ooo[RENO_WINDOW / 8]; /* arrived above rcv_nxt: bit (seq % RENO_WINDOW) */
} reno_t;

typedef struct flows_s flows_t;
typedef struct flow_s flow_t;

typedef struct flow_write_s {
  kp_swrite_t w;
  flow_t *flow;
} flow_write_t;

/* One end of a kadpunch flow: the context of its connection's events. */
typedef struct flow_end_s {
  flows_t *flows;
  flow_t *flow;
  int side;
  kp_rng_seeded_t rng;
} flow_end_t;

struct flow_s {
  flow_kind_t kind;
  kp_cc_t cc; /* kadpunch: the sender's controller */
  uint64_t start_us;
  bool started;
  kp_addr_t addr[2];
  uint64_t delivered; /* bytes the receiving application got */
  uint64_t samples[FLOWS_SAMPLES];
  /* kadpunch */
  kp_sconn_t *conn[2];
  flow_end_t end[2];
  uint64_t stream, written, acked;
  flow_write_t writes[FLOW_WRITES];
  /* Reno-like */
  reno_t *reno;
};

struct flows_s {
  kp_link_t *link;
  flow_t flow[FLOWS_MAX];
  unsigned n;
  uint64_t now;
  unsigned nsamples;
  /* The bottleneck's queue (side 0 to side 1), bytes, sampled with the
   * flows. */
  uint64_t queue[FLOWS_SAMPLES];
};

/* fwd: the direction the data takes (side 0 to side 1); back: the acks'. */
void flows_init(flows_t *f, uint64_t seed, const kp_link_params_t *fwd,
                const kp_link_params_t *back);
/* A flow that starts at start_us (cc: for kadpunch flows). */
flow_t *flows_add(flows_t *f, flow_kind_t kind, kp_cc_t cc, uint64_t start_us);
/* Runs until the clock reaches until_us. */
void flows_run(flows_t *f, uint64_t until_us);
/* Goodput of flow i, Mbit/s, between two sample times. */
double flows_mbit(const flows_t *f, unsigned i, uint64_t from_us, uint64_t to_us);
/* The bottleneck's mean queue, bytes, between two sample times. */
double flows_queue(const flows_t *f, uint64_t from_us, uint64_t to_us);
void flows_destroy(flows_t *f);

#endif
