/* SPDX-License-Identifier: MIT */
/* kadpunch daemon: `kadpunch serve` from a config file, with a state
 * directory for its key, allow list and invitations (docs/daemon.md has
 * the format; contrib/kadpunch.service runs it under systemd). Each
 * config line `name = value` becomes serve's --name value, so the daemon
 * and serve cannot drift apart; the daemon adds the state directory's
 * defaults (a key made on first start, DIR/allow, DIR/invites). */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "node/cli/cli.h"

#define LINE_MAX_LEN 1024

static const char daemon_help[] =
    "usage: kadpunch daemon --config FILE [--check]\n"
    "\n"
    "Runs `kadpunch serve` as a long-lived service, configured by FILE: one\n"
    "`name = value` per line, '#' comments. Every serve option is a name\n"
    "(bootstrap, bind, relay, tcp-relay, proxy, forward, forward-udp,\n"
    "socks-allow, udp-idle, allow, allow-file, name, info, log; forward,\n"
    "forward-udp, socks-allow, allow and relay repeat; socks = yes for\n"
    "--socks, private = yes for --private), plus:\n"
    "  state = DIR     the state directory (default /var/lib/kadpunch): the key\n"
    "                  (DIR/key, made 0600 on first start), the allow list\n"
    "                  (DIR/allow) and invitations (DIR/invites)\n"
    "  key = FILE      a key file elsewhere (default DIR/key)\n"
    "  control = PATH  the control socket for kadpunch-inspect (default\n"
    "                  DIR/control.sock, mode 0600)\n"
    "  metrics = ADDR:PORT  Prometheus metrics at http://ADDR:PORT/metrics\n"
    "Only keys in the allow lists and invitees get in. SIGHUP re-reads the\n"
    "allow lists; SIGTERM closes every connection (peers are told) and exits.\n"
    "Messages go to stdout and stderr, a line each (journald keeps them).\n"
    "\n"
    "options:\n"
    "  --config FILE   the configuration (docs/daemon.md)\n"
    "  --check         read and check it, print the serve command it means, exit\n"
    "\n"
    "examples:\n"
    "  kadpunch daemon --config /etc/kadpunch/kadpunch.conf\n"
    "  kadpunch invite --control /var/lib/kadpunch/control.sock   # a one-time code\n"
    "\n"
    "exit codes: 0 stopped by a signal (--check: the file is fine), 1 the network\n"
    "failed, 2 a bad config file (the line is named), key or state directory\n";

/* The names serve knows; anything else in a config file is an error. */
static const char *const known[] = {"bootstrap", "bind",        "relay",       "tcp-relay",
                                    "forward",   "forward-udp", "socks-allow", "udp-idle",
                                    "allow",     "allow-file",  "name",        "info",
                                    "log",       "control",     "metrics",     "proxy"};

void kp_cli_daemon_config_free(kp_cli_daemon_cfg_t *c) {
  for (int i = 0; i < c->argc; i++) free(c->argv[i]);
  c->argc = 0;
}

static int push(kp_cli_daemon_cfg_t *c, const char *a, const char *b, const char *path,
                unsigned line) {
  if (c->argc + 2 >= KP_CLI_DAEMON_MAX_ARGS)
    return kp_cli_usage_error("daemon", "%s:%u: too many settings", path, line);
  c->argv[c->argc++] = strdup(a);
  if (b) c->argv[c->argc++] = strdup(b);
  return 0;
}

static char *trim(char *s) {
  while (*s == ' ' || *s == '\t') s++;
  size_t n = strlen(s);
  while (n && strchr(" \t\r\n", s[n - 1])) s[--n] = '\0';
  return s;
}

/* One `name = value` line into c; 0 or an exit code. */
static int cfg_line(kp_cli_daemon_cfg_t *c, char *line, const char *path, unsigned no) {
  char *hash = strchr(line, '#');
  if (hash) *hash = '\0';
  char *s = trim(line);
  if (!*s) return 0;
  char *eq = strchr(s, '=');
  if (!eq) return kp_cli_usage_error("daemon", "%s:%u: expected `name = value`", path, no);
  *eq = '\0';
  char *name = trim(s), *value = trim(eq + 1);
  if (!*value) return kp_cli_usage_error("daemon", "%s:%u: %s has no value", path, no, name);
  if (!strcmp(name, "state")) {
    snprintf(c->state, sizeof(c->state), "%s", value);
    return 0;
  }
  if (!strcmp(name, "key")) {
    snprintf(c->key, sizeof(c->key), "%s", value);
    return 0;
  }
  if (!strcmp(name, "port-mapping")) {
    /* On unless "no": serve's --no-port-mapping. */
    if (!strcmp(value, "no")) return push(c, "--no-port-mapping", NULL, path, no);
    if (!strcmp(value, "yes")) return 0;
    return kp_cli_usage_error("daemon", "%s:%u: port-mapping is yes or no", path, no);
  }
  if (!strcmp(name, "socks") || !strcmp(name, "private")) {
    /* serve's --socks and --private take no value: "socks = yes" is the switch. */
    char opt[16];
    snprintf(opt, sizeof(opt), "--%s", name);
    if (!strcmp(value, "yes")) return push(c, opt, NULL, path, no);
    if (!strcmp(value, "no")) return 0;
    return kp_cli_usage_error("daemon", "%s:%u: %s is yes or no", path, no, name);
  }
  for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
    if (strcmp(name, known[i])) continue;
    char opt[64];
    snprintf(opt, sizeof(opt), "--%s", name);
    /* "forward = ssh 127.0.0.1:22" is serve's --forward ssh=127.0.0.1:22
     * (forward-udp the same). */
    bool named = !strcmp(name, "forward") || !strcmp(name, "forward-udp");
    char *space = named ? strpbrk(value, " \t") : NULL;
    if (space) {
      *space = '=';
      char *rest = trim(space + 1);
      memmove(space + 1, rest, strlen(rest) + 1);
    }
    if (!strcmp(name, "control")) c->control_set = true;
    return push(c, opt, value, path, no);
  }
  return kp_cli_usage_error("daemon", "%s:%u: unknown setting '%s' (see kadpunch daemon --help)",
                            path, no, name);
}

int kp_cli_daemon_config(const char *path, kp_cli_daemon_cfg_t *c) {
  memset(c, 0, sizeof(*c));
  snprintf(c->state, sizeof(c->state), "/var/lib/kadpunch");
  push(c, "kadpunch-daemon", NULL, path, 0);
  FILE *f = fopen(path, "r");
  if (!f) return kp_cli_usage_error("daemon", "--config %s: %s", path, strerror(errno));
  char line[LINE_MAX_LEN];
  unsigned no = 0;
  int rc = 0;
  while (!rc && fgets(line, sizeof(line), f)) {
    no++;
    if (strlen(line) == sizeof(line) - 1 && line[sizeof(line) - 2] != '\n')
      rc = kp_cli_usage_error("daemon", "%s:%u: line too long", path, no);
    else
      rc = cfg_line(c, line, path, no);
  }
  fclose(f);
  if (!rc && !c->key[0]) snprintf(c->key, sizeof(c->key), "%s/key", c->state);
  if (!rc && !c->control_set) {
    char sock[1100];
    snprintf(sock, sizeof(sock), "%s/control.sock", c->state);
    rc = push(c, "--control", sock, path, 0);
  }
  return rc;
}

/* The state directory (0700) and a key in it, made on first start. */
static int prepare_state(const kp_cli_daemon_cfg_t *c) {
  if (mkdir(c->state, 0700) && errno != EEXIST)
    return kp_cli_usage_error("daemon", "state %s: %s", c->state, strerror(errno));
  if (access(c->key, F_OK) == 0) return 0;
  kp_keypair_t kp;
  kp_keypair_generate(&kp);
  int err = kp_key_file_write(c->key, &kp, false);
  char text[KP_KEY_TEXT_LEN + 1];
  kp_key_to_text(kp.public_key, text);
  kp_keypair_wipe(&kp);
  if (err) return kp_cli_usage_error("daemon", "key %s: %s", c->key, kp_strerror(err));
  printf("made a key pair in %s: %s\n", c->key, text);
  return 0;
}

int kp_cli_daemon(int argc, char **argv) {
  static const struct option longopts[] = {{"config", required_argument, 0, 'c'},
                                           {"check", no_argument, 0, 'k'},
                                           {"help", no_argument, 0, 'h'},
                                           {0, 0, 0, 0}};
  const char *config = NULL;
  bool check = false;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
      case 'c': config = optarg; break;
      case 'k': check = true; break;
      case 'h': fputs(daemon_help, stdout); return KP_EXIT_OK;
      default: return kp_cli_usage_error("daemon", "unknown option");
    }
  }
  if (!config || optind < argc) return kp_cli_usage_error("daemon", "give --config FILE");
  kp_cli_daemon_cfg_t cfg;
  int rc = kp_cli_daemon_config(config, &cfg);
  if (!rc) rc = push(&cfg, "--state", cfg.state, config, 0);
  if (!rc) rc = push(&cfg, "--key", cfg.key, config, 0);
  if (!rc && check) {
    /* serve's own checks (addresses, names, allow files), then the line. */
    rc = kp_cli_serve_main(cfg.argc, cfg.argv, "daemon", true);
    printf("kadpunch serve");
    for (int i = 1; i < cfg.argc && !rc; i++) printf(" %s", cfg.argv[i]);
    printf("%s\n", rc ? ": not valid" : "");
  } else if (!rc) {
    rc = prepare_state(&cfg);
    if (!rc) rc = kp_cli_serve_main(cfg.argc, cfg.argv, "daemon", false);
  }
  kp_cli_daemon_config_free(&cfg);
  return rc;
}
