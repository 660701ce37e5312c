/* SPDX-License-Identifier: MIT */
/* kadpunch invite: a one-time code that lets one client in (cli_invites.c
 * keeps it in the server's state directory; docs/daemon.md). Runs next to
 * a server, not over the network: the server reads the invitation from the
 * directory when a client proves it. */
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "node/cli/cli.h"

static const char invite_help[] =
    "usage: kadpunch invite (--config FILE | --state DIR [--key FILE]) [options]\n"
    "\n"
    "Makes a one-time invitation to the server whose state directory this is\n"
    "(`kadpunch daemon`, or `kadpunch serve --state DIR`) and prints it: 90\n"
    "characters holding the server's key and a secret. Whoever runs `kadpunch\n"
    "connect CODE` before it expires gets in, and the server keeps that key in\n"
    "DIR/allow; a second use is refused (\"already used\"), as is a late one\n"
    "(\"expired\"). Give the code over a channel you trust: it is a password.\n"
    "\n"
    "options:\n"
    "  --config FILE     the daemon's config (its state directory and key)\n"
    "  --state DIR       the state directory (default key: DIR/key)\n"
    "  --key FILE        the server's key file\n"
    "  --expires S       valid for S seconds (default 3600)\n"
    "  --json            {\"code\":...,\"server\":...,\"expires\":UNIX_SECONDS}\n"
    "\n"
    "examples:\n"
    "  kadpunch invite --config /etc/kadpunch/kadpunch.conf\n"
    "  kadpunch invite --state ~/.kadpunch --expires 600\n"
    "\n"
    "exit codes: 0 printed, 1 the state directory cannot be written, 2 bad\n"
    "options, config or key\n";

static int invite_write(const char *state, const char *key_path, unsigned long ttl, bool json) {
  kp_keypair_t kp;
  int rc = kp_cli_load_key(key_path, &kp, "invite");
  if (rc) return rc;
  uint8_t pk[KP_PUBLIC_KEY_LEN];
  memcpy(pk, kp.public_key, KP_PUBLIC_KEY_LEN);
  kp_keypair_wipe(&kp);
  kp_invite_t inv;
  uint64_t expires = (uint64_t)time(NULL) + ttl;
  int err = kp_cli_invite_create(state, pk, expires, &inv);
  if (err) {
    fprintf(stderr, "kadpunch invite: %s/invites: %s\n", state, uv_strerror(err));
    return KP_EXIT_FAIL;
  }
  char code[KP_INVITE_TEXT_LEN + 1], server[KP_KEY_TEXT_LEN + 1];
  kp_invite_to_text(&inv, code);
  kp_key_to_text(pk, server);
  if (json) {
    printf("{\"code\":\"%s\",\"server\":\"%s\",\"expires\":%" PRIu64 "}\n", code, server, expires);
  } else {
    printf("%s\n", code);
    fprintf(stderr,
            "one-time invitation to %s, valid %lu s: on the other machine run\n"
            "  kadpunch connect %s\n",
            server, ttl, code);
  }
  return 0;
}

int kp_cli_invite(int argc, char **argv) {
  static const struct option longopts[] = {{"config", required_argument, 0, 'c'},
                                           {"state", required_argument, 0, 's'},
                                           {"key", required_argument, 0, 'k'},
                                           {"expires", required_argument, 0, 'e'},
                                           {"json", no_argument, 0, 'j'},
                                           {"help", no_argument, 0, 'h'},
                                           {0, 0, 0, 0}};
  const char *config = NULL, *state = NULL, *key = NULL;
  unsigned long ttl = 3600;
  bool json = false;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    switch (c) {
      case 'c': config = optarg; break;
      case 's': state = optarg; break;
      case 'k': key = optarg; break;
      case 'e':
        if (!kp_cli_parse_uint(optarg, 1, 365ul * 86400, &ttl))
          return kp_cli_usage_error("invite", "--expires: 1 to 31536000 seconds");
        break;
      case 'j': json = true; break;
      case 'h': fputs(invite_help, stdout); return KP_EXIT_OK;
      default: return kp_cli_usage_error("invite", "unknown option");
    }
  }
  if (optind < argc) return kp_cli_usage_error("invite", "unexpected argument '%s'", argv[optind]);
  if (!config == !state) return kp_cli_usage_error("invite", "give --config FILE or --state DIR");
  kp_cli_daemon_cfg_t cfg;
  char key_buf[1100];
  int rc = 0;
  if (config) {
    rc = kp_cli_daemon_config(config, &cfg);
    state = cfg.state;
    if (!key) key = cfg.key;
  }
  if (!rc && !key) {
    snprintf(key_buf, sizeof(key_buf), "%s/key", state);
    key = key_buf;
  }
  if (!rc && access(state, W_OK | X_OK)) {
    fprintf(stderr, "kadpunch invite: %s: not a writable directory\n", state);
    rc = KP_EXIT_FAIL;
  }
  if (!rc) rc = invite_write(state, key, ttl, json);
  if (config) kp_cli_daemon_config_free(&cfg);
  return rc;
}
