/* SPDX-License-Identifier: MIT */
/* Shared by the files of the test_node binary. */
#ifndef KP_TEST_NODE_H
#define KP_TEST_NODE_H

#include <uv.h>

#include "kadpunch.h"
#include "node/testnet.h"

/* Runs the loop dry and checks it closes with nothing left open. */
void kp_test_check_loop_closes(uv_loop_t *loop);

/* A child process (the kadpunch program) whose stdout and stderr are
 * collected while loop runs (so the test's own nodes keep serving). */
typedef struct kp_test_child_s kp_test_child_t;

kp_test_child_t *kp_test_spawn(uv_loop_t *loop, const char *const *argv);
/* A child of this test started some other way: killed (SIGKILL) if the
 * test exits while it runs (add), or no longer (its exit seen). */
void kp_test_track_child(int pid, bool add);
/* Runs loop until the child's output contains text; false after timeout. */
bool kp_test_child_wait_output(uv_loop_t *loop, kp_test_child_t *c, const char *text,
                               unsigned timeout_ms);
/* SIGTERM, wait for the exit; returns the exit status (128+signal if
 * killed, -1 on timeout after SIGKILL) and frees the child. */
int kp_test_child_stop(uv_loop_t *loop, kp_test_child_t *c, unsigned timeout_ms);
int kp_test_child_pid(const kp_test_child_t *c);
/* What the child printed on stdout so far (NUL-terminated). */
const char *kp_test_child_stdout(const kp_test_child_t *c);
/* `kadpunch keygen -o path` (must succeed); pk gets the public key. */
void kp_test_keygen(uv_loop_t *loop, const char *path, char pk[KP_KEY_TEXT_LEN + 1]);
/* A UDP port that was free on 127.0.0.1 a moment ago. */
int kp_test_free_udp_port(void);
/* A TCP port nothing listened on, on 127.0.0.1, a moment ago. */
int kp_test_free_tcp_port(void);

/* Runs argv to completion (on loop, or a private one if NULL) and returns
 * its exit status; out gets its output (stdout then stderr). */
int kp_test_run_cli(uv_loop_t *loop, const char *const *argv, char *out, size_t cap,
                    unsigned timeout_ms);
/* Looks pk up (`kadpunch lookup --key-of`) through bootstrap until its
 * record is found, for timeout_ms at most: whether it was. A server says
 * "serving" before its announcement has landed. */
bool kp_test_wait_announced(uv_loop_t *loop, const char *bootstrap, const char *pk,
                            unsigned timeout_ms);

/* test_node_swarm.c */
void test_swarm_survives_churn(void);
void test_cli_keygen(void);
void test_cli_swarm_commands(void);
void test_cli_serve_connect(void);

/* test_flood.c */
void test_handshake_flood(void);

/* test_dual_stack.c */
void test_dual_stack_testnet(void);

/* test_family_failover.c */
void test_family_failover(void);
void test_family_flap(void);
void test_family_returns(void);

/* test_caps.c */
void test_connection_caps(void);
void test_rx_budget_bounded(void);

#endif
