/* SPDX-License-Identifier: MIT */
/* Two data-plane connections joined by a simulated link (link.h), on a
 * virtual microsecond clock, with an application on each side that writes
 * patterned bytes through the libuv-shaped write/ack path and checks every
 * byte it reads. For tests of the stream state machine. */
#ifndef KP_TEST_STREAM_PAIR_H
#define KP_TEST_STREAM_PAIR_H

#include "stream/stream_conn.h"
#include "tests/sim/link.h"

#define PAIR_MAX_STREAMS 64

typedef struct pair_s pair_t;

/* What one side's application does with one stream. */
typedef struct pair_stream_s {
  uint64_t id;
  bool used;
  /* Sending: `total` patterned bytes, at most `high_water` unacknowledged,
   * in writes of up to `chunk`; then end (FIN). */
  uint64_t total, written, acked;
  bool ended;
  unsigned writes_pending;
  int write_error; /* first failed write's status */
  /* Receiving. */
  uint64_t received;
  bool eof, reset, done, opened_by_peer;
  uint64_t reset_code;
  uint64_t mismatches; /* bytes that differ from the pattern */
} pair_stream_t;

typedef struct pair_side_s {
  pair_t *pair;
  int side;
  kp_sconn_t *conn;
  kp_sconn_config_t cfg;
  pair_stream_t streams[PAIR_MAX_STREAMS];
  bool closed;
  int closed_status;
  uint64_t closed_code, closed_at;
  unsigned path_changes;
  /* The transport's path_state events: whether it says the path is dead,
   * since when, and how often it said either. */
  bool path_dead;
  uint64_t path_dead_at;
  unsigned path_dead_events, path_alive_events;
  uint64_t high_water, chunk;
  uint64_t reply_total; /* bytes to send back on each stream the peer opens */
  bool pause_new;       /* pause reading every stream the peer opens */
  /* Datagrams received: each starts with a 64-bit sequence number (the
   * sender's, pair_send_datagram); one below the highest seen before it
   * came out of order, one seen before is a duplicate. */
  uint64_t dgrams_received, dgram_high, dgrams_reordered, dgrams_duplicated, dgram_last_at;
  uint8_t *dgram_seen; /* a bit per sequence number, below PAIR_DGRAM_SEQS */
  uint64_t dgram_next_seq;
} pair_side_t;

#define PAIR_DGRAM_SEQS (1u << 20)

/* Drops (false) or alters a datagram about to reach side pkt->side. */
typedef bool (*pair_filter_fn)(pair_t *p, kp_link_packet_t *pkt);

struct pair_s {
  kp_link_t *link;
  pair_side_t side[2];
  uint64_t now;
  pair_filter_fn filter;
  void *filter_ctx;
  uint64_t events;
};

/* A pair at 198.51.100.1:1000 <-> 203.0.113.1:2000 with derived keys;
 * side 0 is the initiator. cfg_fn may adjust each side's config. */
void pair_init(pair_t *p, uint64_t seed, const kp_link_params_t *link,
               void (*cfg_fn)(int side, kp_sconn_config_t *cfg));
void pair_destroy(pair_t *p);

/* Side `side` opens a stream and will send total bytes on it. */
pair_stream_t *pair_open(pair_t *p, int side, uint64_t total);
pair_stream_t *pair_stream(pair_t *p, int side, uint64_t id);

/* Side `side` queues a datagram of len bytes (>= 8) carrying its next
 * sequence number; returns kp_sconn_datagram_send's result. */
int pair_send_datagram(pair_t *p, int side, size_t len);

/* Runs until done(p) holds or the clock passes until_us. */
bool pair_run(pair_t *p, uint64_t until_us, bool (*done)(pair_t *p));
/* True once every stream either side sends on is fully acknowledged and
 * received with EOF by the other. */
bool pair_all_delivered(pair_t *p);
/* True once neither connection holds any stream state. */
bool pair_streams_gone(pair_t *p);
/* Prints every stream's progress (for failing tests). */
void pair_dump(pair_t *p);

/* The pattern byte at offset off of a stream with id. */
uint8_t pair_pattern(uint64_t id, uint64_t off);

#endif
