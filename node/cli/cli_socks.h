/* SPDX-License-Identifier: MIT */
/* SOCKS through a peer, and UDP services: the pieces of `kadpunch serve
 * --socks / --forward-udp` and `kadpunch connect --socks / --listen-udp`
 * (docs/protocol.md, "SOCKS through a peer" and "UDP services").
 *
 *   cli_socks_server.c  serve: each stream of a "socks" connection starts
 *                       with a SOCKS5 request; checked, resolved here,
 *                       connected, answered, then bridged (cli_bridge.c)
 *   cli_socks_client.c  connect --socks: a local SOCKS5 server whose every
 *                       CONNECT is a stream of the one connection, and
 *                       whose UDP ASSOCIATE rides its datagrams
 *   cli_udp_flows.c     serve: a client's UDP flows, each its own socket
 *                       (--forward-udp, and SOCKS UDP), bounded, idle out
 *   cli_udp_listen.c    connect --listen-udp: a local UDP port whose
 *                       senders are flows of the one connection */
#ifndef KP_CLI_SOCKS_H
#define KP_CLI_SOCKS_H

#include <stdbool.h>
#include <stdint.h>

#include "kadpunch.h"
#include "node/cli/cli_socks_allow.h"
#include "node/cli/cli_socks_codec.h"

/* The service name a `connect --socks` client asks for. */
#define KP_CLI_SOCKS_SERVICE "socks"
/* How long a stream may take to bring its whole request. */
#define KP_CLI_SOCKS_REQUEST_MS 10000

/* ---- The one connection of connect --socks / --listen-udp (cmd_listen.c) --------------------- */

/* How a front end gets the connection: conn returns it, or NULL after
 * starting to connect (the front end is told when it is there, or that it
 * failed). */
typedef struct kp_cli_link_s {
  kp_conn_t *(*conn)(void *ctx);
  void *ctx;
} kp_cli_link_t;

/* ---- connect --socks (cli_socks_client.c) --------------------------------------------------- */

typedef struct kp_cli_socks_client_s kp_cli_socks_client_t;

/* TCP connections at once (each a file descriptor); more are closed as
 * soon as they are accepted. */
#define KP_CLI_SOCKS_CLIENT_MAX 1000

int kp_cli_socks_client_new(uv_loop_t *loop, const kp_cli_link_t *link,
                            kp_cli_socks_client_t **out);
/* A program connected to the SOCKS port: accept it and speak SOCKS5. */
void kp_cli_socks_client_accept(kp_cli_socks_client_t *c, uv_stream_t *server);
/* The connection is there (requests waiting for it go on), or could not
 * be made (they are answered with a failure). */
void kp_cli_socks_client_connected(kp_cli_socks_client_t *c, kp_conn_t *conn);
void kp_cli_socks_client_conn_failed(kp_cli_socks_client_t *c, int status);
/* The connection ended: its streams' TCP connections are reset. */
void kp_cli_socks_client_conn_closed(kp_cli_socks_client_t *c, const kp_conn_t *conn);
/* A datagram from the server: a UDP ASSOCIATE's reply. */
void kp_cli_socks_client_datagram(kp_cli_socks_client_t *c, const uint8_t *data, size_t len);
unsigned kp_cli_socks_client_count(const kp_cli_socks_client_t *c);
void kp_cli_socks_client_stop(kp_cli_socks_client_t *c);
void kp_cli_socks_client_free(kp_cli_socks_client_t *c);

/* ---- connect --listen-udp (cli_udp_listen.c) ------------------------------------------------- */

typedef struct kp_cli_udp_listen_s kp_cli_udp_listen_t;

/* Senders (address and port) at once, and how long one may be quiet. */
#define KP_CLI_UDP_LISTEN_FLOWS 256

/* Binds addr (bound: what it got, for people) and carries what arrives
 * there as datagrams of the connection, one flow per sender. Errors: bind
 * errors, UV_ENOMEM. */
int kp_cli_udp_listen_new(uv_loop_t *loop, const struct sockaddr *addr, const kp_cli_link_t *link,
                          kp_cli_udp_listen_t **out, char bound[64]);
/* A datagram from the server: back to its flow's sender. */
void kp_cli_udp_listen_datagram(kp_cli_udp_listen_t *u, const uint8_t *data, size_t len);
typedef struct kp_cli_udp_listen_stats_s {
  uint64_t to_peer, from_peer, dropped, flows_opened, flows_evicted;
} kp_cli_udp_listen_stats_t;
void kp_cli_udp_listen_stats(const kp_cli_udp_listen_t *u, kp_cli_udp_listen_stats_t *out);
void kp_cli_udp_listen_stop(kp_cli_udp_listen_t *u);
void kp_cli_udp_listen_free(kp_cli_udp_listen_t *u);

/* ---- serve --socks (cli_socks_server.c) ---------------------------------------------------- */

typedef struct kp_cli_socks_server_s kp_cli_socks_server_t;

/* The SOCKS service of serve, going where allow says (copied). Returns 0
 * or UV_ENOMEM. */
int kp_cli_socks_server_new(uv_loop_t *loop, const kp_cli_socks_allow_t *allow,
                            kp_cli_socks_server_t **out);
/* A stream of a client's "socks" connection (who: the client, for the
 * log). Takes it over: it is answered, bridged, or refused with a reply. */
void kp_cli_socks_server_stream(kp_cli_socks_server_t *sv, kp_conn_t *conn, kp_stream_t *s,
                                const char *who);
/* The connection ended: its requests and bridges go. */
void kp_cli_socks_server_conn_closed(kp_cli_socks_server_t *sv, const kp_conn_t *conn);
/* Counters, for serve's control socket and its exit line. */
typedef struct kp_cli_socks_stats_s {
  uint64_t requests, connected, refused, failed;
  unsigned pending; /* gauge: streams whose request is being read or resolved */
} kp_cli_socks_stats_t;
void kp_cli_socks_server_stats(const kp_cli_socks_server_t *sv, kp_cli_socks_stats_t *out);
/* At exit: everything is torn down (before the session closes), then the
 * memory goes (after, once the loop has closed the handles). */
void kp_cli_socks_server_stop(kp_cli_socks_server_t *sv);
void kp_cli_socks_server_free(kp_cli_socks_server_t *sv);

/* ---- serve's UDP flows (cli_udp_flows.c) ------------------------------------------------------
 */

typedef struct kp_cli_udp_flows_s kp_cli_udp_flows_t;

/* Flows to one target (--forward-udp: each flow's socket is connected to
 * it), or, with target NULL, SOCKS UDP flows: each datagram names its
 * destination, allowed by allow, and replies name their source. idle_ms:
 * a flow unused this long is closed. */
int kp_cli_udp_flows_new(uv_loop_t *loop, const struct sockaddr *target,
                         const kp_cli_socks_allow_t *allow, unsigned idle_ms,
                         kp_cli_udp_flows_t **out);
/* A datagram from a client's connection (flow id, [address,] payload). */
void kp_cli_udp_flows_input(kp_cli_udp_flows_t *f, kp_conn_t *conn, const uint8_t *data,
                            size_t len);
void kp_cli_udp_flows_conn_closed(kp_cli_udp_flows_t *f, const kp_conn_t *conn);
typedef struct kp_cli_udp_stats_s {
  uint64_t flows_opened, flows_idle, flows_evicted; /* opened; closed when idle; for room */
  uint64_t to_service, from_service;                /* datagrams carried each way */
  uint64_t dropped; /* malformed, refused, or the socket or the connection would not take it */
  unsigned open;    /* gauge */
} kp_cli_udp_stats_t;
void kp_cli_udp_flows_stats(const kp_cli_udp_flows_t *f, kp_cli_udp_stats_t *out);
void kp_cli_udp_flows_stop(kp_cli_udp_flows_t *f);
void kp_cli_udp_flows_free(kp_cli_udp_flows_t *f);

/* Flows at once: each is a socket (a file descriptor). Past either bound
 * the least recently used flow (of that connection, else of all) makes
 * room. */
#define KP_CLI_UDP_FLOWS_MAX 1024
#define KP_CLI_UDP_FLOWS_PER_CONN 256
#define KP_CLI_UDP_IDLE_MS 60000

/* Socket buffers of the UDP sockets facing programs and services: a
 * burst of small datagrams takes most of a kilobyte each of a receive
 * buffer, and the default (about 200 KiB) drops a burst of a few hundred. */
#define KP_CLI_UDP_SOCKET_BUFFER (2 << 20)

#endif
