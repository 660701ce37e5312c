/* SPDX-License-Identifier: MIT */
/* The live connections of a running program (serve, the daemon, connect
 * --listen): who, which service, the path, for `kadpunch status` over the
 * control socket (request "connections", docs/inspect.md) and for the line
 * each connection's end prints. The caller owns each entry's memory (it
 * lives in its own per-connection state) and keeps it until removed. */
#ifndef KP_CLI_CONNS_H
#define KP_CLI_CONNS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "kadpunch.h"
#include "node/control.h"

typedef struct kp_cli_conn_s {
  struct kp_cli_conn_s *next, *prev;
  kp_conn_t *conn;
  char key[KP_KEY_TEXT_LEN + 1];
  char host[64];                    /* the config file's name for key, or "" */
  char service[KP_SERVICE_MAX + 1]; /* "" : the server's first */
  char path_kind[16];               /* lan, open, ..., relayed; then direct or relayed */
  uint64_t started_ms;              /* uv_now at the connection's start */
  bool outgoing;                    /* we connected (connect --listen) */
} kp_cli_conn_t;

typedef struct kp_cli_conns_s {
  uv_loop_t *loop;
  kp_cli_conn_t *head;
  size_t count;
} kp_cli_conns_t;

void kp_cli_conns_init(kp_cli_conns_t *cs, uv_loop_t *loop);
/* e describes conn from now on (info: how it came about; service: the
 * one it reaches, NULL or "" for the first). */
void kp_cli_conns_add(kp_cli_conns_t *cs, kp_cli_conn_t *e, kp_conn_t *conn,
                      const kp_connect_info_t *info, const char *service, bool outgoing);
/* A path change: the kind follows it (direct or relayed). */
void kp_cli_conns_path(kp_cli_conn_t *e, const kp_path_event_t *ev);
/* e is over (its connection closed): off the list. */
void kp_cli_conns_remove(kp_cli_conns_t *cs, kp_cli_conn_t *e);
/* Registers the control request "connections" answering from cs. */
int kp_cli_conns_control(kp_control_t *ctl, kp_cli_conns_t *cs);
/* "connection closed: KEY (host), service S, 12.3 s, N bytes in, M out,
 * P path changes: why" on out, after prefix. */
void kp_cli_conns_print_closed(FILE *out, const kp_cli_conns_t *cs, const kp_cli_conn_t *e,
                               int status);

#endif
