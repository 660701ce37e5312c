/* SPDX-License-Identifier: MIT */
/* The commit step: one request to each of a query's closest nodes, with the
 * token each gave us (the write authorization stores check). */
#include "dht/dht_internal.h"

#include <string.h>

#include "common/alloc.h"

struct kp_dht_commit_s {
  kp_dht_t *dht;
  kp_dht_commit_node_cb on_node;
  kp_dht_commit_done_cb on_done;
  void *arg;
  unsigned pending;
  unsigned ok;
  unsigned failed;
  size_t count;
  kp_dht_req_t **reqs; /* in flight, by node; NULL once answered */
  kp_dht_result_t nodes[];
};

static void on_commit_reply(void *arg, kp_dht_req_t *req, int status, const kp_dht_msg_t *resp,
                            const kp_addr_t *from, uint64_t now) {
  kp_dht_commit_t *c = arg;
  (void)from;
  const kp_dht_result_t *node = NULL;

  for (size_t i = 0; i < c->count; i++) {
    if (c->reqs[i] == req) {
      c->reqs[i] = NULL;
      node = &c->nodes[i];
    }
  }
  if (status == 0 && resp->error) status = kp_dht_wire_error(resp->error);
  if (status == 0)
    c->ok++;
  else
    c->failed++;
  if (c->on_node && node) c->on_node(c->arg, node, status, resp);
  if (--c->pending == 0) {
    if (c->on_done) c->on_done(c->arg, c->ok, c->failed, now);
    kp_free(c->reqs);
    kp_free(c);
  }
}

static int commit(kp_dht_t *dht, const kp_dht_result_t *nodes, size_t count, uint8_t command,
                  const uint8_t *target, const uint8_t *value, size_t value_len,
                  kp_dht_commit_value_fn value_fn, unsigned flags, kp_dht_commit_node_cb on_node,
                  kp_dht_commit_done_cb on_done, void *arg, uint64_t now, kp_dht_commit_t **out) {
  if (out) *out = NULL;
  if (!count) return KP_EINVAL;
  kp_dht_commit_t *c = kp_calloc(1, sizeof(*c) + count * sizeof(c->nodes[0]));
  if (!c || !(c->reqs = kp_calloc(count, sizeof(*c->reqs)))) {
    kp_free(c);
    return KP_ENOMEM;
  }
  c->dht = dht;
  c->on_node = on_node;
  c->on_done = on_done;
  c->arg = arg;
  c->count = count;
  memcpy(c->nodes, nodes, count * sizeof(nodes[0]));
  for (size_t i = 0; i < count; i++) {
    const kp_dht_result_t *n = &c->nodes[i];
    uint8_t own[KP_DHT_MAX_VALUE];
    if (value_fn) {
      value = own;
      value_len = value_fn(arg, n, own, sizeof(own));
      if (!value_len) {
        c->failed++;
        continue;
      }
    }
    if (kp__dht_request_ex(dht, &n->addr, command, target, value, value_len,
                           n->has_token ? n->token : NULL, -1, flags, on_commit_reply, c, now,
                           &c->reqs[i]) == 0) {
      c->reqs[i]->known_id = true;
      memcpy(c->reqs[i]->id, n->id, KP_ID_LEN);
      c->pending++;
    } else
      c->failed++;
  }
  if (!c->pending) {
    kp_free(c->reqs);
    kp_free(c);
    return KP_ENONODES;
  }
  if (out) *out = c;
  return 0;
}

int kp_dht_commit(kp_dht_t *dht, const kp_dht_result_t *nodes, size_t count, uint8_t command,
                  const uint8_t *target, const uint8_t *value, size_t value_len, unsigned flags,
                  kp_dht_commit_node_cb on_node, kp_dht_commit_done_cb on_done, void *arg,
                  uint64_t now, kp_dht_commit_t **out) {
  return commit(dht, nodes, count, command, target, value, value_len, NULL, flags, on_node, on_done,
                arg, now, out);
}

int kp_dht_commit_each(kp_dht_t *dht, const kp_dht_result_t *nodes, size_t count, uint8_t command,
                       const uint8_t *target, kp_dht_commit_value_fn value_fn, unsigned flags,
                       kp_dht_commit_node_cb on_node, kp_dht_commit_done_cb on_done, void *arg,
                       uint64_t now, kp_dht_commit_t **out) {
  return commit(dht, nodes, count, command, target, NULL, 0, value_fn, flags, on_node, on_done, arg,
                now, out);
}

void kp_dht_commit_cancel(kp_dht_t *dht, kp_dht_commit_t *c) {
  for (size_t i = 0; i < c->count; i++)
    if (c->reqs[i]) kp_dht_request_abandon(dht, c->reqs[i]);
  kp_free(c->reqs);
  kp_free(c);
}
