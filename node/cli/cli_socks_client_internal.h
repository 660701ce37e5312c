/* SPDX-License-Identifier: MIT */
/* The inside of connect --socks (cli_socks.h), shared by
 * cli_socks_client.c (the SOCKS5 conversation and CONNECT) and
 * cli_socks_udp.c (UDP ASSOCIATE). Never included above node/cli. */
#ifndef KP_CLI_SOCKS_CLIENT_INTERNAL_H
#define KP_CLI_SOCKS_CLIENT_INTERNAL_H

#include "node/cli/cli_bridge.h"
#include "node/cli/cli_socks.h"

/* What a program may send before its request is answered: the greeting,
 * the request, and some bytes it sends before waiting (kept for the
 * stream). Past it, reading stops until the answer. */
#define SOCKS_IN_MAX 4096

typedef enum {
  S_GREETING,   /* reading the greeting */
  S_REQUEST,    /* reading the request */
  S_WAIT_CONN,  /* CONNECT: waiting for the kadpunch connection */
  S_WAIT_REPLY, /* CONNECT: the stream is open, waiting for the server's reply */
  S_BRIDGED,    /* the bridge carries the bytes */
  S_UDP,        /* UDP ASSOCIATE: the TCP connection only says how long */
  S_DONE
} session_state_t;

typedef struct session_s session_t;
struct session_s {
  session_t *prev, *next;
  kp_cli_socks_client_t *cl;
  kp_cli_bridge_t *b;
  session_state_t state;
  uint8_t in[SOCKS_IN_MAX];
  size_t in_len, in_used;
  uint8_t cmd;
  kp_cli_socks_addr_t dst;
  /* Answers to the program, at most two on the way (greeting, request). */
  uv_write_t lw[2];
  uint8_t lbuf[2][KP_CLI_SOCKS_MSG_MAX];
  unsigned lw_next, lw_pending;
  /* CONNECT: the stream, our request on it and its reply. */
  kp_stream_t *stream;
  kp_write_t sreq;
  uint8_t req[KP_CLI_SOCKS_MSG_MAX];
  uint8_t rep[KP_CLI_SOCKS_MSG_MAX];
  size_t rep_len;
  uv_timer_t timer;
  bool timer_open, bridge_done;
  /* UDP ASSOCIATE (cli_socks_udp.c). */
  uv_udp_t udp;
  bool udp_open;
  uint64_t flow;
  struct sockaddr_storage peer; /* the program's address, from its TCP connection */
  struct sockaddr_storage app;  /* where its datagrams come from (the first fixes it) */
  bool app_known;
};

struct kp_cli_socks_client_s {
  uv_loop_t *loop;
  kp_cli_link_t link;
  kp_cli_bridges_t bridges;
  session_t *sessions;
  unsigned count;
  uint64_t next_flow;
  bool stopping;
  uint8_t dgram[65536]; /* datagrams as they arrive, either way */
  uint8_t out[65536];   /* ... and as they leave */
};

/* cli_socks_client.c */
/* Answers the program (a reply or the greeting's choice). */
void kp__socks_local_write(session_t *s, const uint8_t *data, size_t len);
/* Answers with rep and closes its connection once that is written. */
void kp__socks_decline(session_t *s, uint8_t rep);
/* The negotiation's deadline is over with. */
void kp__socks_stop_timer(session_t *s);
/* Frees the session once nothing refers to it any more. */
void kp__socks_maybe_free(session_t *s);

/* cli_socks_udp.c */
/* UDP ASSOCIATE: a socket for the program's datagrams, and the reply. */
void kp__socks_udp_start(session_t *s);
/* The association is over (its TCP connection ended). */
void kp__socks_udp_close(session_t *s);

#endif
