/* SPDX-License-Identifier: MIT */
/* Loss recovery for one direction of a connection (pure, times in us).
 *
 * Every packet gets a new packet number; what it carried is recorded as up
 * to KP_SENT_MAX_FRAMES frame references. An ack marks packets delivered;
 * a packet is declared lost when three later ones were acked, or when 9/8
 * of the RTT has passed since it left and a later one was acked (RACK, RFC
 * 8985 section 6.2, with QUIC's thresholds). A packet acked after it was
 * declared lost was only reordered: both thresholds grow. Lost frames go
 * back to their owner to be sent again, in new packets. With no ack for a probe timeout
 * (SRTT + 4 RTTVAR + a timer granularity, RFC 6298's estimator), the first expiry
 * sends a tail-loss probe and later ones are RTOs: everything outstanding is
 * declared lost and the timeout doubles each time. */
#ifndef KP_STREAM_RECOVERY_H
#define KP_STREAM_RECOVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stream/stream_bbr.h"
#include "stream/stream_frame.h"

#define KP_SENT_MAX_FRAMES 4
#define KP_PACKET_THRESHOLD 3 /* to start with; reordering raises it */
#define KP_PACKET_THRESHOLD_MAX 256
#define KP_REORDER_MULT_MAX 4 /* time threshold: + up to 4 x min_rtt / 4 */
#define KP_RECENT_LOST 64     /* losses remembered to notice spurious ones */
/* The timer granularity the timeouts allow for (the glue keeps
 * microseconds where it can). */
#define KP_GRANULARITY_US 250
/* How long a receiver may sit on an ack (every second packet is acked at
 * once; this bounds the wait for a lone one). Short, because a sender with
 * a small window stalls on it: on a sub-millisecond path with loss, a
 * longer delay costs more than the acks it saves. */
#define KP_MAX_ACK_DELAY_US 1000
#define KP_INITIAL_RTT_US 100000

enum {
  KP_SENT_ACK_ELICITING = 1,
  KP_SENT_IN_FLIGHT = 2, /* counts against the congestion window */
  KP_SENT_ACKED = 4,
  KP_SENT_LOST = 8,
  KP_SENT_MTU_PROBE = 16,
};

/* What a packet carried, for retransmission and for acknowledging writes. */
typedef struct kp_sent_frame_s {
  uint8_t type; /* kp_frame_type_t */
  bool fin;
  uint32_t len;
  uint64_t stream_id;
  uint64_t offset; /* STREAM: data offset; MAX_STREAM_DATA: the limit sent */
} kp_sent_frame_t;

typedef struct kp_sent_s {
  uint64_t sent_us;
  uint32_t size;
  uint8_t flags;
  uint8_t nframes;
  uint8_t datagrams; /* DATAGRAM frames: counted when lost, never sent again */
  kp_sent_frame_t frames[KP_SENT_MAX_FRAMES];
  kp_rate_stamp_t rate; /* for the delivery rate (KP_SENT_IN_FLIGHT packets) */
} kp_sent_t;

/* Owner's hooks: a frame delivered or lost; a packet newly acked or lost
 * (for congestion control: size and when it was sent). */
typedef struct kp_recovery_hooks_s {
  void (*frame_acked)(void *ctx, const kp_sent_frame_t *f);
  void (*frame_lost)(void *ctx, const kp_sent_frame_t *f);
  void (*packet_acked)(void *ctx, const kp_sent_t *p, uint64_t now_us);
  void (*packet_lost)(void *ctx, const kp_sent_t *p, uint64_t now_us);
  void *ctx;
} kp_recovery_hooks_t;

typedef struct kp_recovery_s {
  kp_recovery_hooks_t hooks;
  /* Sent packets first_pn .. first_pn + count - 1 in a growable ring. */
  kp_sent_t *ring;
  size_t cap;
  size_t head;
  size_t count;
  uint64_t first_pn;
  uint64_t next_pn;
  uint64_t bytes_in_flight;
  uint64_t largest_acked;
  bool any_acked;
  /* RTT (RFC 6298 estimator; QUIC's use of the ack delay). */
  bool have_rtt;
  uint64_t latest_rtt_us, min_rtt_us, srtt_us, rttvar_us;
  uint64_t floor_cur_us, floor_prev_us, floor_start_us; /* see kp_recovery_rtt_floor */
  /* Timers. */
  uint64_t loss_time_us;      /* earliest time-threshold loss, or 0 */
  uint64_t last_eliciting_us; /* when the last ack-eliciting packet left */
  unsigned pto_count;         /* consecutive probe timeouts */
  /* Reordering (RFC 8985 section 6.2.4's idea): a packet declared lost and
   * then acknowledged was only late, so both thresholds grow. */
  unsigned packet_threshold;
  unsigned reorder_mult;
  uint64_t recent_lost[KP_RECENT_LOST]; /* packet numbers; UINT64_MAX: free */
  size_t recent_lost_next;
  uint64_t lost_packets;
  uint64_t spurious_losses;
  uint64_t probe_timeouts;
  uint64_t retransmits;      /* frames handed back for retransmission */
  uint64_t retransmit_bytes; /* ... of which stream data, in bytes */
} kp_recovery_t;

int kp_recovery_init(kp_recovery_t *r, const kp_recovery_hooks_t *hooks);
void kp_recovery_destroy(kp_recovery_t *r);

/* Makes room to record one more packet: call it before building one (what
 * a packet carries leaves its owner's queues as it is built, so recording
 * it must not fail afterwards). KP_ENOMEM. */
int kp_recovery_reserve(kp_recovery_t *r);
/* Records the packet about to be sent with number kp_recovery_next_pn().
 * KP_ENOMEM only without a reserve. */
int kp_recovery_on_sent(kp_recovery_t *r, const kp_sent_t *p);
static inline uint64_t kp_recovery_next_pn(const kp_recovery_t *r) {
  return r->next_pn;
}

/* Processes an ack block. Returns the number of packets newly acked. */
size_t kp_recovery_on_ack(kp_recovery_t *r, const kp_stream_ack_t *ack, uint64_t now_us);

/* When the next timer is due (loss time or PTO), or UINT64_MAX. */
uint64_t kp_recovery_deadline(const kp_recovery_t *r);

/* The timer fired. Returns 1 if a probe should be sent (a tail-loss probe
 * or an RTO's first retransmission), 0 otherwise; *rto tells an RTO (for
 * the congestion controller). */
int kp_recovery_on_timeout(kp_recovery_t *r, uint64_t now_us, bool *rto);

/* The lowest round trip of the last few windows (2 SRTT or 2 ms each):
 * what the path takes now, without one-off delays. */
uint64_t kp_recovery_rtt_floor(const kp_recovery_t *r);

/* The current probe timeout, without backoff. */
uint64_t kp_recovery_pto(const kp_recovery_t *r);

/* Declares every outstanding packet lost (after a path change). */
void kp_recovery_all_lost(kp_recovery_t *r, uint64_t now_us);

#endif
