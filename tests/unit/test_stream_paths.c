/* SPDX-License-Identifier: MIT */
/* A path's life as the transport sees it (stream_conn.h, path_state and
 * resume_grace_ms): how soon a dead path is noticed, busy and idle; that a
 * connection without a path outlives the idle timeout for the resume grace
 * and then ends cleanly; and that a move onto a working path carries every
 * byte that was out on the dead one. On a virtual clock. */
#include <string.h>

#include "tests/harness/test.h"
#include "tests/sim/stream_pair.h"
#include "tests/unit/test_stream.h"

#define MB (1000ull * 1000)
#define SEC (1000ull * 1000)
#define MS 1000ull

static bool dead_all;

static bool drop_all(pair_t *p, kp_link_packet_t *pkt) {
  (void)p, (void)pkt;
  return !dead_all;
}

static bool side1_got_2mb(pair_t *p) {
  const pair_stream_t *st = pair_stream(p, 1, 0);
  return st && st->received >= 2 * MB;
}

static bool both_dead(pair_t *p) {
  return p->side[0].path_dead && p->side[1].path_dead;
}

static bool side0_dead(pair_t *p) {
  return p->side[0].path_dead;
}

static bool delivered(pair_t *p) {
  return pair_all_delivered(p) || p->side[0].closed || p->side[1].closed;
}

static void grace_60s(int side, kp_sconn_config_t *cfg) {
  (void)side;
  cfg->resume_grace_ms = 60000;
}

/* Busy: data in flight and nothing answered is a dead path within
 * path_dead_ms (1 s here, 20 ms round trips), and both sides say so; the
 * path carries again and both say that too, and every byte arrives. Idle:
 * the keepalive (10 s) goes unanswered and the path is dead within 15 s of
 * the last packet. Neither is the idle timeout. */
void test_path_death_times(void) {
  kp_link_params_t link = {.delay_us = 10000, .rate = 5000000};
  pair_t p;
  pair_init(&p, 7, &link, NULL);
  p.filter = drop_all;
  dead_all = false;
  p.side[1].reply_total = 4 * MB;
  pair_open(&p, 0, 4 * MB);
  KP_CHECK(pair_run(&p, 60 * SEC, side1_got_2mb));
  uint64_t cut = p.now;
  dead_all = true;
  KP_CHECK(pair_run(&p, cut + 10 * SEC, both_dead));
  uint64_t took0 = p.side[0].path_dead_at - cut, took1 = p.side[1].path_dead_at - cut;
  printf("busy: dead after %llu ms (sender), %llu ms (receiver)\n",
         (unsigned long long)(took0 / MS), (unsigned long long)(took1 / MS));
  KP_CHECK(took0 <= 2 * SEC);
  KP_CHECK(took1 <= 2 * SEC);
  KP_CHECK(took0 >= SEC - 50 * MS); /* not before path_dead_ms (after the last packet sent) */
  KP_CHECK(!p.side[0].closed && !p.side[1].closed);
  /* Healed: alive again within a back-off (at most a second apart). */
  uint64_t healed = p.now + 3 * SEC;
  pair_run(&p, healed, NULL);
  dead_all = false;
  KP_CHECK(pair_run(&p, healed + 120 * SEC, delivered));
  KP_CHECK(!p.side[0].closed && !p.side[1].closed);
  KP_CHECK(!p.side[0].path_dead && !p.side[1].path_dead);
  KP_CHECK_EQ(p.side[0].path_dead_events, 1);
  KP_CHECK_EQ(p.side[0].path_alive_events, 1);
  for (int s = 0; s < 2; s++) KP_CHECK_EQ(pair_stream(&p, s, 0)->mismatches, 0);
  kp_sconn_stats_t st;
  kp_sconn_stats(p.side[0].conn, &st);
  KP_CHECK(st.pathless_ms >= 3000 && st.pathless_ms <= 6000);

  /* Idle now: the next keepalive finds the path dead. */
  pair_run(&p, p.now + SEC, NULL);
  cut = p.now;
  dead_all = true;
  KP_CHECK(pair_run(&p, cut + 30 * SEC, side0_dead));
  uint64_t idle_took = p.side[0].path_dead_at - cut;
  printf("idle: dead after %llu ms\n", (unsigned long long)(idle_took / MS));
  KP_CHECK(idle_took <= 15 * SEC);
  KP_CHECK(!p.side[0].closed);
  pair_destroy(&p);
}

static bool side1_dead(pair_t *p) {
  return p->side[1].path_dead;
}

/* Only side 0 sends; side 1 receives and has nothing of its own out when
 * the path dies (a server whose NAT moved, echoing what it no longer
 * gets). The silence of a peer that was sending is a question: side 1
 * asks once and finds the path dead within about two seconds, not at its
 * next keepalive (10 s). An idle peer's keepalives ask nothing. */
void test_path_death_silent_receiver(void) {
  kp_link_params_t link = {.delay_us = 10000, .rate = 5000000};
  pair_t p;
  pair_init(&p, 8, &link, NULL);
  p.filter = drop_all;
  dead_all = false;
  pair_open(&p, 0, 8 * MB);
  KP_CHECK(pair_run(&p, 60 * SEC, side1_got_2mb));
  uint64_t cut = p.now;
  dead_all = true;
  KP_CHECK(pair_run(&p, cut + 10 * SEC, side1_dead));
  uint64_t took = p.side[1].path_dead_at - cut;
  printf("receiving side: dead after %llu ms\n", (unsigned long long)(took / MS));
  KP_CHECK(took <= 2500 * MS);
  KP_CHECK(took >= SEC);
  /* Healed: the rest arrives (and every write completes). */
  dead_all = false;
  KP_CHECK(pair_run(&p, p.now + 120 * SEC, delivered));
  pair_destroy(&p);
}

/* A connection whose owner resumes it (resume_grace_ms 60 s) outlives the
 * 30 s idle timeout without a path, and ends with KP_EPEERDEAD once the
 * grace is spent: a clean error, not a hang. One that is moved onto a
 * working path within the grace carries on, every byte exact, what was
 * out on the dead path sent again at once. */
void test_resume_grace(void) {
  kp_link_params_t link = {.delay_us = 10000, .rate = 5000000};
  pair_t p;
  pair_init(&p, 8, &link, grace_60s);
  p.filter = drop_all;
  dead_all = false;
  pair_open(&p, 0, 4 * MB);
  KP_CHECK(pair_run(&p, 60 * SEC, side1_got_2mb));
  uint64_t cut = p.now;
  dead_all = true;
  pair_run(&p, cut + 40 * SEC, NULL);
  KP_CHECK(!p.side[0].closed && !p.side[1].closed); /* past the idle timeout */
  KP_CHECK(p.side[0].path_dead && p.side[1].path_dead);
  pair_run(&p, cut + 70 * SEC, NULL);
  KP_CHECK_MSG(p.side[0].closed && p.side[1].closed, "closed %d %d", p.side[0].closed,
               p.side[1].closed);
  KP_CHECK_EQ(p.side[0].closed_status, KP_EPEERDEAD);
  uint64_t lived = p.side[0].closed_at - cut;
  printf("no path: ended after %llu ms\n", (unsigned long long)(lived / MS));
  KP_CHECK(lived >= 59 * SEC && lived <= 62 * SEC); /* from the last packet heard */
  pair_destroy(&p);

  /* Moved within the grace: side 1 is at a new address (a rebound NAT);
   * its packets come from there, and side 0's owner moves it there. */
  pair_init(&p, 9, &link, grace_60s);
  p.filter = drop_all;
  dead_all = false;
  pair_open(&p, 0, 4 * MB);
  KP_CHECK(pair_run(&p, 60 * SEC, side1_got_2mb));
  cut = p.now;
  dead_all = true;
  pair_run(&p, cut + 20 * SEC, NULL);
  kp_addr_t moved;
  KP_CHECK_OK(kp_addr_parse(&moved, "203.0.113.99:5555"));
  kp_link_set_addr(p.link, 1, &moved);
  dead_all = false;
  kp_sconn_set_remote(p.side[0].conn, &moved, p.now);
  uint64_t at = p.now;
  KP_CHECK(pair_run(&p, at + 120 * SEC, delivered));
  KP_CHECK(!p.side[0].closed && !p.side[1].closed);
  KP_CHECK_EQ(pair_stream(&p, 1, 0)->received, 4 * MB);
  KP_CHECK_EQ(pair_stream(&p, 1, 0)->mismatches, 0);
  KP_CHECK_EQ(p.side[0].path_changes, 1);
  KP_CHECK(!p.side[0].path_dead);
  printf("moved after 20 s without a path: the rest delivered in %llu ms\n",
         (unsigned long long)((p.now - at) / MS));
  pair_destroy(&p);
}
