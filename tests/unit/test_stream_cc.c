/* SPDX-License-Identifier: MIT */
/* The congestion controller on a simulated bottleneck shared by several
 * flows (tests/sim/flows.h): 20 Mbit/s, 40 ms round trips (a BDP of 100
 * kB), queues from a quarter of a BDP to eight. Deterministic: every run
 * of a case is the same run. */
#include "tests/harness/test.h"
#include "tests/sim/flows.h"
#include "tests/unit/test_stream.h"

#define SEC (1000ull * 1000)
#define RATE (20ull * 1000 * 1000 / 8) /* bytes per second */
#define LINK_MBIT 20.0
#define BDP (RATE * 40 / 1000) /* 100 kB */

static void setup(flows_t *f, uint64_t seed, size_t queue, double loss) {
  kp_link_params_t fwd = {.delay_us = 20000, .rate = RATE, .queue_bytes = queue, .loss = loss};
  kp_link_params_t back = {.delay_us = 20000, .loss = loss};
  flows_init(f, seed, &fwd, &back);
}

static void show(const flows_t *f, uint64_t from, uint64_t to) {
  printf("  %.0f-%.0f s:", (double)from / SEC, (double)to / SEC);
  for (unsigned i = 0; i < f->n; i++)
    printf(" %s %.2f Mbit/s;", f->flow[i].kind == FLOW_RENO ? "reno" : "kadpunch",
           flows_mbit(f, i, from, to));
  const kp_link_stats_t *ls = kp_link_stats(f->link, 0);
  printf(" queue %.0f bytes on average; %" PRIu64 " queue drops of %" PRIu64 " datagrams\n",
         flows_queue(f, from, to), ls->queue_drops, ls->sent);
}

/* Jain's fairness index of two shares: 1 when equal, 0.5 when one has all. */
static double jain(double a, double b) {
  return (a + b) * (a + b) / (2 * (a * a + b * b));
}

/* Random loss is not congestion: at 1% and 5% both ways, one flow keeps
 * most of the link (CUBIC, even with its loss gate, keeps a few percent at
 * 5%: the gate lets it cut above 3%). */
void test_cc_random_loss(void) {
  const double losses[] = {0, 0.01, 0.05};
  double mbit[3];
  for (int i = 0; i < 3; i++) {
    flows_t f;
    setup(&f, 200 + (uint64_t)i, BDP, losses[i]);
    flows_add(&f, FLOW_KADPUNCH, KP_CC_DEFAULT, 0);
    flows_run(&f, 30 * SEC);
    printf("loss %.0f%%\n", losses[i] * 100);
    show(&f, 5 * SEC, 30 * SEC);
    mbit[i] = flows_mbit(&f, 0, 5 * SEC, 30 * SEC);
    flows_destroy(&f);
  }
  KP_CHECK_MSG(mbit[0] > 0.9 * LINK_MBIT, "%.2f Mbit/s without loss", mbit[0]);
  KP_CHECK_MSG(mbit[1] > 0.85 * LINK_MBIT, "%.2f Mbit/s at 1%% loss", mbit[1]);
  KP_CHECK_MSG(mbit[2] > 0.75 * LINK_MBIT, "%.2f Mbit/s at 5%% loss", mbit[2]);
}

/* One flow behind a deep buffer (eight BDPs, 320 ms): it fills the link
 * without filling the queue (a loss-based controller keeps it full), and
 * follows the bottleneck when it halves and when it comes back. */
void test_cc_convergence(void) {
  flows_t f;
  setup(&f, 210, 8 * BDP, 0);
  flows_add(&f, FLOW_KADPUNCH, KP_CC_DEFAULT, 0);
  flows_run(&f, 20 * SEC);
  show(&f, 3 * SEC, 20 * SEC);
  double full = flows_mbit(&f, 0, 3 * SEC, 20 * SEC), queue = flows_queue(&f, 3 * SEC, 20 * SEC);
  kp_link_params_t half = {.delay_us = 20000, .rate = RATE / 2, .queue_bytes = 8 * BDP};
  kp_link_set(f.link, 0, &half);
  flows_run(&f, 40 * SEC);
  show(&f, 23 * SEC, 40 * SEC);
  double halved = flows_mbit(&f, 0, 23 * SEC, 40 * SEC);
  double queue_halved = flows_queue(&f, 23 * SEC, 40 * SEC);
  kp_link_params_t back = {.delay_us = 20000, .rate = RATE, .queue_bytes = 8 * BDP};
  kp_link_set(f.link, 0, &back);
  flows_run(&f, 60 * SEC);
  show(&f, 43 * SEC, 60 * SEC);
  double again = flows_mbit(&f, 0, 43 * SEC, 60 * SEC);
  KP_CHECK_MSG(full > 0.9 * LINK_MBIT, "%.2f Mbit/s", full);
  KP_CHECK_MSG(queue < BDP / 4, "a standing queue of %.0f bytes", queue);
  KP_CHECK_MSG(halved > 0.85 * LINK_MBIT / 2, "%.2f Mbit/s after the bottleneck halved", halved);
  KP_CHECK_MSG(queue_halved < BDP / 2, "a standing queue of %.0f bytes", queue_halved);
  KP_CHECK_MSG(again > 0.85 * LINK_MBIT, "%.2f Mbit/s once it came back", again);
  KP_CHECK_EQ(kp_link_stats(f.link, 0)->queue_drops, 0);
  flows_destroy(&f);
}

/* Two flows, the second starting 5 s after the first: they end up sharing
 * the link, on a queue of one BDP and on a shallow one of a quarter, and
 * without overflowing it round after round (a controller that ignores
 * loss shares too, but drops 4-10% at the queue doing it). */
void test_cc_fairness(void) {
  const size_t queues[] = {BDP, BDP / 4};
  const double fair[] = {0.95, 0.9}; /* Jain's index; a shallow buffer shares less evenly */
  for (int i = 0; i < 2; i++) {
    flows_t f;
    setup(&f, 220 + (uint64_t)i, queues[i], 0);
    flows_add(&f, FLOW_KADPUNCH, KP_CC_DEFAULT, 0);
    flows_add(&f, FLOW_KADPUNCH, KP_CC_DEFAULT, 5 * SEC);
    flows_run(&f, 60 * SEC);
    printf("queue %zu kB\n", queues[i] / 1000);
    show(&f, 20 * SEC, 60 * SEC);
    double a = flows_mbit(&f, 0, 20 * SEC, 60 * SEC), b = flows_mbit(&f, 1, 20 * SEC, 60 * SEC);
    printf("  Jain's index %.3f\n", jain(a, b));
    KP_CHECK_MSG(jain(a, b) > fair[i], "shares %.2f and %.2f Mbit/s", a, b);
    KP_CHECK_MSG(a + b > 0.9 * LINK_MBIT, "%.2f Mbit/s together", a + b);
    const kp_link_stats_t *ls = kp_link_stats(f.link, 0);
    KP_CHECK_MSG(ls->queue_drops * 100 < ls->sent * 3, "%" PRIu64 " queue drops", ls->queue_drops);
    flows_destroy(&f);
  }
}

/* A shallow buffer (a quarter of a BDP, 10 ms) under two flows does not
 * overflow round after round: a controller that treated no loss as
 * congestion would keep dropping several percent of what it sends. */
void test_cc_shallow_buffer(void) {
  flows_t f;
  setup(&f, 230, BDP / 4, 0);
  flows_add(&f, FLOW_KADPUNCH, KP_CC_DEFAULT, 0);
  flows_add(&f, FLOW_KADPUNCH, KP_CC_DEFAULT, 1 * SEC);
  flows_run(&f, 60 * SEC);
  show(&f, 10 * SEC, 60 * SEC);
  const kp_link_stats_t *ls = kp_link_stats(f.link, 0);
  double drops = (double)ls->queue_drops / (double)ls->sent;
  double total = flows_mbit(&f, 0, 10 * SEC, 60 * SEC) + flows_mbit(&f, 1, 10 * SEC, 60 * SEC);
  printf("  %.2f%% dropped\n", drops * 100);
  KP_CHECK_MSG(drops < 0.04, "%.2f%% of the datagrams dropped at the queue", drops * 100);
  KP_CHECK_MSG(total > 0.85 * LINK_MBIT, "%.2f Mbit/s together", total);
  flows_destroy(&f);
}

/* Against a loss-based TCP (Reno-like, unpaced), on a queue of one BDP:
 * neither starves the other, whoever comes first. */
void test_cc_vs_reno(void) {
  for (int first = 0; first < 2; first++) {
    flows_t f;
    setup(&f, 240 + (uint64_t)first, BDP, 0);
    flows_add(&f, first ? FLOW_RENO : FLOW_KADPUNCH, KP_CC_DEFAULT, 0);
    flows_add(&f, first ? FLOW_KADPUNCH : FLOW_RENO, KP_CC_DEFAULT, 5 * SEC);
    flows_run(&f, 60 * SEC);
    show(&f, 20 * SEC, 60 * SEC);
    double a = flows_mbit(&f, 0, 20 * SEC, 60 * SEC), b = flows_mbit(&f, 1, 20 * SEC, 60 * SEC);
    KP_CHECK_MSG(a > 0.25 * LINK_MBIT && b > 0.25 * LINK_MBIT, "shares %.2f and %.2f Mbit/s", a, b);
    KP_CHECK_MSG(a + b > 0.9 * LINK_MBIT, "%.2f Mbit/s together", a + b);
    flows_destroy(&f);
  }
}
