/* SPDX-License-Identifier: MIT */
/* --proxy auto and --proxy KEY: the proxy is looked up on the DHT (the
 * topic proxies announce under, docs/protocol.md "Proxying") from a plain
 * node first. That node shows this host's address to DHT nodes, never to
 * a peer; the connection itself then goes through the proxy found. With
 * auto, up to KP_CLI_PROXIES of them, ranked by how fast each answers a
 * KEY? (a record may outlive its proxy, and the nearest is the one to
 * borrow an address from): the first is used, the others are where the
 * node goes if it stops answering, and one that did not answer comes last.
 * A proxy carries one's traffic, so none is used unless asked for. */
#include <string.h>

#include "common/addr.h"
#include "node/cli/cli.h"
#include "proxy/proxy_msg.h"

#define TOPIC "kadpunch/proxies/v1"
#define FIND_MS 15000
#define RANK_MS 500 /* how long the proxies found have to answer a KEY? */

typedef struct found_s {
  uint8_t key[KP_PUBLIC_KEY_LEN];
  kp_addr_t addr;
  uint64_t rtt_us; /* UINT64_MAX: no answer */
} found_t;

typedef struct find_s {
  bool any, done;
  unsigned found, answered;
  uint8_t key[KP_PUBLIC_KEY_LEN];
  found_t proxies[KP_CLI_PROXIES];
  uint64_t asked_ns;
} find_t;

bool kp_cli_proxy_by_dht(const char *proxy) {
  return !strcmp(proxy, "auto") || (strlen(proxy) == KP_KEY_TEXT_LEN && !strchr(proxy, ':'));
}

static void on_record(kp_node_t *node, const kp_record_t *rec, void *arg) {
  find_t *f = arg;
  char text[2 * KP_ADDR_STRLEN]; /* "ADDR" or "ADDR OTHER" */
  kp_addr_t addr, local;
  if (f->found == (f->any ? KP_CLI_PROXIES : 1) || !rec->data || !rec->data_len ||
      rec->data_len >= sizeof(text))
    return;
  if (!f->any && memcmp(rec->public_key, f->key, KP_PUBLIC_KEY_LEN)) return;
  for (unsigned i = 0; i < f->found; i++)
    if (!memcmp(f->proxies[i].key, rec->public_key, KP_PUBLIC_KEY_LEN)) return; /* another copy */
  memcpy(text, rec->data, rec->data_len);
  text[rec->data_len] = '\0';
  /* "ADDR", or a dual-stack proxy's "ADDR OTHER" (node_proxy.c): the
   * address of this node's family. */
  kp_node_local_addr(node, &local);
  char *other = strchr(text, ' ');
  if (other) *other++ = '\0';
  if (kp_addr_parse(&addr, text) || addr.family != local.family)
    if (!other || kp_addr_parse(&addr, other) || addr.family != local.family) return;
  found_t *p = &f->proxies[f->found++];
  memcpy(p->key, rec->public_key, KP_PUBLIC_KEY_LEN);
  p->addr = addr;
  p->rtt_us = UINT64_MAX;
}

static void on_done(kp_node_t *node, int status, size_t found, const kp_node_query_stats_t *stats,
                    void *arg) {
  find_t *f = arg;
  (void)node, (void)status, (void)found, (void)stats;
  f->done = true;
}

static bool finished(void *ctx) {
  find_t *f = ctx;
  return f->done || f->found == (f->any ? KP_CLI_PROXIES : 1);
}

/* ---- Ranking: who answers a KEY? first ------------------------------------------------------ */

static void rank_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  static char slab[KP_PROXY_KEY_LEN * 2];
  (void)h, (void)size;
  *buf = uv_buf_init(slab, sizeof(slab));
}

/* A KEY from a proxy found, naming the key its record was signed with. */
static void rank_recv(uv_udp_t *u, ssize_t n, const uv_buf_t *buf, const struct sockaddr *from,
                      unsigned flags) {
  find_t *f = u->data;
  kp_proxy_dgram_t d;
  kp_addr_t a;
  (void)flags;
  if (n <= 0 || !from || kp_addr_from_sockaddr(&a, from) ||
      kp_proxy_dgram_decode((const uint8_t *)buf->base, (size_t)n, &d) || d.type != KP_PROXY_KEY)
    return;
  for (unsigned i = 0; i < f->found; i++) {
    found_t *p = &f->proxies[i];
    if (p->rtt_us == UINT64_MAX && kp_addr_eq(&p->addr, &a) &&
        !memcmp(p->key, d.key, KP_PUBLIC_KEY_LEN)) {
      p->rtt_us = (uv_hrtime() - f->asked_ns) / 1000;
      f->answered++;
    }
  }
}

static bool all_answered(void *ctx) {
  find_t *f = ctx;
  return f->answered == f->found;
}

static int by_rtt(const void *a, const void *b) {
  const found_t *x = a, *y = b;
  return x->rtt_us < y->rtt_us ? -1 : x->rtt_us > y->rtt_us;
}

static void rank(kp_cli_session_t *s, find_t *f) {
  uv_udp_t u;
  struct sockaddr_storage ss;
  kp_addr_t local;
  uint8_t req[KP_PROXY_KEY_LEN];
  if (uv_udp_init(&s->loop, &u)) return;
  u.data = f;
  kp_node_local_addr(s->node, &local);
  local.port = 0;
  memset(local.ip, 0, sizeof(local.ip)); /* any address of the node's family */
  socklen_t len = kp_addr_to_sockaddr(&local, &ss);
  if (len && !uv_udp_bind(&u, (const struct sockaddr *)&ss, 0) &&
      !uv_udp_recv_start(&u, rank_alloc, rank_recv)) {
    kp_proxy_key_req_encode(req);
    f->asked_ns = uv_hrtime();
    for (unsigned i = 0; i < f->found; i++) {
      uv_buf_t b = uv_buf_init((char *)req, sizeof(req));
      if (kp_addr_to_sockaddr(&f->proxies[i].addr, &ss))
        uv_udp_try_send(&u, &b, 1, (const struct sockaddr *)&ss);
    }
    kp_cli_session_run(s, all_answered, f, RANK_MS);
  }
  uv_close((uv_handle_t *)&u, NULL);
  uv_run(&s->loop, UV_RUN_NOWAIT); /* the close completes */
  /* Stable: among those that did not answer, the lookup's order stays. */
  for (unsigned i = 1; i < f->found; i++)
    for (unsigned j = i; j > 0 && by_rtt(&f->proxies[j - 1], &f->proxies[j]) > 0; j--) {
      found_t t = f->proxies[j];
      f->proxies[j] = f->proxies[j - 1];
      f->proxies[j - 1] = t;
    }
}

/* "KEY@ADDR,KEY@ADDR" into out, and what each answered in said. */
static void describe(const find_t *f, char *out, size_t cap, char *said, size_t said_cap) {
  size_t used = 0, told = 0;
  out[0] = said[0] = '\0';
  for (unsigned i = 0; i < f->found; i++) {
    char key[KP_KEY_TEXT_LEN + 1], addr[KP_ADDR_STRLEN], rtt[32];
    kp_key_to_text(f->proxies[i].key, key);
    kp_addr_format(&f->proxies[i].addr, addr, sizeof(addr));
    used += (size_t)snprintf(out + used, used < cap ? cap - used : 0, "%s%s@%s", i ? "," : "", key,
                             addr);
    if (f->proxies[i].rtt_us == UINT64_MAX)
      snprintf(rtt, sizeof(rtt), "no answer");
    else
      snprintf(rtt, sizeof(rtt), "%.1f ms", (double)f->proxies[i].rtt_us / 1000.0);
    told += (size_t)snprintf(said + told, told < said_cap ? said_cap - told : 0, "%s%s@%s (%s)",
                             i ? ", then " : "", key, addr, rtt);
  }
}

int kp_cli_proxy_find(const kp_cli_net_t *net, const char *cmd, char *out, size_t cap) {
  find_t f = {.any = !strcmp(net->proxy, "auto")};
  if (!f.any && kp_key_from_text(net->proxy, f.key))
    return kp_cli_usage_error(cmd, "--proxy: '%s' is not HOST:PORT, KEY@HOST:PORT, KEY or auto",
                              net->proxy);
  kp_cli_net_t plain = *net;
  plain.proxy = NULL;
  kp_cli_session_t s;
  int rc = kp_cli_session_open(&s, &plain, cmd);
  if (rc) return rc;
  uint8_t target[KP_ID_LEN];
  kp_target_from_topic(TOPIC, sizeof(TOPIC) - 1, target);
  int err = kp_node_lookup(s.node, target, on_record, on_done, &f);
  if (!err) kp_cli_session_run(&s, finished, &f, FIND_MS);
  if (!err && f.any && f.found > 1 && !s.signalled) rank(&s, &f);
  bool signalled = s.signalled;
  rc = kp_cli_session_close(&s);
  if (signalled) return KP_EXIT_FAIL;
  char list[KP_CLI_PROXY_TEXT], said[2 * KP_CLI_PROXY_TEXT];
  describe(&f, list, sizeof(list), said, sizeof(said));
  if (err || !f.found || strlen(list) >= cap) {
    fprintf(stderr, "kadpunch %s: %s on the DHT%s%s\n", cmd,
            f.any ? "no proxy announced" : "no proxy with that key announced", err ? ": " : "",
            err ? kp_strerror(err) : "");
    return KP_EXIT_FAIL;
  }
  snprintf(out, cap, "%s", list);
  if (f.found > 1)
    fprintf(stderr, "kadpunch %s: through proxy %s, found on the DHT\n", cmd, said);
  else
    fprintf(stderr, "kadpunch %s: through proxy %s (found on the DHT)\n", cmd, list);
  return rc;
}
