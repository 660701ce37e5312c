/* SPDX-License-Identifier: MIT */
/* A connection's paths (holepunch.h, "A connection's paths";
 * docs/architecture.md, "Connections that survive").
 *
 * A link lives as long as its connection. It knows where the connection
 * runs (a socket of ours and an address: direct, or a blind relay) and
 * moves it:
 * - relayed: it keeps punching in the background, between the pairing
 *   sockets (the relay's PAIRED named both links), and with the birthday
 *   strategy when the NATs need it; a proven direct address takes the
 *   connection, and the relay session is kept alive for a fall back;
 * - through a proxy (ours: kp_hp_set_own_socket; or the peer's: its
 *   probes say so): the same, with the proxy path kept as the relay is;
 *   the proxied side punches from its own socket and tells the peer, over
 *   the proxy path, that socket's public address (KP_PROBE_OWN_ADDR);
 * - when the transport says the path died: back to the kept relay if
 *   there is one; otherwise the client resumes: rounds sealed under the
 *   resume key through the server's relay nodes (looked up again if they
 *   are gone), each paying for one more hint probe on both sides, and
 *   after a second a relay (another one, if the relay was what died). The
 *   server answers resume rounds for the connections it still holds.
 *
 * Probes, hints and proofs are hp_path.c's; every address the link has
 * not proven is a hint, every probe at a link is paid for by the peer. */
#include <sodium.h>
#include <string.h>

#include "common/alloc.h"
#include "dht/dht_record.h"
#include "holepunch/hp_internal.h"

#define UPGRADE_FIRST_MS 200    /* the peer hears PAIRED at the same time */
#define UPGRADE_BACKOFF_MS 1000 /* then 1, 2, 4 ... s between attempts */
#define UPGRADE_BACKOFF_MAX_MS 60000
#define KEEPALIVE_MS 20000    /* through the kept relay while direct: it stays paired */
#define BDAY_FIRST_MS 2000    /* a background birthday: soon after pairing ... */
#define BDAY_BACKOFF_MS 10000 /* ... then 10, 20, 40 s, at most one a minute */
#define BDAY_BACKOFF_MAX_MS 60000
#define BDAY_RECHECK_MS 1000       /* ... or each second while a NAT's kind is unknown, */
#define BDAY_RECHECKS 60           /* for a minute at most */
#define BDAY_WINDOW_MS 4000        /* a birthday not won in this long will not be */
#define BDAY_MIN_GAP_MS 8000       /* background birthdays, however requested, this far apart */
#define RESUME_ROUND_MS 250        /* resume rounds, dense at first ... */
#define RESUME_DENSE_MS 3000       /* ... for this long, then backing off ... */
#define RESUME_ROUND_MAX_MS 5000   /* ... to one every 5 s */
#define RESUME_RELAY_AFTER_MS 1000 /* no direct path by then: a relay meanwhile */
#define RESUME_REQ_NODES 8
#define ANSWERING_MS 10000 /* server: a resume round makes proofs move the connection this long */
#define RESUME_IN_FLIGHT 4 /* rounds awaiting an answer (a slow path's answers still count) */
#define OWN_ADDR_RATE 2    /* punch requests naming an address, per second a link heeds ... */
#define OWN_ADDR_BURST 4   /* ... with this burst (a replayed one costs its sender as much) */

struct kp_hp_link_s {
  kp_hp_link_t *next;
  kp_hp_t *hp;
  kp_hp_link_cb_t cb;
  bool client;
  uint64_t local_id, remote_id;
  uint8_t secret[64]; /* the handshake's path secret */
  uint8_t resume_key[32];
  uint8_t target[KP_ID_LEN]; /* the server's, to look it up again */
  kp_nat_type_t local_nat, remote_nat;
  kp_addr_t peer_addrs[2];
  size_t peer_addr_count;
  hp_path_t path;
  /* Where the connection runs. */
  void *sock;
  bool direct;
  kp_addr_t to;
  bool alive;
  bool standby;    /* the connection runs on another family's link: nothing here yet */
  bool dead_news;  /* the transport said the path died: acted on at the next tick */
  bool relay_lost; /* what died was the relay: the next pairing is a failover */
  /* The relay the connection was paired at (kept while direct), the socket
   * paired there, and the peer's pairing socket as the relay saw it. */
  bool has_relay;
  bool via_proxy;            /* ... or the proxy path: "relay" is the peer's address through it */
  bool peer_proxied;         /* the peer named its own socket's address: proxied too */
  kp_bucket_t own_addr_rate; /* punch requests through the proxy path heeded */
  kp_addr_t relay, link;
  void *relay_sock;
  hp_cand_t *relay_cand, *link_cand;
  /* Background punching while relayed. */
  unsigned attempts;
  uint64_t next_attempt, keepalive_at;
  hp_bday_t *bday;
  bool bday_sockets;
  unsigned bday_attempts, unknown_checks;
  uint64_t bday_at;
  uint64_t bday_end;   /* a birthday not won by then is given up (to be tried again later) */
  uint64_t bday_ok_at; /* no background birthday before then */
  /* Resuming (client). */
  bool resuming;
  /* Server: resume rounds came lately; a proof until then moves the
   * connection. */
  uint64_t answering_until;
  uint32_t round; /* resume rounds sent (client) or seen (server) */
  uint64_t resume_started, next_round_at, relay_at;
  bool relay_wanted;                 /* it is time for a relay, but none is known yet */
  kp_addr_t nodes[RESUME_REQ_NODES]; /* the server's relay nodes */
  unsigned node_count, node_next, node_failures;
  kp_dht_req_t *reqs[RESUME_IN_FLIGHT];
  uint32_t answered;      /* the newest round the server answered */
  kp_addr_t server_relay; /* a relay the server named (not the one it lost) */
  kp_dht_query_t *lookup;
  kp_addr_t server_seen;
  kp_addr_t server_addrs[KP_HP_ROUND_ADDRS];
  size_t server_addr_count;
  hp_pairing_t pairing;
  bool pairing_own_sock; /* the pairing socket is the connection's (a relay failover) */
  kp_addr_t dead_relay;
  uint32_t pair_round; /* the resume round whose pairing material the pairing uses */
  /* Resume rounds (server): the newest, its answer for retries. */
  uint8_t round_reply[HP_REPLY_MAX];
  size_t round_reply_len;
  kp_addr_t client_seen;
  bool claim_trusted;
  kp_addr_t client_addrs[KP_HP_ROUND_ADDRS];
  size_t client_addr_count;
  uint64_t hint_at;
};

static uint64_t backoff(uint64_t base, unsigned attempts, uint64_t max) {
  uint64_t ms = base << (attempts < 7 ? attempts : 7);
  return ms < max ? ms : max;
}

/* The relay pairing of the n-th resume round (0: the handshake's). */
static void pair_material(const kp_hp_link_t *l, uint32_t n, kp_relay_pair_t *out) {
  if (!n) {
    kp_relay_pair_derive(l->secret, out);
    return;
  }
  static const char label[] = "kadpunch/relay-pair/v2";
  uint8_t msg[sizeof(label) - 1 + 4], secret[64];
  memcpy(msg, label, sizeof(label) - 1);
  for (int i = 0; i < 4; i++) msg[sizeof(label) - 1 + i] = (uint8_t)(n >> (8 * (3 - i)));
  crypto_generichash(secret, sizeof(secret), msg, sizeof(msg), l->secret, sizeof(l->secret));
  kp_relay_pair_derive(secret, out);
  sodium_memzero(secret, sizeof(secret));
}

static void moved(kp_hp_link_t *l, kp_hp_move_why_t why, bool direct, const kp_addr_t *to,
                  void *sock) {
  l->direct = direct;
  l->to = *to;
  l->sock = sock;
  l->alive = true;
  l->standby = false;
  kp_hp_move_t m = {.why = why, .direct = direct, .to = *to, .sock = sock};
  if (l->has_relay) m.relay = l->relay;
  l->cb.moved(l->cb.ctx, &m);
}

/* Forget what was proven: after a path died, a proof of the same address
 * again is news (the peer may be there again, on another socket of ours). */
static void unprove(kp_hp_link_t *l) {
  for (unsigned i = 0; i < l->path.count; i++) {
    hp_cand_t *c = &l->path.cand[i];
    if (c == l->relay_cand) continue;
    c->proven = false;
    c->hints = 0;
  }
}

/* Where the background punch fires from: a proxied node's own socket, or
 * the socket the kept path runs on. */
static void *fire_sock(const kp_hp_link_t *l) {
  return l->via_proxy && l->hp->own_sock ? l->hp->own_sock : l->relay_sock;
}

/* The peer's direct address (where it would go direct): the background
 * punch aims there, one probe per request paid for by the peer. */
/* The link's two kept candidates (relay_cand, link_cand) point into the
 * path's table: held there, so no other address takes their slots. */
static void hold(kp_hp_link_t *l, hp_cand_t **slot, hp_cand_t *c) {
  hp_cand_t *old = *slot;
  *slot = c;
  if (old && old != l->relay_cand && old != l->link_cand) old->held = false;
  if (c) c->held = true;
}

static void set_link(kp_hp_link_t *l, const kp_addr_t *addr) {
  void *sock = fire_sock(l);
  if (l->link_cand && kp_addr_eq(&l->link, addr) && l->link_cand->sock == sock) return;
  l->link = *addr;
  if (l->link_cand && !l->link_cand->proven && l->link_cand != l->relay_cand &&
      !kp__hp_path_find(&l->path, addr, sock)) {
    /* The address named before never proved itself: its slot is reused,
     * so a peer naming address after address holds one slot. */
    memset(l->link_cand, 0, sizeof(*l->link_cand));
    l->link_cand->addr = *addr;
    l->link_cand->sock = sock;
    l->link_cand->budget = 1;
    l->link_cand->held = true;
    return;
  }
  hold(l, &l->link_cand, kp__hp_path_hint(&l->path, &l->link, sock, 1));
}

/* Whether a peer's own address is one to aim at: of the kept path's
 * family, a unicast address, and private or loopback only when the kept
 * path is too (a peer on the internet has no business naming our LAN). */
static bool own_addr_ok(const kp_hp_link_t *l, const kp_addr_t *a) {
  bool multicast = a->family == KP_AF_INET ? a->ip[0] >= 224 : a->ip[0] == 0xff;
  const kp_addr_t *path = l->has_relay ? &l->relay : &l->to;
  if (a->family != path->family || !a->port || kp_addr_is_any(a) || multicast ||
      (a->family == KP_AF_INET && a->ip[0] == 0))
    return false;
  bool inside = kp_addr_is_private(a) || kp_addr_is_loopback(a);
  bool path_inside = kp_addr_is_private(path) || kp_addr_is_loopback(path);
  return !inside || path_inside;
}

/* The connection runs through a proxy, ours or the peer's: that path is
 * kept to fall back to, as a relay is, and the punch goes on behind it. */
static bool through_proxy(kp_hp_link_t *l, uint64_t now) {
  /* The kept path needs its candidate: without a slot, no mode. */
  hp_cand_t *c = kp__hp_path_hint(&l->path, &l->to, l->sock, 0);
  if (!c) return false;
  l->has_relay = l->via_proxy = true;
  l->relay = l->to;
  l->relay_sock = l->sock;
  hold(l, &l->relay_cand, c);
  c->proven = true;
  l->direct = false;
  l->attempts = 0;
  l->next_attempt = now + UPGRADE_FIRST_MS;
  kp_bucket_init(&l->own_addr_rate, OWN_ADDR_BURST, now);
  return true;
}

/* The kept path (a relay's or a proxy's) is gone. */
static void forget_kept_path(kp_hp_link_t *l) {
  l->has_relay = l->via_proxy = false;
  hold(l, &l->relay_cand, NULL);
  hold(l, &l->link_cand, NULL);
  l->relay_sock = NULL;
}

/* Ours is the proxied side, with a socket of its own: until the peer says
 * otherwise, it is where the proxy path ends. */
static void proxied_here(kp_hp_link_t *l, uint64_t now) {
  if (l->standby || !l->hp->own_sock || l->sock == l->hp->own_sock || l->resuming) return;
  if (!l->has_relay && !through_proxy(l, now)) return;
  if (l->via_proxy && !l->link_cand) set_link(l, &l->relay);
}

static void stop_birthday(kp_hp_link_t *l, void *keep) {
  if (l->bday) kp__hp_birthday_end(l->bday, keep);
  l->bday = NULL;
  l->bday_end = UINT64_MAX;
}

/* One birthday punch (from at), for a while: its sockets and spray are
 * the pool's, and a punch that has not won in BDAY_WINDOW_MS will not. */
static void begin_birthday(kp_hp_link_t *l, bool sockets, const kp_addr_t *to, void *sock,
                           uint64_t at, uint64_t now) {
  l->bday_sockets = sockets;
  l->bday = kp__hp_birthday_start(l->hp, sockets, to, &l->path, sock, at);
  if (!l->bday) return;
  l->bday_end = at + BDAY_WINDOW_MS;
  kp__hp_birthday_run(l->hp, l->bday, now);
}

/* ---- Resuming (client) -------------------------------------------------------------- */

static void send_round(kp_hp_link_t *l, uint64_t now);

static void end_resume(kp_hp_link_t *l) {
  l->resuming = false;
  l->relay_wanted = false;
  l->next_round_at = UINT64_MAX;
  l->relay_at = UINT64_MAX;
  for (unsigned i = 0; i < RESUME_IN_FLIGHT; i++) {
    if (l->reqs[i]) kp_dht_request_abandon(l->hp->dht, l->reqs[i]);
    l->reqs[i] = NULL;
  }
  if (l->lookup) kp_dht_query_cancel(l->hp->dht, l->lookup);
  l->lookup = NULL;
}

static void add_node(kp_hp_link_t *l, const kp_addr_t *a) {
  /* A record of the other family (a dual-stack node answers a lookup from
   * either store) names relay nodes this DHT cannot send to. */
  if (a->family != kp_dht_family(l->hp->dht)) return;
  for (unsigned i = 0; i < l->node_count; i++)
    if (kp_addr_eq(&l->nodes[i], a)) return;
  if (l->node_count < RESUME_REQ_NODES) l->nodes[l->node_count++] = *a;
}

typedef struct found_s {
  kp_hp_link_t *l;
  const kp_addr_t *from;
} found_t;

/* Both callbacks get the found_t. */
static bool record_wanted(void *ctx, const uint8_t pk[KP_PUBLIC_KEY_LEN], uint64_t seq) {
  const found_t *f = ctx;
  uint8_t t[KP_ID_LEN];
  (void)seq;
  kp_target_from_key(pk, t);
  return !memcmp(t, f->l->target, KP_ID_LEN);
}

static void record_found(void *ctx, const kp_record_t *rec) {
  found_t *f = ctx;
  add_node(f->l, f->from);
  for (size_t i = 0; i < rec->relay_count; i++) add_node(f->l, &rec->relays[i]);
}

static void lookup_reply(void *arg, kp_dht_query_t *q, const kp_dht_msg_t *reply,
                         const kp_addr_t *from, uint64_t now) {
  kp_hp_link_t *l = arg;
  (void)q, (void)now;
  if (!reply->value || !reply->value_len || reply->error) return;
  found_t f = {l, from};
  kp_dht_record_list_decode(reply->value, reply->value_len, l->target, record_wanted, record_found,
                            &f, NULL);
}

static void lookup_done(void *arg, kp_dht_query_t *q, int status, const kp_dht_result_t *closest,
                        size_t count, uint64_t now) {
  kp_hp_link_t *l = arg;
  (void)q, (void)status, (void)closest, (void)count, (void)now;
  l->lookup = NULL;
}

/* The server's relay nodes are gone (or were never known): find them. */
static void look_up(kp_hp_link_t *l, uint64_t now) {
  if (l->lookup) return;
  kp_dht_query_opts_t q = {.command = KP_DHT_CMD_LOOKUP,
                           .concurrency = HP_LOOKUP_CONCURRENCY,
                           .on_reply = lookup_reply,
                           .on_done = lookup_done,
                           .arg = l};
  kp_dht_query_start(l->hp->dht, l->target, &q, now, &l->lookup);
}

/* A relay to fall back on: the one the server named, or one we know;
 * not the one that died. */
static const kp_addr_t *pick_relay(kp_hp_link_t *l) {
  if (l->server_relay.family &&
      (!l->dead_relay.family || !kp_addr_eq(&l->server_relay, &l->dead_relay)))
    return &l->server_relay;
  for (size_t i = 0; i < l->hp->relay_count; i++)
    if (!l->dead_relay.family || !kp_addr_eq(&l->hp->relays[i], &l->dead_relay))
      return &l->hp->relays[i];
  /* None other: the same one again (what looked like a dead relay may
   * have been our NAT forgetting the mapping to it). */
  if (l->server_relay.family) return &l->server_relay;
  return l->hp->relay_count ? &l->hp->relays[0] : NULL;
}

/* No direct path yet: pair at a relay meanwhile (from the connection's
 * socket when it is already a pairing socket, since only the relay it
 * paired at knows it; else from a socket of its own). */
static void resume_relayed(kp_hp_link_t *l, uint64_t now) {
  kp_hp_t *hp = l->hp;
  l->relay_at = UINT64_MAX;
  l->relay_wanted = false;
  if (l->pairing.sock || l->standby) return;
  const kp_addr_t *relay = pick_relay(l);
  if (!relay) {
    /* None known yet: the server's next answer may name one. */
    l->relay_wanted = true;
    return;
  }
  kp_relay_pair_t pair;
  l->pair_round = l->round + 1; /* the next round names the relay */
  pair_material(l, l->pair_round, &pair);
  bool own = l->sock && l->sock == l->relay_sock;
  if (own) {
    l->pairing.sock = l->sock;
    l->pairing.relay = *relay;
    l->pairing.pair = pair;
    l->pairing.role = 0;
    l->pairing.next_at = now;
    kp__hp_pairing_run(hp, &l->pairing, now);
  } else if (!kp__hp_pairing_start(hp, &l->pairing, relay, &pair, 0, now)) {
    sodium_memzero(&pair, sizeof(pair));
    return;
  }
  l->pairing_own_sock = own;
  sodium_memzero(&pair, sizeof(pair));
  send_round(l, now); /* this round names the relay; the server pairs too */
}

static void start_resume(kp_hp_link_t *l, uint64_t now) {
  if (l->resuming) return;
  l->resuming = true;
  l->hp->stats.resumes++;
  l->resume_started = now;
  /* A client that hides its address goes to a relay at once, and so does
   * one whose relay died (the NATs did not let a direct path open). */
  bool at_once = l->hp->cfg.relay_only || l->relay_lost;
  /* A standby punches main socket to main socket only (a relay and a
   * birthday are its first family's link's way). */
  l->relay_at = l->standby ? UINT64_MAX : at_once ? now : now + RESUME_RELAY_AFTER_MS;
  l->answered = l->round;
  memset(&l->server_relay, 0, sizeof(l->server_relay));
  l->node_next = 0;
  unprove(l);
  if (!l->node_count) look_up(l, now);
  send_round(l, now);
}

/* Our NAT's type as the DHT sees it now, where it knows: a side that knew
 * too little at the handshake (a fresh client whose lookup was cut short)
 * knows more by the time the background punch runs. */
static void refresh_local_nat(kp_hp_link_t *l) {
  kp_nat_type_t nat = kp_dht_nat(l->hp->dht)->type;
  if (nat != KP_NAT_UNKNOWN) l->local_nat = nat;
}

/* The server answered a round: where it is, and its half of the punch. */
static void resume_punch(kp_hp_link_t *l, const kp_hp_round_t *r, uint64_t now) {
  /* Each answered round pays for one more probe to each address it names:
   * the peer's first ones may have gone before a way in was open (a
   * proxy's allocation lets in only IPs it has sent to). */
  bool agreed = kp__hp_corroborated(&l->server_seen, l->server_addrs, l->server_addr_count, false);
  kp__hp_path_hint_round(&l->path, &l->server_seen, l->sock, agreed ? HP_HINTS_PER_ADDR : 1);
  for (size_t i = 0; i < l->server_addr_count; i++) {
    bool same = agreed && kp_addr_same_ip(&l->server_addrs[i], &l->server_seen);
    kp__hp_path_hint_round(&l->path, &l->server_addrs[i], l->sock, same ? HP_HINTS_PER_ADDR : 1);
  }
  kp__hp_path_hints(l->hp, &l->path, now);
  bool sockets;
  if (!l->bday && !l->standby && kp__hp_birthday_applies(l->local_nat, r->nat, &sockets) &&
      kp__hp_corroborated(&l->server_seen, l->server_addrs, l->server_addr_count, sockets) &&
      !kp__hp_birthday_pool_full(l->hp)) {
    begin_birthday(l, sockets, &l->server_seen, l->sock, now, now);
  }
}

static void on_resume_reply(void *arg, kp_dht_req_t *req, int status, const kp_dht_msg_t *resp,
                            const kp_addr_t *from, uint64_t now) {
  kp_hp_link_t *l = arg;
  kp_hs_wire_t w;
  kp_hp_round_t r;
  for (unsigned i = 0; i < RESUME_IN_FLIGHT; i++)
    if (l->reqs[i] == req) l->reqs[i] = NULL;
  if (status == KP_ECANCELED || !l->resuming) return;
  /* An error (NO_SESSION among them) is a relay node's word, not the
   * server's: it proves nothing. The connection ends only when nothing
   * is heard from the server for the resume grace (the transport's). */
  if (status || resp->error || !resp->value ||
      kp_hs_wire_decode(resp->value, resp->value_len, &w) || w.mode != KP_HS_REPLY ||
      kp_hp_round_open(w.data, w.len, l->resume_key, false, &r) || r.round > l->round) {
    /* Rounds go to each relay node in turn; when as many failed as
     * there are, they may all be gone: look the server up again. */
    if (++l->node_failures >= l->node_count) {
      l->node_failures = 0;
      look_up(l, now);
    }
    return;
  }
  if (r.round <= l->answered) return; /* an older answer, or a copy */
  l->answered = r.round;
  l->server_seen = w.has_peer ? w.peer : *from;
  l->server_addr_count = r.addr_count;
  memcpy(l->server_addrs, r.addrs, r.addr_count * sizeof(kp_addr_t));
  if (r.addr_count) {
    /* Where the server says it is now: what relays' claims are checked
     * against from here on. */
    l->peer_addr_count = r.addr_count < 2 ? r.addr_count : 2;
    memcpy(l->peer_addrs, r.addrs, l->peer_addr_count * sizeof(kp_addr_t));
  }
  l->remote_nat = r.nat;
  if (r.has_relay) l->server_relay = *kp__hp_relay_ours(l->hp, &r);
  /* Time for a relay, and now we know one. */
  if (!l->pairing.sock && l->relay_wanted) resume_relayed(l, now);
  if (!l->pairing.sock && r.punch && !l->hp->cfg.relay_only) resume_punch(l, &r, now);
}

static void send_round(kp_hp_link_t *l, uint64_t now) {
  kp_hp_t *hp = l->hp;
  /* Dense at first, then sparse: a server that was stopped or is gone for
   * a while is not worth four requests a second to its relay nodes. */
  uint64_t since = now - l->resume_started;
  uint64_t gap = since < RESUME_DENSE_MS
                     ? RESUME_ROUND_MS
                     : backoff(RESUME_ROUND_MS, (unsigned)(since / 2000), RESUME_ROUND_MAX_MS);
  l->next_round_at = now + gap;
  if (!l->node_count) {
    look_up(l, now);
    return;
  }
  l->round++;
  /* The oldest in flight gives way (its answer would be stale anyway). */
  kp_dht_req_t **slot = &l->reqs[l->round % RESUME_IN_FLIGHT];
  if (*slot) kp_dht_request_abandon(hp->dht, *slot);
  *slot = NULL;
  kp_hp_round_t r = {
      .round = l->round, .nat = kp_dht_nat(hp->dht)->type, .punch = !hp->cfg.relay_only};
  if (r.nat == KP_NAT_UNKNOWN) r.nat = l->local_nat;
  l->local_nat = r.nat;
  r.addr_count = kp__hp_public_addrs(hp, r.addrs);
  if (l->pairing.sock) {
    r.has_relay = true;
    r.relay = l->pairing.relay;
    r.relay_alt = kp__hp_relay_alt(hp, &r.relay);
    r.pair_round = l->pair_round;
    r.punch = false;
  }
  uint8_t sealed[256], buf[512];
  size_t slen, len;
  if (kp_hp_round_seal(&r, l->resume_key, true, sealed, sizeof(sealed), &slen)) return;
  kp_hs_wire_t w = {
      .mode = KP_HS_FROM_CLIENT, .data = sealed, .len = slen, .session = l->remote_id};
  if (kp_hs_wire_encode(&w, buf, sizeof(buf), &len)) return;
  /* Each round to the next node: a dead one costs one round, not a
   * request's timeout. */
  const kp_addr_t *node = &l->nodes[l->node_next++ % l->node_count];
  kp_dht_request(hp->dht, node, KP_DHT_CMD_PEER_RESUME, l->target, buf, len, NULL, on_resume_reply,
                 l, now, slot);
}

/* ---- Answering resume rounds (server) ------------------------------------------------- */

kp_hp_link_t *kp__hp_link_for(kp_hp_t *hp, uint64_t local_id) {
  for (kp_hp_link_t *l = hp->links; l; l = l->next)
    if (!l->client && l->local_id == local_id) return l;
  return NULL;
}

static void reply_round(kp_hp_link_t *l, const kp_dht_reply_to_t *rt, bool direct, uint64_t now) {
  kp_hs_wire_t w = {.mode = direct ? KP_HS_REPLY : KP_HS_FROM_SERVER,
                    .data = l->round_reply,
                    .len = l->round_reply_len,
                    .session = l->local_id};
  kp__hp_reply(l->hp, rt, &w, now);
}

/* The client names a relay: pair there, from the connection's own pairing
 * socket if it runs on one, else from a new one. */
static void serve_pairing(kp_hp_link_t *l, const kp_addr_t *relay, uint32_t pair_round,
                          uint64_t now) {
  if (l->pairing.sock && kp_addr_eq(&l->pairing.relay, relay) && l->pair_round == pair_round)
    return;
  if (l->pairing.sock && !l->pairing_own_sock) kp__hp_pairing_end(l->hp, &l->pairing, false);
  kp_relay_pair_t pair;
  l->pair_round = pair_round;
  pair_material(l, pair_round, &pair);
  bool own = l->sock && l->sock == l->relay_sock;
  if (own) {
    l->pairing = (hp_pairing_t){.sock = l->sock, .relay = *relay, .pair = pair, .role = 1};
    l->pairing.next_at = now;
    kp__hp_pairing_run(l->hp, &l->pairing, now);
  } else if (!kp__hp_pairing_start(l->hp, &l->pairing, relay, &pair, 1, now)) {
    l->pairing.sock = NULL;
  }
  l->pairing_own_sock = own;
  sodium_memzero(&pair, sizeof(pair));
}

/* The client asks us to punch (again): its addresses are hints as in the
 * handshake (hp_server.c), the birthday half when the NATs need it. */
static void serve_punch(kp_hp_link_t *l, const kp_hp_round_t *r, uint64_t now) {
  kp_hp_t *hp = l->hp;
  /* Each round pays for one more probe to each address it names (the
   * client's first may have been turned away: a proxy's new allocation
   * lets in only IPs it has sent to, and the client sends after our
   * answer). */
  bool agreed = l->claim_trusted &&
                kp__hp_corroborated(&l->client_seen, l->client_addrs, l->client_addr_count, false);
  kp__hp_path_hint_round(&l->path, &l->client_seen, l->sock, agreed ? HP_HINTS_PER_ADDR : 1);
  for (size_t i = 0; i < l->client_addr_count; i++) {
    bool same = agreed && kp_addr_same_ip(&l->client_addrs[i], &l->client_seen);
    kp__hp_path_hint_round(&l->path, &l->client_addrs[i], l->sock, same ? HP_HINTS_PER_ADDR : 1);
  }
  l->hint_at = now + r->delay_ms;
  bool sockets;
  if (l->bday || l->standby || !kp__hp_birthday_applies(l->local_nat, r->nat, &sockets)) return;
  if (!l->claim_trusted ||
      !kp__hp_corroborated(&l->client_seen, l->client_addrs, l->client_addr_count, sockets)) {
    hp->stats.claims_refused++;
    return;
  }
  if (kp__hp_birthday_pool_full(hp)) return;
  begin_birthday(l, sockets, &l->client_seen, l->sock, now + r->delay_ms, now);
}

void kp__hp_link_resume(kp_hp_link_t *l, const kp_dht_reply_to_t *rt, const kp_hs_wire_t *w,
                        const kp_addr_t *client_seen, bool direct, bool trusted, uint64_t now) {
  kp_hp_t *hp = l->hp;
  kp_hp_round_t r;
  if (kp_hp_round_open(w->data, w->len, l->resume_key, true, &r)) {
    hp->stats.resume_rounds_bad++;
    kp__hp_reply_error(hp, rt, KP_HS_ERR_REJECTED, now);
    return;
  }
  if (r.round <= l->round) {
    /* A retry of the newest gets the same answer; anything older is a replay. */
    if (r.round == l->round && l->round_reply_len) {
      reply_round(l, rt, direct, now);
    } else {
      /* Answered, so the relay node does not ask again. */
      hp->stats.resume_rounds_bad++;
      kp__hp_reply_error(hp, rt, KP_HS_ERR_REJECTED, now);
    }
    return;
  }
  l->round = r.round;
  l->client_seen = *client_seen;
  l->claim_trusted = trusted;
  if (r.addr_count) {
    l->client_addr_count = r.addr_count;
    memcpy(l->client_addrs, r.addrs, r.addr_count * sizeof(kp_addr_t));
    l->peer_addr_count = r.addr_count < 2 ? r.addr_count : 2;
    memcpy(l->peer_addrs, r.addrs, l->peer_addr_count * sizeof(kp_addr_t));
  }
  l->remote_nat = r.nat;
  refresh_local_nat(l);
  kp_hp_round_t answer = {.round = r.round, .nat = l->local_nat, .punch = !hp->cfg.relay_only};
  answer.addr_count = kp__hp_public_addrs(hp, answer.addrs);
  /* A relay the client may pair at with us, if it needs one: not one we
   * saw die, nor the one the connection runs through (the client would not
   * be looking if it still carried; our transport may not know yet). */
  if (l->has_relay && !l->direct) l->dead_relay = l->relay;
  const kp_addr_t *relay = pick_relay(l);
  if (relay) {
    answer.has_relay = true;
    answer.relay = *relay;
    answer.relay_alt = kp__hp_relay_alt(hp, relay);
  }
  if (kp_hp_round_seal(&answer, l->resume_key, false, l->round_reply, sizeof(l->round_reply),
                       &l->round_reply_len))
    return;
  reply_round(l, rt, direct, now);
  /* A proof from here on moves the connection: the client is looking. */
  if (now >= l->answering_until) unprove(l);
  l->answering_until = now + ANSWERING_MS;
  if (r.has_relay && l->standby) {
    /* A standby pairs nowhere (the client's does not ask). */
  } else if (r.has_relay) {
    /* The material of the round the client began pairing in (one from
     * before the newest we answered: never older than what we saw). */
    uint32_t pair_round = r.pair_round && r.pair_round <= r.round ? r.pair_round : r.round;
    serve_pairing(l, kp__hp_relay_ours(hp, &r), pair_round, now);
  } else if (r.punch && !hp->cfg.relay_only) {
    serve_punch(l, &r, now);
  }
}

/* ---- Relay control on the link's sockets ---------------------------------------------- */

bool kp__hp_link_relay(kp_hp_link_t *l, void *sock, const kp_addr_t *from, const uint8_t *data,
                       size_t len, uint64_t now) {
  kp_relay_ctrl_t c;
  if (!l->pairing.sock || sock != l->pairing.sock || !kp_addr_eq(from, &l->pairing.relay) ||
      kp_relay_ctrl_decode(data, len, &c) ||
      sodium_memcmp(c.id, l->pairing.pair.id, KP_RELAY_ID_LEN))
    return false;
  if (c.type == KP_RELAY_REFUSED) {
    /* That relay will not: another, on the next round. */
    l->dead_relay = l->pairing.relay;
    kp__hp_pairing_end(l->hp, &l->pairing, l->pairing_own_sock);
    if (l->client && l->resuming) l->relay_at = now + RESUME_ROUND_MS;
    return true;
  }
  if (c.type != KP_RELAY_PAIRED) return true;
  void *s = l->pairing.sock;
  l->has_relay = true;
  l->via_proxy = false; /* a relay's path now, whatever ran before */
  l->relay = l->pairing.relay;
  l->link = c.link[l->client ? 1 : 0];
  l->relay_sock = s;
  kp__hp_pairing_end(l->hp, &l->pairing, true);
  l->pairing_own_sock = false;
  stop_birthday(l, NULL);
  end_resume(l);
  /* The relay and the peer's link on this socket: what the upgrade
   * punches between. */
  hold(l, &l->relay_cand, kp__hp_path_hint(&l->path, &l->relay, s, 0));
  if (l->relay_cand) l->relay_cand->proven = true;
  hold(l, &l->link_cand,
       kp__hp_corroborated(&l->link, l->peer_addrs, l->peer_addr_count, false)
           ? kp__hp_path_hint(&l->path, &l->link, s, 1)
           : NULL);
  l->attempts = 0;
  l->next_attempt = now + UPGRADE_FIRST_MS;
  l->bday_at = now + BDAY_FIRST_MS;
  l->hp->stats.resumed++;
  l->answering_until = 0;
  kp_hp_move_why_t why = l->relay_lost ? KP_HP_MOVE_FAILOVER : KP_HP_MOVE_RELAYED;
  l->relay_lost = false;
  moved(l, why, false, &l->relay, s);
  return true;
}

/* ---- Probes ------------------------------------------------------------------------ */

/* The peer asks us (through the relay) to probe its link: one probe, paid
 * for by its request. */
static void punch_link(kp_hp_link_t *l, uint64_t now) {
  if (!l->link_cand || (l->direct && l->link_cand->proven)) return;
  l->link_cand->hints = 0;
  kp__hp_path_hints(l->hp, &l->path, now);
}

/* Background birthday (relayed, NATs that need it): the random side opens
 * its sockets (each probing the peer's link), the consistent side sprays
 * the random side's IP from the connection's socket. */
static void birthday_request(kp_hp_link_t *l, uint64_t now) {
  bool sockets;
  /* A request through the relay may be one the relay copied: at most one
   * birthday per BDAY_MIN_GAP_MS, whoever asks. */
  refresh_local_nat(l);
  /* Never through a proxy path: the address the spray would aim at is
   * one the peer named, which no relay node saw (docs/architecture.md,
   * "Proxied connections go direct"). */
  if (l->via_proxy || l->bday || l->direct || !l->link_cand || now < l->bday_ok_at ||
      !kp__hp_birthday_applies(l->local_nat, l->remote_nat, &sockets) ||
      kp__hp_birthday_pool_full(l->hp))
    return;
  l->bday_ok_at = now + BDAY_MIN_GAP_MS;
  begin_birthday(l, sockets, &l->link, l->relay_sock, now, now);
}

bool kp__hp_link_probe(kp_hp_link_t *l, void *sock, const kp_addr_t *from, const uint8_t *data,
                       size_t len, uint64_t now) {
  uint64_t id;
  uint8_t flags = 0;
  if (kp_probe_peek(data, len, &id, &flags) || id != l->local_id) return false;
  /* Only on the link's own sockets (NULL: the main one). */
  bool mine = sock == l->sock || (l->relay_sock && sock == l->relay_sock) ||
              (l->pairing.sock && sock == l->pairing.sock) ||
              (sock && kp__hp_birthday_owns(l->bday, sock)) ||
              (l->via_proxy && sock && sock == l->hp->own_sock);
  if (!mine) return false;
  bool ok;
  hp_cand_t *c = kp__hp_path_input(l->hp, &l->path, sock, from, data, len, now, &ok);
  if (!ok) return false;
  /* The peer is proxied and says where it would go direct: its path
   * through the proxy is the one kept from now on. */
  kp_probe_t pr;
  bool own_addr = (flags & KP_PROBE_OWN_ADDR) && !kp_probe_decode(data, len, l->path.key, &pr) &&
                  pr.has_observed && !(flags & KP_PROBE_ANSWER);
  if (own_addr && !l->has_relay && l->direct && !l->resuming && sock == l->sock &&
      kp_addr_eq(from, &l->to) && own_addr_ok(l, &pr.observed))
    through_proxy(l, now);
  bool via_relay = l->has_relay && sock == l->relay_sock && kp_addr_eq(from, &l->relay);
  if (via_relay && own_addr && l->via_proxy) {
    /* Each request makes us send one probe: at a rate, whoever replays it. */
    if (!own_addr_ok(l, &pr.observed) ||
        !kp_bucket_take(&l->own_addr_rate, OWN_ADDR_RATE, OWN_ADDR_BURST, 1, now)) {
      l->hp->stats.claims_refused++;
      return true;
    }
    set_link(l, &pr.observed);
    l->peer_proxied = true;
  }
  if (via_relay) {
    /* The peer's word on its NAT now: from a probe it sent lately (one
     * that echoes a nonce of ours), so the relay cannot replay an old one.
     * News wakes the background birthday. */
    kp_nat_type_t said = kp_probe_nat(flags);
    if (l->path.last_fresh && said != KP_NAT_UNKNOWN && said != l->remote_nat) {
      l->remote_nat = said;
      if (!l->bday && l->bday_at != UINT64_MAX) l->bday_at = now;
    }
    if (flags & KP_PROBE_PUNCH) punch_link(l, now);
    if (flags & KP_PROBE_BIRTHDAY) birthday_request(l, now);
    return true;
  }
  if (!c || c == l->relay_cand) return true;
  /* On a proxied node's own socket only the peer's own address counts: a
   * third party that relays probes there proves nothing. */
  if (l->hp->own_sock && sock == l->hp->own_sock && c != l->link_cand) return true;
  /* The same on the peer's: it takes a proof only from the address we
   * named, and ours is a guess. Moving would leave it behind. */
  if (l->hp->own_port_hint && l->peer_proxied && sock == l->hp->own_sock) return true;
  /* A server's standby follows the client instead (kp_hp_link_follow):
   * two sides choosing a family each on their own proofs may choose two. */
  if (l->standby && !l->client) return true;
  /* A newly proven direct address takes the connection: relayed (an
   * upgrade), or looking for a path. */
  bool seeking = l->resuming || now < l->answering_until || !l->alive;
  bool upgrade = !seeking && l->has_relay && !l->direct;
  if (!upgrade && !seeking) return true;
  void *s = c->sock;
  l->answering_until = 0;
  l->relay_lost = false;
  stop_birthday(l, s);
  if (l->pairing.sock && !l->pairing_own_sock) kp__hp_pairing_end(l->hp, &l->pairing, false);
  l->pairing.sock = NULL;
  end_resume(l);
  if (upgrade) {
    l->hp->stats.upgrades++;
    l->keepalive_at = now + KEEPALIVE_MS;
  } else {
    l->hp->stats.resumed++;
  }
  moved(l, upgrade ? KP_HP_MOVE_UPGRADE : KP_HP_MOVE_RESUMED, true, &c->addr, s);
  return true;
}

/* ---- The transport's word ---------------------------------------------------------- */

void kp_hp_link_path_state(kp_hp_link_t *l, bool alive, uint64_t now) {
  (void)now;
  if (alive == l->alive) return;
  l->alive = alive;
  /* The transport is in the middle of its own work: act from the tick. */
  l->dead_news = !alive;
}

/* The path died: another one. */
static void path_died(kp_hp_link_t *l, uint64_t now) {
  l->dead_news = false;
  if (l->direct && l->has_relay) {
    /* The relay was kept for this: back to it at once, and the upgrade
     * tries again on its back-off. */
    unprove(l);
    l->hp->stats.upgrade_fallbacks++;
    l->next_attempt = now + backoff(UPGRADE_BACKOFF_MS, l->attempts++, UPGRADE_BACKOFF_MAX_MS);
    moved(l, KP_HP_MOVE_BACK_TO_RELAY, false, &l->relay, l->relay_sock);
    return;
  }
  if (!l->direct && l->has_relay) {
    /* The relay stopped forwarding: another one. A proxy path is no relay
     * (the proxied side's glue moves to another proxy). */
    if (!l->via_proxy) {
      l->dead_relay = l->relay;
      l->relay_lost = true;
    }
    forget_kept_path(l);
  }
  if (l->client) {
    start_resume(l, now);
  } else {
    unprove(l);
    if (l->cb.reach) l->cb.reach(l->cb.ctx);
  }
}

bool kp_hp_link_holds(const kp_hp_link_t *l, const void *sock) {
  return sock && (sock == l->sock || sock == l->relay_sock || sock == l->pairing.sock);
}

/* ---- Time ------------------------------------------------------------------------- */

static uint64_t link_deadline(const kp_hp_link_t *l) {
  uint64_t d = kp__hp_path_deadline(&l->path);
  if (l->dead_news) return 0;
  if (l->resuming) {
    if (l->next_round_at < d) d = l->next_round_at;
    if (l->relay_at < d) d = l->relay_at;
  }
  if (l->hint_at < d) d = l->hint_at;
  if (l->bday_end < d) d = l->bday_end;
  if (l->pairing.sock && l->pairing.next_at < d) d = l->pairing.next_at;
  if (l->has_relay && !l->direct && !l->resuming) {
    if (l->link_cand && l->next_attempt < d) d = l->next_attempt;
    if (l->link_cand && !l->bday && l->bday_at < d) d = l->bday_at;
  }
  if (l->has_relay && l->direct && l->keepalive_at < d) d = l->keepalive_at;
  return d;
}

static void link_tick(kp_hp_link_t *l, uint64_t now) {
  kp_hp_t *hp = l->hp;
  if (l->dead_news) path_died(l, now);
  if (l->bday && now >= l->bday_end) stop_birthday(l, NULL);
  if (l->resuming && l->alive) {
    /* The old path carries again (a stopped peer woke up): nothing to
     * replace. */
    end_resume(l);
    stop_birthday(l, NULL);
    if (l->pairing.sock) kp__hp_pairing_end(hp, &l->pairing, l->pairing_own_sock);
  }
  kp__hp_path_keep(hp, &l->path, now);
  kp__hp_pairing_run(hp, &l->pairing, now);
  if (l->hint_at <= now) {
    l->hint_at = UINT64_MAX;
    kp__hp_path_hints(hp, &l->path, now);
  }
  if (l->resuming) {
    if (l->relay_at <= now) resume_relayed(l, now);
    if (l->next_round_at <= now) send_round(l, now);
    return;
  }
  if (l->has_relay && !l->direct && l->link_cand) {
    if (l->next_attempt <= now) {
      /* Ask the peer to fire at our link; its answer asks us to fire.
       * Through a proxy, the request names our own socket's address. */
      if (l->via_proxy && hp->own_sock && l->relay_cand) {
        if (!hp->own_port_hint || !l->peer_proxied) /* else no move can follow */
          kp__hp_path_probe_own(hp, &l->path, l->relay_cand, &hp->own_addr, now);
      } else if (l->relay_cand) {
        kp__hp_path_probe(hp, &l->path, l->relay_cand, KP_PROBE_PUNCH, now);
      }
      l->next_attempt = now + backoff(UPGRADE_BACKOFF_MS, l->attempts++, UPGRADE_BACKOFF_MAX_MS);
    }
    bool sockets;
    if (!l->via_proxy && !l->bday && l->bday_at <= now) { /* see birthday_request */
      refresh_local_nat(l);
      /* While a side's NAT is unknown, whether a birthday is wanted may
       * be known any second (refresh_local_nat; the peer's probes wake us):
       * look again each second for a minute, at no cost in datagrams. */
      bool unknown = l->local_nat == KP_NAT_UNKNOWN || l->remote_nat == KP_NAT_UNKNOWN;
      if (unknown && l->unknown_checks < BDAY_RECHECKS) {
        l->unknown_checks++;
        l->bday_at = now + BDAY_RECHECK_MS;
      } else {
        l->bday_at = now + backoff(BDAY_BACKOFF_MS, l->bday_attempts++, BDAY_BACKOFF_MAX_MS);
      }
      if (kp__hp_birthday_applies(l->local_nat, l->remote_nat, &sockets)) {
        /* The random side starts (its sockets must be open before the spray
         * comes); the consistent side asks it to. */
        if (sockets) birthday_request(l, now);
        if (l->relay_cand) kp__hp_path_probe(hp, &l->path, l->relay_cand, KP_PROBE_BIRTHDAY, now);
      }
    }
  }
  if (l->has_relay && l->direct && l->keepalive_at <= now && l->relay_cand) {
    kp__hp_path_probe(hp, &l->path, l->relay_cand, 0, now);
    l->keepalive_at = now + KEEPALIVE_MS;
  }
}

uint64_t kp__hp_links_deadline(kp_hp_t *hp) {
  uint64_t d = UINT64_MAX;
  for (kp_hp_link_t *l = hp->links; l; l = l->next) {
    uint64_t ld = link_deadline(l);
    if (ld < d) d = ld;
  }
  return d;
}

void kp__hp_links_tick(kp_hp_t *hp, uint64_t now) {
  /* A callback may stop its own link: take the next one first. */
  for (kp_hp_link_t *l = hp->links, *next; l; l = next) {
    next = l->next;
    link_tick(l, now);
  }
}

bool kp__hp_links_probe(kp_hp_t *hp, void *sock, const kp_addr_t *from, const uint8_t *data,
                        size_t len, uint64_t now) {
  for (kp_hp_link_t *l = hp->links, *next; l; l = next) {
    next = l->next;
    if (kp__hp_link_probe(l, sock, from, data, len, now)) return true;
  }
  return false;
}

void kp__hp_links_forget_sock(kp_hp_t *hp, const void *sock) {
  for (kp_hp_link_t *l = hp->links; l; l = l->next) {
    kp__hp_path_forget_sock(&l->path, sock);
    if (l->relay_cand && !l->relay_cand->addr.family) l->relay_cand = NULL;
    if (l->link_cand && !l->link_cand->addr.family) l->link_cand = NULL;
  }
}

bool kp__hp_links_relay(kp_hp_t *hp, void *sock, const kp_addr_t *from, const uint8_t *data,
                        size_t len, uint64_t now) {
  for (kp_hp_link_t *l = hp->links, *next; l; l = next) {
    next = l->next;
    if (kp__hp_link_relay(l, sock, from, data, len, now)) return true;
  }
  return false;
}

void kp_hp_set_own_socket(kp_hp_t *hp, void *sock, const kp_addr_t *public_addr, bool port_hint,
                          uint64_t now) {
  /* Withdrawn (NULL): no more requests name it; what runs on it stays,
   * until the glue closes the socket (kp_hp_socket_closed). */
  if (hp->own_sock && sock && hp->own_sock != sock) kp__hp_links_forget_sock(hp, hp->own_sock);
  hp->own_sock = sock;
  hp->own_port_hint = sock && port_hint;
  memset(&hp->own_addr, 0, sizeof(hp->own_addr));
  if (!sock) return;
  if (public_addr) hp->own_addr = *public_addr;
  for (kp_hp_link_t *l = hp->links; l; l = l->next) proxied_here(l, now);
}

void kp_hp_rebound(kp_hp_t *hp, uint64_t now) {
  for (kp_hp_link_t *l = hp->links, *next; l; l = next) {
    next = l->next;
    if (l->resuming) {
      l->resume_started = now;
      l->next_round_at = now;
      l->node_next = 0;
    } else if (!l->client && !l->alive && l->cb.reach) {
      l->cb.reach(l->cb.ctx);
    }
  }
}

/* ---- Lifetime ---------------------------------------------------------------------- */

/* What every link starts with: the connection's ids and keys, nothing
 * running. A standby has secrets of its own (below). */
static kp_hp_link_t *link_new(kp_hp_t *hp, const kp_hp_result_t *r, const kp_hp_link_cb_t *cb,
                              bool standby, uint64_t now) {
  kp_hp_link_t *l = kp_calloc(1, sizeof(*l));
  if (!l) return NULL;
  l->hp = hp;
  l->cb = *cb;
  l->client = r->initiator;
  l->local_id = r->local_id;
  l->remote_id = r->remote_id;
  memcpy(l->secret, r->path_secret, sizeof(l->secret));
  if (standby) {
    /* Both sides' standbys are of the family the connection was not made
     * on: keyed apart, no round or pairing of one family is one of the
     * other's (each counts its rounds from 1). The links the handshake
     * made keep its keys, whatever family each side's is (a hello that
     * crossed families at a DHT node leaves the client on one and the
     * server on the other, and its rounds may cross the same way). */
    static const char label[] = "kadpunch/other-family/v1";
    crypto_generichash(l->secret, sizeof(l->secret), (const uint8_t *)label, sizeof(label) - 1,
                       r->path_secret, sizeof(r->path_secret));
  }
  kp_hs_derive(l->secret, "kadpunch/resume/v1", l->resume_key);
  if (l->client) kp_target_from_key(r->remote_key, l->target); /* to look the server up */
  l->local_nat = r->local_nat;
  l->remote_nat = r->remote_nat;
  kp__hp_path_init(&l->path, r->local_id, r->remote_id, l->client ? KP_PROBE_FROM_CLIENT : 0,
                   r->probe_key, now);
  l->direct = true;
  l->alive = true;
  l->next_round_at = l->relay_at = l->hint_at = UINT64_MAX;
  l->bday_at = l->bday_end = UINT64_MAX;
  l->next = hp->links;
  hp->links = l;
  return l;
}

int kp_hp_link_start_standby(kp_hp_t *hp, const kp_hp_result_t *r, const kp_hp_link_cb_t *cb,
                             uint64_t now, kp_hp_link_t **out) {
  kp_hp_link_t *l = link_new(hp, r, cb, true, now);
  if (!l) return KP_ENOMEM;
  l->standby = true;
  /* NAT types are a family's: this one's are learnt (our DHT's, the
   * peer's rounds). */
  l->local_nat = l->remote_nat = KP_NAT_UNKNOWN;
  *out = l;
  return 0;
}

void kp_hp_link_release(kp_hp_link_t *l, uint64_t now) {
  (void)now;
  end_resume(l);
  stop_birthday(l, NULL);
  if (l->pairing.sock) kp__hp_pairing_end(l->hp, &l->pairing, l->pairing_own_sock);
  l->pairing.sock = NULL;
  l->pairing_own_sock = false;
  forget_kept_path(l);
  /* Its proofs stay: a server follows its client back to them. */
  l->via_proxy = false;
  l->sock = NULL;
  l->direct = true;
  memset(&l->to, 0, sizeof(l->to));
  l->alive = true;
  l->dead_news = false;
  l->relay_lost = false;
  l->answering_until = 0;
  l->hint_at = UINT64_MAX;
  l->standby = true;
}

bool kp_hp_link_follow(kp_hp_link_t *l, const kp_addr_t *from, uint64_t now) {
  (void)now;
  if (!l->standby) return false;
  hp_cand_t *c = kp__hp_path_find(&l->path, from, NULL);
  if (!c || !c->proven) return false;
  l->answering_until = 0;
  end_resume(l);
  l->hp->stats.resumed++;
  moved(l, KP_HP_MOVE_RESUMED, true, &c->addr, NULL);
  return true;
}

int kp_hp_link_start(kp_hp_t *hp, const kp_hp_result_t *r, const kp_hp_link_cb_t *cb, uint64_t now,
                     kp_hp_link_t **out) {
  *out = NULL;
  kp_hp_link_t *l = link_new(hp, r, cb, false, now);
  if (!l) return KP_ENOMEM;
  l->peer_addr_count = r->peer_addr_count;
  memcpy(l->peer_addrs, r->peer_addrs, sizeof(l->peer_addrs));
  l->sock = r->socket;
  l->direct = r->strategy != KP_PUNCH_RELAYED;
  l->to = r->path;
  if (l->client && r->relay.family) add_node(l, &r->relay);
  if (!l->direct) {
    /* Relayed from the start: punch in the background, from the pairing
     * socket, to the peer's link, if the peer itself names its IP. The
     * client that asked to stay relayed (to hide its address) does not. */
    l->has_relay = true;
    l->relay = r->path;
    l->link = r->peer_link;
    l->relay_sock = r->socket;
    hold(l, &l->relay_cand, kp__hp_path_hint(&l->path, &l->relay, l->sock, 0));
    if (l->relay_cand) l->relay_cand->proven = true;
    bool stays = (l->client && hp->cfg.relay_only) ||
                 (r->local_nat == KP_NAT_RANDOM && r->remote_nat == KP_NAT_RANDOM);
    if (r->peer_link.family && !stays &&
        kp__hp_corroborated(&r->peer_link, r->peer_addrs, r->peer_addr_count, false))
      hold(l, &l->link_cand, kp__hp_path_hint(&l->path, &l->link, l->sock, 1));
    else if (r->peer_link.family && !stays)
      hp->stats.claims_refused++;
    l->next_attempt = now + UPGRADE_FIRST_MS;
    l->bday_at = now + BDAY_FIRST_MS;
  }
  proxied_here(l, now);
  *out = l;
  return 0;
}

void kp_hp_link_stop(kp_hp_link_t *l) {
  if (!l) return;
  kp_hp_t *hp = l->hp;
  for (kp_hp_link_t **p = &hp->links; *p; p = &(*p)->next) {
    if (*p == l) {
      *p = l->next;
      break;
    }
  }
  end_resume(l);
  stop_birthday(l, NULL);
  /* A pairing socket of its own (not the connection's) closes with it. */
  if (l->pairing.sock) kp__hp_pairing_end(hp, &l->pairing, l->pairing_own_sock);
  sodium_memzero(l, sizeof(*l));
  kp_free(l);
}

void kp__hp_links_free(kp_hp_t *hp) {
  while (hp->links) kp_hp_link_stop(hp->links);
}
