/* SPDX-License-Identifier: MIT */
/* UPnP-IGD through libminiupnpc. Finding the gateway (SSDP) waits a full
 * second when nobody answers (miniupnpc's shortest wait), so it runs on a
 * thread of its own that a closing node can leave behind: it frees its own
 * results if nobody wants them, and a process may exit under it. Mapping
 * and deleting, milliseconds on a gateway that answered, run on libuv's
 * thread pool and are waited for. While either runs, the worker owns every
 * field below `busy`; the loop reads them only when told it is done. */
#include "node/portmap_upnp.h"

#include <miniupnpc/miniupnpc.h>
#include <pthread.h>
#include <miniupnpc/upnpcommands.h>
#include <miniupnpc/upnperrors.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/addr.h"
#include "common/alloc.h"

#define DISCOVER_MS 1000 /* miniupnpc's shortest: SSDP's MX is in whole seconds */
#define PORT_TRIES 4     /* the socket's own port, then random ones */

typedef enum op_e { OP_MAP, OP_UNMAP } op_t;

/* A gateway search on its own thread. `orphan` and `done` under `lock`. */
typedef struct search_s {
  uv_mutex_t lock;
  bool orphan, done;
  uv_async_t *report; /* the loop's; used only while not orphaned */
  bool found;
  struct UPNPUrls urls;
  struct IGDdatas data;
  char lanaddr[64];
} search_t;

struct kp_upnp_s {
  uv_loop_t *loop;
  uv_work_t work;
  uv_async_t searched; /* a search thread's "done" */
  search_t *search;    /* in flight */
  kp_upnp_closed_cb closed;
  void *closed_ctx;
  bool busy;
  kp_upnp_cb cb;
  void *ctx;
  /* The worker's while busy. */
  op_t op;
  uint16_t port;
  uint32_t lifetime_s;
  bool have_igd;
  struct UPNPUrls urls;
  struct IGDdatas data;
  char lanaddr[64];
  char mapped_port[8]; /* "" when nothing is mapped */
  kp_upnp_result_t res;
};

/* "http://10.1.0.1:38397/ctl/IPConn" -> 10.1.0.1:38397 */
static void url_host(const char *url, kp_addr_t *out) {
  char text[KP_ADDR_STRLEN];
  const char *p = url ? strstr(url, "://") : NULL;
  memset(out, 0, sizeof(*out));
  if (!p) return;
  p += 3;
  size_t n = strcspn(p, "/");
  if (n >= sizeof(text)) return;
  memcpy(text, p, n);
  text[n] = '\0';
  if (kp_addr_parse(out, text)) memset(out, 0, sizeof(*out));
}

/* One M-SEARCH, for the IGD device type every IGD (v1 or v2) answers:
 * miniupnpc's default list would wait a second for each of four types. */
static void *search_thread(void *arg) {
  static const char *const types[] = {"urn:schemas-upnp-org:device:InternetGatewayDevice:1", NULL};
  search_t *s = arg;
  int err = 0;
  struct UPNPDev *devs =
      upnpDiscoverDevices(types, DISCOVER_MS, NULL, NULL, UPNP_LOCAL_PORT_ANY, 0, 2, &err, 0);
  if (devs) {
    int r = UPNP_GetValidIGD(devs, &s->urls, &s->data, s->lanaddr, sizeof(s->lanaddr));
    freeUPNPDevlist(devs);
    s->found = r == 1 || r == 2;
    if (r && !s->found) FreeUPNPUrls(&s->urls);
  }
  uv_mutex_lock(&s->lock);
  bool orphan = s->orphan;
  if (!orphan) {
    s->done = true;
    uv_async_send(s->report);
  }
  uv_mutex_unlock(&s->lock);
  if (orphan) {
    if (s->found) FreeUPNPUrls(&s->urls);
    uv_mutex_destroy(&s->lock);
    free(s);
  }
  return NULL;
}

static int add(kp_upnp_t *u, const char *ext, const char *in, const char *lease) {
  return UPNP_AddPortMapping(u->urls.controlURL, u->data.first.servicetype, ext, in, u->lanaddr,
                             "kadpunch", "UDP", NULL, lease);
}

static void do_map(kp_upnp_t *u) {
  char ext_ip[40] = "", in[8], ext[8], lease[16];
  url_host(u->urls.controlURL, &u->res.gateway);
  if (!u->urls.controlURL ||
      UPNP_GetExternalIPAddress(u->urls.controlURL, u->data.first.servicetype, ext_ip) ||
      kp_addr_parse(&u->res.external, ext_ip)) {
    u->res.why = "the UPnP-IGD gateway has no public address";
    /* Find the gateway again next time, unless a mapping made through
     * this one is still to be deleted. */
    if (!u->mapped_port[0]) {
      FreeUPNPUrls(&u->urls);
      u->have_igd = false;
    }
    return;
  }
  snprintf(in, sizeof(in), "%u", u->port);
  snprintf(lease, sizeof(lease), "%u", u->lifetime_s);
  /* Renewing: the port it has. Else the socket's own, then random ones
   * where that one is taken. */
  int r = -1;
  for (int i = 0; i < PORT_TRIES && r; i++) {
    unsigned port = u->mapped_port[0] ? (unsigned)atoi(u->mapped_port)
                    : i == 0          ? u->port
                                      : 1024 + randombytes_uniform(65536 - 1024);
    snprintf(ext, sizeof(ext), "%u", port);
    r = add(u, ext, in, lease);
    if (r == 725) { /* OnlyPermanentLeasesSupported */
      snprintf(lease, sizeof(lease), "0");
      u->lifetime_s = 0;
      r = add(u, ext, in, lease);
    }
    if (r && u->mapped_port[0]) break; /* a renewal that failed: lost */
  }
  if (r) {
    /* The gateway may be another one next time: find it again then. */
    u->mapped_port[0] = '\0';
    FreeUPNPUrls(&u->urls);
    u->have_igd = false;
    u->res.why = r == 718 ? "the UPnP-IGD gateway has no free port"
                          : "the UPnP-IGD gateway refused the mapping";
    return;
  }
  snprintf(u->mapped_port, sizeof(u->mapped_port), "%s", ext);
  u->res.external.port = (uint16_t)atoi(ext);
  u->res.lifetime_s = u->lifetime_s;
  u->res.status = 0;
}

static void do_unmap(kp_upnp_t *u) {
  if (u->mapped_port[0] && u->have_igd && u->urls.controlURL &&
      UPNP_DeletePortMapping(u->urls.controlURL, u->data.first.servicetype, u->mapped_port, "UDP",
                             NULL) == 0)
    u->res.status = 0;
  u->mapped_port[0] = '\0';
}

static void work(uv_work_t *w) {
  kp_upnp_t *u = w->data;
  memset(&u->res, 0, sizeof(u->res));
  u->res.status = -1;
  if (u->op == OP_MAP)
    do_map(u);
  else
    do_unmap(u);
}

static void after_work(uv_work_t *w, int status) {
  kp_upnp_t *u = w->data;
  u->busy = false;
  if (status) { /* cancelled before it ran */
    u->res.status = status;
    u->res.why = "cancelled";
  }
  kp_upnp_result_t res = u->res;
  if (u->cb) u->cb(u->ctx, &res);
}

static void on_searched(uv_async_t *a);

kp_upnp_t *kp_upnp_new(uv_loop_t *loop, uint16_t port) {
  kp_upnp_t *u = kp_calloc(1, sizeof(*u));
  if (!u) return NULL;
  u->loop = loop;
  u->port = port;
  u->work.data = u;
  if (uv_async_init(loop, &u->searched, on_searched)) {
    kp_free(u);
    return NULL;
  }
  u->searched.data = u;
  uv_unref((uv_handle_t *)&u->searched);
  return u;
}

static int queue(kp_upnp_t *u, op_t op, kp_upnp_cb cb, void *ctx) {
  if (u->busy) return UV_EBUSY;
  u->op = op;
  u->cb = cb;
  u->ctx = ctx;
  int err = uv_queue_work(u->loop, &u->work, work, after_work);
  if (!err) u->busy = true;
  return err;
}

static void report_failure(kp_upnp_t *u, const char *why) {
  u->busy = false;
  kp_upnp_result_t res = {.status = -1, .why = why};
  if (u->cb) u->cb(u->ctx, &res);
}

static void on_searched(uv_async_t *a) {
  kp_upnp_t *u = a->data;
  search_t *s = u->search;
  if (!s) return;
  uv_mutex_lock(&s->lock);
  bool done = s->done;
  uv_mutex_unlock(&s->lock);
  if (!done) return;
  u->search = NULL;
  if (s->found) {
    u->urls = s->urls;
    u->data = s->data;
    memcpy(u->lanaddr, s->lanaddr, sizeof(u->lanaddr));
    u->have_igd = true;
  }
  uv_mutex_destroy(&s->lock);
  free(s);
  if (!u->have_igd) {
    report_failure(u, "no UPnP-IGD gateway answered");
    return;
  }
  u->busy = false;
  if (queue(u, OP_MAP, u->cb, u->ctx)) report_failure(u, "cannot queue the UPnP-IGD call");
}

static int start_search(kp_upnp_t *u) {
  search_t *s = calloc(1, sizeof(*s));
  if (!s) return UV_ENOMEM;
  if (uv_mutex_init(&s->lock)) {
    free(s);
    return UV_ENOMEM;
  }
  s->report = &u->searched;
  pthread_attr_t attr;
  pthread_t thread;
  int err = pthread_attr_init(&attr);
  if (!err) err = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  if (!err) err = pthread_create(&thread, &attr, search_thread, s);
  pthread_attr_destroy(&attr);
  if (err) {
    uv_mutex_destroy(&s->lock);
    free(s);
    return UV_ENOMEM;
  }
  u->search = s;
  u->busy = true;
  return 0;
}

int kp_upnp_map(kp_upnp_t *u, uint32_t lifetime_s, kp_upnp_cb cb, void *ctx) {
  if (u->busy) return UV_EBUSY;
  u->lifetime_s = lifetime_s;
  if (u->have_igd) return queue(u, OP_MAP, cb, ctx);
  u->cb = cb;
  u->ctx = ctx;
  return start_search(u);
}

int kp_upnp_unmap(kp_upnp_t *u, kp_upnp_cb cb, void *ctx) {
  return queue(u, OP_UNMAP, cb, ctx);
}

bool kp_upnp_busy(const kp_upnp_t *u) {
  return u->busy;
}

bool kp_upnp_leave_search(kp_upnp_t *u) {
  search_t *s = u->search;
  if (!s) return false;
  uv_mutex_lock(&s->lock);
  bool done = s->done;
  if (!done) s->orphan = true; /* the thread frees it */
  uv_mutex_unlock(&s->lock);
  if (done) { /* it told the loop already: its results go with it */
    if (s->found) FreeUPNPUrls(&s->urls);
    uv_mutex_destroy(&s->lock);
    free(s);
  }
  u->search = NULL;
  u->busy = false;
  return true;
}

bool kp_upnp_has_mapping(const kp_upnp_t *u) {
  return !u->busy && u->mapped_port[0];
}

static void on_async_closed(uv_handle_t *h) {
  kp_upnp_t *u = h->data;
  kp_upnp_closed_cb closed = u->closed;
  void *ctx = u->closed_ctx;
  if (u->have_igd) FreeUPNPUrls(&u->urls);
  kp_free(u);
  if (closed) closed(ctx);
}

void kp_upnp_close(kp_upnp_t *u, kp_upnp_closed_cb closed, void *ctx) {
  kp_upnp_leave_search(u);
  u->closed = closed;
  u->closed_ctx = ctx;
  uv_close((uv_handle_t *)&u->searched, on_async_closed);
}
