/* SPDX-License-Identifier: MIT */
/* kadpunch: the command-line program. Each subcommand lives in its own file. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "node/cli/cli.h"

static const kp_cli_command_t commands[] = {
    {"demo", "run a local DHT on loopback and show lookups", kp_cli_demo},
    {"dht-node", "run a DHT node", kp_cli_dht_node},
    {"keygen", "create a key pair (an identity)", kp_cli_keygen},
    {"announce", "announce this peer under a topic or its key", kp_cli_announce},
    {"lookup", "find the peers announced under a topic or key", kp_cli_lookup},
    {"put", "store a mutable or immutable value", kp_cli_put},
    {"get", "fetch a mutable or immutable value", kp_cli_get},
    {"serve", "listen on a key pair: an echo, or local TCP services, by key", kp_cli_serve},
    {"connect", "connect to a peer by its public key or an invitation", kp_cli_connect},
    {"pair", "connect with an invitation (the same as connect CODE)", kp_cli_connect},
    {"invite", "make a one-time invitation to this server", kp_cli_invite},
    {"daemon", "run serve from a config file, as a service", kp_cli_daemon},
    {"relay", "run a blind relay for peers that cannot punch", kp_cli_relay},
    {"status", "the live connections of a running serve, daemon or connect --listen",
     kp_cli_status},
    {"ping", "is a peer reachable, by which path, how far (any server)", kp_cli_ping},
    {"ssh-config", "print ssh_config blocks for the config file's named hosts", kp_cli_ssh_config},
    {"proxy", "run a proxy that lends peers a public endpoint", kp_cli_proxy},
};

static void usage(FILE *out) {
  fprintf(out, "usage: kadpunch COMMAND [options]   (kadpunch COMMAND --help for details)\n\n"
               "commands:\n");
  for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
    fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
  fprintf(out, "  %-10s %s\n", "version", "print the version (also -V, --version)");
  fprintf(out, "\nconfiguration: bootstrap nodes, relays, the key file and named hosts in\n"
               "~/.config/kadpunch/config or /etc/kadpunch/config (docs/config.md)\n");
  fprintf(out, "\nexit codes: 0 success, 1 the operation failed, 2 bad command line or "
               "configuration\n");
}

int kp_cli_usage_error(const char *cmd, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "kadpunch %s: ", cmd);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n(try: kadpunch %s --help)\n", cmd);
  return KP_EXIT_USAGE;
}

bool kp_cli_parse_uint(const char *text, unsigned long min, unsigned long max, unsigned long *out) {
  char *end;
  if (!text || !*text || *text == '-') return false;
  unsigned long v = strtoul(text, &end, 10);
  if (*end || v < min || v > max) return false;
  *out = v;
  return true;
}

size_t kp_cli_split_list(char *text, const char **out, size_t cap) {
  size_t n = 0;
  for (char *tok = strtok(text, ","); tok && n < cap; tok = strtok(NULL, ",")) out[n++] = tok;
  return n;
}

const char *kp_cli_hex(const uint8_t *id, size_t n, char *buf) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    buf[2 * i] = digits[id[i] >> 4];
    buf[2 * i + 1] = digits[id[i] & 15];
  }
  buf[2 * n] = '\0';
  return buf;
}

int main(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "help") || !strcmp(argv[1], "--help") ||
      !strcmp(argv[1], "-h")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? KP_EXIT_USAGE : KP_EXIT_OK;
  }
  if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
    printf("kadpunch %s\n", kp_version_string());
    return KP_EXIT_OK;
  }
  for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
    if (strcmp(argv[1], commands[i].name)) continue;
    /* The configuration is the defaults under the options; asking for
     * help needs none (a broken file must not hide the help). */
    bool help = false;
    for (int a = 2; a < argc && !help; a++)
      help = !strcmp(argv[a], "-h") || !strcmp(argv[a], "--help");
    if (!help) {
      int rc = kp_cli_settings_load();
      if (rc) return rc;
    }
    return commands[i].run(argc - 1, argv + 1);
  }
  fprintf(stderr, "kadpunch: unknown command '%s'\n\n", argv[1]);
  usage(stderr);
  return KP_EXIT_USAGE;
}
