/* SPDX-License-Identifier: MIT */
/* A node's way out through a proxy (node_proxy.h): one UDP socket to the
 * proxy carries the session (proxy/proxy_client.h), and every socket the
 * node opens is a channel of it, a virtual kp_udp_t whose datagrams leave
 * from an allocation of the proxy's. The tunnel to a relay over TCP
 * (relay/tunnel.c) is the model.
 *
 * Given several proxies, the node uses one at a time, in order, and moves
 * to the next when its session goes down (silent, refused, or never
 * answering: proxy/proxy_client.c says so after 5 s): the same channels
 * open at the next proxy, at new allocation addresses, which the node's
 * connections take as a rebinding and resume from.
 *
 * Over UDP until no proxy of the list has answered once, each silent in
 * turn: then over TCP (UDP is blocked here, it seems), through the same
 * framing as the tunnel to a relay. The UDP socket stays: now and then,
 * while the connection is up, a trial session says HELLO over it, and
 * once the proxy welcomes it (the network changed; the daemon started
 * before it was up) the link goes back to UDP on it, the channels at new
 * allocations. Until then the connection carries on: a trial that fails
 * costs nothing. The other way round too: a link whose every proxy went
 * silent over UDP after one had answered (moved to a network that blocks
 * UDP) tries a session over TCP now and then, and takes it once welcomed;
 * a proxy that is down costs a refused connection.
 *
 * The allocations are of the node's family, the session of the proxy's:
 * a dual-stack proxy lends an IPv6-only node an IPv4 address (and the
 * other way round), so the node is an IPv4 node through it.
 *
 * A proxy is a way in, not a place to stay (docs/architecture.md, "Losing
 * every proxy"): unless the node keeps its addresses to itself, a link
 * whose every proxy went silent after it was up speaks from sockets of
 * this host's own, one behind each channel, until a proxy answers again.
 * The node's connections take it as a rebinding and resume from there,
 * direct or through a relay, as any node's would. */
#include <stddef.h>
#include <string.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "node/node_proxy.h"
#include "proxy/proxy_client.h"
#include "relay/uv/tunnel.h"

#define REDIAL_FIRST_MS 1000
#define REDIAL_MAX_MS 30000
/* Speaking from our own sockets: back to a proxy that answers no sooner
 * than this after the fall, doubling with each fall, up to the most. */
#define OWN_HOLD_MS 2000
#define OWN_HOLD_MAX_MS 300000
#define OWN_CHECK_MS 500 /* while on our own: whether a proxy's allocations are back */
/* A trial session over the other transport (UDP, fallen to TCP; TCP,
 * every proxy silent over UDP), first this long after the connection is up
 * or the proxies went silent, doubling with each trial, up to the most (a
 * HELLO costs the proxy a handshake); each given this long to be
 * welcomed. */
#define TRIAL_FIRST_MS 5000
#define TRIAL_MAX_MS 600000
#define TRIAL_MS 5000

typedef struct choice_s {
  kp_addr_t addr;
  bool has_key;
  uint8_t key[KP_PUBLIC_KEY_LEN];
  /* The key its session last proved (given or fetched): a trial over TCP
   * needs one, and a silent session may have forgotten it. */
  bool learned;
  uint8_t learned_key[KP_PUBLIC_KEY_LEN];
} choice_t;

/* A channel's socket of this host's own, while every proxy is down. */
typedef struct own_sock_s {
  kp_udp_t udp;
  struct kp_proxy_link_s *link;
  unsigned ch;
} own_sock_t;

typedef struct channel_s {
  kp_udp_t *udp;   /* NULL: free */
  bool closing;    /* kp_udp_close called: its callback is owed */
  own_sock_t *own; /* speaking from this host's own socket instead */
} channel_t;

struct kp_proxy_link_s {
  uv_loop_t *loop;
  kp_udp_t sock;  /* to the proxy (over UDP) */
  uint8_t family; /* the node's: what the allocations are */
  bool family_said;
  unsigned family_refusals; /* proxies in a row without an address of it */
  bool tcp;                 /* over TCP instead (asked for, or UDP never answered): */
  bool has_sock;            /* sock is open: over UDP, or fallen to TCP and trying UDP */
  /* The trial session over the other transport (NULL: none running):
   * until when it may run, whether it went down; the timer runs it, and
   * the next one. Over UDP, its TCP connection is io. */
  kp_proxy_client_t *trial;
  uint64_t trial_until;
  bool trial_failed;
  uv_timer_t trial_timer;
  unsigned trial_ms;
  kp_tunnel_io_t io;
  uv_connect_t connect;
  uv_timer_t redial;
  unsigned redial_ms;
  bool io_live;
  kp_addr_t proxy; /* the one in use: choices[current] */
  choice_t choices[KP_PROXY_LINK_MAX];
  unsigned choice_count, current;
  bool move_wanted; /* the session went down: the next proxy, from rearm */
  /* Losing every proxy: may_own (not private, not over TCP, not bridged),
   * own_bind (the node's bind address, any port), was_up (a channel was
   * opened once), unusable (a bit per proxy silent or without our family
   * since a channel was last opened: all of them set, our own sockets),
   * on_own (some channel speaks from one), own_until (not back to the
   * proxy before then: the hold doubles with every fall, flaps, so a proxy
   * that comes and goes cannot make the node switch ever faster). The
   * switches run from own_timer, never inside a send or the session's
   * call: each one is a rebinding the node hears. */
  bool may_own, was_up, on_own;
  bool own_allowed; /* kp_proxy_link_may_go_own: may_own whenever over UDP */
  bool answered;    /* a proxy's datagram reached us over UDP once (before any fall) */
  bool fell;        /* went over TCP by itself once: UDP is not to be trusted here */
  bool open_wanted; /* back over UDP: the channels open once the connection is closed */
  uint32_t unusable;
  unsigned flaps;
  uint32_t falls; /* every fall, for the user (flaps is forgotten) */
  /* Trial sessions begun and welcomed (the link moved), by the transport
   * they tried: [0] UDP, [1] TCP. For the user. */
  uint32_t trials[2], moves[2];
  uint64_t own_until, fell_at;
  uv_timer_t own_timer;
  kp_addr_t own_bind;
  kp_keypair_t self;
  kp_rng_t rng;
  void (*rebound)(void *ctx);
  void *rebound_ctx;
  /* Inside a call into the session (input, tick): what it makes the node
   * send must not re-enter it, nor replace it under itself; rearm runs
   * once the outer call is back. */
  unsigned in_client;
  /* The datagram being read from the socket, in its receive scratch (ours
   * to write into until the callback returns): a PASS's payload inside
   * it is handed on in place, where any other is copied first. */
  const uint8_t *rx_data;
  size_t rx_len;
  uint64_t rx_in_place, rx_copied; /* channels' arrivals handed on each way */
  kp_proxy_client_t *client;
  kp_log_t *log;
  uv_timer_t timer;
  uv_idle_t reaper; /* reports closed channels on a later tick */
  uint64_t armed;
  unsigned handles;
  bool close_wanted;
  channel_t ch[KP_PROXY_CHANNELS];
};

static uint64_t now_of(const kp_proxy_link_t *l) {
  return uv_now(l->loop);
}

static void on_timer(uv_timer_t *t);
static void move_on(kp_proxy_link_t *l);
static void on_own_timer(uv_timer_t *t);

static bool all_unusable(const kp_proxy_link_t *l) {
  return l->was_up && l->unusable == (1u << l->choice_count) - 1;
}

static void to_tcp(kp_proxy_link_t *l);
static void on_trial(uv_timer_t *t);

/* Over UDP, every proxy silent after one had answered: UDP may be what
 * stopped getting through, and TCP is worth a trial. */
static bool udp_lost(const kp_proxy_link_t *l) {
  return !l->tcp && l->has_sock && l->answered && l->unusable == (1u << l->choice_count) - 1;
}

/* Runs the session's timers and arms ours at its next deadline. */
static void rearm(kp_proxy_link_t *l) {
  if (l->close_wanted || l->in_client) return;
  uint64_t now = now_of(l);
  l->in_client++;
  uint64_t next = kp_proxy_client_tick(l->client, now);
  l->in_client--;
  bool fresh = false;
  /* Every proxy silent over UDP, none ever heard: UDP does not get out. */
  if (!l->tcp && !l->answered && l->unusable == (1u << l->choice_count) - 1)
    to_tcp(l), fresh = true;
  if (l->move_wanted) move_on(l), fresh = true;
  if (fresh) {
    l->in_client++;
    next = kp_proxy_client_tick(l->client, now);
    l->in_client--;
  }
  if (l->may_own && (l->on_own || all_unusable(l)) && !uv_is_active((uv_handle_t *)&l->own_timer))
    uv_timer_start(&l->own_timer, on_own_timer, l->on_own ? OWN_CHECK_MS : 0, 0);
  if (udp_lost(l) && !l->trial && !uv_is_active((uv_handle_t *)&l->trial_timer))
    uv_timer_start(&l->trial_timer, on_trial, l->trial_ms, 0);
  if (next == l->armed && uv_is_active((uv_handle_t *)&l->timer)) return;
  l->armed = next;
  uv_timer_start(&l->timer, on_timer, next > now ? next - now : 1, 0);
}

static void on_timer(uv_timer_t *t) {
  kp_proxy_link_t *l = t->data;
  l->armed = 0;
  kp_udp_batch_t batch;
  kp_udp_batch_begin(&l->sock, &batch);
  rearm(l);
  kp_udp_batch_end(&l->sock, &batch);
}

/* ---- The session's io ----------------------------------------------------------------------- */

static void io_send(void *ctx, const uint8_t *data, size_t len) {
  kp_proxy_link_t *l = ctx;
  if (l->close_wanted) return;
  if (!l->tcp) {
    kp_udp_send(&l->sock, &l->proxy, data, len);
    return;
  }
  /* Down (redialling): lost, as on a network that is down. */
  kp_tunnel_frame_t f = {.type = KP_TUNNEL_DATA, .addr = l->proxy, .data = data, .len = len};
  if (l->io_live) kp_tunnel_io_send(&l->io, &f);
}

static void io_send_parts(void *ctx, const uint8_t *head, size_t hlen, const uint8_t *body,
                          size_t blen) {
  kp_proxy_link_t *l = ctx;
  if (l->close_wanted) return;
  if (!l->tcp) {
    kp_udp_send_parts(&l->sock, &l->proxy, head, hlen, body, blen);
    return;
  }
  uint8_t whole[KP_PROXY_MAX_DATAGRAM];
  size_t n = kp_join_parts(whole, sizeof(whole), head, hlen, body, blen);
  if (n) io_send(ctx, whole, n);
}

static void own_close(kp_proxy_link_t *l, unsigned c);

static void io_opened(void *ctx, unsigned ch, const kp_addr_t *addr) {
  kp_proxy_link_t *l = ctx;
  char text[KP_ADDR_STRLEN];
  if (!l->ch[ch].udp || l->ch[ch].closing) return;
  l->was_up = true;
  l->unusable = 0;
  l->family_refusals = 0;
  const uint8_t *key = kp_proxy_client_proxy_key(l->client);
  if (key) {
    memcpy(l->choices[l->current].learned_key, key, KP_PUBLIC_KEY_LEN);
    l->choices[l->current].learned = true;
  }
  /* On our own socket: the channel goes back to the proxy from the own
   * timer, once the hold is over (rearm arms it). */
  if (l->ch[ch].own) return;
  kp_addr_t *local = &l->ch[ch].udp->local;
  bool moved = local->port && !kp_addr_eq(local, addr);
  *local = *addr;
  KP_INFO(l->log, "proxy: channel %u at %s", ch, kp_addr_format(addr, text, sizeof(text)));
  if (moved && l->rebound) l->rebound(l->rebound_ctx);
}

static void io_recv(void *ctx, unsigned ch, const kp_addr_t *from, const uint8_t *data,
                    size_t len) {
  kp_proxy_link_t *l = ctx;
  if (!l->ch[ch].udp || l->ch[ch].closing) return;
  uintptr_t at = (uintptr_t)data, rx = (uintptr_t)l->rx_data;
  if (l->rx_data && at >= rx && at + len <= rx + l->rx_len) {
    l->rx_in_place++;
    kp_udp_virtual_deliver(l->ch[ch].udp, from, (uint8_t *)at, len);
    return;
  }
  l->rx_copied++;
  /* The receive callback may write into it (scratch), so a copy. */
  uint8_t buf[KP_UDP_MAX_DATAGRAM];
  memcpy(buf, data, len);
  kp_udp_virtual_deliver(l->ch[ch].udp, from, buf, len);
}

static void io_closed(void *ctx, unsigned ch, uint8_t reason) {
  kp_proxy_link_t *l = ctx;
  if (reason != KP_PROXY_FAMILY) {
    KP_WARN(l->log, "proxy: channel %u: %s (asked again later)", ch, kp_proxy_reason_name(reason));
    return;
  }
  /* A proxy of the other family only: the next one, if there is one. */
  char text[KP_ADDR_STRLEN];
  if (!l->family_said)
    KP_ERROR(l->log, "proxy %s has no %s address to lend this node%s",
             kp_addr_format(&l->proxy, text, sizeof(text)),
             l->family == KP_AF_INET ? "IPv4" : "IPv6",
             l->choice_count > 1 ? ": trying the next" : "");
  l->family_said = true;
  /* It cannot carry us: as good as silent, for falling back on our own. */
  l->unusable |= 1u << l->current;
  /* Round the list once; then this one stays, asked again now and then. */
  if (l->choice_count > 1 && ++l->family_refusals < l->choice_count) l->move_wanted = true;
}

static void io_down(void *ctx, uint8_t reason) {
  kp_proxy_link_t *l = ctx;
  char text[KP_ADDR_STRLEN];
  kp_addr_format(&l->proxy, text, sizeof(text));
  if (reason)
    KP_ERROR(l->log, "proxy %s refused this node: %s", text, kp_proxy_reason_name(reason));
  else
    KP_WARN(l->log, "proxy %s is silent%s", text,
            l->choice_count > 1 ? "" : ": making the session anew");
  /* Not from inside the session's own call: rearm does it. */
  if (l->choice_count > 1) l->move_wanted = true;
  /* Silent, each of them (or without our family), after we were through:
   * our own sockets meanwhile (rearm, then the own timer). A refusal is
   * the user's to hear, not to route around. The next round of the list
   * may find a proxy of our family again. */
  if (reason)
    l->unusable &= ~(1u << l->current);
  else
    l->unusable |= 1u << l->current;
  l->family_refusals = 0;
}

/* ---- Channels: virtual sockets ------------------------------------------------------------------
 */

static int channel_of(const kp_proxy_link_t *l, const kp_udp_t *udp) {
  for (int i = 0; i < KP_PROXY_CHANNELS; i++)
    if (l->ch[i].udp == udp) return i;
  return -1;
}

static unsigned ch_send(kp_udp_t *udp, const kp_udp_out_t *out, unsigned n) {
  kp_proxy_link_t *l = udp->vctx;
  int c = channel_of(l, udp);
  if (c < 0 || l->close_wanted) return n; /* lost, as the network would */
  uint64_t now = now_of(l);
  kp_udp_batch_t batch;
  own_sock_t *own = l->ch[c].own;
  if (own) {
    kp_udp_batch_begin(&own->udp, &batch);
    for (unsigned i = 0; i < n; i++) kp_udp_send(&own->udp, &out[i].to, out[i].data, out[i].len);
    kp_udp_batch_end(&own->udp, &batch);
    return n;
  }
  kp_udp_batch_begin(&l->sock, &batch);
  for (unsigned i = 0; i < n; i++)
    kp_proxy_client_send(l->client, (unsigned)c, &out[i].to, out[i].data, out[i].len, now);
  /* Sending starts the session's watch for a silent proxy: its timer. */
  rearm(l);
  kp_udp_batch_end(&l->sock, &batch);
  return n;
}

static void reap(uv_idle_t *h) {
  kp_proxy_link_t *l = h->data;
  uv_idle_stop(h);
  for (unsigned i = 0; i < KP_PROXY_CHANNELS; i++) {
    if (!l->ch[i].closing) continue;
    kp_udp_t *udp = l->ch[i].udp;
    l->ch[i] = (channel_t){0};
    kp_udp_virtual_closed(udp); /* may close more, or the link */
  }
}

static void ch_close(kp_udp_t *udp) {
  kp_proxy_link_t *l = udp->vctx;
  int c = channel_of(l, udp);
  if (c < 0) return;
  l->ch[c].closing = true;
  own_close(l, (unsigned)c);
  if (!l->close_wanted) kp_proxy_client_close(l->client, (unsigned)c, now_of(l));
  uv_idle_start(&l->reaper, reap);
}

static const kp_udp_vops_t channel_ops = {ch_send, ch_close};

/* ---- Losing every proxy: this host's own sockets ------------------------------------------------
 */

static void handle_closed(kp_proxy_link_t *l);
static void on_sock_closed(kp_udp_t *udp);

static void on_own_datagram(kp_udp_t *udp, const kp_addr_t *from, uint8_t *data, size_t len) {
  own_sock_t *o = udp->data;
  kp_proxy_link_t *l = o->link;
  channel_t *ch = &l->ch[o->ch];
  if (l->close_wanted || ch->own != o || !ch->udp || ch->closing) return;
  kp_udp_virtual_deliver(ch->udp, from, data, len);
}

static void on_own_closed(kp_udp_t *udp) {
  own_sock_t *o = udp->data;
  kp_proxy_link_t *l = o->link;
  kp_free(o);
  handle_closed(l);
}

static void own_close(kp_proxy_link_t *l, unsigned c) {
  own_sock_t *o = l->ch[c].own;
  if (!o) return;
  l->ch[c].own = NULL;
  kp_udp_close(&o->udp, on_own_closed);
}

/* Channel c speaks from a socket of this host's own: 0, or the error (it
 * stays on the proxy, silent until one answers). */
static int own_open(kp_proxy_link_t *l, unsigned c) {
  own_sock_t *o = kp_calloc(1, sizeof(*o));
  if (!o) return UV_ENOMEM;
  kp_udp_options_t so = {.rcvbuf = KP_UDP_NODE_BUF, .sndbuf = KP_UDP_NODE_BUF};
  int err = kp_udp_init(l->loop, &o->udp, &l->own_bind, &so);
  if (err) {
    kp_free(o);
    return err;
  }
  o->link = l;
  o->ch = c;
  o->udp.data = o;
  l->handles++;
  kp_udp_enable_gro(&o->udp);
  kp_udp_recv_start(&o->udp, on_own_datagram);
  l->ch[c].own = o;
  l->ch[c].udp->local = o->udp.local;
  return 0;
}

/* Every channel that can speaks from a socket of our own. */
static void go_own(kp_proxy_link_t *l) {
  char text[KP_ADDR_STRLEN];
  const kp_addr_t *first = NULL;
  int err = 0;
  for (unsigned i = 0; i < KP_PROXY_CHANNELS; i++) {
    if (!l->ch[i].udp || l->ch[i].closing || l->ch[i].own) continue;
    int e = own_open(l, i);
    if (e) err = e;
    if (!e && !first) first = &l->ch[i].udp->local;
  }
  if (!first) {
    KP_ERROR(l->log, "every proxy is silent, and no socket of our own: %s", kp_strerror(err));
    return;
  }
  l->on_own = true;
  uint64_t now = now_of(l);
  if (l->fell_at && now - l->fell_at > 4 * OWN_HOLD_MAX_MS) l->flaps = 0; /* long ago */
  uint64_t hold = (uint64_t)OWN_HOLD_MS << (l->flaps < 8 ? l->flaps : 8);
  l->own_until = now + (hold < OWN_HOLD_MAX_MS ? hold : OWN_HOLD_MAX_MS);
  l->fell_at = now;
  l->flaps++;
  l->falls++;
  KP_WARN(l->log,
          "every proxy is silent: speaking from this host's own address (%s) until one answers",
          kp_addr_format(first, text, sizeof(text)));
  if (l->rebound) l->rebound(l->rebound_ctx);
}

/* Each channel whose allocation is open again goes back to it. */
static void go_back(kp_proxy_link_t *l) {
  char text[KP_ADDR_STRLEN];
  bool moved = false, left = false;
  for (unsigned i = 0; i < KP_PROXY_CHANNELS; i++) {
    kp_addr_t addr;
    if (!l->ch[i].own) continue;
    if (l->ch[i].closing || !kp_proxy_client_opened(l->client, i, &addr)) {
      left = true;
      continue;
    }
    own_close(l, i);
    l->ch[i].udp->local = addr;
    moved = true;
  }
  if (!moved) return;
  l->on_own = left;
  KP_WARN(l->log, "proxy %s answers again: speaking through it",
          kp_addr_format(&l->proxy, text, sizeof(text)));
  if (l->rebound) l->rebound(l->rebound_ctx);
}

static void on_own_timer(uv_timer_t *t) {
  kp_proxy_link_t *l = t->data;
  if (l->close_wanted) return;
  if (!l->on_own) {
    if (all_unusable(l)) go_own(l);
  } else if (now_of(l) >= l->own_until) {
    go_back(l);
  }
  rearm(l);
}

/* ---- The socket to the proxy ------------------------------------------------------------------
 */

static void back_to_udp(kp_proxy_link_t *l);

static void on_datagram(kp_udp_t *udp, const kp_addr_t *from, uint8_t *data, size_t len) {
  kp_proxy_link_t *l = udp->data;
  if (l->close_wanted || !kp_addr_eq(from, &l->proxy)) return;
  if (l->tcp) { /* the trial's, if one runs: welcomed, the link is back */
    if (!l->trial) return;
    kp_proxy_client_input(l->trial, data, len, now_of(l));
    kp_proxy_client_stats_t st;
    kp_proxy_client_stats(l->trial, &st);
    if (st.up) back_to_udp(l);
    return;
  }
  /* Whatever it says (a key, a refusal, a welcome), UDP gets through:
   * the link never goes over TCP by itself. Forged, it could only keep
   * us where we are; a sender off the path would have to guess our port.
   * Not once the link fell to TCP: from then on, every proxy silent over
   * UDP means TCP again (and its trials later), whatever was heard. */
  if (!l->fell) l->answered = true;
  const uint8_t *outer = l->rx_data;
  size_t outer_len = l->rx_len;
  l->rx_data = data, l->rx_len = len;
  l->in_client++;
  kp_proxy_client_input(l->client, data, len, now_of(l));
  l->in_client--;
  l->rx_data = outer, l->rx_len = outer_len;
  rearm(l);
}

int kp_proxy_link_parse(const char *text, kp_addr_t *addr, uint8_t key[KP_PUBLIC_KEY_LEN],
                        bool *has_key, bool *tcp) {
  *tcp = !strncmp(text, "tcp:", 4);
  if (*tcp) text += 4;
  const char *at = strchr(text, '@');
  *has_key = false;
  if (at) {
    char k[KP_KEY_TEXT_LEN + 1];
    if ((size_t)(at - text) != KP_KEY_TEXT_LEN) return KP_EKEYFORMAT;
    memcpy(k, text, KP_KEY_TEXT_LEN);
    k[KP_KEY_TEXT_LEN] = '\0';
    int err = kp_key_from_text(k, key);
    if (err) return err;
    *has_key = true;
    text = at + 1;
  }
  if (kp_addr_parse(addr, text) || !addr->port) return KP_EBADADDR;
  return 0;
}

/* ---- Over TCP ------------------------------------------------------------------------------- */

static kp_proxy_link_t *link_of_io(kp_tunnel_io_t *io) {
  return (kp_proxy_link_t *)((char *)io - offsetof(kp_proxy_link_t, io));
}

static void onto_tcp(kp_proxy_link_t *l);
static void trial_end(kp_proxy_link_t *l);

static bool on_frame(kp_tunnel_io_t *io, const kp_tunnel_frame_t *f) {
  kp_proxy_link_t *l = link_of_io(io);
  if (l->close_wanted || !l->io_live) return false;
  if (f->type == KP_TUNNEL_DATA && f->channel == 0 && l->tcp) {
    l->in_client++;
    kp_proxy_client_input(l->client, f->data, f->len, now_of(l));
    l->in_client--;
    rearm(l);
  } else if (f->type == KP_TUNNEL_DATA && f->channel == 0 && l->trial) {
    /* Over UDP, the trial's: welcomed, the link goes over TCP. */
    kp_proxy_client_input(l->trial, f->data, f->len, now_of(l));
    kp_proxy_client_stats_t st;
    kp_proxy_client_stats(l->trial, &st);
    /* (Unless the session over UDP is back meanwhile.) */
    if (st.up && kp_proxy_link_up(l))
      trial_end(l);
    else if (st.up)
      onto_tcp(l);
  }
  return l->io_live && !l->close_wanted;
}

static int dial(kp_proxy_link_t *l);

static void on_redial(uv_timer_t *t) {
  kp_proxy_link_t *l = t->data;
  if (l->close_wanted) return;
  if (dial(l)) uv_timer_start(&l->redial, on_redial, l->redial_ms, 0);
}

static void on_io_closed(kp_tunnel_io_t *io) {
  kp_proxy_link_t *l = link_of_io(io);
  if (l->close_wanted) {
    handle_closed(l);
    return;
  }
  l->redial_ms = l->redial_ms ? l->redial_ms * 2 : REDIAL_FIRST_MS;
  if (l->redial_ms > REDIAL_MAX_MS) l->redial_ms = REDIAL_MAX_MS;
  uv_timer_start(&l->redial, on_redial, l->redial_ms, 0);
}

static void on_trial_io_closed(kp_tunnel_io_t *io) {
  handle_closed(link_of_io(io));
}

static void go_down(kp_proxy_link_t *l, int status) {
  char text[KP_ADDR_STRLEN];
  if (!l->io_live || l->close_wanted) return;
  l->io_live = false;
  if (!l->tcp) { /* a trial's connection: the trial failed */
    l->trial_failed = true;
    kp_tunnel_io_close(&l->io, on_trial_io_closed);
    return;
  }
  /* The proxy ends the session with the link: a new one over the next. */
  kp_proxy_client_restart(l->client, now_of(l));
  KP_WARN(l->log, "proxy %s over TCP: %s (dialling again)",
          kp_addr_format(&l->proxy, text, sizeof(text)),
          status == UV_EOF ? "closed by the proxy" : kp_strerror(status));
  kp_tunnel_io_close(&l->io, on_io_closed);
}

static void on_io_end(kp_tunnel_io_t *io, int status) {
  go_down(link_of_io(io), status);
}

static void on_connected(uv_connect_t *req, int status) {
  kp_proxy_link_t *l = req->data;
  if (l->close_wanted || status == UV_ECANCELED || !l->io_live) return;
  int err = status ? status : kp_tunnel_io_start(&l->io);
  if (err) {
    go_down(l, err);
    return;
  }
  l->redial_ms = 0;
  kp_tunnel_io_release(&l->io);
  if (l->has_sock && !uv_is_active((uv_handle_t *)&l->trial_timer))
    uv_timer_start(&l->trial_timer, on_trial, l->trial_ms, 0);
}

static int dial(kp_proxy_link_t *l) {
  int err = kp_tunnel_io_init(l->loop, &l->io);
  if (err) return err;
  l->io.on_frame = on_frame;
  l->io.on_end = on_io_end;
  l->io.hold = true; /* frames wait for the connection */
  l->io_live = true;
  struct sockaddr_storage ss;
  kp_addr_to_sockaddr(&l->proxy, &ss);
  l->connect.data = l;
  err = uv_tcp_connect(&l->connect, &l->io.tcp, (struct sockaddr *)&ss, on_connected);
  if (err) go_down(l, err);
  return 0;
}

static kp_proxy_client_io_t client_io(kp_proxy_link_t *l) {
  return (kp_proxy_client_io_t){l, io_send, io_opened, io_recv, io_closed, io_down, io_send_parts};
}

/* A new session, with choice's proxy, every channel the node holds
 * opened there; its HELLO leaves at the next tick. The old session is
 * dropped, not ended: its proxy is not answering. 0, or out of memory. */
static int fresh_session(kp_proxy_link_t *l, unsigned choice) {
  const choice_t *c = &l->choices[choice];
  kp_proxy_client_t *fresh;
  uint64_t now = now_of(l);
  kp_proxy_client_io_t io = client_io(l);
  int err = kp_proxy_client_new(&l->self, c->has_key ? c->key : NULL, &l->rng, &io, now, &fresh);
  if (err) return err;
  kp_proxy_client_free(l->client);
  if (l->trial) { /* a trial of the proxy left behind: the next, later */
    trial_end(l);
    uv_timer_start(&l->trial_timer, on_trial, l->trial_ms, 0);
  }
  l->client = fresh;
  l->current = choice;
  l->proxy = c->addr;
  l->family_said = false;
  l->open_wanted = false;
  for (unsigned i = 0; i < KP_PROXY_CHANNELS; i++)
    if (l->ch[i].udp && !l->ch[i].closing) kp_proxy_client_open(fresh, i, l->family, now);
  return 0;
}

/* The session went down: the next proxy. */
static void move_on(kp_proxy_link_t *l) {
  l->move_wanted = false;
  unsigned next = (l->current + 1) % l->choice_count;
  char from[KP_ADDR_STRLEN], to[KP_ADDR_STRLEN];
  kp_addr_format(&l->proxy, from, sizeof(from));
  if (fresh_session(l, next)) return; /* out of memory: this one keeps trying */
  KP_WARN(l->log, "proxy %s: moving to proxy %s", from, kp_addr_format(&l->proxy, to, sizeof(to)));
  /* Over TCP: the connection goes, and the redial reaches the next one. */
  if (l->tcp && l->io_live) {
    l->io_live = false;
    kp_tunnel_io_close(&l->io, on_io_closed);
  }
}

static void dial_or_later(kp_proxy_link_t *l) {
  if (!dial(l)) return;
  /* Not even a socket: later, as for a failed connection. */
  l->redial_ms = REDIAL_FIRST_MS;
  uv_timer_start(&l->redial, on_redial, l->redial_ms, 0);
}

/* No proxy answered over UDP: the list over TCP until one does. The
 * session (the next proxy's, if the list moves on) says hello again over
 * the connection; the UDP socket stays, for trials (on_trial). */
static void to_tcp(kp_proxy_link_t *l) {
  char text[KP_ADDR_STRLEN];
  unsigned next = l->move_wanted ? (l->current + 1) % l->choice_count : l->current;
  l->move_wanted = false;
  /* A fresh session says HELLO now, not at the silent one's backoff. */
  fresh_session(l, next); /* out of memory: the old one's, later */
  KP_WARN(l->log, "no proxy answered over UDP: trying proxy %s over TCP",
          kp_addr_format(&l->proxy, text, sizeof(text)));
  l->tcp = true;
  l->fell = true;
  l->may_own = false; /* our own sockets would be UDP too */
  l->unusable = 0;
  l->handles++; /* the connection's close is owed, besides the socket's */
  dial_or_later(l);
}

/* Back over UDP, the connection closed: the proxy has (or soon will)
 * ended the old session and freed its allocations, which count against
 * the allocations a key may hold; now the new session asks for its own. */
static void on_io_closed_for_good(kp_tunnel_io_t *io) {
  kp_proxy_link_t *l = link_of_io(io);
  if (l->open_wanted && !l->close_wanted && !l->tcp) {
    l->open_wanted = false;
    uint64_t now = now_of(l);
    for (unsigned i = 0; i < KP_PROXY_CHANNELS; i++)
      if (l->ch[i].udp && !l->ch[i].closing) kp_proxy_client_open(l->client, i, l->family, now);
    rearm(l);
  }
  handle_closed(l);
}

/* The welcomed trial becomes the link's session, over tcp or not, and
 * takes the link's io. The link fell (or falls now): silence over UDP
 * means TCP again, whatever was heard (on_datagram). */
static void take_trial(kp_proxy_link_t *l, bool tcp) {
  l->moves[tcp]++;
  kp_proxy_client_free(l->client);
  l->client = l->trial;
  l->trial = NULL;
  kp_proxy_client_io_t io = client_io(l);
  kp_proxy_client_set_io(l->client, &io);
  l->tcp = tcp;
  l->fell = true;
  l->answered = false;
  l->unusable = 0;
  l->family_said = false;
}

/* Fallen to TCP, the trial session welcomed over UDP: it becomes the
 * link's session, and the connection goes, the old session with it; the
 * channels then open on the new one (new allocations: a rebinding, as on
 * a move to another proxy). */
static void back_to_udp(kp_proxy_link_t *l) {
  char text[KP_ADDR_STRLEN];
  KP_WARN(l->log, "proxy %s welcomes us over UDP: leaving TCP",
          kp_addr_format(&l->proxy, text, sizeof(text)));
  take_trial(l, false);
  l->may_own = l->own_allowed && l->family == l->proxy.family;
  l->open_wanted = true;
  uv_timer_stop(&l->trial_timer);
  uv_timer_stop(&l->redial);
  if (l->io_live) {
    l->io_live = false;
    kp_tunnel_io_close(&l->io, on_io_closed_for_good);
  } else if (l->io.handles) {
    l->io.on_closed = on_io_closed_for_good; /* closing on its way to a redial */
  } else {
    on_io_closed_for_good(&l->io); /* down, and its handles already closed */
  }
  rearm(l);
}

/* The trial's io: its datagrams go over the other transport; it opens
 * no channel (it takes the link's io before it does). */
static void trial_send_udp(void *ctx, const uint8_t *data, size_t len) {
  kp_proxy_link_t *l = ctx;
  if (!l->close_wanted && l->has_sock) kp_udp_send(&l->sock, &l->proxy, data, len);
}

static void trial_send_tcp(void *ctx, const uint8_t *data, size_t len) {
  kp_proxy_link_t *l = ctx;
  kp_tunnel_frame_t f = {.type = KP_TUNNEL_DATA, .addr = l->proxy, .data = data, .len = len};
  if (!l->close_wanted && l->io_live) kp_tunnel_io_send(&l->io, &f);
}

static void trial_down(void *ctx, uint8_t reason) {
  kp_proxy_link_t *l = ctx;
  char text[KP_ADDR_STRLEN];
  if (!l->trial || l->trial_failed) return;
  l->trial_failed = true; /* silent or refused: the next trial, later */
  if (reason)
    KP_INFO(l->log, "proxy %s refused a session over %s: %s (staying on %s)",
            kp_addr_format(&l->proxy, text, sizeof(text)), l->tcp ? "UDP" : "TCP",
            kp_proxy_reason_name(reason), l->tcp ? "TCP" : "UDP");
}

/* The trial goes, and over UDP its connection with it. */
static void trial_end(kp_proxy_link_t *l) {
  kp_proxy_client_free(l->trial);
  l->trial = NULL;
  if (!l->tcp && l->io_live) {
    l->io_live = false;
    kp_tunnel_io_close(&l->io, on_trial_io_closed);
  }
}

/* Over UDP, the trial session welcomed over TCP: UDP stopped getting
 * through (the proxies are silent over it), TCP does. The trial becomes
 * the link's session, its connection the link's; the channels leave our
 * own sockets, if they were on them, and open on it. The link fell: every
 * proxy silent over UDP sends it here again, and trials over UDP bring it
 * back. */
static void onto_tcp(kp_proxy_link_t *l) {
  char text[KP_ADDR_STRLEN];
  uint64_t now = now_of(l);
  KP_WARN(l->log, "proxy %s is silent over UDP but welcomes us over TCP: speaking over TCP",
          kp_addr_format(&l->proxy, text, sizeof(text)));
  take_trial(l, true);
  l->may_own = false; /* our own sockets would be UDP too */
  l->on_own = false;
  uv_timer_stop(&l->own_timer);
  for (unsigned i = 0; i < KP_PROXY_CHANNELS; i++) {
    own_close(l, i);
    if (l->ch[i].udp && !l->ch[i].closing) kp_proxy_client_open(l->client, i, l->family, now);
  }
  /* Trials over UDP from now on, as after any fall. */
  uv_timer_start(&l->trial_timer, on_trial, l->trial_ms, 0);
  rearm(l);
}

/* A trial session over the other transport: over TCP (fallen to it), to
 * the proxy the connection reaches, under the key its session proved,
 * while that connection is up; over UDP (every proxy silent over it after
 * one answered), a connection to the current proxy, under the key its
 * session knew. TRIAL_MS each; else the next, later. Over TCP and down,
 * none (on_connected starts the timer anew). */
static void on_trial(uv_timer_t *t) {
  kp_proxy_link_t *l = t->data;
  uint64_t now = now_of(l);
  if (l->close_wanted || !l->has_sock) return;
  if (!l->tcp && !udp_lost(l)) { /* a proxy answers over UDP again: a blip */
    trial_end(l);
    l->trial_ms = TRIAL_FIRST_MS;
    return;
  }
  if (l->trial && !l->trial_failed && now < l->trial_until) {
    uint64_t next = kp_proxy_client_tick(l->trial, now);
    if (!l->trial_failed) {
      if (next > l->trial_until) next = l->trial_until;
      uv_timer_start(&l->trial_timer, on_trial, next > now ? next - now : 1, 0);
      return;
    }
  }
  if (l->trial) {
    trial_end(l);
    uv_timer_start(&l->trial_timer, on_trial, l->trial_ms, 0);
    return;
  }
  if (l->tcp && (!l->io_live || l->io.hold)) return;
  /* Under the key the session proved: over TCP, up; over UDP, the one it
   * last proved (it may be asking for it again, silent). */
  const choice_t *c = &l->choices[l->current];
  const uint8_t *key = l->tcp ? (kp_proxy_link_up(l) ? kp_proxy_client_proxy_key(l->client) : NULL)
                       : c->learned ? c->learned_key
                                    : NULL;
  kp_proxy_client_io_t io = {
      l, l->tcp ? trial_send_udp : trial_send_tcp, io_opened, io_recv, io_closed, trial_down, NULL};
  /* Over UDP the trial needs a connection: none may be closing still. */
  if (!key || (!l->tcp && l->io.handles) ||
      kp_proxy_client_new(&l->self, key, &l->rng, &io, now, &l->trial)) {
    uv_timer_start(&l->trial_timer, on_trial, l->trial_ms, 0);
    return;
  }
  l->trials[!l->tcp]++;
  l->trial_until = now + TRIAL_MS;
  l->trial_failed = false;
  l->trial_ms = l->trial_ms * 2 < TRIAL_MAX_MS ? l->trial_ms * 2 : TRIAL_MAX_MS;
  if (!l->tcp && dial(l)) {
    l->trial_failed = true; /* not even a socket: the next trial, later */
  } else if (!l->tcp) {
    l->handles++; /* the connection's close is owed (on_trial_io_closed) */
  }
  uv_timer_start(&l->trial_timer, on_trial, 0, 0); /* its first HELLO */
}

/* "[tcp:]P[,P...]", each P "[KEY@]ip:port" (a later "tcp:" only where
 * the first has one). */
static int parse_choices(kp_proxy_link_t *l, const char *text) {
  char one[KP_KEY_TEXT_LEN + KP_ADDR_STRLEN + 8];
  bool first_tcp = !strncmp(text, "tcp:", 4);
  while (*text) {
    const char *comma = strchr(text, ',');
    size_t n = comma ? (size_t)(comma - text) : strlen(text);
    if (!n || n >= sizeof(one) || l->choice_count == KP_PROXY_LINK_MAX) return KP_EBADADDR;
    memcpy(one, text, n);
    one[n] = '\0';
    choice_t *c = &l->choices[l->choice_count];
    bool tcp;
    int err = kp_proxy_link_parse(one, &c->addr, c->key, &c->has_key, &tcp);
    if (err) return err;
    if (tcp && !first_tcp) return KP_EBADADDR;
    if (l->choice_count && c->addr.family != l->choices[0].addr.family) return KP_EBADADDR;
    l->choice_count++;
    text += n + (comma ? 1 : 0);
  }
  l->tcp = first_tcp;
  return l->choice_count ? 0 : KP_EBADADDR;
}

int kp_proxy_link_new(uv_loop_t *loop, const kp_addr_t *bind, const char *proxies,
                      const kp_keypair_t *self, const kp_rng_t *rng, kp_log_t *log,
                      kp_proxy_link_t **out) {
  *out = NULL;
  kp_proxy_link_t *l = kp_calloc(1, sizeof(*l));
  if (!l) return UV_ENOMEM;
  int err = parse_choices(l, proxies);
  if (err) {
    kp_free(l);
    return err;
  }
  bool tcp = l->tcp;
  l->loop = loop;
  l->family = bind->family;
  l->own_bind = *bind;
  l->own_bind.port = 0;
  l->proxy = l->choices[0].addr;
  l->log = log;
  l->self = *self;
  l->rng = *rng;
  kp_udp_options_t so = {.rcvbuf = KP_UDP_NODE_BUF, .sndbuf = KP_UDP_NODE_BUF};
  const choice_t *c = &l->choices[0];
  kp_proxy_client_io_t io = client_io(l);
  /* The session runs on the proxy's family: from the node's bind address
   * when it is of that family, else from any address of it. */
  kp_addr_t from = *bind;
  if (from.family != l->proxy.family) {
    memset(&from, 0, sizeof(from));
    from.family = l->proxy.family;
  }
  err = kp_proxy_client_new(self, c->has_key ? c->key : NULL, rng, &io, uv_now(loop), &l->client);
  if (!err && !tcp && (err = kp_udp_init(loop, &l->sock, &from, &so)))
    kp_proxy_client_free(l->client);
  if (err) {
    kp_keypair_wipe(&l->self);
    kp_free(l);
    return err;
  }
  if (!tcp) {
    l->has_sock = true;
    l->sock.data = l;
    kp_udp_enable_gro(&l->sock);
    kp_udp_recv_start(&l->sock, on_datagram);
  }
  uv_timer_init(loop, &l->timer);
  uv_timer_init(loop, &l->redial);
  uv_timer_init(loop, &l->own_timer);
  uv_timer_init(loop, &l->trial_timer);
  uv_idle_init(loop, &l->reaper);
  l->timer.data = l->reaper.data = l->redial.data = l->own_timer.data = l->trial_timer.data = l;
  l->trial_ms = TRIAL_FIRST_MS;
  /* The timers, the reaper, and the socket or the TCP connection. */
  l->handles = 6;
  if (tcp) dial_or_later(l);
  rearm(l);
  *out = l;
  return 0;
}

int kp_proxy_link_socket(kp_proxy_link_t *l, kp_udp_t *udp) {
  for (unsigned i = 0; i < KP_PROXY_CHANNELS; i++) {
    if (l->ch[i].udp) continue;
    kp_addr_t local = {0};
    local.family = l->family;
    kp_udp_init_virtual(l->loop, udp, &channel_ops, l, &local);
    l->ch[i] = (channel_t){.udp = udp};
    kp_proxy_client_open(l->client, i, l->family, now_of(l));
    int err = l->on_own ? own_open(l, i) : 0;
    if (err) { /* the proxies are silent: nowhere to speak from */
      kp_proxy_client_close(l->client, i, now_of(l));
      l->ch[i] = (channel_t){0};
      return err;
    }
    rearm(l);
    return 0;
  }
  return UV_EMFILE;
}

void kp_proxy_link_on_rebound(kp_proxy_link_t *l, void (*rebound)(void *ctx), void *ctx) {
  l->rebound = rebound;
  l->rebound_ctx = ctx;
}

bool kp_proxy_link_tcp(const kp_proxy_link_t *l) {
  return l->tcp;
}

void kp_proxy_link_may_go_own(kp_proxy_link_t *l) {
  /* Nor for a node the proxy bridges to the other family: this host may
   * have no address of the node's. */
  l->own_allowed = true;
  l->may_own = !l->tcp && l->family == l->proxy.family;
}

bool kp_proxy_link_on_own(const kp_proxy_link_t *l) {
  return l->on_own;
}

uint32_t kp_proxy_link_falls(const kp_proxy_link_t *l) {
  return l->falls;
}

void kp_proxy_link_rx_counts(const kp_proxy_link_t *l, uint64_t *in_place, uint64_t *copied) {
  *in_place = l->rx_in_place;
  *copied = l->rx_copied;
}

void kp_proxy_link_trials(const kp_proxy_link_t *l, uint32_t trials[2], uint32_t moves[2]) {
  memcpy(trials, l->trials, sizeof(l->trials));
  memcpy(moves, l->moves, sizeof(l->moves));
}

const kp_addr_t *kp_proxy_link_addr(const kp_proxy_link_t *l) {
  return &l->proxy;
}

bool kp_proxy_link_up(const kp_proxy_link_t *l) {
  kp_proxy_client_stats_t st;
  kp_proxy_client_stats(l->client, &st);
  return st.up;
}

static void handle_closed(kp_proxy_link_t *l) {
  if (--l->handles) return;
  kp_proxy_client_free(l->trial);
  kp_proxy_client_free(l->client);
  kp_keypair_wipe(&l->self);
  kp_free(l);
}

static void on_handle_closed(uv_handle_t *h) {
  handle_closed(h->data);
}

static void on_sock_closed(kp_udp_t *udp) {
  handle_closed(udp->data);
}

void kp_proxy_link_close(kp_proxy_link_t *l) {
  if (l->close_wanted) return;
  l->close_wanted = true;
  for (unsigned i = 0; i < KP_PROXY_CHANNELS; i++) own_close(l, i);
  uv_close((uv_handle_t *)&l->timer, on_handle_closed);
  uv_close((uv_handle_t *)&l->own_timer, on_handle_closed);
  uv_close((uv_handle_t *)&l->reaper, on_handle_closed);
  uv_close((uv_handle_t *)&l->redial, on_handle_closed);
  uv_close((uv_handle_t *)&l->trial_timer, on_handle_closed);
  if (l->has_sock) kp_udp_close(&l->sock, on_sock_closed);
  if (!l->tcp) { /* a trial's connection, if one is up */
    if (l->io_live) {
      l->io_live = false;
      kp_tunnel_io_close(&l->io, on_trial_io_closed);
    }
    return;
  }
  if (l->io_live) {
    l->io_live = false;
    kp_tunnel_io_close(&l->io, on_io_closed); /* its callback counts it */
  } else if (!l->io.handles) {
    handle_closed(l); /* down, and its handles already closed */
  } else {
    l->io.on_closed = on_io_closed; /* closing on its way to a redial */
  }
}
