/* SPDX-License-Identifier: MIT */
/* Which crawled nodes are blind relays or proxies: the records under the
 * relays' and the proxies' topics, each naming its announcer's own address
 * (crawl.h). */
#include <string.h>

#include "common/alloc.h"
#include "tools/inspect/crawl.h"

#define RELAY_TOPIC "kadpunch/relays/v1"
#define PROXY_TOPIC "kadpunch/proxies/v1"
#define LOOKUP_MS 10000

typedef enum { MARK_RELAY, MARK_PROXY } mark_t;

typedef struct relays_s {
  kp_crawl_t *c;
  mark_t mark;
  size_t marked;
  bool done;
  bool abandoned; /* the caller gave up waiting: the callbacks free it */
} relays_t;

static void on_record(kp_node_t *node, const kp_record_t *rec, void *arg) {
  relays_t *r = arg;
  char text[KP_ADDR_STRLEN + 1];
  kp_addr_t addr;
  (void)node;
  if (r->abandoned || !rec->data_len || rec->data_len >= sizeof(text)) return;
  memcpy(text, rec->data, rec->data_len);
  text[rec->data_len] = '\0';
  if (kp_addr_parse(&addr, text) || !addr.port) return;
  for (size_t i = 0; i < r->c->count; i++) {
    kp_crawl_node_t *n = &r->c->nodes[i];
    bool *flag = r->mark == MARK_RELAY ? &n->relay : &n->proxy;
    if (!*flag && kp_addr_eq(&n->addr, &addr)) {
      *flag = true;
      r->marked++;
    }
  }
}

static void on_done(kp_node_t *node, int status, size_t found, const kp_node_query_stats_t *st,
                    void *arg) {
  relays_t *r = arg;
  (void)node, (void)status, (void)found, (void)st;
  r->done = true;
  if (r->abandoned) kp_free(r);
}

static bool lookup_done(void *arg) {
  return ((relays_t *)arg)->done;
}

static size_t mark_topic(kp_crawl_t *c, kp_inspect_session_t *s, const char *topic, mark_t mark) {
  relays_t *r = kp_calloc(1, sizeof(*r));
  uint8_t target[KP_ID_LEN];
  if (!r) return 0;
  r->c = c;
  r->mark = mark;
  kp_target_from_topic(topic, strlen(topic), target);
  if (kp_node_lookup(s->node, target, on_record, on_done, r)) {
    kp_free(r);
    return 0;
  }
  kp_inspect_session_run(s, lookup_done, r, LOOKUP_MS);
  size_t marked = r->marked;
  if (r->done)
    kp_free(r);
  else
    r->abandoned = true; /* the session's close cancels it; on_done frees r */
  return marked;
}

size_t kp_crawl_mark_relays(kp_crawl_t *c, kp_inspect_session_t *s) {
  return mark_topic(c, s, RELAY_TOPIC, MARK_RELAY);
}

size_t kp_crawl_mark_proxies(kp_crawl_t *c, kp_inspect_session_t *s) {
  return mark_topic(c, s, PROXY_TOPIC, MARK_PROXY);
}
