/* kadpunch dht-node: run one DHT node until SIGINT/SIGTERM. */
#include <getopt.h>
#include <signal.h>
#include <string.h>

#include "common/addr.h"
#include "common/log.h"
#include "node/cli/cli.h"

static const char help[] =
    "usage: kadpunch dht-node [options]\n"
    "\n"
    "Runs a DHT node and prints its id, public address, membership and routing\n"
    "table size whenever they change. Stops cleanly on SIGINT or SIGTERM.\n"
    "\n"
    "options:\n"
    "  --bind ADDR:PORT        local address (default 0.0.0.0:49737; [::]:PORT for IPv6)\n"
    "  --bootstrap HOST:PORT   bootstrap node(s), comma separated, names allowed\n"
    "  --ephemeral             never join routing tables (a client)\n"
    "  --member                always a routing-table member (bootstrap nodes)\n"
    "  --stable-ms N           address stability needed before joining (default 20000)\n"
    "  --log LEVEL             error, warn, info (default), debug, trace\n"
    "\n"
    "examples:\n"
    "  kadpunch dht-node --bind 203.0.113.7:49737 --member        # a bootstrap node\n"
    "  kadpunch dht-node --bootstrap 203.0.113.7:49737             # join through it\n"
    "\n"
    "exit codes: 0 stopped by a signal, 1 runtime failure, 2 bad options\n";

typedef struct {
  kp_node_t *node;
  uv_signal_t sigint, sigterm;
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
  printf("id %s  public %s  %s  table %u\n",
         member ? kp_cli_hex(kp_node_id(s->node), KP_ID_LEN, id) : "(none: ephemeral)",
         has_public ? kp_addr_format(&pub, addr, sizeof(addr)) : "(unknown)",
         member ? "member" : "ephemeral", st.table_size);
  fflush(stdout);
}

static void on_status(uv_timer_t *t) {
  print_status(t->data, false);
}

static void on_closed(kp_node_t *node) {
  (void)node;
}

static void on_signal(uv_signal_t *sig, int signum) {
  state_t *s = sig->data;
  printf("signal %d: stopping\n", signum);
  uv_close((uv_handle_t *)&s->sigint, NULL);
  uv_close((uv_handle_t *)&s->sigterm, NULL);
  uv_close((uv_handle_t *)&s->status, NULL);
  kp_node_close(s->node, on_closed);
}

int kp_cli_dht_node(int argc, char **argv) {
  static const struct option longopts[] = {{"bind", required_argument, 0, 'b'},
                                           {"bootstrap", required_argument, 0, 'B'},
                                           {"ephemeral", no_argument, 0, 'e'},
                                           {"member", no_argument, 0, 'm'},
                                           {"stable-ms", required_argument, 0, 's'},
                                           {"log", required_argument, 0, 'l'},
                                           {"help", no_argument, 0, 'h'},
                                           {0, 0, 0, 0}};
  kp_node_options_t opts;
  kp_node_options_init(&opts);
  opts.bind = "0.0.0.0:49737";
  opts.log_level = KP_LOG_INFO;
  const char *boot[16];
  char *boot_arg = NULL;
  unsigned long v;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    switch (c) {
      case 'b': opts.bind = optarg; break;
      case 'B': boot_arg = optarg; break;
      case 'e': opts.mode = KP_NODE_EPHEMERAL; break;
      case 'm': opts.mode = KP_NODE_MEMBER; break;
      case 's':
        if (!kp_cli_parse_uint(optarg, 0, 86400000, &v))
          return kp_cli_usage_error("dht-node", "--stable-ms wants milliseconds, got '%s'", optarg);
        opts.member_stable_ms = (unsigned)v;
        break;
      case 'l':
        if (kp_log_level_parse(optarg, &opts.log_level))
          return kp_cli_usage_error("dht-node", "unknown log level '%s'", optarg);
        break;
      case 'h': fputs(help, stdout); return KP_EXIT_OK;
      default: return kp_cli_usage_error("dht-node", "unknown option");
    }
  }
  if (optind < argc)
    return kp_cli_usage_error("dht-node", "unexpected argument '%s'", argv[optind]);
  if (boot_arg) {
    opts.bootstrap = boot;
    opts.bootstrap_count = kp_cli_split_list(boot_arg, boot, 16);
  }

  uv_loop_t loop;
  uv_loop_init(&loop);
  state_t s;
  memset(&s, 0, sizeof(s));
  int err = kp_node_create(&loop, &opts, &s.node);
  if (err) {
    fprintf(stderr, "kadpunch dht-node: cannot start on %s: %s\n", opts.bind, kp_strerror(err));
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return err == KP_EBADADDR || err == KP_ECONFIG ? KP_EXIT_USAGE : KP_EXIT_FAIL;
  }
  kp_addr_t local;
  char text[KP_ADDR_STRLEN];
  kp_node_local_addr(s.node, &local);
  printf("dht node on %s (%s)\n", kp_addr_format(&local, text, sizeof(text)),
         opts.mode == KP_NODE_MEMBER      ? "member"
         : opts.mode == KP_NODE_EPHEMERAL ? "ephemeral"
                                          : "auto");
  fflush(stdout);

  uv_signal_init(&loop, &s.sigint);
  uv_signal_init(&loop, &s.sigterm);
  s.sigint.data = s.sigterm.data = &s;
  uv_signal_start(&s.sigint, on_signal, SIGINT);
  uv_signal_start(&s.sigterm, on_signal, SIGTERM);
  uv_timer_init(&loop, &s.status);
  s.status.data = &s;
  uv_timer_start(&s.status, on_status, 1000, 1000);
  print_status(&s, true);

  uv_run(&loop, UV_RUN_DEFAULT);
  int rc = uv_loop_close(&loop);
  if (rc) fprintf(stderr, "kadpunch dht-node: loop did not close cleanly: %s\n", uv_strerror(rc));
  return rc ? KP_EXIT_FAIL : KP_EXIT_OK;
}
