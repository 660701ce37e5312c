/* SPDX-License-Identifier: MIT */
/* UPnP-IGD through libminiupnpc on libuv's thread pool. While a call runs
 * the worker owns every field below `busy`; the loop reads them only in
 * the after-work callback. */
#include "node/portmap_upnp.h"

#include <miniupnpc/miniupnpc.h>
#include <miniupnpc/upnpcommands.h>
#include <miniupnpc/upnperrors.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/addr.h"
#include "common/alloc.h"

#define DISCOVER_MS 500 /* gateways answer SSDP within milliseconds on a LAN */
#define PORT_TRIES 4    /* the socket's own port, then random ones */

typedef enum op_e { OP_MAP, OP_UNMAP } op_t;

struct kp_upnp_s {
  uv_loop_t *loop;
  uv_work_t work;
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

static bool find_igd(kp_upnp_t *u) {
  int err = 0;
  struct UPNPDev *devs = upnpDiscover(DISCOVER_MS, NULL, NULL, UPNP_LOCAL_PORT_ANY, 0, 2, &err);
  if (!devs) {
    u->res.why = "no UPnP-IGD gateway answered";
    return false;
  }
  int r = UPNP_GetValidIGD(devs, &u->urls, &u->data, u->lanaddr, sizeof(u->lanaddr));
  freeUPNPDevlist(devs);
  if (r != 1 && r != 2) {
    if (r) FreeUPNPUrls(&u->urls);
    u->res.why = "no UPnP-IGD gateway answered";
    return false;
  }
  u->have_igd = true;
  return true;
}

static int add(kp_upnp_t *u, const char *ext, const char *in, const char *lease) {
  return UPNP_AddPortMapping(u->urls.controlURL, u->data.first.servicetype, ext, in, u->lanaddr,
                             "kadpunch", "UDP", NULL, lease);
}

static void do_map(kp_upnp_t *u) {
  char ext_ip[40] = "", in[8], ext[8], lease[16];
  if (!u->have_igd && !find_igd(u)) return;
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

kp_upnp_t *kp_upnp_new(uv_loop_t *loop, uint16_t port) {
  kp_upnp_t *u = kp_calloc(1, sizeof(*u));
  if (!u) return NULL;
  u->loop = loop;
  u->port = port;
  u->work.data = u;
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

int kp_upnp_map(kp_upnp_t *u, uint32_t lifetime_s, kp_upnp_cb cb, void *ctx) {
  if (!u->busy) u->lifetime_s = lifetime_s;
  return queue(u, OP_MAP, cb, ctx);
}

int kp_upnp_unmap(kp_upnp_t *u, kp_upnp_cb cb, void *ctx) {
  return queue(u, OP_UNMAP, cb, ctx);
}

bool kp_upnp_busy(const kp_upnp_t *u) {
  return u->busy;
}

bool kp_upnp_has_mapping(const kp_upnp_t *u) {
  return !u->busy && u->mapped_port[0];
}

void kp_upnp_free(kp_upnp_t *u) {
  if (!u) return;
  if (u->have_igd) FreeUPNPUrls(&u->urls);
  kp_free(u);
}
