/* SPDX-License-Identifier: MIT */
/* kadpunch-inspect table, records, stats: a running node's state, read
 * over its control socket and printed as tables (or passed on as JSON). */
#include <string.h>

#include "common/alloc.h"
#include "tools/inspect/control_client.h"

static const char help_fmt[] =
    "usage: kadpunch-inspect %s [--control PATH] [--json]\n"
    "\n"
    "%s"
    "\n"
    "Reads it from a running node's control socket: a node started with\n"
    "--control PATH (kadpunch dht-node --control PATH, or the daemon). The\n"
    "socket is owner-only: run this as the user that runs the node.\n"
    "\n"
    "options:\n"
    "  --control PATH          the socket (default $KADPUNCH_CONTROL, else\n"
    "                          ~/.kadpunch/control.sock)\n"
    "  --json                  print the node's JSON answer (docs/inspect.md)\n"
    "\n"
    "examples:\n"
    "  kadpunch dht-node --member --control /run/kadpunch/control.sock &\n"
    "  kadpunch-inspect %s --control /run/kadpunch/control.sock\n"
    "\n"
    "exit codes: 0 success, 1 no node answered on the socket (none running,\n"
    "permission denied, not a socket) or it refused, 2 bad options\n";

typedef void (*render_fn)(const kp_json_t *answer);

static const char *str_or(const kp_json_t *o, const char *key, const char *fallback) {
  const char *s = kp_json_get_str(o, key);
  return s ? s : fallback;
}

static unsigned long long u(const kp_json_t *o, const char *key) {
  return (unsigned long long)kp_json_get_num(o, key, 0);
}

/* ---- table ------------------------------------------------------------------ */

static void render_table(const kp_json_t *a) {
  const char *id = kp_json_get_str(a, "id");
  printf("routing table of %.16s%s (%s): %llu nodes, k = %llu\n", id ? id : "(no id yet)",
         id ? "..." : "", kp_json_get_bool(a, "member", false) ? "member" : "ephemeral",
         u(a, "count"), u(a, "k"));
  const kp_json_t *buckets = kp_json_get(a, "buckets");
  printf("buckets (shared bits: nodes):");
  for (const kp_json_t *b = buckets ? buckets->child : NULL; b; b = b->next)
    printf(" %llu:%llu", u(b, "bucket"), u(b, "count"));
  printf("\n  %6s  %-16s  %-26s  %6s  %5s\n", "BUCKET", "NODE ID", "ADDRESS", "AGE s", "FAILS");
  const kp_json_t *nodes = kp_json_get(a, "nodes");
  for (const kp_json_t *n = nodes ? nodes->child : NULL; n; n = n->next)
    printf("  %6llu  %.16s  %-26s  %6llu  %5llu\n", u(n, "bucket"), str_or(n, "id", "?"),
           str_or(n, "addr", "?"), u(n, "age_s"), u(n, "fails"));
}

/* ---- records ---------------------------------------------------------------- */

static void render_records(const kp_json_t *a) {
  printf("%llu records (%llu announce, %llu mutable, %llu immutable; %llu tombstones), %llu "
         "bytes\n",
         u(a, "count"), u(a, "announce"), u(a, "mutable"), u(a, "immutable"), u(a, "tombstones"),
         u(a, "bytes"));
  const kp_json_t *recs = kp_json_get(a, "records");
  if (recs && recs->child)
    printf("  %-9s  %-16s  %-16s  %13s  %7s  %5s  %s\n", "KIND", "TARGET", "PUBLIC KEY", "SEQ",
           "EXPIRES", "SIZE", "WRITTEN FROM / RELAYS");
  for (const kp_json_t *r = recs ? recs->child : NULL; r; r = r->next) {
    printf("  %-9s  %.16s  %-16.16s  %13llu  %6llus  %5llu  from %s",
           kp_json_get_bool(r, "tombstone", false) ? "withdrawn" : str_or(r, "kind", "?"),
           str_or(r, "target", "?"), str_or(r, "public_key", "-"), u(r, "seq"),
           u(r, "expires_in_s"), u(r, "size"), str_or(r, "origin", "?"));
    const kp_json_t *relays = kp_json_get(r, "relays");
    if (relays && relays->child) printf("  relays");
    for (const kp_json_t *x = relays ? relays->child : NULL; x; x = x->next)
      if (x->type == KP_JSON_STRING) printf(" %s", x->str);
    printf("\n");
  }
  if (kp_json_get_bool(a, "truncated", false)) printf("  (the first %llu shown)\n", u(a, "shown"));
}

/* ---- stats ------------------------------------------------------------------ */

static void render_object(const char *title, const kp_json_t *o) {
  if (!o || o->type != KP_JSON_OBJECT) {
    printf("%-10s -\n", title);
    return;
  }
  printf("%-10s", title);
  unsigned col = 0;
  for (const kp_json_t *m = o->child; m; m = m->next, col++)
    printf("%s%s %llu", col && col % 4 == 0 ? "\n           " : " ", m->key,
           (unsigned long long)m->number);
  printf("\n");
}

static void render_stats(const kp_json_t *a) {
  const char *id = kp_json_get_str(a, "id");
  printf("%-10s %s%s  %s%s\n", "node", id ? id : "(no id yet)", "",
         kp_json_get_bool(a, "member", false) ? "member" : "ephemeral",
         kp_json_get_bool(a, "joined", false) ? ", joined" : "");
  printf("%-10s %s\n", "version", str_or(a, "version", "?"));
  printf("%-10s local %s  public %s\n", "address", str_or(a, "local", "?"),
         str_or(a, "public", "(unknown)"));
  printf("%-10s %s, %s\n", "nat", str_or(a, "nat", "?"),
         kp_json_get_bool(a, "reachable", false) ? "reachable from outside (PING_NAT)"
                                                 : "not shown reachable");
  printf("%-10s %llu nodes, %llu requests in flight\n", "table", u(a, "table_size"),
         u(a, "inflight"));
  render_object("store", kp_json_get(a, "store"));
  render_object("relay", kp_json_get(a, "relay"));
  render_object("counters", kp_json_get(a, "counters"));
}

/* ---- The three commands --------------------------------------------------------- */

static int run(int argc, char **argv, const char *cmd, const char *what, render_fn render) {
  static const struct option longopts[] = {{"control", required_argument, 0, 'c'},
                                           {"json", no_argument, 0, 'j'},
                                           {"help", no_argument, 0, 'h'},
                                           {0, 0, 0, 0}};
  const char *path = kp_inspect_control_default();
  bool json = false;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
      case 'c': path = optarg; break;
      case 'j': json = true; break;
      case 'h': printf(help_fmt, cmd, what, cmd); return KP_EXIT_OK;
      default: return kp_inspect_usage(cmd, "unknown option");
    }
  }
  if (optind < argc) return kp_inspect_usage(cmd, "unexpected argument '%s'", argv[optind]);
  char request[64], *line;
  size_t len;
  snprintf(request, sizeof(request), "{\"cmd\":\"%s\"}\n", cmd);
  int rc = kp_inspect_control_ask(cmd, path, request, &line, &len);
  if (rc) return rc;
  kp_json_t *answer = NULL;
  if (kp_json_parse(line, len, &answer, NULL) || answer->type != KP_JSON_OBJECT) {
    rc = kp_inspect_fail(cmd, "the answer from %s is not JSON", path);
  } else if (!kp_json_get_bool(answer, "ok", false)) {
    rc = kp_inspect_fail(cmd, "the node refused: %s", str_or(answer, "error", "(no reason)"));
  } else if (json) {
    printf("%s\n", line);
  } else {
    render(answer);
  }
  kp_json_free(answer);
  kp_free(line);
  return rc;
}

int kp_inspect_table(int argc, char **argv) {
  return run(argc, argv, "table",
             "Prints a running node's routing table: its id, how many nodes each\n"
             "bucket holds, and every entry with its address, its bucket (bits shared\n"
             "with our id), how long ago it was last heard from and its failures.\n",
             render_table);
}

int kp_inspect_records(int argc, char **argv) {
  return run(argc, argv, "records",
             "Prints the records a running node stores for others: announcements\n"
             "(with their relays), mutable and immutable values and withdrawals, each\n"
             "with its target, key, sequence number, time left and size.\n",
             render_records);
}

int kp_inspect_stats(int argc, char **argv) {
  return run(argc, argv, "stats",
             "Prints a running node's state and counters: id, membership, addresses,\n"
             "NAT type, table size, record store, relay, and its packet counters.\n",
             render_stats);
}
