/* SPDX-License-Identifier: MIT */
/* kadpunch invite: a one-time code that lets one client in (cli_invites.c
 * keeps it in the server's state directory; docs/daemon.md). Asks the
 * running server over its control socket (--control: the server writes
 * its own files, whoever asks), or writes the state directory itself,
 * next to a server: the server reads the invitation from the directory
 * when a client proves it. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "node/cli/cli.h"
#include "node/json.h"

static const char invite_help[] =
    "usage: kadpunch invite --control PATH [options]\n"
    "       kadpunch invite (--config FILE | --state DIR [--key FILE]) [options]\n"
    "\n"
    "Makes a one-time invitation to a server and prints it: 90 characters\n"
    "holding the server's key and a secret. Whoever runs `kadpunch connect\n"
    "CODE` before it expires gets in (\"paired with KEY\"), and the server keeps\n"
    "that key in DIR/allow; a second use is refused (\"already used\"), as is a\n"
    "late one (\"expired\"). Give the code over a channel you trust: it is a\n"
    "password.\n"
    "\n"
    "With --control the running server (`kadpunch daemon`, or `kadpunch serve\n"
    "--state DIR --control PATH`) makes it: its files stay its own whoever\n"
    "asks. This is the way for the systemd unit (run it as root, or as the\n"
    "daemon's user). Without it, the state directory is written here: the\n"
    "invitation is for the key DIR/server-key names (the key the server there\n"
    "last served), else DIR/key, unless --key says otherwise.\n"
    "\n"
    "options:\n"
    "  --control PATH    the running server's control socket\n"
    "  --config FILE     the daemon's config (its state directory and key)\n"
    "  --state DIR       the state directory\n"
    "  --key FILE        the server's key file\n"
    "  --expires S       valid for S seconds (default 3600)\n"
    "  --json            {\"code\":...,\"server\":...,\"expires\":UNIX_SECONDS}\n"
    "\n"
    "examples:\n"
    "  kadpunch invite --control /var/lib/kadpunch/control.sock\n"
    "  kadpunch invite --config /etc/kadpunch/kadpunch.conf\n"
    "  kadpunch invite --state ~/.kadpunch --expires 600\n"
    "\n"
    "exit codes: 0 printed, 1 the state directory cannot be written (or\n"
    "--control: the server cannot be asked, or says no), 2 bad options, config\n"
    "or key\n";

static void print_invite(const char *code, const char *server, uint64_t expires_s,
                         unsigned long ttl_s, bool json) {
  if (json) {
    printf("{\"code\":\"%s\",\"server\":\"%s\",\"expires\":%" PRIu64 "}\n", code, server,
           expires_s);
    return;
  }
  printf("%s\n", code);
  fprintf(stderr,
          "one-time invitation to %s, valid %lu s: on the other machine run\n"
          "  kadpunch connect %s\n",
          server, ttl_s, code);
}

/* The public key invitations in state are for: --key's, else the one the
 * server there recorded (DIR/server-key), else DIR/key's. */
static int server_public_key(const char *state, const char *key_path, uint8_t pk[32]) {
  char path[4096], line[128];
  kp_keypair_t kp;
  if (!key_path) {
    snprintf(path, sizeof(path), "%s/server-key", state);
    FILE *f = fopen(path, "r");
    if (f) {
      bool ok = fgets(line, sizeof(line), f) != NULL;
      fclose(f);
      line[strcspn(line, "\r\n")] = '\0';
      if (ok && !kp_key_from_text(line, pk)) return 0;
      fprintf(stderr, "kadpunch invite: %s: not a public key (start the server again)\n", path);
      return KP_EXIT_USAGE;
    }
    snprintf(path, sizeof(path), "%s/key", state);
    key_path = path;
  }
  int rc = kp_cli_load_key(key_path, &kp, "invite");
  if (rc) return rc;
  memcpy(pk, kp.public_key, KP_PUBLIC_KEY_LEN);
  kp_keypair_wipe(&kp);
  return 0;
}

static int invite_write(const char *state, const char *key_path, unsigned long ttl_s, bool json) {
  uint8_t pk[KP_PUBLIC_KEY_LEN];
  int rc = server_public_key(state, key_path, pk);
  if (rc) return rc;
  kp_invite_t inv;
  uint64_t expires_s = (uint64_t)time(NULL) + ttl_s;
  int err = kp_cli_invite_create(state, pk, expires_s, &inv);
  if (err) {
    fprintf(stderr, "kadpunch invite: %s/invites: %s%s\n", state, uv_strerror(err),
            err == UV_EACCES || err == UV_EPERM
                ? " (the files belong to the server's user: ask the running server with "
                  "--control PATH)"
                : "");
    return KP_EXIT_FAIL;
  }
  char code[KP_INVITE_TEXT_LEN + 1], server[KP_KEY_TEXT_LEN + 1];
  kp_invite_to_text(&inv, code);
  kp_key_to_text(pk, server);
  print_invite(code, server, expires_s, ttl_s, json);
  return 0;
}

/* --control: the server makes it. */
static int invite_control(const char *path, unsigned long ttl_s, bool json) {
  char request[96], *line = NULL;
  size_t len;
  snprintf(request, sizeof(request), "{\"cmd\":\"invite\",\"expires\":%lu}\n", ttl_s);
  int rc = kp_prog_control_ask("kadpunch invite", path, request, &line, &len);
  if (rc) return rc;
  kp_json_t *answer = NULL;
  size_t err_at;
  if (kp_json_parse(line, len, &answer, &err_at)) {
    fprintf(stderr, "kadpunch invite: %s: not a JSON answer\n", path);
    rc = KP_EXIT_FAIL;
  } else if (!kp_json_get_bool(answer, "ok", false)) {
    const char *why = kp_json_get_str(answer, "error");
    fprintf(stderr, "kadpunch invite: the server at %s says: %s\n", path, why ? why : "no");
    rc = KP_EXIT_FAIL;
  } else {
    const char *code = kp_json_get_str(answer, "code"), *server = kp_json_get_str(answer, "server");
    double expires_s = kp_json_get_num(answer, "expires", 0);
    if (code && server && strlen(code) == KP_INVITE_TEXT_LEN && expires_s > 0)
      print_invite(code, server, (uint64_t)expires_s, ttl_s, json);
    else
      rc = KP_EXIT_FAIL, fprintf(stderr, "kadpunch invite: %s: an answer without a code\n", path);
  }
  kp_json_free(answer);
  kp_free(line);
  return rc;
}

int kp_cli_invite(int argc, char **argv) {
  static const struct option longopts[] = {
      {"config", required_argument, 0, 'c'},  {"state", required_argument, 0, 's'},
      {"key", required_argument, 0, 'k'},     {"control", required_argument, 0, 'C'},
      {"expires", required_argument, 0, 'e'}, {"json", no_argument, 0, 'j'},
      {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
  const char *config = NULL, *state = NULL, *key = NULL, *control = NULL;
  unsigned long ttl_s = KP_CLI_INVITE_TTL_DEFAULT_S;
  bool json = false;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
      case 'c': config = optarg; break;
      case 's': state = optarg; break;
      case 'k': key = optarg; break;
      case 'C': control = optarg; break;
      case 'e':
        if (!kp_cli_parse_uint(optarg, 1, KP_CLI_INVITE_TTL_MAX_S, &ttl_s))
          return kp_cli_usage_error("invite", "--expires: 1 to 31536000 seconds");
        break;
      case 'j': json = true; break;
      case 'h': fputs(invite_help, stdout); return KP_EXIT_OK;
      default: return kp_cli_usage_error("invite", "unknown option");
    }
  }
  if (optind < argc) return kp_cli_usage_error("invite", "unexpected argument '%s'", argv[optind]);
  if ((control != NULL) + (config != NULL) + (state != NULL) != 1)
    return kp_cli_usage_error("invite", "give one of --control PATH, --config FILE, --state DIR");
  if (control && key) return kp_cli_usage_error("invite", "--key goes with --state or --config");
  if (control) return invite_control(control, ttl_s, json);
  kp_cli_daemon_cfg_t cfg;
  int rc = 0;
  if (config) {
    rc = kp_cli_daemon_config(config, &cfg);
    state = cfg.state;
  }
  if (!rc && access(state, W_OK | X_OK)) {
    fprintf(stderr, "kadpunch invite: %s: %s%s\n", state,
            errno == ENOENT ? "no such directory" : "not a writable directory",
            errno == EACCES ? " (it belongs to the server's user: ask the running server with "
                              "--control PATH)"
                            : "");
    rc = KP_EXIT_FAIL;
  }
  /* A config names its key (DIR/key unless key = FILE): that is the one. */
  if (!rc) rc = invite_write(state, key ? key : config ? cfg.key : NULL, ttl_s, json);
  if (config) kp_cli_daemon_config_free(&cfg);
  return rc;
}
