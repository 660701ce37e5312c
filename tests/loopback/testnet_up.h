/* SPDX-License-Identifier: MIT */
/* A loopback testnet for a test: created, and every node joined, or the
 * test fails there. Shared by the loopback test binaries. */
#ifndef KP_TEST_TESTNET_UP_H
#define KP_TEST_TESTNET_UP_H

#include "node/testnet.h"
#include "tests/harness/test.h"

static inline void kp_test_testnet_up(uv_loop_t *loop, size_t size, unsigned timeout_ms,
                                      kp_testnet_t *tn) {
  kp_testnet_options_t o;
  kp_testnet_options_init(&o);
  o.size = size;
  KP_CHECK_OK(kp_testnet_create(loop, &o, tn));
  KP_CHECK(kp_testnet_wait_joined(tn, timeout_ms));
}

/* A dual-stack testnet on 127.0.0.1 and ::1 (its bootstrap node on
 * both), its loop initialised: nodes are added of either family or both
 * (kp_testnet_add_stacks). */
static inline void kp_test_dual_testnet(uv_loop_t *loop, kp_testnet_t *tn) {
  uv_loop_init(loop);
  kp_testnet_options_t o;
  kp_testnet_options_init(&o);
  o.size = 1;
  o.host = "dual";
  KP_CHECK_OK(kp_testnet_create(loop, &o, tn));
}

#endif
