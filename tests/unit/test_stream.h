/* SPDX-License-Identifier: MIT */
/* The cases of test_stream that live in test_stream_sim.c, listed in
 * test_stream.c's case table. */
#ifndef KP_TEST_STREAM_H
#define KP_TEST_STREAM_H

void test_transfer_clean(void);
void test_transfer_loss(void);
void test_transfer_reorder_duplicate(void);
void test_transfer_bottleneck(void);
void test_path_change(void);
void test_path_pinned(void);
void test_path_change_smaller_mtu(void);
void test_path_spoof(void);
void test_tamper_replay_truncate(void);
void test_idle_and_dead_peer(void);
void test_close(void);
void test_slow_reader(void);
void test_stream_reset(void);
void test_stream_limit(void);
void test_stream_flood(void);
void test_conn_window_credit(void);
void test_path_mtu_parallel(void);
void test_window_autotune(void);
void test_window_chunk_runs(void);
void test_ack_frequency(void);
/* test_stream_cc.c */
void test_cc_random_loss(void);
void test_cc_convergence(void);
void test_cc_fairness(void);
void test_cc_shallow_buffer(void);
void test_cc_vs_reno(void);
void test_tiny_chunks_bounded(void);
void test_path_mtu(void);
void test_path_death_times(void);
void test_path_death_silent_receiver(void);
void test_resume_grace(void);
/* test_stream_datagram.c */
void test_datagram_frame(void);
void test_datagram_clean(void);
void test_datagram_loss(void);
void test_datagram_queue_bounded(void);
void test_datagram_beside_stream(void);

#endif
