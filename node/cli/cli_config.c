/* SPDX-License-Identifier: MIT */
/* The client's configuration file: a line-based parser that names the file
 * and line of every mistake, and the search for the files (cli_config.h,
 * docs/config.md). */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node/cli/cli_config.h"

#define MAX_WORDS 8

void kp_cli_config_init(kp_cli_config_t *c) {
  memset(c, 0, sizeof(*c));
}

typedef struct parse_s {
  kp_cli_config_t *c;
  const char *path, *home;
  unsigned line;
  char *err;
  size_t err_cap;
  /* This file set them: an earlier file's values are gone. */
  bool bootstrap_here, relays_here;
} parse_t;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int
fail(parse_t *p, const char *fmt, ...) {
  int n = snprintf(p->err, p->err_cap, "%s:%u: ", p->path, p->line);
  va_list ap;
  va_start(ap, fmt);
  if (n >= 0 && (size_t)n < p->err_cap) vsnprintf(p->err + n, p->err_cap - (size_t)n, fmt, ap);
  va_end(ap);
  return -1;
}

bool kp_cli_config_host_name_ok(const char *name) {
  size_t n = strlen(name);
  if (!n || n > KP_CLI_CONFIG_NAME_MAX || n == KP_KEY_TEXT_LEN || !isalnum((unsigned char)name[0]))
    return false;
  for (size_t i = 0; i < n; i++)
    if (!isalnum((unsigned char)name[i]) && !strchr("._-", name[i])) return false;
  return true;
}

const kp_cli_host_t *kp_cli_config_host(const kp_cli_config_t *c, const char *name) {
  for (size_t i = 0; i < c->host_count; i++)
    if (!strcmp(c->hosts[i].name, name)) return &c->hosts[i];
  return NULL;
}

/* HOST:PORT or [IPv6]:PORT, port 1 to 65535: only the shape (names are
 * resolved when a command uses them). */
static bool host_port_ok(const char *text) {
  const char *colon = strrchr(text, ':');
  if (!colon || colon == text || !colon[1] || strlen(text) > 255) return false;
  if (text[0] == '[' && colon[-1] != ']') return false;
  if (text[0] != '[' && memchr(text, ':', (size_t)(colon - text))) return false; /* bare IPv6 */
  char *end;
  unsigned long port = strtoul(colon + 1, &end, 10);
  return !*end && port >= 1 && port <= 65535 && isdigit((unsigned char)colon[1]);
}

/* bootstrap A, B, C: one or more words, commas between or after them. */
static int set_bootstrap(parse_t *p, char **w, size_t n) {
  kp_cli_config_t *c = p->c;
  if (n < 2) return fail(p, "bootstrap: give HOST:PORT (comma separated)");
  if (!p->bootstrap_here) c->bootstrap[0] = '\0';
  p->bootstrap_here = true;
  for (size_t i = 1; i < n; i++) {
    for (char *tok = strtok(w[i], ","); tok; tok = strtok(NULL, ",")) {
      if (!host_port_ok(tok)) return fail(p, "bootstrap '%s': expected HOST:PORT", tok);
      size_t used = strlen(c->bootstrap);
      if (used + strlen(tok) + 2 > sizeof(c->bootstrap))
        return fail(p, "bootstrap: the list is too long (%zu bytes at most)",
                    sizeof(c->bootstrap) - 1);
      snprintf(c->bootstrap + used, sizeof(c->bootstrap) - used, "%s%s", used ? "," : "", tok);
    }
  }
  if (!c->bootstrap[0]) return fail(p, "bootstrap: give HOST:PORT (comma separated)");
  return 0;
}

static int set_relay(parse_t *p, char **w, size_t n) {
  kp_cli_config_t *c = p->c;
  if (n != 2 || !host_port_ok(w[1])) return fail(p, "relay: expected one HOST:PORT");
  if (!p->relays_here) c->relay_count = 0;
  p->relays_here = true;
  if (c->relay_count == KP_CLI_CONFIG_RELAYS_MAX)
    return fail(p, "relay: at most %d", KP_CLI_CONFIG_RELAYS_MAX);
  snprintf(c->relays[c->relay_count++], sizeof(c->relays[0]), "%s", w[1]);
  return 0;
}

static int set_key(parse_t *p, char **w, size_t n) {
  if (n != 2) return fail(p, "key: expected one FILE");
  int len = !strncmp(w[1], "~/", 2) && p->home
                ? snprintf(p->c->key, sizeof(p->c->key), "%s/%s", p->home, w[1] + 2)
                : snprintf(p->c->key, sizeof(p->c->key), "%s", w[1]);
  if (len < 0 || (size_t)len >= sizeof(p->c->key)) return fail(p, "key: the path is too long");
  return 0;
}

/* host NAME key KEY [service NAME] */
static int set_host(parse_t *p, char **w, size_t n) {
  kp_cli_host_t h;
  memset(&h, 0, sizeof(h));
  if (n < 2) return fail(p, "host: expected `host NAME key KEY [service NAME]`");
  if (!kp_cli_config_host_name_ok(w[1]))
    return fail(p,
                "host '%s': a name is 1 to %d letters, digits, '.', '_' or '-' (and not %d "
                "characters long: that is a key)",
                w[1], KP_CLI_CONFIG_NAME_MAX, KP_KEY_TEXT_LEN);
  snprintf(h.name, sizeof(h.name), "%s", w[1]);
  bool have_key = false;
  for (size_t i = 2; i < n; i += 2) {
    if (i + 1 >= n) return fail(p, "host %s: '%s' needs a value", h.name, w[i]);
    if (!strcmp(w[i], "key")) {
      if (kp_key_from_text(w[i + 1], h.key))
        return fail(p, "host %s: '%s' is not a public key (52 z-base-32 characters)", h.name,
                    w[i + 1]);
      have_key = true;
    } else if (!strcmp(w[i], "service")) {
      if (strlen(w[i + 1]) > KP_SERVICE_MAX || !kp_service_name_ok(w[i + 1]))
        return fail(p, "host %s: service '%s': 1 to %d letters, digits, '.', '_' or '-'", h.name,
                    w[i + 1], KP_SERVICE_MAX);
      snprintf(h.service, sizeof(h.service), "%s", w[i + 1]);
    } else {
      return fail(p, "host %s: unknown word '%s' (key, service)", h.name, w[i]);
    }
  }
  if (!have_key) return fail(p, "host %s: no key (host %s key KEY)", h.name, h.name);
  kp_cli_config_t *c = p->c;
  kp_cli_host_t *slot = (kp_cli_host_t *)kp_cli_config_host(c, h.name);
  if (!slot) {
    if (c->host_count == KP_CLI_CONFIG_HOSTS_MAX)
      return fail(p, "host %s: at most %d hosts", h.name, KP_CLI_CONFIG_HOSTS_MAX);
    slot = &c->hosts[c->host_count++];
  }
  *slot = h;
  return 0;
}

/* One line (NUL-terminated, comment and newline included). */
static int parse_line(parse_t *p, char *line) {
  char *hash = strchr(line, '#');
  if (hash) *hash = '\0';
  char *w[MAX_WORDS];
  size_t n = 0;
  for (char *tok = strtok(line, " \t\r\n"); tok; tok = strtok(NULL, " \t\r\n")) {
    if (n == MAX_WORDS) return fail(p, "too many words");
    w[n++] = tok;
  }
  if (!n) return 0;
  /* "name = value": the '=' goes (and "name=value" splits). */
  char *eq = strchr(w[0], '=');
  if (eq && eq[1] && n < MAX_WORDS) {
    *eq = '\0';
    memmove(&w[2], &w[1], (n - 1) * sizeof(w[0]));
    w[1] = eq + 1;
    n++;
  } else if (eq) {
    *eq = '\0';
  } else if (n > 1 && !strcmp(w[1], "=")) {
    memmove(&w[1], &w[2], (n - 2) * sizeof(w[0]));
    n--;
  }
  /* The words of bootstrap, split at commas (strtok inside keeps its own
   * state for them: the line's words are all found already). */
  if (!strcmp(w[0], "bootstrap")) return set_bootstrap(p, w, n);
  if (!strcmp(w[0], "relay")) return set_relay(p, w, n);
  if (!strcmp(w[0], "key")) return set_key(p, w, n);
  if (!strcmp(w[0], "host")) return set_host(p, w, n);
  return fail(p, "unknown setting '%s' (bootstrap, relay, key, host)", w[0]);
}

int kp_cli_config_parse(kp_cli_config_t *c, const char *text, size_t len, const char *path,
                        const char *home, char *err, size_t err_cap) {
  parse_t p = {.c = c, .path = path, .home = home, .err = err, .err_cap = err_cap};
  char line[KP_CLI_CONFIG_LINE_MAX + 1];
  size_t pos = 0;
  while (pos < len) {
    p.line++;
    const char *nl = memchr(text + pos, '\n', len - pos);
    size_t n = nl ? (size_t)(nl - (text + pos)) : len - pos;
    if (n > KP_CLI_CONFIG_LINE_MAX)
      return fail(&p, "line too long (%d bytes at most)", KP_CLI_CONFIG_LINE_MAX);
    if (memchr(text + pos, '\0', n)) return fail(&p, "a NUL byte: not a text file");
    memcpy(line, text + pos, n);
    line[n] = '\0';
    if (parse_line(&p, line)) return -1;
    pos += n + 1;
  }
  return 0;
}

/* A file read whole; 0, 1 if there is none, -1 with err set. */
static int read_file(const char *path, char **out, size_t *len, char *err, size_t err_cap) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    if (errno == ENOENT || errno == ENOTDIR) return 1;
    snprintf(err, err_cap, "%s: %s", path, strerror(errno));
    return -1;
  }
  char *buf = malloc(KP_CLI_CONFIG_FILE_MAX + 1);
  size_t n = buf ? fread(buf, 1, KP_CLI_CONFIG_FILE_MAX + 1, f) : 0;
  int bad = !buf ? ENOMEM : ferror(f) ? EIO : 0;
  fclose(f);
  if (bad || n > KP_CLI_CONFIG_FILE_MAX) {
    snprintf(err, err_cap, "%s: %s", path,
             bad ? strerror(bad) : "too large for a configuration file (1 MiB at most)");
    free(buf);
    return -1;
  }
  *out = buf;
  *len = n;
  return 0;
}

static int load_one(kp_cli_config_t *c, const char *path, const char *home, char *err,
                    size_t err_cap) {
  char *text;
  size_t len;
  int rc = read_file(path, &text, &len, err, err_cap);
  if (rc) return rc;
  rc = kp_cli_config_parse(c, text, len, path, home, err, err_cap);
  free(text);
  if (!rc && c->file_count < 2)
    snprintf(c->files[c->file_count++], sizeof(c->files[0]), "%s", path);
  return rc;
}

int kp_cli_config_load(kp_cli_config_t *c, char *err, size_t err_cap) {
  kp_cli_config_init(c);
  const char *home = getenv("HOME");
  if (home && !*home) home = NULL;
  const char *only = getenv("KADPUNCH_CONFIG");
  if (only && *only) {
    int rc = load_one(c, only, home, err, err_cap);
    if (rc == 1) snprintf(err, err_cap, "%s ($KADPUNCH_CONFIG): no such file", only);
    return rc ? -1 : 0;
  }
  if (load_one(c, "/etc/kadpunch/config", home, err, err_cap) < 0) return -1;
  char user[2][1024];
  size_t n = 0;
  const char *xdg = getenv("XDG_CONFIG_HOME");
  if (xdg && *xdg == '/')
    snprintf(user[n++], sizeof(user[0]), "%s/kadpunch/config", xdg);
  else if (home)
    snprintf(user[n++], sizeof(user[0]), "%s/.config/kadpunch/config", home);
  if (home) snprintf(user[n++], sizeof(user[0]), "%s/.kadpunch/config", home);
  for (size_t i = 0; i < n; i++) {
    int rc = load_one(c, user[i], home, err, err_cap);
    if (rc <= 0) return rc; /* the first user file there is the one */
  }
  return 0;
}
