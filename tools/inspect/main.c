/* SPDX-License-Identifier: MIT */
/* kadpunch-inspect: see the DHT from inside. Subcommands and the options
 * they share; each subcommand lives in its own file. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "tools/inspect/inspect.h"

typedef struct command_s {
  const char *name;
  const char *summary;
  int (*run)(int argc, char **argv);
} command_t;

static const command_t commands[] = {
    {"ping", "one DHT node: id, round trip, membership, the address it sees", kp_inspect_ping},
    {"find-node", "the closest nodes to a target, with hops and round trips", kp_inspect_find_node},
    {"lookup", "the records under a topic or key, signatures checked", kp_inspect_lookup},
    {"nat", "what this machine is behind: public address, mapping, filtering, IPv6",
     kp_inspect_nat},
    {"crawl", "walk the whole DHT: nodes, membership, round trips, id-space coverage",
     kp_inspect_crawl},
    {"table", "a running node's routing table (control socket)", kp_inspect_table},
    {"records", "a running node's stored records (control socket)", kp_inspect_records},
    {"stats", "a running node's counters (control socket)", kp_inspect_stats},
};

static void usage(FILE *out) {
  fprintf(out, "usage: kadpunch-inspect COMMAND [options]   (COMMAND --help for details)\n\n"
               "commands:\n");
  for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
    fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
  fprintf(out, "  %-10s %s\n", "version", "print the version");
  fprintf(out, "\nEvery command prints tables, or one JSON object with --json "
               "(docs/inspect.md).\n"
               "exit codes: 0 success, 1 the operation failed, 2 bad command line\n");
}

void kp_inspect_opts_init(kp_inspect_opts_t *o, const char *cmd) {
  memset(o, 0, sizeof(*o));
  o->cmd = cmd;
  o->log_level = KP_LOG_WARN;
  const char *env = getenv("KADPUNCH_BOOTSTRAP");
  if (env) snprintf(o->bootstrap, sizeof(o->bootstrap), "%s", env);
}

int kp_inspect_option(kp_inspect_opts_t *o, int opt, const char *arg) {
  switch (opt) {
    case KP_INSPECT_OPT_BIND: o->bind = arg; return 0;
    case KP_INSPECT_OPT_BOOTSTRAP:
      if (strlen(arg) >= sizeof(o->bootstrap))
        return kp_inspect_usage(o->cmd, "--bootstrap list too long");
      snprintf(o->bootstrap, sizeof(o->bootstrap), "%s", arg);
      return 0;
    case KP_INSPECT_OPT_LOG:
      if (kp_log_level_parse(arg, &o->log_level))
        return kp_inspect_usage(o->cmd, "unknown log level '%s'", arg);
      return 0;
    case KP_INSPECT_OPT_JSON: o->json = true; return 0;
    default: return kp_inspect_usage(o->cmd, "unknown option");
  }
}

int kp_inspect_usage(const char *cmd, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "kadpunch-inspect %s: ", cmd);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n(try: kadpunch-inspect %s --help)\n", cmd);
  return KP_EXIT_USAGE;
}

int kp_inspect_fail(const char *cmd, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "kadpunch-inspect %s: ", cmd);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  return KP_EXIT_FAIL;
}

bool kp_inspect_parse_uint(const char *text, unsigned long min, unsigned long max,
                           unsigned long *out) {
  char *end;
  if (!text || !*text || *text == '-') return false;
  unsigned long v = strtoul(text, &end, 10);
  if (*end || v < min || v > max) return false;
  *out = v;
  return true;
}

int main(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "help") || !strcmp(argv[1], "--help") ||
      !strcmp(argv[1], "-h")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? KP_EXIT_USAGE : KP_EXIT_OK;
  }
  if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
    printf("kadpunch-inspect %s\n", kp_version_string());
    return KP_EXIT_OK;
  }
  for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
    if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
  fprintf(stderr, "kadpunch-inspect: unknown command '%s'\n\n", argv[1]);
  usage(stderr);
  return KP_EXIT_USAGE;
}
