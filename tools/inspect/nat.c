/* SPDX-License-Identifier: MIT */
/* The measurements behind `kadpunch-inspect nat` (nat.h). Terms are RFC
 * 4787's: mapping (does our public address depend on where we send?) and
 * filtering (does a packet from a new source get in?). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/addr.h"
#include "tools/inspect/nat.h"

static void on_answer(void *arg, int status, const kp_dht_msg_t *resp, const kp_addr_t *from,
                      double rtt_ms, unsigned sends) {
  kp_inspect_nat_probe_t *p = arg;
  (void)from, (void)sends;
  p->n->pending--;
  if (status) return;
  if (!p->sample) {
    p->n->checks_reached++;
    return;
  }
  p->sample->seen = resp->to;
  p->sample->rtt_ms = rtt_ms;
}

static bool table_ready(void *ctx) {
  return kp_dht_table(ctx)->count >= KP_INSPECT_NAT_SAMPLES;
}

static bool all_answered(void *ctx) {
  return ((kp_inspect_nat_t *)ctx)->pending == 0;
}

/* Up to KP_INSPECT_NAT_SAMPLES distinct nodes to ask: the routing table
 * our bootstrap filled, else whoever answered the bootstrap. */
static void pick_reporters(kp_dht_t *dht, kp_inspect_nat_t *n) {
  const kp_dht_table_t *t = kp_dht_table(dht);
  const kp_dht_nat_t *nat = kp_dht_nat(dht);
  uint32_t start = t->count ? kp_rng_below(kp_dht_rng(dht), t->count) : 0;
  for (uint32_t i = 0; i < t->count && n->count < KP_INSPECT_NAT_SAMPLES; i++)
    kp_dht_entry_addr(t, kp_dht_table_at(t, (start + i) % t->count),
                      &n->samples[n->count++].reporter);
  for (unsigned i = 0; !n->count && i < nat->count; i++)
    n->samples[n->count++].reporter = nat->samples[i].reporter;
}

static void send_probes(kp_inspect_session_t *s, kp_inspect_nat_t *n) {
  size_t k = 0;
  for (size_t i = 0; i < n->count; i++, k++) {
    n->probes[k] = (kp_inspect_nat_probe_t){n, &n->samples[i]};
    n->samples[i].rtt_ms = -1;
    if (!kp_inspect_request(s, &n->samples[i].reporter, KP_DHT_CMD_PING, NULL, on_answer,
                            &n->probes[k], NULL))
      n->pending++;
  }
  /* PING_NAT: the answer comes from another port of the node, so only a
   * NAT or firewall that lets unsolicited packets in passes it. */
  for (size_t i = 0; i < n->count && i < KP_INSPECT_NAT_CHECKS; i++, k++) {
    n->probes[k] = (kp_inspect_nat_probe_t){n, NULL};
    if (!kp_inspect_request(s, &n->samples[i].reporter, KP_DHT_CMD_PING_NAT, NULL, on_answer,
                            &n->probes[k], NULL)) {
      n->pending++;
      n->checks_tried++;
    }
  }
}

int kp_inspect_nat_probe(const kp_inspect_opts_t *o, int family, const char *const *hosts,
                         size_t count, kp_inspect_nat_t *n) {
  memset(n, 0, sizeof(*n));
  n->family = family;
  kp_inspect_session_t s;
  int err = kp_inspect_session_open(&s, o, family, hosts, count, 5000);
  if (err == KP_ENONODES) return 0;
  if (err) return err;
  n->answered = true;
  kp_dht_t *dht = kp_inspect_dht(&s);
  kp_inspect_session_run(&s, table_ready, dht, 3000);
  pick_reporters(dht, n);
  send_probes(&s, n);
  /* A PING_NAT that does not get in takes its three tries: a few seconds. */
  kp_inspect_session_run(&s, all_answered, n, 10000);
  kp_node_local_addr(s.node, &n->local);
  n->dht_type = kp_dht_nat(dht)->type;
  n->dht_reachable = kp_dht_nat(dht)->reachable;
  kp_node_port_mapping(s.node, &n->port_mapping);
  bool signalled = s.signalled;
  kp_inspect_session_close(&s); /* before n's probes go out of use */
  kp_inspect_nat_analyse(n);
  return signalled ? UV_ECANCELED : 0;
}

/* Whether ip is one of this machine's own addresses (then there is no NAT). */
static bool is_local_ip(const kp_addr_t *ip, const kp_addr_t *bound) {
  if (kp_addr_same_ip(ip, bound)) return true;
  uv_interface_address_t *ifs;
  int n;
  if (uv_interface_addresses(&ifs, &n)) return false;
  bool found = false;
  for (int i = 0; i < n && !found; i++) {
    kp_addr_t a;
    if (kp_addr_from_sockaddr(&a, (const struct sockaddr *)&ifs[i].address) == 0)
      found = kp_addr_same_ip(&a, ip);
  }
  uv_free_interface_addresses(ifs, n);
  return found;
}

void kp_inspect_nat_analyse(kp_inspect_nat_t *n) {
  unsigned best = 0;
  n->answers = n->distinct_seen = n->public_ips = 0;
  for (size_t i = 0; i < n->count; i++) {
    const kp_addr_t *seen = &n->samples[i].seen;
    if (!kp_addr_is_set(seen)) continue;
    n->answers++;
    unsigned same = 0, earlier = 0, earlier_ip = 0;
    for (size_t j = 0; j < n->count; j++) {
      if (!kp_addr_is_set(&n->samples[j].seen)) continue;
      same += kp_addr_eq(seen, &n->samples[j].seen);
      if (j < i) {
        earlier += kp_addr_eq(seen, &n->samples[j].seen);
        earlier_ip += kp_addr_same_ip(seen, &n->samples[j].seen);
      }
    }
    n->distinct_seen += !earlier;
    n->public_ips += !earlier_ip;
    if (same > best) best = same, n->public_addr = *seen;
  }
  n->consistent = n->answers && n->distinct_seen == 1;
  n->mapping = !n->answers     ? "unknown"
               : n->consistent ? "endpoint-independent"
                               : "address-dependent";
  n->behind_nat = n->answers && !is_local_ip(&n->public_addr, &n->local);
  n->port_preserved = n->answers && n->public_addr.port == n->local.port;
  bool unsolicited = n->checks_reached > 0;
  /* A host with its own public address behind a firewall maps consistently
   * (it does not map at all); only the filtering tells it from open. */
  n->type = !n->answers      ? KP_NAT_UNKNOWN
            : !n->consistent ? KP_NAT_RANDOM
            : unsolicited    ? KP_NAT_OPEN
                             : KP_NAT_CONSISTENT;
}

void kp_inspect_v6_local(kp_inspect_v6_t *v6) {
  memset(v6, 0, sizeof(*v6));
  uv_interface_address_t *ifs;
  int n;
  if (uv_interface_addresses(&ifs, &n) == 0) {
    for (int i = 0; i < n && v6->count < 8; i++) {
      kp_addr_t a;
      if (kp_addr_from_sockaddr(&a, (const struct sockaddr *)&ifs[i].address) ||
          a.family != KP_AF_INET6 || (a.ip[0] & 0xe0) != 0x20)
        continue; /* global unicast is 2000::/3 */
      a.port = 0;
      v6->addrs[v6->count++] = a;
    }
    uv_free_interface_addresses(ifs, n);
  }
  /* A UDP connect only asks the kernel for a route: nothing is sent. */
  int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    v6->route_error = uv_translate_sys_error(errno);
    return;
  }
  struct sockaddr_in6 dst = {.sin6_family = AF_INET6, .sin6_port = htons(53)};
  inet_pton(AF_INET6, "2001:4860:4860::8888", &dst.sin6_addr);
  if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) == 0) {
    struct sockaddr_storage src;
    socklen_t len = sizeof(src);
    v6->route = true;
    if (getsockname(fd, (struct sockaddr *)&src, &len) == 0)
      kp_addr_from_sockaddr(&v6->route_source, (struct sockaddr *)&src);
    v6->route_source.port = 0;
  } else {
    v6->route_error = uv_translate_sys_error(errno);
  }
  close(fd);
}
