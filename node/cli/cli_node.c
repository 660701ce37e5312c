/* SPDX-License-Identifier: MIT */
/* What the networked commands share: their common options, a node for the
 * command's lifetime, signals, and key files. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "common/log.h"
#include "node/cli/cli.h"
#include "node/node_internal.h"
#include "node/testnet.h"

void kp_cli_net_init(kp_cli_net_t *net, kp_node_mode_t mode) {
  memset(net, 0, sizeof(*net));
  net->bind = "0.0.0.0:0";
  net->log_level = KP_LOG_WARN;
  net->mode = mode;
  const kp_cli_config_t *cfg = kp_cli_settings();
  const char *env = getenv("KADPUNCH_BOOTSTRAP");
  snprintf(net->bootstrap, sizeof(net->bootstrap), "%s", env ? env : cfg->bootstrap);
  for (size_t i = 0; i < cfg->relay_count; i++) net->relays[net->relay_count++] = cfg->relays[i];
  net->relays_configured = cfg->relay_count > 0;
}

int kp_cli_net_option(kp_cli_net_t *net, int opt, const char *arg, const char *cmd) {
  switch (opt) {
    case KP_CLI_OPT_BIND:
      if (!net->bind_given) {
        net->bind = arg;
        net->bind_given = true;
      } else if (!net->bind_also) {
        net->bind_also = arg;
      } else {
        return kp_cli_usage_error(cmd, "at most two --bind, one of each family");
      }
      return 0;
    case KP_CLI_OPT_BOOTSTRAP:
      if (strlen(arg) >= sizeof(net->bootstrap))
        return kp_cli_usage_error(cmd, "--bootstrap list too long");
      snprintf(net->bootstrap, sizeof(net->bootstrap), "%s", arg);
      return 0;
    case KP_CLI_OPT_RELAY:
      if (net->relays_configured) net->relay_count = 0; /* the command line's instead */
      net->relays_configured = false;
      if (net->relay_count == 4) return kp_cli_usage_error(cmd, "at most 4 --relay");
      net->relays[net->relay_count++] = arg;
      return 0;
    case KP_CLI_OPT_TCP_RELAY: net->tcp_relay = arg; return 0;
    case KP_CLI_OPT_PROXY: net->proxy = arg; return 0;
    case KP_CLI_OPT_PRIVATE: net->proxy_private = true; return 0;
    case KP_CLI_OPT_NO_PORT_MAPPING: net->no_port_mapping = true; return 0;
    case KP_CLI_OPT_LOG:
      if (kp_log_level_parse(arg, &net->log_level))
        return kp_cli_usage_error(cmd, "unknown log level '%s'", arg);
      return 0;
    default: return kp_cli_usage_error(cmd, "unknown option");
  }
}

static bool reached_dht(void *ctx) {
  kp_node_stats_t st;
  kp_node_stats(ctx, &st);
  return st.responses_in > 0;
}

/* Whether this host has a global IPv6 address (2000::/3) to be reached
 * at: what a bootstrap name's AAAA records are good for. */
static bool host_has_global_v6(void) {
  uv_interface_address_t *ifs;
  int count;
  bool found = false;
  if (uv_interface_addresses(&ifs, &count)) return false;
  for (int i = 0; i < count && !found; i++) {
    const struct sockaddr_in6 *a = &ifs[i].address.address6;
    found = !ifs[i].is_internal && a->sin6_family == AF_INET6 &&
            (a->sin6_addr.s6_addr[0] & 0xe0) == 0x20;
  }
  uv_free_interface_addresses(ifs, count);
  return found;
}

/* Without --bind the node takes the bootstrap nodes' families: IPv4
 * (0.0.0.0:0) unless every one is an IPv6 literal ([::]:0), both (a
 * dual-stack node) when there are literals of both, or names on a host
 * with a global IPv6 address (a name's A and AAAA records both count). So
 * `--bootstrap [2001:db8::10]:49737` alone makes an IPv6 node rather than
 * an error. */
static void binds_for(const kp_cli_net_t *net, const char **bind, const char **bind_also) {
  *bind = net->bind;
  *bind_also = net->bind_also;
  if (net->bind_given || !net->bootstrap[0]) return;
  char copy[sizeof(net->bootstrap)];
  const char *entries[KP_CLI_BOOTSTRAP_MAX];
  snprintf(copy, sizeof(copy), "%s", net->bootstrap);
  size_t n = kp_cli_split_list(copy, entries, KP_CLI_BOOTSTRAP_MAX);
  bool v6 = false, v4 = false, names = false;
  for (size_t i = 0; i < n; i++) {
    kp_addr_t a;
    if (entries[i][0] == '[') {
      v6 = true;
    } else if (!kp_addr_parse(&a, entries[i])) {
      v4 = true;
    } else {
      names = true;
    }
  }
  if (names && host_has_global_v6()) v4 = v6 = true;
  if (names) v4 = true;
  if (v6 && !v4) *bind = "[::]:0";
  if (v6 && v4) *bind_also = "[::]:0";
  /* A proxied node is of one family: the proxy's, when the bootstrap
   * nodes offer both. With the other family's only, the node is of theirs
   * and a dual-stack proxy lends it an address of it (node_proxy.c). */
  if (v6 && v4 && net->proxy && strchr(net->proxy, '[')) *bind = "[::]:0";
}

/* The family a bind names (AF_INET6 for "[...]"), AF_UNSPEC for two. */
static int family_of(const char *bind, const char *bind_also) {
  kp_addr_t local;
  if (bind_also) return AF_UNSPEC;
  return kp_addr_parse(&local, bind) == 0 && local.family == KP_AF_INET6 ? AF_INET6 : AF_INET;
}

/* One try: a node (over UDP, or tunnelled to tcp_relay), and up to wait_ms
 * for a DHT node to answer. *no_dht: none did. */
static int session_try(kp_cli_session_t *s, const kp_cli_net_t *net, const char *cmd,
                       const char *tcp_relay, unsigned wait_ms, bool *no_dht) {
  memset(s, 0, sizeof(*s));
  *no_dht = false;
  /* Names resolved now: one that does not resolve is said at once. */
  char resolved[KP_CLI_BOOTSTRAP_MAX][KP_ADDR_STRLEN];
  const char *hosts[KP_CLI_BOOTSTRAP_MAX];
  size_t count;
  const char *bind, *bind_also;
  binds_for(net, &bind, &bind_also);
  int rc = kp_cli_bootstrap_resolve(net->bootstrap, family_of(bind, bind_also), resolved,
                                    KP_CLI_BOOTSTRAP_MAX, &count, cmd);
  if (rc) return rc;
  for (size_t i = 0; i < count; i++) hosts[i] = resolved[i];
  kp_prog_session_init(s);
  kp_node_options_t o;
  kp_node_options_init(&o);
  o.bind = bind;
  o.bind_also = tcp_relay || net->proxy ? NULL : bind_also;
  o.mode = net->mode;
  o.log_level = net->log_level;
  o.log_cb = kp_cli_log_sink;
  o.bootstrap = hosts;
  o.bootstrap_count = count;
  o.relays = net->relays;
  o.relay_count = net->relay_count;
  o.relay = net->run_relay;
  o.relay_only = net->relay_only;
  o.relay_limits = net->relay_limits;
  o.tcp_relay = tcp_relay;
  o.proxy = tcp_relay ? NULL : net->proxy;
  o.proxy_identity = net->identity;
  o.proxy_private = net->proxy_private;
  o.port_mapping = !net->no_port_mapping;
  int err = kp_node_create(&s->loop, &o, &s->node);
  if (err) {
    fprintf(
        stderr, "kadpunch %s: cannot start a node on %s: %s\n", cmd, tcp_relay ? tcp_relay : bind,
        err == KP_EBADADDR && count ? "invalid --bind, --bootstrap, --tcp-relay or --proxy address"
                                    : kp_strerror(err));
    kp_prog_session_close(s, "kadpunch");
    return err == KP_EBADADDR || err == KP_ECONFIG ? KP_EXIT_USAGE : KP_EXIT_FAIL;
  }
  if (!count) {
    fprintf(stderr,
            "kadpunch %s: no bootstrap nodes: pass --bootstrap HOST:PORT, set "
            "KADPUNCH_BOOTSTRAP, or write `bootstrap HOST:PORT` in ~/.config/kadpunch/config "
            "(docs/config.md)\n",
            cmd);
    kp_cli_session_close(s);
    return KP_EXIT_USAGE;
  }
  if (!kp_cli_session_run(s, reached_dht, s->node, wait_ms)) {
    *no_dht = !s->signalled;
    kp_cli_session_close(s);
    return KP_EXIT_FAIL;
  }
  return 0;
}

int kp_cli_session_open(kp_cli_session_t *s, const kp_cli_net_t *net_in, const char *cmd) {
  bool no_dht;
  kp_cli_net_t found;
  char proxy[KP_CLI_PROXY_TEXT];
  const kp_cli_net_t *net = net_in;
  if (net_in->proxy_private && !net_in->proxy)
    return kp_cli_usage_error(cmd, "--private keeps a proxied node's addresses: it needs --proxy");
  if (net_in->proxy && kp_cli_proxy_by_dht(net_in->proxy)) {
    int rc = kp_cli_proxy_find(net_in, cmd, proxy, sizeof(proxy));
    if (rc) return rc;
    found = *net_in;
    found.proxy = proxy;
    net = &found;
  }
  if (net->proxy) {
    /* The node tries each proxy over UDP (5 s each), then the list over
     * TCP if none answered there: 10 s for that. */
    unsigned proxies = 1;
    for (const char *p = net->proxy; *p; p++) proxies += *p == ',';
    unsigned wait_ms = 5000 * proxies + 10000;
    int rc = session_try(s, net, cmd, NULL, wait_ms, &no_dht);
    if (rc && no_dht)
      fprintf(stderr,
              "kadpunch %s: no DHT node answered within %u s through proxy %s (bootstrap: %s); "
              "check that the proxy runs and its ports are reachable\n",
              cmd, wait_ms / 1000, net->proxy, net->bootstrap);
    return rc;
  }
  const char *tcp = net->tcp_relay;
  /* With a relay to fall back on, UDP gets 3 s to show it works. */
  bool fallback = !tcp && net->relay_count && !net->run_relay;
  int rc = session_try(s, net, cmd, tcp, fallback ? 3000 : 10000, &no_dht);
  if (rc && no_dht && fallback) {
    fprintf(stderr, "kadpunch %s: no DHT node answered over UDP in 3 s; trying relay %s over TCP\n",
            cmd, net->relays[0]);
    tcp = net->relays[0];
    rc = session_try(s, net, cmd, tcp, 10000, &no_dht);
  }
  if (rc && no_dht)
    fprintf(stderr,
            tcp ? "kadpunch %s: no DHT node answered within 10 s through relay %s over TCP "
                  "(bootstrap: %s); check that the relay runs and its TCP port is reachable\n"
                : "kadpunch %s: no DHT node answered within 10 s%s(bootstrap: %s); check the "
                  "address, and whether this network lets UDP out (if not, pass --relay or "
                  "--tcp-relay)\n",
            cmd, tcp ? tcp : " ", net->bootstrap);
  return rc;
}

bool kp_cli_session_run(kp_cli_session_t *s, bool (*pred)(void *ctx), void *ctx,
                        unsigned timeout_ms) {
  return kp_prog_session_run(s, pred, ctx, timeout_ms);
}

int kp_cli_session_close(kp_cli_session_t *s) {
  return kp_prog_session_close(s, "kadpunch");
}

const char *kp_cli_default_key_path(void) {
  static char path[4096];
  const char *env = getenv("KADPUNCH_KEY");
  if (env && *env) return env;
  if (kp_cli_settings()->key[0]) return kp_cli_settings()->key;
  const char *home = getenv("HOME");
  snprintf(path, sizeof(path), "%s/.kadpunch/key", home && *home ? home : ".");
  return path;
}

int kp_cli_load_key(const char *path, kp_keypair_t *kp, const char *cmd) {
  int err = kp_key_file_read(path, kp);
  if (!err) return 0;
  switch (err) {
    case KP_EKEYPERM:
      fprintf(stderr,
              "kadpunch %s: %s: secret key file is readable by group or others; refusing to use "
              "it (fix: chmod 600 %s)\n",
              cmd, path, path);
      break;
    case KP_EKEYFORMAT:
      fprintf(stderr, "kadpunch %s: %s: not a kadpunch key file, or a damaged one\n", cmd, path);
      break;
    case UV_ENOENT:
      fprintf(stderr, "kadpunch %s: %s: no such key file (create one: kadpunch keygen -o %s)\n",
              cmd, path, path);
      break;
    default: fprintf(stderr, "kadpunch %s: %s: %s\n", cmd, path, kp_strerror(err)); break;
  }
  return KP_EXIT_USAGE;
}

int kp_cli_identity(const char *key_path, kp_keypair_t *kp, const char *cmd) {
  const char *path = key_path ? key_path : kp_cli_default_key_path();
  if (key_path || access(path, F_OK) == 0) return kp_cli_load_key(path, kp, cmd);
  kp_keypair_generate(kp);
  fprintf(stderr, "kadpunch %s: no key file at %s: using a throwaway key\n", cmd, path);
  return 0;
}

int kp_cli_identity_kept(const char *key_path, const char *cmd, const char **used) {
  const char *path = key_path ? key_path : kp_cli_default_key_path();
  *used = path;
  if (key_path || access(path, F_OK) == 0) return 0;
  /* The default folder is ours to make, as keygen does. */
  char dir[4096];
  snprintf(dir, sizeof(dir), "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash && slash != dir) {
    *slash = '\0';
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
      fprintf(stderr, "kadpunch %s: cannot create %s for a key: %s\n", cmd, dir, strerror(errno));
      return KP_EXIT_FAIL;
    }
  }
  kp_keypair_t kp;
  kp_keypair_generate(&kp);
  int err = kp_key_file_write(path, &kp, false);
  char text[KP_KEY_TEXT_LEN + 1];
  kp_key_to_text(kp.public_key, text);
  kp_keypair_wipe(&kp);
  if (err) {
    fprintf(stderr, "kadpunch %s: cannot write a key to %s: %s\n", cmd, path, kp_strerror(err));
    return KP_EXIT_FAIL;
  }
  fprintf(stderr, "kadpunch %s: no key file at %s: made one (mode 0600), public key %s\n", cmd,
          path, text);
  return 0;
}

int kp_cli_target(const char *topic, const char *key_text, uint8_t target[KP_ID_LEN],
                  const char *cmd) {
  if (key_text) {
    uint8_t pk[KP_PUBLIC_KEY_LEN];
    if (kp_key_from_text(key_text, pk))
      return kp_cli_usage_error(cmd, "'%s' is not a public key (52 z-base-32 characters)",
                                key_text);
    kp_target_from_key(pk, target);
    return 0;
  }
  if (!topic || !*topic) return kp_cli_usage_error(cmd, "a topic is required");
  kp_target_from_topic(topic, strlen(topic), target);
  return 0;
}

const char *kp_cli_local_addrs(kp_node_t *node, char *buf, size_t cap) {
  kp_addr_t local;
  char one[KP_ADDR_STRLEN];
  kp_node_local_addr(node, &local);
  snprintf(buf, cap, "%s", kp_addr_format(&local, one, sizeof(one)));
  kp_node_t *v6 = node->sibling ? kp__node_of_family(node, KP_AF_INET6) : NULL;
  if (v6 && v6 != node) {
    size_t n = strlen(buf);
    snprintf(buf + n, cap - n, " and %s", kp_addr_format(&v6->sock.local, one, sizeof(one)));
  }
  return buf;
}
