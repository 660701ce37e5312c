/* SPDX-License-Identifier: MIT */
/* kadpunch dht-node: run one DHT node until SIGINT/SIGTERM. */
#include <getopt.h>
#include <signal.h>
#include <string.h>

#include "common/addr.h"
#include "common/log.h"
#include "node/cli/cli.h"
#include "node/cli/cli_metrics.h"
#include "node/control.h"

static const char help[] =
    "usage: kadpunch dht-node [options]\n"
    "\n"
    "Runs a DHT node and prints its id, public address, membership and routing\n"
    "table size whenever they change. Stops cleanly on SIGINT or SIGTERM.\n"
    "\n"
    "options:\n"
    "  --bind ADDR:PORT        local address (default 0.0.0.0:49737; [::]:PORT for IPv6;\n"
    "                          twice, one of each family, for a dual-stack node)\n"
    "  --bootstrap HOST:PORT   bootstrap node(s), comma separated, names allowed\n"
    "  --ephemeral             never join routing tables (a client)\n"
    "  --member                always a routing-table member (bootstrap nodes)\n"
    "  --stable-ms N           address stability needed before joining (default 20000)\n"
    "  --no-port-mapping       do not ask the gateway to forward a port to this\n"
    "                          node (PCP, NAT-PMP or UPnP-IGD; asked by default)\n"
    "  --log LEVEL             error, warn, info (default), debug, trace\n"
    "  --control PATH          answer kadpunch-inspect (table, records, stats) on a\n"
    "                          unix socket at PATH, owner-only (mode 0600)\n"
    "  --metrics ADDR:PORT     Prometheus metrics over HTTP at /metrics\n"
    "                          (docs/metrics.md; PORT alone is 127.0.0.1:PORT)\n"
    "\n"
    "examples:\n"
    "  kadpunch dht-node --bind 203.0.113.7:49737 --member        # a bootstrap node\n"
    "  kadpunch dht-node --bootstrap 203.0.113.7:49737             # join through it\n"
    "  kadpunch dht-node --member --control ~/.kadpunch/control.sock\n"
    "  kadpunch-inspect table --control ~/.kadpunch/control.sock     # then, alongside\n"
    "\n"
    "exit codes: 0 stopped by a signal, 1 runtime failure, 2 bad options\n";

typedef struct {
  kp_node_t *node;
  kp_control_t *control;
  kp_cli_metrics_t *metrics;
  uv_timer_t status;
  bool member;
  uint32_t table;
  bool has_public;
  kp_addr_t public_addr;
} state_t;

static void print_status(state_t *s, bool force) {
  kp_node_stats_t st;
  kp_addr_t pub;
  bool has_public = kp_node_public_addr(s->node, &pub) == 0;
  bool member = kp_node_is_member(s->node);
  kp_node_stats(s->node, &st);
  if (!force && member == s->member && st.table_size == s->table && has_public == s->has_public &&
      (!has_public || kp_addr_eq(&pub, &s->public_addr)))
    return;
  s->member = member;
  s->table = st.table_size;
  s->has_public = has_public;
  s->public_addr = pub;
  char id[2 * KP_ID_LEN + 1], addr[KP_ADDR_STRLEN];
  kp_cli_stamp(stdout);
  printf("id %s  public %s  %s  table %u\n",
         member ? kp_cli_hex(kp_node_id(s->node), KP_ID_LEN, id) : "(none: ephemeral)",
         has_public ? kp_addr_format(&pub, addr, sizeof(addr)) : "(unknown)",
         member ? "member" : "ephemeral", st.table_size);
  fflush(stdout);
}

static void on_status(uv_timer_t *t) {
  print_status(t->data, false);
}

/* A signal came: the status timer, the control socket (its commands read
 * the node) and the metrics go before the session closes the node. */
static void stop(state_t *s) {
  printf("signal: stopping\n");
  uv_close((uv_handle_t *)&s->status, NULL);
  kp_control_close(s->control);
  s->control = NULL;
  kp_cli_metrics_close(s->metrics);
  s->metrics = NULL;
}

/* Returns 0, or an exit code after saying what is wrong with path. */
static int start_control(state_t *s, const char *path) {
  /* A control client that hangs up before its answer must not kill us. */
  signal(SIGPIPE, SIG_IGN);
  int err = kp_control_start(s->node, path, &s->control);
  if (!err) return KP_EXIT_OK;
  const char *why = kp_strerror(err);
  switch (err) {
    case UV_EEXIST: why = "it exists and is not a socket; refusing to replace it"; break;
    case UV_EADDRINUSE: why = "another process already answers on it"; break;
    case UV_ENAMETOOLONG: why = "the path is too long for a unix socket (107 bytes at most)"; break;
    case UV_ENOENT: why = "its directory does not exist"; break;
    case UV_EACCES:
    case UV_EPERM: why = "permission denied (can this user write to its directory?)"; break;
    default: break;
  }
  fprintf(stderr, "kadpunch dht-node: cannot open control socket %s: %s\n", path, why);
  return err == UV_EADDRINUSE ? KP_EXIT_FAIL : KP_EXIT_USAGE;
}

typedef struct args_s {
  kp_node_options_t opts;
  const char *boot[16];
  const char *control;
  const char *metrics;
} args_t;

/* Returns 0, -1 after --help, or an exit code after saying what is wrong. */
static int parse(int argc, char **argv, args_t *a) {
  static const struct option longopts[] = {{"bind", required_argument, 0, 'b'},
                                           {"bootstrap", required_argument, 0, 'B'},
                                           {"ephemeral", no_argument, 0, 'e'},
                                           {"member", no_argument, 0, 'm'},
                                           {"stable-ms", required_argument, 0, 's'},
                                           {"log", required_argument, 0, 'l'},
                                           {"control", required_argument, 0, 'c'},
                                           {"metrics", required_argument, 0, 'M'},
                                           {"no-port-mapping", no_argument, 0, 'P'},
                                           {"help", no_argument, 0, 'h'},
                                           {0, 0, 0, 0}};
  kp_node_options_t *opts = &a->opts;
  kp_node_options_init(opts);
  opts->bind = "0.0.0.0:49737";
  opts->log_level = KP_LOG_INFO;
  opts->log_cb = kp_cli_log_sink;
  a->control = NULL;
  a->metrics = NULL;
  char *boot_arg = NULL;
  bool bind_given = false;
  unsigned long v;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
      case 'b':
        /* Twice, one of each family: a dual-stack node. */
        if (bind_given && opts->bind_also)
          return kp_cli_usage_error("dht-node", "at most two --bind, one of each family");
        if (bind_given) opts->bind_also = optarg;
        if (!bind_given) opts->bind = optarg;
        bind_given = true;
        break;
      case 'B': boot_arg = optarg; break;
      case 'e': opts->mode = KP_NODE_EPHEMERAL; break;
      case 'm': opts->mode = KP_NODE_MEMBER; break;
      case 's':
        if (!kp_cli_parse_uint(optarg, 0, 86400000, &v))
          return kp_cli_usage_error("dht-node", "--stable-ms wants milliseconds, got '%s'", optarg);
        opts->member_stable_ms = (unsigned)v;
        break;
      case 'l':
        if (kp_log_level_parse(optarg, &opts->log_level))
          return kp_cli_usage_error("dht-node", "unknown log level '%s'", optarg);
        break;
      case 'c': a->control = optarg; break;
      case 'P': opts->port_mapping = false; break;
      case 'M': a->metrics = optarg; break;
      case 'h': fputs(help, stdout); return -1;
      default: return kp_cli_usage_error("dht-node", "unknown option");
    }
  }
  if (optind < argc)
    return kp_cli_usage_error("dht-node", "unexpected argument '%s'", argv[optind]);
  if (boot_arg) {
    opts->bootstrap = a->boot;
    opts->bootstrap_count = kp_cli_split_list(boot_arg, a->boot, 16);
  }
  return 0;
}

/* The node and, with --control, its control socket, in the session.
 * Returns 0 or an exit code (the session is then closed). */
static int start(kp_prog_session_t *ps, const args_t *a, state_t *s) {
  uv_loop_t *loop = &ps->loop;
  int err = kp_node_create(loop, &a->opts, &s->node);
  if (err) {
    fprintf(stderr, "kadpunch dht-node: cannot start on %s: %s\n", a->opts.bind, kp_strerror(err));
    kp_prog_session_close(ps, "kadpunch dht-node");
    return err == KP_EBADADDR || err == KP_ECONFIG ? KP_EXIT_USAGE : KP_EXIT_FAIL;
  }
  ps->node = s->node;
  if (a->control && (err = start_control(s, a->control))) {
    kp_prog_session_close(ps, "kadpunch dht-node");
    return err;
  }
  char text[KP_CLI_ADDRS_LEN];
  printf("dht node on %s (%s)\n", kp_cli_local_addrs(s->node, text, sizeof(text)),
         a->opts.mode == KP_NODE_MEMBER      ? "member"
         : a->opts.mode == KP_NODE_EPHEMERAL ? "ephemeral"
                                             : "auto");
  if (s->control) printf("control socket %s\n", kp_control_path(s->control));
  fflush(stdout);
  if (a->metrics && (err = kp_cli_metrics_start(loop, s->node, a->metrics, "dht-node", NULL, NULL,
                                                &s->metrics))) {
    kp_control_close(s->control);
    kp_prog_session_close(ps, "kadpunch dht-node");
    return err;
  }
  return 0;
}

int kp_cli_dht_node(int argc, char **argv) {
  args_t a;
  int rc = parse(argc, argv, &a);
  if (rc) return rc < 0 ? KP_EXIT_OK : rc;
  kp_prog_session_t ps;
  kp_prog_session_init(&ps);
  state_t s;
  memset(&s, 0, sizeof(s));
  if ((rc = start(&ps, &a, &s))) return rc;
  uv_timer_init(&ps.loop, &s.status);
  s.status.data = &s;
  uv_timer_start(&s.status, on_status, 1000, 1000);
  print_status(&s, true);
  kp_prog_session_run(&ps, NULL, NULL, 0); /* until SIGINT or SIGTERM */
  stop(&s);
  return kp_prog_session_close(&ps, "kadpunch dht-node");
}
