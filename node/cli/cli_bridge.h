/* SPDX-License-Identifier: MIT */
/* A kadpunch stream joined to a local byte stream: a TCP connection (serve
 * --forward, connect --listen) or stdin and stdout (connect --stdio). Bytes
 * are carried both ways with backpressure both ways: the local side is not
 * read while the stream's write queue is at its high-water mark, and the
 * stream is not read while more than KP_CLI_BRIDGE_HIGH_WATER bytes wait to
 * be written locally. An end on one side is an end on the other (TCP EOF
 * becomes kp_stream_end, the stream's EOF a shutdown of the local write
 * side); an error on either side resets the other. */
#ifndef KP_CLI_BRIDGE_H
#define KP_CLI_BRIDGE_H

#include <stdbool.h>
#include <stdint.h>

#include "kadpunch.h"

/* Local bytes waiting to be written above which the stream is not read. */
#define KP_CLI_BRIDGE_HIGH_WATER (1u << 20)

/* The codes a bridge resets its stream with. KP_CLI_RESET_CONNECT + errno:
 * the service behind `serve --forward` could not be reached (ECONNREFUSED,
 * ...); KP_CLI_RESET_LOCAL: the local side failed or was reset. */
#define KP_CLI_RESET_LOCAL 0x100u
#define KP_CLI_RESET_CONNECT 0x1000u
#define KP_CLI_RESET_CONNECT_MAX 0x1fffu

typedef struct kp_cli_bridge_s kp_cli_bridge_t;

/* The bridges of one command, so they can be torn down together. */
typedef struct kp_cli_bridges_s {
  kp_cli_bridge_t *head;
  size_t count;
} kp_cli_bridges_t;

/* Once, when the stream and every local handle are closed: status 0 if
 * both directions finished, else the first error (reset_code is the peer's
 * when status is KP_ERESET). The bridge's memory goes after the call. */
typedef void (*kp_cli_bridge_done_cb)(kp_cli_bridge_t *b, int status, uint64_t reset_code);

/* A bridge on loop, in list, with nothing attached yet. done fires once,
 * after kp_cli_bridge_abort or when both directions are over. Errors:
 * UV_ENOMEM (then nothing exists and done never fires). */
int kp_cli_bridge_new(uv_loop_t *loop, kp_cli_bridges_t *list, kp_cli_bridge_done_cb done,
                      void *data, kp_cli_bridge_t **out);

/* serve --forward: takes stream over and connects a TCP socket to addr;
 * bytes flow once it is connected. A failed connect resets the stream with
 * KP_CLI_RESET_CONNECT + errno. On an error return the stream is still
 * the bridge's: abort it. */
int kp_cli_bridge_connect(kp_cli_bridge_t *b, kp_stream_t *stream, const struct sockaddr *addr);

/* connect --listen: accepts a connection from server; nothing is read from
 * it until kp_cli_bridge_start. On an error return, abort the bridge. */
int kp_cli_bridge_accept(kp_cli_bridge_t *b, uv_stream_t *server);

/* connect --stdio: reads fd 0 and writes fd 1 (pipes, sockets, terminals
 * or files). On an error return, abort the bridge. */
int kp_cli_bridge_open_stdio(kp_cli_bridge_t *b);

/* Takes stream over and starts carrying bytes (after accept or stdio). */
void kp_cli_bridge_start(kp_cli_bridge_t *b, kp_stream_t *stream);

/* Opens a stream on conn and starts (connect --listen). Errors: those of
 * kp_stream_open (then abort the bridge). */
int kp_cli_bridge_open(kp_cli_bridge_t *b, kp_conn_t *conn);

/* kp_cli_bridge_open for every bridge in list that has no stream yet; one
 * that cannot get one is aborted with the error. */
void kp_cli_bridges_open(kp_cli_bridges_t *list, kp_conn_t *conn);

/* Tears the bridge down now: the stream is reset (KP_CLI_RESET_LOCAL), a
 * TCP connection is reset. done reports status. Nothing after the first. */
void kp_cli_bridge_abort(kp_cli_bridge_t *b, int status);

/* Aborts every bridge in list whose stream runs on conn, or every bridge
 * with conn NULL. The done callbacks must not abort other bridges. */
void kp_cli_bridges_abort(kp_cli_bridges_t *list, const kp_conn_t *conn, int status);

void *kp_cli_bridge_get_data(const kp_cli_bridge_t *b);

/* ---- A preamble before the bytes (SOCKS, cli_socks_*.c) ---------------------------------- */

/* Told when the connect of kp_cli_bridge_connect ends, before any byte
 * flows: status 0 (local: the socket's own address) or the error. It may
 * write on the stream: a reply goes ahead of the service's bytes. After
 * an error the bridge ends the stream (the peer reads what was written,
 * then EOF) instead of resetting it, and done reports the error. */
typedef void (*kp_cli_bridge_connect_cb)(kp_cli_bridge_t *b, int status,
                                         const struct sockaddr *local);
void kp_cli_bridge_on_connect(kp_cli_bridge_t *b, kp_cli_bridge_connect_cb cb);

/* Writes buf on the bridge's stream, ahead of what the bridge will carry
 * (a preamble's reply, from the connect callback). req and the bytes stay
 * the caller's until done fires. A failure tears the bridge down. */
void kp_cli_bridge_write_stream(kp_cli_bridge_t *b, kp_write_t *req, const uv_buf_t *buf);

/* Bytes that came in behind a preamble, sent on first when bytes start to
 * flow: to_local to the local side, to_stream on the stream (copied;
 * either may be empty). UV_ENOMEM. */
int kp_cli_bridge_preload(kp_cli_bridge_t *b, const void *to_local, size_t local_len,
                          const void *to_stream, size_t stream_len);

/* The accepted TCP connection (kp_cli_bridge_accept) before
 * kp_cli_bridge_start: a preamble is read from it and answered on it
 * (writes queued there go out ahead of the bridge's). Its data pointer is
 * the bridge. Reading must be stopped before the bridge starts. */
uv_stream_t *kp_cli_bridge_local(kp_cli_bridge_t *b);

/* Ends a bridge that will not carry bytes (a refused preamble): what was
 * written to the local side is flushed first, the stream (if any) is
 * ended, not reset, so the peer reads what was written to it. done
 * reports status. */
void kp_cli_bridge_decline(kp_cli_bridge_t *b, int status);

/* What a bridge's end means to a person: "the service refused the
 * connection (connection refused)", "reset by the peer", ... Writes into
 * buf and returns it. */
const char *kp_cli_bridge_why(int status, uint64_t reset_code, char *buf, size_t size);

#endif
