/* SPDX-License-Identifier: MIT */
/* The client's configuration file (docs/config.md): the DHT nodes to join
 * through, relays, the key file, and named hosts, so that `kadpunch
 * connect laptop` works and `kadpunch ssh-config` can write ssh's side.
 *
 *   # ~/.config/kadpunch/config
 *   bootstrap dht.example.org:49737, 203.0.113.7:49737
 *   relay 203.0.113.9:49737
 *   key ~/.kadpunch/key
 *   host laptop key 1kbqs8tc39zasouiojo73fmb83iynjt7ppdn835bskst4nf4yrqy service ssh
 *
 * One setting per line, its words separated by blanks; `name = value`
 * works as well for the one-word settings; '#' starts a comment. Files
 * read, later ones winning: /etc/kadpunch/config, then the user's first of
 * $XDG_CONFIG_HOME/kadpunch/config (~/.config/kadpunch/config) and
 * ~/.kadpunch/config; $KADPUNCH_CONFIG instead of all of them. The parser
 * is pure (no I/O but the file reads in kp_cli_config_load). */
#ifndef KP_CLI_CONFIG_H
#define KP_CLI_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kadpunch.h"

#define KP_CLI_CONFIG_HOSTS_MAX 256
#define KP_CLI_CONFIG_RELAYS_MAX 4
#define KP_CLI_CONFIG_NAME_MAX 63
#define KP_CLI_CONFIG_LINE_MAX 1024
#define KP_CLI_CONFIG_FILE_MAX (1024 * 1024)

typedef struct kp_cli_host_s {
  char name[KP_CLI_CONFIG_NAME_MAX + 1];
  uint8_t key[KP_PUBLIC_KEY_LEN];
  char service[KP_SERVICE_MAX + 1]; /* "" : the server's first */
} kp_cli_host_t;

typedef struct kp_cli_config_s {
  char bootstrap[1024]; /* comma separated, as --bootstrap takes it; "" if unset */
  char relays[KP_CLI_CONFIG_RELAYS_MAX][256];
  size_t relay_count;
  char key[1024]; /* "" if unset; ~/ expanded */
  kp_cli_host_t hosts[KP_CLI_CONFIG_HOSTS_MAX];
  size_t host_count;
  char files[2][1024]; /* the files read, for messages */
  size_t file_count;
} kp_cli_config_t;

void kp_cli_config_init(kp_cli_config_t *c);

/* Parses one file's text (len bytes, NUL not needed) into c, over what
 * earlier files set: bootstrap, relays and key are replaced by a file that
 * sets them, a host by a later one of the same name. home expands a
 * leading "~/" (NULL: left as it is). Returns 0, or -1 with err set to
 * "PATH:LINE: what is wrong" (c then holds the lines before it). */
int kp_cli_config_parse(kp_cli_config_t *c, const char *text, size_t len, const char *path,
                        const char *home, char *err, size_t err_cap);

/* Reads the files above (missing ones are skipped). Returns 0, or -1 with
 * err set (a file that exists but cannot be read, or a bad line). */
int kp_cli_config_load(kp_cli_config_t *c, char *err, size_t err_cap);

/* The host of that name, or NULL. */
const kp_cli_host_t *kp_cli_config_host(const kp_cli_config_t *c, const char *name);

/* Whether name may name a host: 1 to 63 letters, digits, '.', '_', '-',
 * starting with a letter or digit, and not a public key's length. */
bool kp_cli_config_host_name_ok(const char *name);

#endif
