/* SPDX-License-Identifier: MIT */
/* kadpunch-inspect nat: what this machine is behind, in the manner of
 * `tailscale netcheck`. */
#include <string.h>

#include "common/addr.h"
#include "tools/inspect/nat.h"

static const char help[] =
    "usage: kadpunch-inspect nat [options]\n"
    "\n"
    "Joins the DHT (as a client: it enters nobody's routing table) and asks\n"
    "several nodes where they see this machine, then asks a few to answer from\n"
    "another port. Prints:\n"
    "  - the public address, and whether it is this machine's own (no NAT)\n"
    "    and whether the NAT kept the local port;\n"
    "  - the mapping: the same public address towards every node\n"
    "    (endpoint-independent: \"consistent\") or one per destination\n"
    "    (address-dependent: \"random\");\n"
    "  - whether unsolicited packets get in (a PING_NAT reply comes from a port\n"
    "    we never sent to: only an open NAT or no firewall lets it in);\n"
    "  - the NAT type that makes (open, consistent, random) and what it means\n"
    "    for holepunching;\n"
    "  - IPv6: global addresses, a route to the internet, and the same\n"
    "    measurements over IPv6 when a bootstrap node is reachable that way\n"
    "    (an IPv6 literal, or a name with an AAAA record).\n"
    "\n"
    "options:\n" KP_INSPECT_NET_HELP "\n"
    "examples:\n"
    "  kadpunch-inspect nat --bootstrap 203.0.113.7:49737\n"
    "  kadpunch-inspect nat --bootstrap dht.example.org:49737 --json\n"
    "\n"
    "exit codes: 0 measured (over at least one family), 1 no DHT node answered,\n"
    "2 bad options\n";

static const char *outlook(kp_nat_type_t t) {
  switch (t) {
    case KP_NAT_OPEN: return "others reach you directly: no punching needed";
    case KP_NAT_CONSISTENT:
      return "direct paths by simultaneous punching with open and consistent peers, by the "
             "birthday strategy with random ones";
    case KP_NAT_RANDOM:
      return "direct paths only with open and consistent peers (birthday strategy); two "
             "random NATs connect through a relay";
    default: return "unknown: no DHT node answered";
  }
}

/* What the gateway offered when asked for a mapping of the probing
 * socket: while one is held, the mapping and filtering above are the
 * mapped port's (it keeps its port, and lets anyone in). */
static void print_port_mapping(const kp_port_mapping_t *m) {
  char a[KP_ADDR_STRLEN], g[KP_ADDR_STRLEN];
  switch (m->state) {
    case KP_PORT_MAPPING_ACTIVE:
      printf("  %-14s %s at %s mapped %s to this socket for %u s\n", "port mapping", m->protocol,
             kp_addr_format(&m->gateway, g, sizeof(g)), kp_addr_format(&m->external, a, sizeof(a)),
             m->lifetime_s);
      break;
    case KP_PORT_MAPPING_UNAVAILABLE:
      printf("  %-14s none: %s\n", "port mapping", m->why ? m->why : "unavailable");
      break;
    case KP_PORT_MAPPING_ASKING:
      printf("  %-14s %s at %s: no answer yet\n", "port mapping", m->protocol,
             kp_addr_format(&m->gateway, g, sizeof(g)));
      break;
    default:
      printf("  %-14s not asked (no use here: loopback, a public or IPv6 address, or local "
             "bootstrap nodes)\n",
             "port mapping");
  }
}

static const char *mapping_state(kp_port_mapping_state_t s) {
  switch (s) {
    case KP_PORT_MAPPING_ACTIVE: return "active";
    case KP_PORT_MAPPING_ASKING: return "asking";
    case KP_PORT_MAPPING_UNAVAILABLE: return "unavailable";
    default: return "off";
  }
}

static void print_family(const char *title, const kp_inspect_nat_t *n) {
  char a[KP_ADDR_STRLEN], b[KP_ADDR_STRLEN];
  printf("%s\n", title);
  if (!n->answered || !n->answers) {
    printf("  no DHT node answered over %s\n", n->family == KP_AF_INET6 ? "IPv6" : "IPv4");
    return;
  }
  printf("  %-14s %s\n", "local", kp_addr_format(&n->local, a, sizeof(a)));
  printf("  %-14s %s%s%s\n", "public", kp_addr_format(&n->public_addr, b, sizeof(b)),
         n->behind_nat ? "" : " (this machine's own address: no NAT)",
         n->behind_nat && n->port_preserved ? " (port kept)" : "");
  printf("  %-14s %s: %u of %zu nodes answered, on %u public address%s\n", "mapping", n->mapping,
         n->answers, n->count, n->distinct_seen, n->distinct_seen == 1 ? "" : "es");
  printf("  %-14s %s: %u of %u PING_NAT replies from a port we never sent to got in\n",
         "unsolicited", n->checks_reached ? "get in" : "filtered", n->checks_reached,
         n->checks_tried);
  printf("  %-14s %s (the DHT's own view so far: %s%s)\n", "NAT type", kp_nat_type_name(n->type),
         kp_nat_type_name(n->dht_type), n->dht_reachable ? ", reachable" : "");
  printf("  %-14s %s\n", "holepunching", outlook(n->type));
  print_port_mapping(&n->port_mapping);
  printf("  %-26s  %-26s  %8s\n", "NODE", "SAW US AT", "RTT ms");
  for (size_t i = 0; i < n->count; i++) {
    const kp_inspect_nat_sample_t *s = &n->samples[i];
    char rtt[16] = "-";
    if (s->rtt_ms >= 0) snprintf(rtt, sizeof(rtt), "%.2f", s->rtt_ms);
    printf("  %-26s  %-26s  %8s\n", kp_addr_format(&s->reporter, a, sizeof(a)),
           kp_addr_is_set(&s->seen) ? kp_addr_format(&s->seen, b, sizeof(b)) : "(no answer)", rtt);
  }
}

static void print_v6(const kp_inspect_v6_t *v6, const kp_inspect_nat_t *n, bool tried) {
  char a[KP_ADDR_STRLEN];
  printf("IPv6\n  %-14s", "addresses");
  for (size_t i = 0; i < v6->count; i++) {
    kp_addr_format(&v6->addrs[i], a, sizeof(a));
    printf(" %.*s", (int)(strlen(a) - 4), a + 1); /* "[ip]:0" without the brackets and port */
  }
  printf("%s\n", v6->count ? "" : " none global");
  if (v6->route) {
    kp_addr_format(&v6->route_source, a, sizeof(a));
    printf("  %-14s yes (from %.*s)\n", "route", (int)(strlen(a) - 4), a + 1);
  } else {
    printf("  %-14s no (%s)\n", "route", kp_strerror(v6->route_error));
  }
  if (!tried)
    printf("  %-14s not measured (no IPv6 route, or no bootstrap node to reach over IPv6)\n",
           "DHT");
  else
    print_family("  over the DHT:", n);
}

static void json_family(kp_jw_t *w, const char *key, const kp_inspect_nat_t *n, bool tried) {
  kp_jw_key(w, key);
  if (!tried) {
    kp_jw_null(w);
    return;
  }
  kp_jw_obj(w);
  kp_jw_kbool(w, "answered", n->answered && n->answers);
  kp_inspect_jw_addr(w, "local", n->answered ? &n->local : NULL);
  kp_inspect_jw_addr(w, "public", n->answers ? &n->public_addr : NULL);
  kp_jw_kbool(w, "behind_nat", n->behind_nat);
  kp_jw_kbool(w, "port_preserved", n->port_preserved);
  kp_jw_kstr(w, "mapping", n->mapping ? n->mapping : "unknown");
  kp_jw_ku64(w, "public_addresses", n->distinct_seen);
  kp_jw_key(w, "unsolicited");
  kp_jw_obj(w);
  kp_jw_ku64(w, "tried", n->checks_tried);
  kp_jw_ku64(w, "reached", n->checks_reached);
  kp_jw_obj_end(w);
  kp_jw_kstr(w, "nat_type", kp_nat_type_name(n->type));
  kp_jw_kstr(w, "dht_nat_type", kp_nat_type_name(n->dht_type));
  kp_jw_kbool(w, "dht_reachable", n->dht_reachable);
  kp_jw_key(w, "port_mapping");
  kp_jw_obj(w);
  kp_jw_kstr(w, "state", mapping_state(n->port_mapping.state));
  kp_jw_kstr(w, "protocol", n->port_mapping.protocol ? n->port_mapping.protocol : "");
  kp_inspect_jw_addr(w, "gateway",
                     n->port_mapping.state != KP_PORT_MAPPING_OFF && n->port_mapping.gateway.family
                         ? &n->port_mapping.gateway
                         : NULL);
  kp_inspect_jw_addr(w, "external",
                     n->port_mapping.state == KP_PORT_MAPPING_ACTIVE ? &n->port_mapping.external
                                                                     : NULL);
  kp_jw_ku64(w, "lifetime_s", n->port_mapping.lifetime_s);
  kp_jw_kstr(w, "why", n->port_mapping.why ? n->port_mapping.why : "");
  kp_jw_obj_end(w);
  kp_jw_key(w, "samples");
  kp_jw_arr(w);
  for (size_t i = 0; i < n->count; i++) {
    kp_jw_obj(w);
    kp_inspect_jw_addr(w, "reporter", &n->samples[i].reporter);
    kp_inspect_jw_addr(w, "seen", &n->samples[i].seen);
    kp_jw_key(w, "rtt_ms");
    if (n->samples[i].rtt_ms >= 0)
      kp_jw_num(w, n->samples[i].rtt_ms, 3);
    else
      kp_jw_null(w);
    kp_jw_obj_end(w);
  }
  kp_jw_arr_end(w);
  kp_jw_obj_end(w);
}

static int print_json(const kp_inspect_nat_t *v4, bool tried4, const kp_inspect_v6_t *v6,
                      const kp_inspect_nat_t *n6, bool tried6) {
  kp_jw_t w;
  kp_jw_init(&w, 0);
  kp_jw_obj(&w);
  json_family(&w, "ipv4", v4, tried4);
  kp_jw_key(&w, "ipv6");
  kp_jw_obj(&w);
  kp_jw_key(&w, "addresses");
  kp_jw_arr(&w);
  for (size_t i = 0; i < v6->count; i++) {
    char a[KP_ADDR_STRLEN];
    kp_addr_format(&v6->addrs[i], a, sizeof(a));
    kp_jw_strn(&w, a + 1, strlen(a) - 4);
  }
  kp_jw_arr_end(&w);
  kp_jw_kbool(&w, "route", v6->route);
  kp_jw_key(&w, "route_source");
  if (v6->route) {
    char a[KP_ADDR_STRLEN];
    kp_addr_format(&v6->route_source, a, sizeof(a));
    kp_jw_strn(&w, a + 1, strlen(a) - 4); /* "[ip]:0": the ip */
  } else {
    kp_jw_null(&w);
  }
  json_family(&w, "dht", n6, tried6);
  kp_jw_obj_end(&w);
  kp_jw_obj_end(&w);
  return kp_inspect_print_json(&w, "nat");
}

int kp_inspect_nat(int argc, char **argv) {
  static const struct option longopts[] = {KP_INSPECT_NET_OPTIONS, {0, 0, 0, 0}};
  kp_inspect_opts_t o;
  kp_inspect_opts_init(&o, "nat");
  int c, rc;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    if (c == 'h') {
      fputs(help, stdout);
      return KP_EXIT_OK;
    }
    if ((rc = kp_inspect_option(&o, c, optarg))) return rc;
  }
  if (optind < argc) return kp_inspect_usage(o.cmd, "unexpected argument '%s'", argv[optind]);
  char text4[1024], text6[1024];
  const char *hosts4[16], *hosts6[16];
  size_t n4 = kp_inspect_hosts(&o, KP_AF_INET, text4, hosts4, 16);
  size_t n6 = kp_inspect_hosts(&o, KP_AF_INET6, text6, hosts6, 16);
  if (!n4 && !n6)
    return kp_inspect_usage(o.cmd, "no bootstrap node: pass --bootstrap HOST:PORT or set "
                                   "KADPUNCH_BOOTSTRAP");
  kp_inspect_v6_t v6;
  kp_inspect_v6_local(&v6);
  /* --bind names an address of one family; the other family binds any. */
  bool bind6 = o.bind && o.bind[0] == '[';
  kp_inspect_opts_t o4 = o, o6 = o;
  if (bind6) o4.bind = NULL;
  if (o.bind && !bind6) o6.bind = NULL;
  kp_inspect_nat_t r4, r6;
  memset(&r4, 0, sizeof(r4));
  memset(&r6, 0, sizeof(r6));
  int err = n4 ? kp_inspect_nat_probe(&o4, KP_AF_INET, hosts4, n4, &r4) : 0;
  bool tried6 = n6 && (v6.route || bind6) && !err;
  if (tried6) err = kp_inspect_nat_probe(&o6, KP_AF_INET6, hosts6, n6, &r6);
  if (err) return kp_inspect_session_error(&o, err);
  if (o.json) {
    rc = print_json(&r4, n4 > 0, &v6, &r6, tried6);
  } else {
    if (n4) print_family("IPv4", &r4);
    print_v6(&v6, &r6, tried6);
    rc = 0;
  }
  if (!(n4 && r4.answers) && !(tried6 && r6.answers))
    return kp_inspect_fail(o.cmd, "no DHT node answered (bootstrap: %s)", o.bootstrap);
  return rc;
}
