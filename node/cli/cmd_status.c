/* SPDX-License-Identifier: MIT */
/* kadpunch status: the live connections of a running serve, daemon or
 * connect --listen, read over its control socket (request "connections",
 * docs/inspect.md), like `tailscale status`. */
#include <getopt.h>
#include <inttypes.h>
#include <string.h>

#include "common/alloc.h"
#include "node/cli/cli.h"
#include "node/json.h"

static const char help[] =
    "usage: kadpunch status [--control PATH] [--json]\n"
    "\n"
    "Lists the live connections of a running `kadpunch serve`, `kadpunch\n"
    "daemon` or `kadpunch connect --listen` (started with --control PATH; the\n"
    "daemon has STATE/control.sock): the peer (its key, and its name if the\n"
    "config file gives one), the service, the path (how it was made, then\n"
    "direct or relayed after a change) and its address, the round-trip time,\n"
    "the bytes each way, the age, and how often the path changed.\n"
    "\n"
    "options:\n"
    "  --control PATH  the control socket (default $KADPUNCH_CONTROL, else\n"
    "                  ~/.kadpunch/control.sock)\n"
    "  --json          the answer as it came: {\"ok\":true,\"connections\":[...]}\n"
    "\n"
    "examples:\n"
    "  kadpunch status --control /var/lib/kadpunch/control.sock\n"
    "  kadpunch status --json | jq '.connections[].rtt_us'\n"
    "\n"
    "exit codes: 0 listed, 1 nothing answers on the socket (none running,\n"
    "permission denied, not a socket), 2 bad options\n";

static uint64_t u(const kp_json_t *o, const char *key) {
  double v = kp_json_get_num(o, key, 0);
  return v > 0 ? (uint64_t)v : 0;
}

/* 1536 -> "1.5 KiB". */
static const char *size_text(uint64_t n, char *buf, size_t cap) {
  static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = (double)n;
  size_t i = 0;
  while (v >= 1024 && i < 4) v /= 1024, i++;
  snprintf(buf, cap, i ? "%.1f %s" : "%.0f %s", v, units[i]);
  return buf;
}

/* 75000 -> "1m15s". */
static const char *age_text(uint64_t ms, char *buf, size_t cap) {
  uint64_t s = ms / 1000;
  if (s < 60)
    snprintf(buf, cap, "%" PRIu64 "s", s);
  else if (s < 3600)
    snprintf(buf, cap, "%" PRIu64 "m%02" PRIu64 "s", s / 60, s % 60);
  else
    snprintf(buf, cap, "%" PRIu64 "h%02" PRIu64 "m", s / 3600, s / 60 % 60);
  return buf;
}

static void render(const kp_json_t *a) {
  uint64_t count = u(a, "count");
  printf("%" PRIu64 " connection%s\n", count, count == 1 ? "" : "s");
  if (!count) return;
  printf("%-30s %-10s %-8s %-24s %9s %10s %10s %7s %7s\n", "PEER", "SERVICE", "PATH", "ADDRESS",
         "RTT", "IN", "OUT", "AGE", "CHANGES");
  const kp_json_t *list = kp_json_get(a, "connections");
  for (const kp_json_t *c = list ? list->child : NULL; c; c = c->next) {
    const char *key = kp_json_get_str(c, "peer"), *host = kp_json_get_str(c, "host");
    const char *svc = kp_json_get_str(c, "service"), *path = kp_json_get_str(c, "path");
    const char *addr = kp_json_get_str(c, "address");
    char peer[96], in[24], out[24], age[24], rtt[24];
    if (host)
      snprintf(peer, sizeof(peer), "%s (%.8s)", host, key ? key : "?");
    else
      snprintf(peer, sizeof(peer), "%.16s...", key ? key : "?");
    if (u(c, "rtt_us"))
      snprintf(rtt, sizeof(rtt), "%.2f ms", (double)u(c, "rtt_us") / 1000.0);
    else
      snprintf(rtt, sizeof(rtt), "-");
    printf("%-30s %-10s %-8s %-24s %9s %10s %10s %7s %7" PRIu64 "\n", peer,
           svc && *svc ? svc : "default", path ? path : "?", addr ? addr : "?", rtt,
           size_text(u(c, "bytes_in"), in, sizeof(in)),
           size_text(u(c, "bytes_out"), out, sizeof(out)),
           age_text(u(c, "age_ms"), age, sizeof(age)), u(c, "path_changes"));
  }
}

int kp_cli_status(int argc, char **argv) {
  static const struct option longopts[] = {{"control", required_argument, 0, 'c'},
                                           {"json", no_argument, 0, 'j'},
                                           {"help", no_argument, 0, 'h'},
                                           {0, 0, 0, 0}};
  const char *path = NULL;
  bool json = false;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
      case 'c': path = optarg; break;
      case 'j': json = true; break;
      case 'h': fputs(help, stdout); return KP_EXIT_OK;
      default: return kp_cli_usage_error("status", "unknown option");
    }
  }
  if (optind < argc) return kp_cli_usage_error("status", "unexpected argument '%s'", argv[optind]);
  if (!path) path = kp_prog_control_default();
  char *line = NULL;
  size_t len;
  int rc = kp_prog_control_ask("kadpunch status", path, "{\"cmd\":\"connections\"}\n", &line, &len);
  if (rc) return rc;
  kp_json_t *answer = NULL;
  size_t err_at;
  if (kp_json_parse(line, len, &answer, &err_at)) {
    fprintf(stderr, "kadpunch status: %s: not a JSON answer\n", path);
    rc = KP_EXIT_FAIL;
  } else if (!kp_json_get_bool(answer, "ok", false)) {
    const char *why = kp_json_get_str(answer, "error");
    fprintf(stderr, "kadpunch status: %s: %s%s\n", path, why ? why : "refused",
            why && strstr(why, "unknown command")
                ? " (a node without connections: kadpunch-inspect "
                  "stats reads it)"
                : "");
    rc = KP_EXIT_FAIL;
  } else if (json) {
    printf("%s\n", line);
  } else {
    render(answer);
  }
  kp_json_free(answer);
  kp_free(line);
  return rc;
}
