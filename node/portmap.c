/* SPDX-License-Identifier: MIT */
/* The gateway is asked with PCP first (portmap_pcp.c), as RFC 6887
 * appendix A has a client do; one that does not speak it with NAT-PMP,
 * through libnatpmp, on the node's loop: the library's socket is watched
 * with a uv_poll, its retransmission schedule (250 ms doubling, nine tries)
 * driven by a uv_timer, and one request is in flight at a time: the public
 * address, then the mapping; again at half the lifetime; a delete
 * (lifetime 0) on close. A gateway that answers neither is asked with
 * UPnP-IGD (portmap_upnp.c), which then renews and deletes. libnatpmp
 * finds the gateway for all three. */
#include "node/portmap.h"

#include <arpa/inet.h>
#include <errno.h>
#include <natpmp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/addr.h"
#include "common/alloc.h"
#include "node/portmap_pcp.h"
#include "node/portmap_upnp.h"

#define LIFETIME_S 7200          /* RFC 6886 section 3.3's recommendation */
#define SETTLE_MS 250            /* the first retransmission: gateways answer within it */
#define CLOSE_WAIT_MS 500        /* for the delete's answer */
#define RETRY_MS (5 * 60 * 1000) /* after a gateway gave up on us */
/* PCP's tries: a gateway that never answers PCP is asked with NAT-PMP
 * 1.75 s later (0, 250 and 750 ms, then 1 s more); a renewal is as
 * patient as NAT-PMP's; a delete on close waits up to 750 ms. */
#define PCP_FIRST_TRIES 3
#define PCP_RENEW_TRIES 9
#define PCP_DELETE_TRIES 2

typedef enum step_e {
  STEP_PCP,     /* a PCP request in flight (portmap_pcp.c times it) */
  STEP_ADDRESS, /* public address request in flight */
  STEP_MAP,     /* mapping request in flight */
  STEP_WAIT,    /* mapped (or unavailable): until renewal or retry */
  STEP_DELETE,  /* closing: delete in flight */
} step_t;

struct kp_portmap_s {
  uv_loop_t *loop;
  kp_log_t *log;
  natpmp_t np;
  bool np_open;
  uv_poll_t poll;
  uv_timer_t timer;
  unsigned open_handles; /* poll, timer: closed before the struct goes */
  step_t step;
  uint16_t port;
  uint64_t settle_at; /* 0 once settled */
  uint64_t delete_until;
  kp_port_mapping_t info;
  kp_portmap_cb cb;
  void *ctx;
  kp_portmap_closed_cb closed;
  void *closed_ctx;
  bool closing;
  in_addr_t forced_gateway; /* tests: this gateway, not the default route's */
  kp_pcp_t *pcp;            /* made when the gateway is found */
  bool via_pcp;             /* the active mapping is PCP's */
  bool no_pcp;              /* the gateway does not speak PCP: NAT-PMP */
  kp_upnp_t *upnp;          /* made when NAT-PMP fails */
  bool via_upnp;            /* the active mapping is UPnP's */
  bool upnp_unmapping;      /* closing: the delete is in flight */
};

static const char *natpmp_why(int r) {
  switch (r) {
    case NATPMP_ERR_CANNOTGETGATEWAY: return "no IPv4 default gateway";
    case NATPMP_ERR_NOGATEWAYSUPPORT: return "the gateway does not answer NAT-PMP";
    case NATPMP_ERR_UNSUPPORTEDVERSION: return "the gateway speaks another NAT-PMP version";
    case NATPMP_ERR_NOTAUTHORIZED: return "the gateway refused: not authorized";
    case NATPMP_ERR_NETWORKFAILURE: return "the gateway has no public address";
    case NATPMP_ERR_OUTOFRESOURCES: return "the gateway is out of mappings";
    default: return "NAT-PMP failed";
  }
}

static void report(kp_portmap_t *pm, bool settled) {
  if (pm->cb && !pm->closing) pm->cb(pm->ctx, &pm->info, settled);
}

/* The first outcome settles the start (once). */
static void settle(kp_portmap_t *pm) {
  bool first = pm->settle_at != 0;
  pm->settle_at = 0;
  report(pm, first);
}

static void finish_close(kp_portmap_t *pm);
static bool open_gateway(kp_portmap_t *pm);
static void on_timer(uv_timer_t *t);

static void arm(kp_portmap_t *pm, uint64_t delay_ms) {
  uint64_t now = uv_now(pm->loop);
  /* A request in flight may not have an answer by the settle deadline; a
   * renewal or a retry (STEP_WAIT) is after it anyway. */
  if (pm->settle_at && pm->step != STEP_WAIT) {
    uint64_t to_settle = pm->settle_at > now ? pm->settle_at - now : 0;
    if (to_settle < delay_ms) delay_ms = to_settle;
  }
  uv_timer_start(&pm->timer, on_timer, delay_ms, 0);
}

/* Arms the timer for the library's next retransmission. */
static void arm_retry(kp_portmap_t *pm) {
  struct timeval tv;
  uint64_t ms = 250;
  if (getnatpmprequesttimeout(&pm->np, &tv) == 0)
    ms = tv.tv_sec < 0 ? 0 : (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000 + 1;
  if (pm->step == STEP_DELETE) {
    uint64_t now = uv_now(pm->loop);
    uint64_t left = pm->delete_until > now ? pm->delete_until - now : 0;
    if (left < ms) ms = left;
  }
  arm(pm, ms);
}

/* A mapping made or renewed: reported, and renewed at half its lifetime
 * (RFC 6886 section 3.3, RFC 6887 section 11.2.1); a gateway that grants
 * less than a minute is asked every 30 s at most, a permanent mapping
 * (lifetime 0: UPnP) checked hourly. */
static void got_mapping(kp_portmap_t *pm, const char *protocol, const kp_addr_t *external,
                        uint32_t lifetime_s) {
  char text[KP_ADDR_STRLEN];
  bool renewed = pm->info.state == KP_PORT_MAPPING_ACTIVE;
  /* No longer than asked: a gateway's (or a spoofer's) "forever" would
   * stop the renewals that notice a mapping gone. */
  if (lifetime_s > LIFETIME_S) lifetime_s = LIFETIME_S;
  pm->info.protocol = protocol;
  pm->info.external = *external;
  pm->info.lifetime_s = lifetime_s;
  pm->info.state = KP_PORT_MAPPING_ACTIVE;
  pm->info.why = NULL;
  if (renewed)
    pm->info.renewals++;
  else
    KP_INFO(pm->log, "port mapping: %s forwards to port %u (%s, %u s)",
            kp_addr_format(external, text, sizeof(text)), pm->port, protocol, lifetime_s);
  pm->step = STEP_WAIT;
  uint64_t half_ms = lifetime_s ? (uint64_t)lifetime_s * 500 : 3600 * 1000;
  arm(pm, half_ms < 30000 ? 30000 : half_ms);
  settle(pm);
}

/* No mapping (any more): asked again later. `also` prefixes the reason
 * ("the gateway does not answer NAT-PMP, and "). */
static void no_mapping(kp_portmap_t *pm, const char *also, const char *why) {
  bool was_active = pm->info.state == KP_PORT_MAPPING_ACTIVE;
  pm->info.state = KP_PORT_MAPPING_UNAVAILABLE;
  pm->info.why = why;
  if (was_active)
    KP_WARN(pm->log, "port mapping lost: %s; asking again in %u s", why, RETRY_MS / 1000);
  else
    KP_INFO(pm->log, "no port mapping: %s%s", also, why);
  pm->step = STEP_WAIT;
  arm(pm, RETRY_MS);
  settle(pm);
}

static void ask_address(kp_portmap_t *pm) {
  pm->step = STEP_ADDRESS;
  int r = sendpublicaddressrequest(&pm->np);
  if (r < 0) {
    pm->info.state = KP_PORT_MAPPING_UNAVAILABLE;
    pm->info.why = natpmp_why(r);
    pm->step = STEP_WAIT;
    arm(pm, RETRY_MS);
    settle(pm);
    return;
  }
  arm_retry(pm);
}

static void on_pcp(void *ctx, const kp_pcp_result_t *r);

/* Starts a PCP request (a mapping, or its renewal); false if it cannot. */
static bool ask_pcp(kp_portmap_t *pm) {
  if (!pm->pcp && kp_pcp_new(pm->loop, &pm->info.gateway, pm->port, &pm->pcp)) return false;
  unsigned tries = pm->info.state == KP_PORT_MAPPING_ACTIVE ? PCP_RENEW_TRIES : PCP_FIRST_TRIES;
  if (kp_pcp_map(pm->pcp, LIFETIME_S, tries, on_pcp, pm)) return false;
  pm->info.protocol = "PCP";
  pm->step = STEP_PCP;
  uv_timer_stop(&pm->timer);
  if (pm->settle_at) arm(pm, SETTLE_MS); /* the settle deadline only */
  return true;
}

/* Asks the gateway for the mapping (or renews it): PCP, unless the gateway
 * showed it does not speak it, then NAT-PMP. */
static void ask(kp_portmap_t *pm) {
  if (!pm->no_pcp && ask_pcp(pm)) return;
  pm->info.protocol = "NAT-PMP";
  ask_address(pm);
}

static void on_pcp(void *ctx, const kp_pcp_result_t *r) {
  kp_portmap_t *pm = ctx;
  if (pm->closing) { /* the delete's answer, or its last try */
    if (r->outcome == KP_PCP_DELETED)
      KP_INFO(pm->log, "port mapping of port %u deleted at the gateway", pm->port);
    finish_close(pm);
    return;
  }
  pm->via_pcp = r->outcome == KP_PCP_MAPPED;
  if (r->outcome == KP_PCP_MAPPED) {
    got_mapping(pm, "PCP", &r->external, r->lifetime_s);
  } else if (r->outcome == KP_PCP_NO_PCP && pm->info.state != KP_PORT_MAPPING_ACTIVE) {
    KP_DEBUG(pm->log, "no PCP (%s): asking with NAT-PMP", r->why);
    pm->no_pcp = true;
    pm->info.protocol = "NAT-PMP";
    ask_address(pm);
  } else {
    /* A refusal stands (the gateway speaks PCP and said no), and a renewal
     * nobody answered is a mapping lost. */
    no_mapping(pm, "", r->why);
  }
}

static void on_upnp(void *ctx, const kp_upnp_result_t *res);

/* Starts a UPnP-IGD attempt; false if it cannot. */
static bool try_upnp(kp_portmap_t *pm) {
  if (pm->closing) return false;
  if (!pm->upnp) pm->upnp = kp_upnp_new(pm->loop, pm->port);
  if (!pm->upnp || kp_upnp_map(pm->upnp, LIFETIME_S, on_upnp, pm)) return false;
  uv_timer_stop(&pm->timer);
  pm->step = STEP_WAIT;
  return true;
}

static void failed(kp_portmap_t *pm, int r) {
  bool was_active = pm->info.state == KP_PORT_MAPPING_ACTIVE;
  /* No NAT-PMP (a refusal is an answer: it stands): UPnP-IGD, on the
   * thread pool, while the node goes on. */
  if (!was_active && (r == NATPMP_ERR_NOGATEWAYSUPPORT || r == NATPMP_ERR_UNSUPPORTEDVERSION) &&
      try_upnp(pm)) {
    pm->info.protocol = "UPnP-IGD";
    pm->info.state = KP_PORT_MAPPING_ASKING;
    settle(pm);
    return;
  }
  no_mapping(pm, "", natpmp_why(r));
}

static void mapped(kp_portmap_t *pm, const natpmpresp_t *resp) {
  kp_addr_t external = pm->info.external;
  external.port = resp->pnu.newportmapping.mappedpublicport;
  got_mapping(pm, "NAT-PMP", &external, resp->pnu.newportmapping.lifetime);
}

static void on_upnp(void *ctx, const kp_upnp_result_t *res) {
  kp_portmap_t *pm = ctx;
  if (pm->closing) {
    /* A mapping made while we were closing goes too; then we are done. */
    if (!res->status && !pm->upnp_unmapping && !kp_upnp_unmap(pm->upnp, on_upnp, pm)) {
      pm->upnp_unmapping = true;
      return;
    }
    if (pm->upnp_unmapping && !res->status)
      KP_INFO(pm->log, "port mapping of port %u deleted at the gateway", pm->port);
    finish_close(pm);
    return;
  }
  pm->info.protocol = "UPnP-IGD";
  pm->info.gateway = res->gateway;
  pm->via_upnp = !res->status;
  if (res->status)
    no_mapping(pm, "the gateway does not answer PCP or NAT-PMP, and ", res->why);
  else
    got_mapping(pm, "UPnP-IGD", &res->external, res->lifetime_s);
}

/* Reads and drops what the gateway sends unasked (at most 64 datagrams a
 * turn): libnatpmp reads nothing while no request is pending, and a
 * level-triggered poll would fire for it forever. */
static void drain(kp_portmap_t *pm) {
  uint8_t buf[64];
  for (int i = 0; i < 64; i++)
    if (recv(pm->np.s, buf, sizeof(buf), MSG_DONTWAIT) < 0 && errno != ECONNREFUSED) break;
}

static void send_map(kp_portmap_t *pm) {
  /* The port it had, if any, else the socket's own. */
  uint16_t want = pm->info.external.port ? pm->info.external.port : pm->port;
  pm->step = STEP_MAP;
  int r = sendnewportmappingrequest(&pm->np, NATPMP_PROTOCOL_UDP, pm->port, want, LIFETIME_S);
  if (r < 0)
    failed(pm, r);
  else
    arm_retry(pm);
}

static void on_response(kp_portmap_t *pm) {
  natpmpresp_t resp;
  if (pm->step == STEP_WAIT || pm->step == STEP_PCP) {
    drain(pm);
    return;
  }
  int r = readnatpmpresponseorretry(&pm->np, &resp);
  if (r == NATPMP_ERR_NOPENDINGREQ) {
    drain(pm);
    return;
  }
  if (r == NATPMP_TRYAGAIN) {
    arm_retry(pm);
    return;
  }
  if (pm->step == STEP_DELETE) {
    if (r == 0) KP_INFO(pm->log, "port mapping of port %u deleted at the gateway", pm->port);
    finish_close(pm);
    return;
  }
  if (r < 0) {
    failed(pm, r);
    return;
  }
  if (pm->step == STEP_ADDRESS && resp.type == NATPMP_RESPTYPE_PUBLICADDRESS) {
    kp_addr_t ext = {0};
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr = resp.pnu.publicaddress.addr};
    kp_addr_from_sockaddr(&ext, (const struct sockaddr *)&sin);
    ext.port = pm->info.external.port;
    pm->info.external = ext;
    send_map(pm);
  } else if (pm->step == STEP_MAP && resp.type == NATPMP_RESPTYPE_UDPPORTMAPPING &&
             resp.pnu.newportmapping.privateport == pm->port &&
             resp.pnu.newportmapping.mappedpublicport) {
    mapped(pm, &resp);
  } else if (pm->step == STEP_ADDRESS) {
    ask_address(pm); /* an answer to something else (a late duplicate): ask again */
  } else {
    send_map(pm);
  }
}

static void on_readable(uv_poll_t *p, int status, int events) {
  kp_portmap_t *pm = p->data;
  (void)events;
  /* An error on the socket (ICMP port unreachable: no NAT-PMP there) is
   * read, as an answer, by the library's recv; libuv stops the poll on
   * one, so it is started again. */
  on_response(pm);
  if (status < 0 && !uv_is_closing((uv_handle_t *)p)) uv_poll_start(p, UV_READABLE, on_readable);
}

static void on_timer(uv_timer_t *t) {
  kp_portmap_t *pm = t->data;
  uint64_t now = uv_now(pm->loop);
  if (pm->step == STEP_DELETE) {
    if (now >= pm->delete_until) {
      finish_close(pm);
      return;
    }
    on_response(pm); /* retransmits */
    return;
  }
  if (pm->settle_at && now >= pm->settle_at) {
    /* No answer yet: the node goes on without waiting; the mapping, if it
     * comes, is reported when it does. */
    settle(pm);
  }
  if (pm->step == STEP_PCP) return; /* its own timer retransmits */
  if (pm->step == STEP_WAIT) {
    if (pm->via_upnp) {
      if (!kp_upnp_busy(pm->upnp) && kp_upnp_map(pm->upnp, LIFETIME_S, on_upnp, pm))
        arm(pm, RETRY_MS);
      return;
    }
    if (!pm->np_open) {
      if (open_gateway(pm)) ask(pm);
      return;
    }
    ask(pm); /* renewal, or another try */
    return;
  }
  on_response(pm); /* retransmits, or gives up after the library's last try */
}

/* The socket to the default gateway, watched. False (the state says why,
 * another try is armed) where there is none yet. */
static bool open_gateway(kp_portmap_t *pm) {
  int r = initnatpmp(&pm->np, pm->forced_gateway != 0, pm->forced_gateway);
  if (r < 0) {
    /* libnatpmp leaves its socket open when it fails after making it. */
    if (r != NATPMP_ERR_SOCKETERROR && r != NATPMP_ERR_INVALIDARGS && pm->np.s >= 0)
      close(pm->np.s);
    pm->info.state = KP_PORT_MAPPING_UNAVAILABLE;
    pm->info.why = natpmp_why(r);
    arm(pm, RETRY_MS); /* a laptop may join a network with a gateway */
    return false;
  }
  pm->np_open = true;
  struct sockaddr_in gw = {.sin_family = AF_INET, .sin_port = htons(NATPMP_PORT)};
  gw.sin_addr.s_addr = pm->np.gateway;
  kp_addr_from_sockaddr(&pm->info.gateway, (const struct sockaddr *)&gw);
  int err = uv_poll_init_socket(pm->loop, &pm->poll, pm->np.s);
  if (!err) {
    pm->poll.data = pm;
    pm->open_handles |= 2;
    err = uv_poll_start(&pm->poll, UV_READABLE, on_readable);
  }
  if (err) {
    pm->info.state = KP_PORT_MAPPING_UNAVAILABLE;
    pm->info.why = "cannot watch the NAT-PMP socket";
    return false; /* not again: this host cannot */
  }
  return true;
}

int kp_portmap_start(uv_loop_t *loop, uint16_t port, const kp_addr_t *gateway, kp_log_t *log,
                     kp_portmap_cb cb, void *ctx, kp_portmap_t **out) {
  *out = NULL;
  kp_portmap_t *pm = kp_calloc(1, sizeof(*pm));
  if (!pm) return UV_ENOMEM;
  pm->loop = loop;
  pm->log = log;
  pm->port = port;
  pm->cb = cb;
  pm->ctx = ctx;
  pm->info.protocol = "PCP";
  pm->info.state = KP_PORT_MAPPING_ASKING;
  if (gateway && gateway->family == KP_AF_INET) memcpy(&pm->forced_gateway, gateway->ip, 4);
  int err = uv_timer_init(loop, &pm->timer);
  if (err) {
    kp_free(pm);
    return err;
  }
  pm->timer.data = pm;
  pm->open_handles = 1;
  *out = pm;
  pm->step = STEP_WAIT;
  if (!open_gateway(pm)) {
    report(pm, true);
    return 0;
  }
  pm->settle_at = uv_now(loop) + SETTLE_MS;
  ask(pm);
  return 0;
}

void kp_portmap_info(const kp_portmap_t *pm, kp_port_mapping_t *out) {
  *out = pm->info;
}

static void release(kp_portmap_t *pm) {
  /* The poll watched the library's socket; it is closed only now. */
  if (pm->np_open) closenatpmp(&pm->np);
  kp_portmap_closed_cb closed = pm->closed;
  void *ctx = pm->closed_ctx;
  kp_free(pm);
  if (closed) closed(ctx);
}

static void on_part_closed(void *ctx);

/* After the handles: the PCP client, then UPnP's, then the struct. */
static void close_rest(kp_portmap_t *pm) {
  if (pm->pcp) {
    kp_pcp_t *p = pm->pcp;
    pm->pcp = NULL;
    kp_pcp_close(p, on_part_closed, pm);
    return;
  }
  if (pm->upnp) {
    kp_upnp_t *u = pm->upnp;
    pm->upnp = NULL;
    kp_upnp_close(u, on_part_closed, pm); /* not mapping: closing waited for that */
    return;
  }
  release(pm);
}

static void on_part_closed(void *ctx) {
  close_rest(ctx);
}

static void on_handle_closed(uv_handle_t *h) {
  kp_portmap_t *pm = h->data;
  pm->open_handles &= ~(h == (uv_handle_t *)&pm->timer ? 1u : 2u);
  if (!pm->open_handles) close_rest(pm);
}

static void finish_close(kp_portmap_t *pm) {
  /* A UPnP call in flight writes into pm->upnp: its end (on_upnp) closes. */
  if (pm->upnp && kp_upnp_busy(pm->upnp)) return;
  pm->step = STEP_WAIT;
  uv_timer_stop(&pm->timer);
  uv_close((uv_handle_t *)&pm->timer, on_handle_closed);
  if (pm->open_handles & 2) uv_close((uv_handle_t *)&pm->poll, on_handle_closed);
}

void kp_portmap_close(kp_portmap_t *pm, kp_portmap_closed_cb closed, void *ctx) {
  if (pm->closing) return;
  pm->closing = true;
  pm->closed = closed;
  pm->closed_ctx = ctx;
  pm->settle_at = 0;
  /* A gateway search (a second of SSDP when nobody answers) has mapped
   * nothing yet: it is left to end on its own thread, and the node closes
   * now. */
  if (pm->upnp) kp_upnp_leave_search(pm->upnp);
  bool pcp_last = pm->info.protocol && !strcmp(pm->info.protocol, "PCP");
  if (pm->pcp &&
      (pm->via_pcp || kp_pcp_busy(pm->pcp) || (pcp_last && kp_pcp_has_mapped(pm->pcp)))) {
    /* A mapping we hold, one the request in flight may have made, or one
     * we held while PCP is still what we ask with (a renewal nobody
     * answered may have reached the gateway). Not one NAT-PMP or UPnP
     * took over from: theirs is deleted below. */
    kp_pcp_cancel(pm->pcp);
    uv_timer_stop(&pm->timer);
    if (pm->open_handles & 2) uv_poll_stop(&pm->poll);
    pm->step = STEP_DELETE;
    if (!kp_pcp_unmap(pm->pcp, PCP_DELETE_TRIES, on_pcp, pm)) return;
    finish_close(pm);
    return;
  }
  if (pm->upnp && (kp_upnp_busy(pm->upnp) || pm->via_upnp || kp_upnp_has_mapping(pm->upnp))) {
    /* A UPnP call cannot be stopped once it runs: wait for it (miniupnpc
     * times out each connect at 3 s and each read at 5 s), then delete what
     * it made. NAT-PMP is done with: nothing it receives may end the close. */
    uv_timer_stop(&pm->timer);
    if (pm->open_handles & 2) uv_poll_stop(&pm->poll);
    pm->step = STEP_DELETE;
    if (kp_upnp_busy(pm->upnp)) return;
    if (!kp_upnp_unmap(pm->upnp, on_upnp, pm)) {
      pm->upnp_unmapping = true;
      return;
    }
    finish_close(pm);
    return;
  }
  /* A mapping we hold, or one a request in flight may have made: delete
   * (not when NAT-PMP failed and UPnP was asked). */
  if (pm->np_open && !pm->upnp && pm->info.state != KP_PORT_MAPPING_UNAVAILABLE &&
      sendnewportmappingrequest(&pm->np, NATPMP_PROTOCOL_UDP, pm->port, 0, 0) >= 0) {
    pm->step = STEP_DELETE;
    pm->delete_until = uv_now(pm->loop) + CLOSE_WAIT_MS;
    arm_retry(pm);
    return;
  }
  finish_close(pm);
}
