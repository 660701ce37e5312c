/* SPDX-License-Identifier: MIT */
/* A node's extra sockets: the birthday strategy's (holepunch/hp_birthday.c)
 * while a punch runs, and afterwards the one that won, which then carries
 * that connection (the punched NAT mapping belongs to it); a relay
 * pairing's, which carries a relayed connection and keeps punching to the
 * peer's (holepunch/hp_link.c). A socket handed over stays until no
 * connection runs on it and no connection's link holds it.
 *
 * An object of its own with a libuv-style lifecycle: the holepunch state
 * machine opens, sends from and releases its sockets through the io it
 * installs (kp_socket_pool_io); closing it closes every socket and fires
 * the callback once the last is gone. */
#ifndef KP_NODE_SOCKET_POOL_H
#define KP_NODE_SOCKET_POOL_H

#include "holepunch/holepunch.h"
#include "kadpunch.h"

typedef struct kp_socket_pool_s kp_socket_pool_t;
typedef void (*kp_socket_pool_close_cb)(kp_socket_pool_t *pool, void *arg);

/* An empty pool for node's sockets. Errors: UV_ENOMEM. */
int kp_socket_pool_create(kp_node_t *node, kp_socket_pool_t **out);
/* Closes every socket (and the endpoints on them); cb fires once, on a
 * later tick if a socket was open, after which pool is gone. */
void kp_socket_pool_close(kp_socket_pool_t *pool, kp_socket_pool_close_cb cb, void *arg);

/* Installs the pool as io's extra-socket provider (open, send_from, close). */
void kp_socket_pool_io(kp_socket_pool_t *pool, kp_hp_io_t *io);
/* The endpoint for a connection on sock (a socket of the pool, which is
 * from now on kept while anything runs on it), made on first use. */
int kp_socket_pool_endpoint(kp_socket_pool_t *pool, void *sock, kp_endpoint_t **out);
/* A proxied node's own socket (node_own_socket.c): a real UDP socket
 * beside the proxy's channels, bound to any address of the node's family,
 * never swept; datagrams on it that are neither probes nor a connection's
 * go to other. NULL: none could be opened. */
typedef void (*kp_socket_pool_other_fn)(void *ctx, const kp_addr_t *from, const uint8_t *data,
                                        size_t len);
void *kp_socket_pool_open_own(kp_socket_pool_t *pool, kp_socket_pool_other_fn other, void *ctx);
/* Sends from a socket of the pool. */
void kp_socket_pool_send(kp_socket_pool_t *pool, void *sock, const kp_addr_t *to,
                         const uint8_t *data, size_t len);
/* Closes won sockets nothing has run on for a while. */
void kp_socket_pool_sweep(kp_socket_pool_t *pool, uint64_t now);
/* Sockets open now. */
unsigned kp_socket_pool_count(const kp_socket_pool_t *pool);

#endif
