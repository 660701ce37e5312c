/* SPDX-License-Identifier: MIT */
/* kadpunch ssh-config: ssh's side of the named hosts (docs/config.md): a
 * `Host NAME` block with a ProxyCommand for each, so `ssh laptop` goes
 * through `kadpunch connect laptop --stdio`. */
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "node/cli/cli.h"

static const char help[] =
    "usage: kadpunch ssh-config [--program PATH] [NAME...]\n"
    "\n"
    "Prints an ssh_config block for every named host of the configuration\n"
    "file (`host NAME key KEY [service NAME]`, docs/config.md), or for the\n"
    "NAMEs given:\n"
    "\n"
    "  Host laptop\n"
    "      ProxyCommand /usr/bin/kadpunch connect laptop --stdio\n"
    "\n"
    "so that `ssh laptop` reaches the host's service through kadpunch. With\n"
    "$KADPUNCH_CONFIG set, the ProxyCommand sets it too. Add the output to\n"
    "~/.ssh/config, or save it and `Include` it there.\n"
    "\n"
    "options:\n"
    "  --program PATH  the kadpunch to run (default: this one, by its full path)\n"
    "\n"
    "examples:\n"
    "  kadpunch ssh-config >> ~/.ssh/config\n"
    "  kadpunch ssh-config > ~/.ssh/kadpunch.conf   # and `Include kadpunch.conf`\n"
    "\n"
    "exit codes: 0 printed, 2 bad options, a name not in the configuration, or\n"
    "no named hosts at all\n";

/* text in single quotes for sh (ssh runs ProxyCommand with the shell). */
static void print_quoted(const char *text) {
  putchar('\'');
  for (const char *p = text; *p; p++) {
    if (*p == '\'')
      fputs("'\\''", stdout);
    else
      putchar(*p);
  }
  putchar('\'');
}

static void print_host(const kp_cli_host_t *h, const char *program) {
  const char *config = getenv("KADPUNCH_CONFIG");
  printf("Host %s\n    ProxyCommand ", h->name);
  if (config && *config) {
    fputs("env KADPUNCH_CONFIG=", stdout);
    print_quoted(config);
    putchar(' ');
  }
  print_quoted(program);
  printf(" connect %s --stdio\n", h->name);
}

int kp_cli_ssh_config(int argc, char **argv) {
  static const struct option longopts[] = {
      {"program", required_argument, 0, 'p'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  char self[PATH_MAX];
  const char *program = NULL;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
      case 'p': program = optarg; break;
      case 'h': fputs(help, stdout); return KP_EXIT_OK;
      default: return kp_cli_usage_error("ssh-config", "unknown option");
    }
  }
  if (!program) {
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    self[n > 0 ? n : 0] = '\0';
    program = n > 0 ? self : "kadpunch";
  }
  const kp_cli_config_t *cfg = kp_cli_settings();
  for (int i = optind; i < argc; i++)
    if (!kp_cli_config_host(cfg, argv[i]))
      return kp_cli_usage_error("ssh-config", "no host '%s' in the configuration", argv[i]);
  if (!cfg->host_count)
    return kp_cli_usage_error("ssh-config",
                              "no named hosts in the configuration (%s): add `host NAME key "
                              "KEY [service ssh]` lines (docs/config.md)",
                              cfg->file_count ? cfg->files[cfg->file_count - 1] : "none read");
  printf("# kadpunch: the named hosts of %s\n",
         cfg->file_count ? cfg->files[cfg->file_count - 1] : "the configuration");
  for (size_t i = 0; i < cfg->host_count; i++) {
    bool wanted = optind == argc;
    for (int j = optind; j < argc && !wanted; j++) wanted = !strcmp(argv[j], cfg->hosts[i].name);
    if (wanted) print_host(&cfg->hosts[i], program);
  }
  return KP_EXIT_OK;
}
