/* SPDX-License-Identifier: MIT */
/* A peer's session with its proxy (proxy_client.h). */
#include "proxy/proxy_client.h"

#include <sodium.h>
#include <string.h>

#include "common/alloc.h"
#include "holepunch/hs_noise.h"

#define PROLOGUE "kadpunch/proxy/v1"
#define RETRY_FIRST_MS 250
#define RETRY_MAX_MS 4000
#define REFUSED_RETRY_MS 10000 /* after an authenticated refusal */
#define FRESH_HELLO_MS 8000    /* a HELLO unanswered this long is made anew */
#define OPEN_RETRY_MS 500
#define CLOSED_RETRY_MS 5000
#define PING_MS 15000 /* under the 30 s many NATs keep an idle UDP mapping */
#define DEAD_MS 45000 /* three pings unanswered */
/* A session we send on but hear nothing from may have lost its proxy:
 * after SUSPECT_MS of that, a PING every SUSPECT_PING_MS, and after
 * SUSPECT_DEAD_MS of silence it is down, so the node can move to another
 * proxy while its connections can still be saved. A quiet session lives
 * DEAD_MS. A proxy that does not answer at all is given up on (on_down)
 * after SUSPECT_DEAD_MS too, and tried again. */
#define SUSPECT_MS 2000
#define SUSPECT_PING_MS 1000
#define SUSPECT_DEAD_MS 5000
/* PASSes are not authenticated, so they neither prove the proxy alive nor
 * move the session when the peer's NAT rebinds: while it passes, the peer
 * sends a sealed PING at least this often (its PONG is what is heard). */
#define PASS_PING_MS 1000

enum { ASK_KEY, HELLO_SENT, UP };

/* The proxy's token for datagrams to and from one address (BIND): they go
 * as PASS, unsealed. As many per channel as a proxy keeps proven by
 * default; past that the least recently used one goes back to sealing. */
#define BINDINGS 32

typedef struct binding_s {
  kp_addr_t addr;
  uint64_t token; /* 0: free */
  uint64_t used;
} binding_t;

typedef struct channel_s {
  bool wanted, opened;
  uint8_t family; /* of the allocation asked for */
  kp_addr_t addr;
  uint64_t next; /* OPEN again, or REFRESH */
  binding_t bind[BINDINGS];
  unsigned bind_last; /* where the last send's destination was */
} channel_t;

struct kp_proxy_client_s {
  kp_keypair_t self;
  kp_rng_t rng;
  kp_proxy_client_io_t io;
  bool have_key;
  uint8_t proxy_key[KP_PUBLIC_KEY_LEN];
  int state;
  uint32_t index, proxy_index;
  kp_noise_t noise;
  uint8_t hello[KP_PROXY_HELLO_LEN];
  uint64_t hello_at, next_send, retry_ms;
  kp_proxy_keys_t keys;
  uint64_t heard, sent_at, ping_at, sealed_at;
  uint64_t trying_since; /* not up since then */
  channel_t ch[KP_PROXY_CHANNELS];
  unsigned pass_ch, pass_bind; /* where the last PASS's token was */
  kp_proxy_client_stats_t st;
};

static void unbind_all(channel_t *ch) {
  memset(ch->bind, 0, sizeof(ch->bind));
}

static binding_t *binding_to(channel_t *ch, const kp_addr_t *to) {
  binding_t *last = &ch->bind[ch->bind_last];
  if (last->token && kp_addr_eq(&last->addr, to)) return last;
  for (unsigned i = 0; i < BINDINGS; i++) {
    if (ch->bind[i].token && kp_addr_eq(&ch->bind[i].addr, to)) {
      ch->bind_last = i;
      return &ch->bind[i];
    }
  }
  return NULL;
}

/* The binding a PASS's token names, and its channel; NULL if none. */
static binding_t *binding_of(kp_proxy_client_t *c, uint64_t token, unsigned *chan) {
  if (!token) return NULL;
  binding_t *last = &c->ch[c->pass_ch].bind[c->pass_bind];
  if (last->token == token) {
    *chan = c->pass_ch;
    return last;
  }
  for (unsigned k = 0; k < KP_PROXY_CHANNELS; k++) {
    if (!c->ch[k].opened) continue;
    for (unsigned i = 0; i < BINDINGS; i++) {
      if (c->ch[k].bind[i].token == token) {
        c->pass_ch = k, c->pass_bind = i;
        *chan = k;
        return &c->ch[k].bind[i];
      }
    }
  }
  return NULL;
}

static void on_bind(channel_t *ch, const kp_proxy_body_t *b, uint64_t now) {
  if (!b->token) return;
  binding_t *slot = binding_to(ch, &b->addr), *lru = &ch->bind[0];
  if (!slot) {
    for (unsigned i = 0; i < BINDINGS && !slot; i++) {
      if (!ch->bind[i].token) slot = &ch->bind[i];
      if (ch->bind[i].used < lru->used) lru = &ch->bind[i];
    }
    if (!slot) slot = lru;
  }
  slot->addr = b->addr;
  slot->token = b->token;
  slot->used = now + 1;
}

static void on_unbind(kp_proxy_client_t *c, uint64_t token) {
  for (unsigned k = 0; k < KP_PROXY_CHANNELS; k++)
    for (unsigned i = 0; i < BINDINGS; i++)
      if (c->ch[k].bind[i].token == token) memset(&c->ch[k].bind[i], 0, sizeof(binding_t));
}

static void send_body(kp_proxy_client_t *c, const kp_proxy_body_t *b, uint64_t now) {
  uint8_t body[KP_PROXY_MAX_DATAGRAM], out[KP_PROXY_MAX_DATAGRAM];
  size_t n = kp_proxy_body_encode(b, body, sizeof(body));
  size_t m = n ? kp_proxy_seal(&c->keys, c->proxy_index, body, n, out, sizeof(out)) : 0;
  if (!m) return;
  c->sent_at = c->sealed_at = now;
  c->io.send(c->io.ctx, out, m);
}

static void backoff(kp_proxy_client_t *c, uint64_t now) {
  c->next_send = now + c->retry_ms;
  c->retry_ms = c->retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : c->retry_ms * 2;
}

/* A HELLO under a fresh ephemeral and index. */
static void make_hello(kp_proxy_client_t *c, uint64_t now) {
  uint8_t payload[KP_PROXY_HELLO_PAYLOAD], e[32],
      msg[KP_PROXY_HELLO_PAYLOAD + KP_NOISE_MSG1_OVERHEAD];
  size_t len = 0;
  kp_noise_clear(&c->noise);
  payload[0] = KP_PROXY_VERSION;
  memcpy(payload + 1, c->self.public_key, KP_PUBLIC_KEY_LEN);
  kp_rng_fill(&c->rng, e, sizeof(e));
  c->index = kp_rng_u32(&c->rng);
  if (kp_noise_init_initiator(&c->noise, &c->self, c->proxy_key, (const uint8_t *)PROLOGUE,
                              sizeof(PROLOGUE) - 1) ||
      kp_noise_write_msg1(&c->noise, e, payload, sizeof(payload), msg, sizeof(msg), &len))
    len = 0;
  sodium_memzero(e, sizeof(e));
  if (!len || !kp_proxy_hello_encode(c->index, msg, len, c->hello)) memset(c->hello, 0, 2);
  c->state = HELLO_SENT;
  c->hello_at = now;
}

static void go_down(kp_proxy_client_t *c, uint8_t reason, uint64_t now) {
  bool was_up = c->state == UP;
  sodium_memzero(&c->keys, sizeof(c->keys));
  for (unsigned i = 0; i < KP_PROXY_CHANNELS; i++) {
    c->ch[i].opened = false;
    unbind_all(&c->ch[i]);
  }
  c->st.up = false;
  make_hello(c, now);
  c->retry_ms = RETRY_FIRST_MS;
  c->next_send = now + (reason ? REFUSED_RETRY_MS : 0);
  c->trying_since = now;
  if (was_up || reason) c->io.on_down(c->io.ctx, reason);
}

int kp_proxy_client_new(const kp_keypair_t *self, const uint8_t *proxy_key, const kp_rng_t *rng,
                        const kp_proxy_client_io_t *io, uint64_t now, kp_proxy_client_t **out) {
  *out = NULL;
  kp_proxy_client_t *c = kp_calloc(1, sizeof(*c));
  if (!c) return KP_ENOMEM;
  c->self = *self;
  c->rng = *rng;
  c->io = *io;
  c->retry_ms = RETRY_FIRST_MS;
  c->next_send = now;
  c->trying_since = now;
  c->state = ASK_KEY;
  if (proxy_key) {
    c->have_key = true;
    memcpy(c->proxy_key, proxy_key, KP_PUBLIC_KEY_LEN);
    make_hello(c, now);
  }
  *out = c;
  return 0;
}

void kp_proxy_client_set_io(kp_proxy_client_t *c, const kp_proxy_client_io_t *io) {
  c->io = *io;
}

void kp_proxy_client_free(kp_proxy_client_t *c) {
  if (!c) return;
  kp_noise_clear(&c->noise);
  sodium_memzero(c, sizeof(*c));
  kp_free(c);
}

static void on_welcome(kp_proxy_client_t *c, const kp_proxy_dgram_t *d, uint64_t now) {
  uint8_t p[KP_PROXY_WELCOME_PAYLOAD + 16];
  size_t plen = 0;
  if (c->state != HELLO_SENT || d->receiver != c->index) return;
  if (kp_noise_read_msg2(&c->noise, d->noise, d->noise_len, p, sizeof(p), &plen) ||
      plen != KP_PROXY_WELCOME_PAYLOAD) {
    c->st.forged++;
    /* The state moved: a forged msg2 must not cost the real one. */
    make_hello(c, now);
    return;
  }
  if (p[0]) {
    c->st.refusals++;
    c->st.last_refusal = p[0];
    go_down(c, p[0], now);
    return;
  }
  kp_noise_split_t sp;
  kp_noise_split(&c->noise, &sp);
  kp_noise_clear(&c->noise);
  memset(&c->keys, 0, sizeof(c->keys));
  memcpy(c->keys.tx, sp.tx, 32);
  memcpy(c->keys.rx, sp.rx, 32);
  sodium_memzero(&sp, sizeof(sp));
  c->proxy_index = d->sender;
  c->state = UP;
  c->st.up = true;
  c->st.sessions++;
  c->heard = now;
  c->retry_ms = RETRY_FIRST_MS;
  for (unsigned i = 0; i < KP_PROXY_CHANNELS; i++) c->ch[i].next = now;
  kp_proxy_client_tick(c, now);
}

static void on_body(kp_proxy_client_t *c, const kp_proxy_body_t *b, uint64_t now) {
  channel_t *ch = &c->ch[b->channel];
  switch (b->op) {
    case KP_PROXY_OP_RECV:
      if (!ch->opened) return;
      c->st.received++;
      c->io.on_recv(c->io.ctx, b->channel, &b->addr, b->data, b->len);
      break;
    case KP_PROXY_OP_OPENED: {
      if (!ch->wanted || b->addr.family != ch->family) return; /* not what we asked for */
      bool news = !ch->opened || !kp_addr_eq(&ch->addr, &b->addr);
      if (news) unbind_all(ch);
      ch->opened = true;
      ch->addr = b->addr;
      uint64_t life = (uint64_t)b->lifetime_s * 1000;
      ch->next = now + (life / 3 > 1000 ? life / 3 : 1000);
      if (news) c->io.on_opened(c->io.ctx, b->channel, &b->addr);
      break;
    }
    case KP_PROXY_OP_CLOSE:
      if (!ch->wanted) return;
      ch->opened = false;
      unbind_all(ch);
      ch->next = now + CLOSED_RETRY_MS;
      c->st.last_refusal = b->reason;
      c->io.on_closed(c->io.ctx, b->channel, b->reason);
      break;
    case KP_PROXY_OP_BIND:
      if (ch->opened) on_bind(ch, b, now);
      break;
    case KP_PROXY_OP_UNBIND: on_unbind(c, b->token); break;
    default: break; /* PONG: heard is all it is for */
  }
}

/* A PASS: a stream packet from a bound address, unsealed. Anyone who saw
 * the token could send one; what it carries is only ever a datagram from
 * that address as far as the node knows, which the node authenticates
 * itself (it is a peer's sealed packet, or dropped). For the same reason
 * it is not `heard`: a replayed PASS must not keep a dead proxy alive. */
static void on_pass(kp_proxy_client_t *c, const kp_proxy_dgram_t *d, uint64_t now) {
  unsigned ch;
  binding_t *b = c->state == UP && d->receiver == c->index ? binding_of(c, d->token, &ch) : NULL;
  if (!b || !kp_proxy_passable(d->payload, d->payload_len)) {
    c->st.stale++;
    return;
  }
  b->used = now + 1;
  c->st.received++;
  c->st.passed++;
  c->io.on_recv(c->io.ctx, ch, &b->addr, d->payload, d->payload_len);
}

void kp_proxy_client_input(kp_proxy_client_t *c, const uint8_t *data, size_t len, uint64_t now) {
  kp_proxy_dgram_t d;
  if (len > 1 && data[1] == KP_PROXY_PASS) { /* the data plane: only what it needs */
    if (kp_proxy_pass_decode(data, len, &d)) on_pass(c, &d, now);
    return;
  }
  if (kp_proxy_dgram_decode(data, len, &d)) return;
  switch (d.type) {
    case KP_PROXY_KEY:
      if (c->have_key || c->state != ASK_KEY) return;
      memcpy(c->proxy_key, d.key, KP_PUBLIC_KEY_LEN);
      c->have_key = true;
      make_hello(c, now);
      c->retry_ms = RETRY_FIRST_MS;
      c->next_send = now;
      kp_proxy_client_tick(c, now);
      break;
    case KP_PROXY_WELCOME: on_welcome(c, &d, now); break;
    case KP_PROXY_REFUSED:
      /* Anyone could send it: noted, and the HELLOs go on at their pace. */
      if (c->state == HELLO_SENT && d.receiver == c->index) c->st.last_refusal = d.reason;
      break;
    case KP_PROXY_DATA: {
      if (c->state != UP || d.receiver != c->index) return;
      uint8_t body[KP_PROXY_MAX_DATAGRAM];
      bool replayed;
      long n = kp_proxy_open(&c->keys, data, &d, body, &replayed);
      kp_proxy_body_t b;
      if (n < 0) {
        if (replayed)
          c->st.replayed++;
        else
          c->st.forged++;
        return;
      }
      if (kp_proxy_body_decode(body, (size_t)n, &b)) return;
      c->heard = now;
      on_body(c, &b, now);
      break;
    }
    default: break;
  }
}

void kp_proxy_client_restart(kp_proxy_client_t *c, uint64_t now) {
  if (c->state == UP) go_down(c, 0, now);
}

void kp_proxy_client_open(kp_proxy_client_t *c, unsigned ch, uint8_t family, uint64_t now) {
  if (ch >= KP_PROXY_CHANNELS || (family != KP_AF_INET && family != KP_AF_INET6)) return;
  memset(&c->ch[ch], 0, sizeof(channel_t));
  c->ch[ch].wanted = true;
  c->ch[ch].family = family;
  c->ch[ch].next = now;
  if (c->state == UP) kp_proxy_client_tick(c, now);
}

bool kp_proxy_client_opened(const kp_proxy_client_t *c, unsigned ch, kp_addr_t *addr) {
  if (ch >= KP_PROXY_CHANNELS || c->state != UP || !c->ch[ch].opened) return false;
  *addr = c->ch[ch].addr;
  return true;
}

void kp_proxy_client_close(kp_proxy_client_t *c, unsigned ch, uint64_t now) {
  if (ch >= KP_PROXY_CHANNELS || !c->ch[ch].wanted) return;
  if (c->state == UP) {
    kp_proxy_body_t b = {.op = KP_PROXY_OP_CLOSE, .channel = (uint8_t)ch};
    send_body(c, &b, now);
  }
  memset(&c->ch[ch], 0, sizeof(channel_t));
}

/* A bound datagram, unsealed: the PASS header, then the payload as it is. */
static void send_pass(kp_proxy_client_t *c, uint64_t token, const uint8_t *data, size_t len) {
  if (c->io.send_parts) {
    uint8_t head[KP_PROXY_PASS_HEAD];
    kp_proxy_pass_head(c->proxy_index, token, head);
    c->io.send_parts(c->io.ctx, head, sizeof(head), data, len);
    return;
  }
  uint8_t out[KP_PROXY_MAX_DATAGRAM];
  size_t n = kp_proxy_pass_encode(c->proxy_index, token, data, len, out, sizeof(out));
  if (n) c->io.send(c->io.ctx, out, n);
}

int kp_proxy_client_send(kp_proxy_client_t *c, unsigned ch, const kp_addr_t *to,
                         const uint8_t *data, size_t len, uint64_t now) {
  if (len > KP_PROXY_MAX_PASS_PAYLOAD) return KP_ETOOBIG;
  if (c->state != UP || ch >= KP_PROXY_CHANNELS || !c->ch[ch].opened) {
    c->st.dropped++;
    return KP_ESTATE;
  }
  binding_t *bound = kp_proxy_passable(data, len) ? binding_to(&c->ch[ch], to) : NULL;
  if (!bound && len > KP_PROXY_MAX_PAYLOAD) return KP_ETOOBIG; /* too big to seal */
  c->st.sent++;
  if (bound) {
    if (now - c->sealed_at >= PASS_PING_MS) {
      kp_proxy_body_t ping = {.op = KP_PROXY_OP_PING};
      send_body(c, &ping, now);
      c->ping_at = now;
    }
    send_pass(c, bound->token, data, len);
    bound->used = now + 1;
    c->st.passed++;
    c->sent_at = now;
    return 0;
  }
  kp_proxy_body_t b = {
      .op = KP_PROXY_OP_SEND, .channel = (uint8_t)ch, .addr = *to, .data = data, .len = len};
  send_body(c, &b, now);
  return 0;
}

static uint64_t tick_channels(kp_proxy_client_t *c, uint64_t now) {
  uint64_t next = now + PING_MS;
  for (unsigned i = 0; i < KP_PROXY_CHANNELS; i++) {
    channel_t *ch = &c->ch[i];
    if (!ch->wanted) continue;
    if (now >= ch->next) {
      kp_proxy_body_t b = {.op = ch->opened ? KP_PROXY_OP_REFRESH : KP_PROXY_OP_OPEN,
                           .channel = (uint8_t)i,
                           .family = ch->family};
      send_body(c, &b, now);
      ch->next = now + OPEN_RETRY_MS; /* until OPENED says otherwise */
    }
    if (ch->next < next) next = ch->next;
  }
  return next;
}

uint64_t kp_proxy_client_tick(kp_proxy_client_t *c, uint64_t now) {
  if (c->state == UP) {
    bool owed = c->sent_at > c->heard; /* sent since we last heard */
    uint64_t dead = c->heard + (owed ? SUSPECT_DEAD_MS : DEAD_MS);
    if (now >= dead) {
      go_down(c, 0, now);
      return now;
    }
    bool suspect = owed && now - c->heard >= SUSPECT_MS;
    if (now - c->sent_at >= PING_MS || (suspect && now - c->ping_at >= SUSPECT_PING_MS)) {
      kp_proxy_body_t b = {.op = KP_PROXY_OP_PING};
      send_body(c, &b, now);
      c->ping_at = now;
    }
    uint64_t next = tick_channels(c, now);
    uint64_t ping = c->sent_at + PING_MS;
    if (ping < next) next = ping;
    if (owed) {
      uint64_t ask =
          now - c->heard < SUSPECT_MS ? c->heard + SUSPECT_MS : c->ping_at + SUSPECT_PING_MS;
      if (ask < next) next = ask;
    }
    return dead < next ? dead : next;
  }
  if (now - c->trying_since >= SUSPECT_DEAD_MS) {
    /* No answer: said, and tried again (or elsewhere, by the glue). */
    c->trying_since = now;
    c->io.on_down(c->io.ctx, 0);
  }
  uint64_t give_up = c->trying_since + SUSPECT_DEAD_MS;
  if (now < c->next_send) return give_up < c->next_send ? give_up : c->next_send;
  if (c->state == ASK_KEY) {
    uint8_t req[KP_PROXY_KEY_LEN];
    kp_proxy_key_req_encode(req);
    c->io.send(c->io.ctx, req, sizeof(req));
  } else {
    if (now - c->hello_at >= FRESH_HELLO_MS) make_hello(c, now);
    if (c->hello[0] == KP_PROXY_MAGIC) c->io.send(c->io.ctx, c->hello, sizeof(c->hello));
  }
  backoff(c, now);
  return give_up < c->next_send ? give_up : c->next_send;
}

const kp_addr_t *kp_proxy_client_addr(const kp_proxy_client_t *c, unsigned ch) {
  static const kp_addr_t none;
  return ch < KP_PROXY_CHANNELS && c->ch[ch].opened ? &c->ch[ch].addr : &none;
}

const uint8_t *kp_proxy_client_proxy_key(const kp_proxy_client_t *c) {
  return c->have_key ? c->proxy_key : NULL;
}

void kp_proxy_client_stats(const kp_proxy_client_t *c, kp_proxy_client_stats_t *out) {
  *out = c->st;
}
