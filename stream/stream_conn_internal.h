/* SPDX-License-Identifier: MIT */
/* The connection's insides, shared by stream_conn.c (packets, timers,
 * paths) and stream_streams.c (streams, buffers, flow control). */
#ifndef KP_STREAM_CONN_INTERNAL_H
#define KP_STREAM_CONN_INTERNAL_H

#include "stream/stream_bbr.h"
#include "stream/stream_cc.h"
#include "stream/stream_conn.h"
#include "stream/stream_crypto.h"
#include "stream/stream_datagram.h"
#include "stream/stream_frame.h"
#include "stream/stream_ranges.h"
#include "stream/stream_recovery.h"

/* Out-of-order (or not yet read) received data of one stream. */
typedef struct kp_chunk_s {
  struct kp_chunk_s *next;
  uint64_t offset;
  size_t len, cap; /* data held, room allocated */
  uint8_t data[];
} kp_chunk_t;

typedef struct kp_sstream_s kp_sstream_t;
struct kp_sstream_s {
  uint64_t id;
  void *user;
  kp_sstream_t *hnext;      /* hash chain */
  kp_sstream_t *next_ready; /* round robin of streams with something to send */
  bool in_ready;
  /* Sending. */
  kp_swrite_t *wq_head, *wq_tail; /* writes not fully acknowledged, by offset */
  kp_swrite_t *cursor;            /* the write holding send_offset */
  uint64_t write_end;             /* bytes the application wrote */
  uint64_t send_offset;           /* next new byte to send */
  uint64_t acked_prefix;          /* every byte below this was acknowledged */
  kp_ranges_t acked;              /* acknowledged above the prefix */
  kp_ranges_t resend;             /* lost, to send again */
  uint64_t peer_max;              /* the peer's MAX_STREAM_DATA */
  bool fin_wanted, fin_sent, fin_acked, fin_lost;
  bool reset_pending, reset_sent; /* our RESET_STREAM */
  uint64_t reset_code;
  bool send_done; /* fin acked, or reset */
  /* Receiving. */
  uint64_t recv_next;       /* next in-order byte to deliver */
  uint64_t recv_high;       /* highest byte received + 1 */
  uint64_t recv_limit_sent; /* the MAX_STREAM_DATA we advertised */
  uint64_t window;          /* its receive window: grows while it is read */
  bool limit_pending;
  kp_chunk_t *chunks;      /* sorted, not overlapping each other */
  kp_chunk_t *chunks_tail; /* the last: most arrivals after a gap go after it */
  size_t chunk_count;
  uint64_t credited; /* bytes of this stream counted as consumed (connection window) */
  size_t buffered;
  bool paused;
  bool fin_received; /* the final size is known: a FIN, or a RESET_STREAM */
  uint64_t final_size;
  bool recv_done;               /* nothing more is delivered: EOF, a reset, or we stopped */
  bool stop_pending, stop_sent; /* our STOP_SENDING */
  uint64_t stop_code;
  bool deliver_due; /* resumed with data buffered */
};

typedef enum { S_OPEN, S_CLOSING, S_DRAINING, S_CLOSED } kp_sconn_state_t;

/* The most ack-eliciting packets per ack a peer may ask for. */
#define KP_ACK_EVERY_MAX 32

/* Datagram sizes path MTU probing tries: 1472, 1452, 1400, 1280. */
#define KP_MTU_PROBE_SIZES 4

/* Received packet numbers, for building acks: newest ranges first. */
#define KP_RECV_RANGES (KP_STREAM_MAX_ACK_RANGES + 1)

struct kp_sconn_s {
  kp_sconn_config_t cfg;
  kp_sconn_events_t ev;
  kp_sconn_state_t state;
  kp_aead_t tx, rx;
  kp_replay_t replay;
  kp_recovery_t rec;
  /* Congestion control: the model (cfg.cc KP_CC_MODEL) or CUBIC with its
   * loss gate; one pacer for either. */
  bool model;
  kp_bbr_t bbr;
  kp_cubic_t cc;
  kp_loss_gate_t loss_gate;
  kp_pacer_t pacer;
  bool cwnd_limited;
  /* Paths. */
  kp_addr_t remote;
  bool path_pinned; /* moved only by kp_sconn_set_remote */
  /* Liveness: since when something ack-eliciting went out unanswered (0:
   * nothing outstanding), and whether that lasted past path_dead_ms. */
  uint64_t unanswered_since;
  /* The peer's ack-eliciting packets: the newest, and how many since we
   * last asked after a silence (a sending peer that goes quiet). */
  uint64_t heard_eliciting_us;
  unsigned heard_since_probe;
  bool path_dead;
  uint64_t dead_since;
  bool validating;
  kp_addr_t candidate;
  uint8_t challenge[8];
  uint64_t challenge_at;
  unsigned challenges;
  bool response_pending;
  kp_addr_t response_to;
  uint8_t response[8];
  /* MTU. */
  unsigned mtu, mtu_max;
  uint8_t probe_failures[KP_MTU_PROBE_SIZES]; /* per size tried */
  uint8_t probe_inflight;                     /* bit i: a probe of size i is out */
  uint64_t probe_at;
  /* Datagrams over the base size lost, all sent after the last one that
   * got through (sent at big_acked_sent_us). */
  unsigned big_lost_run;
  uint64_t big_acked_sent_us;
  /* Acks to send. */
  struct {
    uint64_t lo, hi;
  } recv_ranges[KP_RECV_RANGES];
  unsigned recv_range_count;
  uint64_t largest_recv_us;
  /* The packet being read could not be taken whole (memory, chunk or stream
   * limits): it is not acknowledged, so its sender sends it again. */
  bool recv_unstored;
  bool window_update_due; /* the connection window grew: tell the peer */
  size_t chunk_count;     /* out-of-order chunks held, all streams */
  bool ack_pending;
  bool ack_now;               /* a gap or reordering: tell the sender at once */
  unsigned unacked_eliciting; /* ack-eliciting packets since our last ack */
  unsigned ack_every;         /* ... that make an ack due (the peer's ACK_FREQUENCY) */
  uint64_t ack_freq_seen;     /* the newest ACK_FREQUENCY sequence number taken */
  /* ACK_FREQUENCY to send: what we asked for last, under which number. */
  unsigned ack_freq_asked;
  uint64_t ack_freq_seq;
  bool ack_freq_pending;
  uint64_t ack_due_us;
  /* Flow control. Our receive windows now: the configured ones, grown with
   * the measured bandwidth-delay product up to the maxima. */
  uint64_t conn_window, stream_window;
  uint64_t rwnd_at_us, rwnd_consumed; /* the measurement's round trip */
  uint64_t peer_max_data;             /* stream bytes the peer accepts, total */
  uint64_t sent_new;                  /* first copies of stream bytes sent */
  uint64_t consumed;                  /* stream bytes delivered to the application */
  uint64_t recv_total_high;           /* sum of streams' recv_high */
  uint64_t max_data_sent;             /* the largest max data our acks announced */
  /* Streams. */
  kp_sstream_t **buckets;
  size_t bucket_count, stream_count, peer_streams;
  uint64_t next_local_id;
  uint64_t next_peer_min; /* the lowest peer stream id not seen yet */

  kp_sstream_t *ready_head, *ready_tail;
  kp_dgram_queue_t dgrams; /* unreliable datagrams waiting for the window */
  bool deliver_due;
  /* Timers and liveness. */
  uint64_t last_recv_us, last_eliciting_sent_us;
  bool probe_wanted; /* a tail-loss probe or RTO retransmission is owed */
  /* Closing. */
  bool close_pending;
  uint64_t close_code;
  char close_reason[64];
  uint64_t close_deadline_us;
  int closed_status;
  kp_sconn_stats_t stats;
};

/* stream_streams.c */
kp_sstream_t *kp__sstream_find(kp_sconn_t *c, uint64_t id);
/* The stream for a frame from the peer, opened if new and allowed; NULL if
 * it was closed already or refused. */
kp_sstream_t *kp__sstream_for_peer(kp_sconn_t *c, uint64_t id, uint64_t now);
void kp__sstreams_free(kp_sconn_t *c);
void kp__sstream_on_data(kp_sconn_t *c, kp_sstream_t *s, uint64_t offset, const uint8_t *data,
                         size_t len, bool fin);
/* false: the final size contradicts what was seen or flow control. */
bool kp__sstream_on_reset(kp_sconn_t *c, kp_sstream_t *s, uint64_t code, uint64_t final_size);
void kp__sstream_on_stop(kp_sconn_t *c, kp_sstream_t *s, uint64_t code);
void kp__sstream_on_max_data(kp_sconn_t *c, kp_sstream_t *s, uint64_t max);
void kp__sstream_frame_acked(kp_sconn_t *c, const kp_sent_frame_t *f);
void kp__sstream_frame_lost(kp_sconn_t *c, const kp_sent_frame_t *f);
void kp__sstream_mark_ready(kp_sconn_t *c, kp_sstream_t *s);
/* Writes frames for the next ready stream(s) into w (at most max_frames,
 * recorded in sent); new_data_allowed: flow control and congestion permit
 * new bytes. Returns true if anything was written. */
bool kp__sstreams_fill(kp_sconn_t *c, kp_wbuf_t *w, kp_sent_t *sent, bool new_data_allowed);
/* Control frames (MAX_STREAM_DATA, RESET_STREAM, STOP_SENDING) owed. */
bool kp__sstreams_fill_control(kp_sconn_t *c, kp_wbuf_t *w, kp_sent_t *sent);
bool kp__sstreams_have_control(const kp_sconn_t *c);
bool kp__sstreams_have_data(const kp_sconn_t *c);
/* Data waits only on the peer's connection window. */
bool kp__sstreams_blocked_on_conn(const kp_sconn_t *c);
/* Delivers what resumed streams buffered. */
void kp__sstreams_deliver(kp_sconn_t *c);
/* Fails every pending write (the connection is over). */
void kp__sstreams_fail_all(kp_sconn_t *c, int status);
void kp__sstream_maybe_done(kp_sconn_t *c, kp_sstream_t *s);

/* stream_datagram.c */
bool kp__dgrams_queued(const kp_sconn_t *c);
/* Drops queued datagrams that fit no packet now (counted); returns the
 * bytes of frames the first ones take that fit in room together: what the
 * packet being built keeps for them. */
size_t kp__dgrams_reserve(kp_sconn_t *c, size_t room);
/* Writes queued datagrams into w while they fit; returns how many. */
unsigned kp__dgrams_fill(kp_sconn_t *c, kp_wbuf_t *w);
/* Drops every queued datagram (counted): the connection is over. */
void kp__dgrams_free(kp_sconn_t *c);
/* A DATAGRAM frame arrived: delivered to the owner at once. */
void kp__dgram_received(kp_sconn_t *c, const uint8_t *data, size_t len);

#endif
