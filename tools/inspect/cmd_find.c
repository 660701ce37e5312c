/* SPDX-License-Identifier: MIT */
/* kadpunch-inspect find-node: the closest nodes to a target, and the way
 * there. */
#include <string.h>

#include "common/alloc.h"
#include "tools/inspect/inspect.h"

static const char help[] =
    "usage: kadpunch-inspect find-node TARGET [options]\n"
    "\n"
    "Runs the DHT's iterative FIND_NODE query towards TARGET and prints the\n"
    "closest nodes found (up to 20), each with the bits its id shares with the\n"
    "target, the hops (referrals) it took to hear of it, and its round trip (a\n"
    "PING after the query); then what the query cost.\n"
    "\n"
    "TARGET is 64 hex digits (an id), a public key (52 z-base-32 characters:\n"
    "the target it announces under), or any other text: a topic, hashed as\n"
    "`kadpunch lookup TOPIC` does.\n"
    "\n"
    "options:\n"
    "  --topic                 read TARGET as a topic whatever it looks like\n" KP_INSPECT_NET_HELP
    "\n"
    "examples:\n"
    "  kadpunch-inspect find-node chat-room-7 --bootstrap 203.0.113.7:49737\n"
    "  kadpunch-inspect find-node 5e3c0000000000000000000000000000"
    "00000000000000000000000000000000 --json\n"
    "\n"
    "exit codes: 0 nodes found, 1 none answered (or the network failed),\n"
    "2 bad options\n";

static int print_json(const kp_inspect_query_t *q, const char *input, const char *kind) {
  kp_jw_t w;
  kp_jw_init(&w, 0);
  kp_jw_obj(&w);
  kp_jw_khex(&w, "target", q->target, KP_ID_LEN);
  kp_jw_kstr(&w, "input", input);
  kp_jw_kstr(&w, "kind", kind);
  kp_jw_kstr(&w, "status", q->status ? kp_err_name(q->status) : "ok");
  kp_inspect_query_json_stats(&w, q);
  kp_inspect_query_json_nodes(&w, q);
  kp_jw_obj_end(&w);
  return kp_inspect_print_json(&w, "find-node");
}

static void print_text(const kp_inspect_query_t *q, const char *input, const char *kind) {
  char hex[2 * KP_ID_LEN + 1];
  printf("target %s  (%s \"%s\")\n", kp_inspect_hex(q->target, KP_ID_LEN, hex), kind, input);
  kp_inspect_query_print_nodes(q);
  printf("%zu closest in %u hops; %u requests, %u responses, %u timeouts, %.1f ms\n", q->count,
         q->stats.hops, q->stats.requests, q->stats.responses, q->stats.timeouts, q->duration_ms);
}

int kp_inspect_find_node(int argc, char **argv) {
  static const struct option longopts[] = {
      {"topic", no_argument, 0, 't'}, KP_INSPECT_NET_OPTIONS, {0, 0, 0, 0}};
  kp_inspect_opts_t o;
  kp_inspect_opts_init(&o, "find-node");
  bool topic = false;
  int c, rc;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
      case 't': topic = true; break;
      case 'h': fputs(help, stdout); return KP_EXIT_OK;
      default:
        if ((rc = kp_inspect_option(&o, c, optarg))) return rc;
    }
  }
  if (optind + 1 < argc)
    return kp_inspect_usage(o.cmd, "unexpected argument '%s'", argv[optind + 1]);
  const char *input = optind < argc ? argv[optind] : NULL, *kind;
  kp_inspect_query_t *q = kp_calloc(1, sizeof(*q));
  if (!q) return kp_inspect_fail(o.cmd, "out of memory");
  if ((rc = kp_inspect_target(o.cmd, input, topic, q->target, &kind))) {
    kp_free(q);
    return rc;
  }
  char text[1024];
  const char *hosts[16];
  int family = kp_inspect_bootstrap_family(&o);
  size_t n = kp_inspect_hosts(&o, family, text, hosts, 16);
  if (!n) {
    kp_free(q);
    return kp_inspect_usage(o.cmd, "no bootstrap node: pass --bootstrap HOST:PORT or set "
                                   "KADPUNCH_BOOTSTRAP");
  }
  kp_inspect_session_t s;
  int err = kp_inspect_session_open(&s, &o, family, hosts, n, 10000);
  if (err) {
    kp_free(q);
    return kp_inspect_session_error(&o, err);
  }
  err = kp_inspect_query_run(&s, q, 60000);
  rc = kp_inspect_session_close(&s);
  if (err || q->status) {
    rc = kp_inspect_fail(o.cmd, "%s", kp_strerror(err ? err : q->status));
  } else if (o.json) {
    rc |= print_json(q, input, kind);
  } else {
    print_text(q, input, kind);
  }
  kp_free(q);
  return rc ? KP_EXIT_FAIL : KP_EXIT_OK;
}
