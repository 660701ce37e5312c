/* SPDX-License-Identifier: MIT */
/* A running node's control socket: a unix socket, owner-only (0600), that
 * answers one JSON request per line with one JSON line (docs/inspect.md,
 * "Control socket"). kadpunch-inspect reads the routing table, the stored
 * records and the counters through it; the daemon adds commands of its own.
 *
 *   -> {"cmd":"table"}
 *   <- {"ok":true,"cmd":"table", ...}
 *   -> {"cmd":"nope"}
 *   <- {"ok":false,"error":"unknown command 'nope'", ...}
 *
 * Built in: "table", "records", "stats", "commands". Bounded: requests of
 * KP_CONTROL_MAX_REQUEST bytes, KP_CONTROL_MAX_CONNS connections (more are
 * closed at once), a few answers queued per connection (a client that does
 * not read stops being read), connections idle for a minute closed.
 *
 * Loop thread only. Nothing here keeps the node from closing, but the
 * owner closes the control first: its handlers read the node.
 *
 * The process must ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)): libuv writes
 * to a unix socket with write(2), and a client that hangs up before its
 * answer arrives would otherwise kill the node. The library cannot do it:
 * a signal's disposition is the whole process's. */
#ifndef KP_NODE_CONTROL_H
#define KP_NODE_CONTROL_H

#include "kadpunch.h"
#include "node/json.h"

#define KP_CONTROL_MAX_REQUEST 4096
#define KP_CONTROL_MAX_CONNS 8
#define KP_CONTROL_MAX_COMMANDS 16
/* The largest answer: a full routing table is about 1 MB. */
#define KP_CONTROL_MAX_ANSWER (8u << 20)

typedef struct kp_control_s kp_control_t;

/* A command. request is the parsed request (an object with a string "cmd";
 * other members are the command's arguments) and line its text (len
 * bytes, NUL-terminated); both are valid during the call. The handler
 * writes one complete JSON object to out, conventionally starting with
 * "ok" (true, or false with an "error" message). A negative return means it
 * could not (e.g. UV_ENOMEM): the client gets {"ok":false} with that
 * error instead of whatever was written. */
typedef int (*kp_control_fn)(void *ctx, const kp_json_t *request, const char *line, size_t len,
                             kp_jw_t *out);

/* Listens on path (at most 107 bytes) for node: removes a stale socket
 * there (one nobody listens on), creates the new one with mode 0600 before
 * it accepts anything, and registers the built-in commands. Errors:
 * UV_EEXIST (path exists and is not a socket: never replaced),
 * UV_EADDRINUSE (a process answers on it), UV_ENAMETOOLONG, and what bind
 * and chmod say (UV_EACCES, UV_ENOENT for a missing directory, ...). On
 * error nothing is left behind and *out is NULL. */
int kp_control_start(kp_node_t *node, const char *path, kp_control_t **out);

/* Adds (or replaces) command cmd (at most 31 bytes). ctx is passed to fn.
 * Errors: KP_ELIMIT (KP_CONTROL_MAX_COMMANDS), UV_EINVAL. */
int kp_control_add(kp_control_t *c, const char *cmd, kp_control_fn fn, void *ctx);

/* The socket's path. */
const char *kp_control_path(const kp_control_t *c);

/* Stops listening, drops the connections (answers not yet written are
 * lost), unlinks the socket at once, and frees c once its handles have
 * closed (on a later loop tick: run the loop). No handler runs after this;
 * a handler may call it (a "stop" command, say). */
void kp_control_close(kp_control_t *c);

/* control_cmds.c: registers "table", "records" and "stats" for node. */
int kp__control_add_builtins(kp_control_t *c, kp_node_t *node);

#endif
