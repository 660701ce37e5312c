/* SPDX-License-Identifier: MIT */
/* The configuration file as the commands see it: read once at start
 * (main.c), then the defaults under the command line and the environment
 * (cli_config.h, docs/config.md). */
#include <stdlib.h>
#include <string.h>

#include "node/cli/cli.h"

static kp_cli_config_t settings;

int kp_cli_settings_load(void) {
  char err[1200];
  if (kp_cli_config_load(&settings, err, sizeof(err)) == 0) return 0;
  fprintf(stderr, "kadpunch: %s\n", err);
  kp_cli_config_init(&settings); /* nothing half-read is used */
  return KP_EXIT_USAGE;
}

const kp_cli_config_t *kp_cli_settings(void) {
  return &settings;
}

int kp_cli_peer(const char *text, uint8_t key[KP_PUBLIC_KEY_LEN], const char **service,
                const char *cmd) {
  if (!kp_key_from_text(text, key)) return 0;
  const kp_cli_host_t *h = kp_cli_config_host(&settings, text);
  if (h) {
    memcpy(key, h->key, KP_PUBLIC_KEY_LEN);
    if (service && !*service && h->service[0]) *service = h->service;
    return 0;
  }
  if (kp_cli_config_host_name_ok(text) && strlen(text) != KP_KEY_TEXT_LEN)
    return kp_cli_usage_error(cmd,
                              "'%s': no host of that name in the configuration (%s; add "
                              "`host %s key KEY`, docs/config.md)",
                              text,
                              settings.file_count ? settings.files[settings.file_count - 1]
                                                  : "no configuration file read",
                              text);
  return kp_cli_usage_error(cmd, "'%s' is not a public key (52 z-base-32 characters)", text);
}
