/* SPDX-License-Identifier: MIT */
/* The node's side of proxies (docs/protocol.md, "Proxying"): the glue of
 * a proxy running on a node (node_proxy.c, kp_proxy_service_t in
 * kadpunch.h), and a node's own way out through a proxy (node_proxy_link.c):
 * the node's sockets as channels of a session with the proxy, each a
 * virtual UDP socket (common/uv/udp.h) backed by an allocation. Never
 * installed. */
#ifndef KP_NODE_PROXY_H
#define KP_NODE_PROXY_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "common/addr.h"
#include "common/log.h"
#include "common/rng.h"
#include "common/uv/udp.h"
#include "kadpunch.h"

#define KP_PROXY_TOPIC "kadpunch/proxies/v1"

/* A session datagram (0x58) at the node's socket, for its proxy. */
void kp__proxy_service_input(kp_proxy_service_t *svc, const kp_addr_t *from, const uint8_t *data,
                             size_t len);

/* The proxy's counters in full (by refusal reason and drop kind), for
 * --metrics; zero once it has closed. */
struct kp_proxy_stats_s;
void kp__proxy_service_stats(const kp_proxy_service_t *svc, struct kp_proxy_stats_s *out);

typedef struct kp_proxy_link_s kp_proxy_link_t;

/* node.c: the node's socket as the first channel of a session with the
 * proxy opts->proxy names, from a socket bound to bind's address. */
int kp__node_proxy_open(kp_node_t *node, const kp_node_options_t *opts, const kp_addr_t *bind);

/* "[tcp:][KEY@]ip:port" -> the proxy's address, its key if named
 * (*has_key), and whether to reach it over TCP (*tcp). KP_EBADADDR,
 * KP_EKEYFORMAT. */
int kp_proxy_link_parse(const char *text, kp_addr_t *addr, uint8_t key[KP_PUBLIC_KEY_LEN],
                        bool *has_key, bool *tcp);

/* The most proxies a node is given (kp_node_options_t.proxy). */
#define KP_PROXY_LINK_MAX 4

/* Opens a session as self to the first proxy of proxies ("[tcp:]P[,P...]",
 * each P "[KEY@]ip:port": with its key, or the key asked of it), moving to
 * the next when a session goes down (silent, refused, never answering;
 * round the list): from a UDP socket of its own bound to bind's address
 * (any address of the proxies' family when bind is of the other), or,
 * with tcp:, over TCP to each proxy's port of the same number (the
 * relay tunnel's framing, one DATA frame per session datagram; dialled
 * again after 1, 2, 4 ... 30 s when it drops). KP_EBADADDR, KP_EKEYFORMAT:
 * proxies does not parse, names more than KP_PROXY_LINK_MAX, or mixes
 * families or a later tcp: into a UDP list. The allocations asked for
 * are of bind's family (a dual-stack proxy lends either). */
int kp_proxy_link_new(uv_loop_t *loop, const kp_addr_t *bind, const char *proxies,
                      const kp_keypair_t *self, const kp_rng_t *rng, kp_log_t *log,
                      kp_proxy_link_t **out);
/* rebound(ctx) runs when a channel's allocation moves to a new address
 * (the session was made anew, at this proxy or the next). */
void kp_proxy_link_on_rebound(kp_proxy_link_t *l, void (*rebound)(void *ctx), void *ctx);
/* Opens a channel as udp (kp_udp_init_virtual): it sends from and hears
 * at an allocation of the proxy's; its local address is the allocation's
 * once the proxy has made it. UV_EMFILE: all channels in use. */
int kp_proxy_link_socket(kp_proxy_link_t *l, kp_udp_t *udp);
const kp_addr_t *kp_proxy_link_addr(const kp_proxy_link_t *l);
/* Whether the proxies are reached over TCP. */
bool kp_proxy_link_tcp(const kp_proxy_link_t *l);
/* Whether the session is up. */
bool kp_proxy_link_up(const kp_proxy_link_t *l);
/* The node does not keep its addresses to itself (not --private): once up,
 * a link whose every proxy goes silent speaks from sockets of this host's
 * own, bound to bind's address, until a proxy answers again, each change
 * told as a rebinding. Not over TCP (a host that needs TCP has no UDP of
 * its own to fall back to), nor across families (a proxy bridging an
 * IPv6-only host into IPv4 leaves it no IPv4 of its own). */
void kp_proxy_link_may_go_own(kp_proxy_link_t *l);
/* Whether it speaks from this host's own sockets now. */
bool kp_proxy_link_on_own(const kp_proxy_link_t *l);
/* Times it fell back on them. */
uint32_t kp_proxy_link_falls(const kp_proxy_link_t *l);
/* Trial sessions over the other transport begun, and welcomed (the link
 * moved onto it), by that transport: [0] UDP, [1] TCP. */
void kp_proxy_link_trials(const kp_proxy_link_t *l, uint32_t trials[2], uint32_t moves[2]);
/* Datagrams the channels received: handed on in place (PASSes over UDP,
 * in the socket's scratch) and copied first (the rest). */
void kp_proxy_link_rx_counts(const kp_proxy_link_t *l, uint64_t *in_place, uint64_t *copied);
/* Closes the session and frees l once its own socket has closed. Every
 * channel socket must be closed, its close callback run, before. */
void kp_proxy_link_close(kp_proxy_link_t *l);

#endif
