/* SPDX-License-Identifier: MIT */
/* A blind relay run by a node (`kadpunch relay`, kp_node_options_t.relay):
 * the relay state machine (relay/relay.h) fed from the node's socket, its
 * tick, its announcement under the relay topic once the node is a member,
 * and its TCP port for peers whose UDP is blocked (relay_service_tcp.c).
 *
 * An object of its own with a libuv-style lifecycle: created on a running
 * node, closed with a callback that fires once every handle and TCP link of
 * it is gone. The node owns at most one and hands it the datagrams that
 * are not DHT messages (kp_relay_service_input). */
#ifndef KP_NODE_RELAY_SERVICE_H
#define KP_NODE_RELAY_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kadpunch.h"

typedef struct kp_relay_service_s kp_relay_service_t;
typedef void (*kp_relay_service_close_cb)(kp_relay_service_t *svc, void *arg);

/* Starts relaying on node's socket with limits (0 fields: the defaults).
 * Without a TCP port (in use, say) it still serves everyone on UDP.
 * Errors: UV_ENOMEM, KP_ECONFIG, timer errors. */
int kp_relay_service_create(kp_node_t *node, const kp_relay_limits_t *limits,
                            kp_relay_service_t **out);
/* Stops relaying: the TCP port and its links close, the announcement is
 * withdrawn (unless the node itself is closing), and cb fires once on a
 * later tick, after which svc is gone. */
void kp_relay_service_close(kp_relay_service_t *svc, kp_relay_service_close_cb cb, void *arg);

/* A datagram the relay takes (forwards, answers or drops): true. */
bool kp_relay_service_input(kp_relay_service_t *svc, const kp_addr_t *from, const uint8_t *data,
                            size_t len);
void kp_relay_service_counters(const kp_relay_service_t *svc, kp_relay_counters_t *out);
/* The relay topic's record for this relay is announced once the node is a
 * member with a settled public address; the node calls this when it is. */
void kp_relay_service_announce(kp_relay_service_t *svc);

/* Tests: sees every datagram the relay forwards. */
void kp_relay_service_set_tap(kp_relay_service_t *svc,
                              void (*tap)(void *ctx, const uint8_t *data, size_t len), void *ctx);
/* Tests: ends every TCP link now (as a network that drops them would). */
void kp_relay_service_drop_links(kp_relay_service_t *svc);

#endif
