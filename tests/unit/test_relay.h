/* SPDX-License-Identifier: MIT */
/* The cases of the test_relay binary that live outside test_relay.c. */
#ifndef KP_TEST_RELAY_H
#define KP_TEST_RELAY_H

/* tests/loopback/test_relay_node.c */
void test_tcp_control_flood_bounded(void);
void test_record_origin_checked(void);

#endif
