/* SPDX-License-Identifier: MIT */
/* The cases of test_dht that live in other files (test_dht_sim.c,
 * test_dht_records.c), listed in test_dht.c's case table. */
#ifndef KP_TEST_DHT_H
#define KP_TEST_DHT_H

void test_sim_lookup_accuracy(void);
void test_sim_membership_firewall(void);
void test_sim_nat_second_reporter(void);
void test_sim_membership_moves(void);
void test_sim_member_keeps_nat_open(void);
void test_sim_suspend(void);
void test_sim_full_bucket(void);
void test_sim_no_amplification(void);
void test_sim_down_hint(void);
void test_sim_bootstrap_retry(void);
void test_sim_bad_input_counted(void);
void test_sim_requester_proves_address(void);
void test_sim_extension_commit(void);
void test_sim_loss(void);

/* test_dht_scale.c */
void test_eclipse_one_prefix(void);
void test_sim_10k(void);

/* test_dht_records.c */
void test_record_codec(void);
void test_record_mutable(void);
void test_store_announce_seq_expiry(void);
void test_store_mutable_cas(void);
void test_store_flood(void);
void test_store_bytes_bound(void);

/* test_dht_swarm.c */
void test_swarm_announce_lookup(void);
void test_swarm_young_network_announce(void);
void test_swarm_expiry_refresh(void);
void test_swarm_unannounce(void);
void test_swarm_relay_replacement(void);
void test_swarm_forged_records(void);
void test_record_origin_not_rehomed(void);
void test_swarm_mutable(void);
void test_swarm_immutable(void);

#endif
