/* SPDX-License-Identifier: MIT */
/* Who may connect to `kadpunch serve`: keys from --allow and --allow-file.
 * An allow file holds one z-base-32 public key per line; '#' starts a
 * comment, blank lines are skipped. Anything else is an error that names
 * the file and line: a typo must never let everyone in, nor quietly keep
 * someone out. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "node/cli/cli.h"

/* Longer lines are not keys (52 characters) with a sane comment. */
#define LINE_MAX_LEN 4096

static int add(kp_cli_allow_t *a, const uint8_t key[KP_PUBLIC_KEY_LEN], const char *cmd) {
  if (a->count == a->cap) {
    if (a->cap >= KP_CLI_ALLOW_MAX)
      return kp_cli_usage_error(cmd, "more than %d allowed keys", KP_CLI_ALLOW_MAX);
    size_t cap = a->cap ? 2 * a->cap : 16;
    void *keys = realloc(a->keys, cap * KP_PUBLIC_KEY_LEN);
    if (!keys) {
      fprintf(stderr, "kadpunch %s: out of memory\n", cmd);
      return KP_EXIT_FAIL;
    }
    a->keys = keys;
    a->cap = cap;
  }
  memcpy(a->keys[a->count++], key, KP_PUBLIC_KEY_LEN);
  return 0;
}

int kp_cli_allow_key(kp_cli_allow_t *a, const char *text, const char *cmd) {
  uint8_t key[KP_PUBLIC_KEY_LEN];
  if (kp_key_from_text(text, key))
    return kp_cli_usage_error(cmd, "--allow '%s' is not a public key", text);
  a->restricted = true;
  return add(a, key, cmd);
}

/* The key on one line of an allow file: 0 and *found, 0 and !*found (blank
 * or comment), or -1 (not a key). line is modified. */
static int parse_line(char *line, uint8_t key[KP_PUBLIC_KEY_LEN], bool *found) {
  *found = false;
  char *hash = strchr(line, '#');
  if (hash) *hash = '\0';
  while (isspace((unsigned char)*line)) line++;
  size_t len = strlen(line);
  while (len && isspace((unsigned char)line[len - 1])) line[--len] = '\0';
  if (!len) return 0;
  if (kp_key_from_text(line, key)) return -1;
  *found = true;
  return 0;
}

static int read_lines(kp_cli_allow_t *a, FILE *f, const char *path, const char *cmd) {
  char line[LINE_MAX_LEN];
  unsigned lineno = 0;
  while (fgets(line, sizeof(line), f)) {
    lineno++;
    size_t len = strlen(line);
    if (len == sizeof(line) - 1 && line[len - 1] != '\n' && !feof(f))
      return kp_cli_usage_error(cmd, "--allow-file %s:%u: line too long", path, lineno);
    uint8_t key[KP_PUBLIC_KEY_LEN];
    bool found;
    if (parse_line(line, key, &found)) {
      line[strcspn(line, "\r\n")] = '\0';
      return kp_cli_usage_error(cmd, "--allow-file %s:%u: not a public key: '%.60s'", path, lineno,
                                line);
    }
    int rc = found ? add(a, key, cmd) : 0;
    if (rc) return rc;
  }
  if (ferror(f)) return kp_cli_usage_error(cmd, "--allow-file %s: %s", path, strerror(errno));
  return 0;
}

int kp_cli_allow_file(kp_cli_allow_t *a, const char *path, const char *cmd) {
  FILE *f = fopen(path, "r");
  if (!f) return kp_cli_usage_error(cmd, "--allow-file %s: %s", path, strerror(errno));
  size_t before = a->count;
  a->restricted = true;
  int rc = read_lines(a, f, path, cmd);
  fclose(f);
  if (!rc && a->count == before)
    fprintf(stderr, "kadpunch %s: warning: --allow-file %s lists no keys\n", cmd, path);
  return rc;
}

int kp_cli_allow_add(kp_cli_allow_t *a, const uint8_t key[KP_PUBLIC_KEY_LEN]) {
  return add(a, key, "serve");
}

bool kp_cli_allow_has(const kp_cli_allow_t *a, const uint8_t key[KP_PUBLIC_KEY_LEN]) {
  if (!a->restricted) return true;
  for (size_t i = 0; i < a->count; i++)
    if (!memcmp(a->keys[i], key, KP_PUBLIC_KEY_LEN)) return true;
  return false;
}

void kp_cli_allow_free(kp_cli_allow_t *a) {
  free(a->keys);
  memset(a, 0, sizeof(*a));
}
