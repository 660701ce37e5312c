#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};

const char *kp_log_level_name(kp_log_level_t level) {
  return (unsigned)level < 5 ? level_names[level] : "?";
}

int kp_log_level_parse(const char *name, kp_log_level_t *out) {
  for (unsigned i = 0; i < 5; i++) {
    if (strcmp(name, level_names[i]) == 0) {
      *out = (kp_log_level_t)i;
      return 0;
    }
  }
  return KP_ECONFIG;
}

void kp_log_init(kp_log_t *log, kp_log_level_t level, kp_log_cb cb, void *ctx) {
  log->level = level;
  log->cb = cb;
  log->ctx = ctx;
  log->prefix = NULL;
}

void kp_log_stderr(void *ctx, kp_log_level_t level, const char *line) {
  (void)ctx;
  /* syslog priorities: err=3 warning=4 info=6 debug=7. */
  static const int prio[] = {3, 4, 6, 7, 7};
  if (getenv("JOURNAL_STREAM"))
    fprintf(stderr, "<%d>%s\n", prio[(unsigned)level < 5 ? level : 4], line);
  else
    fprintf(stderr, "kadpunch[%s] %s\n", kp_log_level_name(level), line);
}

void kp_log_write(const kp_log_t *log, kp_log_level_t level, const char *fmt, ...) {
  char line[1024];
  size_t n = 0;
  if (log->prefix) {
    int w = snprintf(line, sizeof(line), "%s: ", log->prefix);
    n = w > 0 ? (size_t)w : 0;
    if (n >= sizeof(line)) n = sizeof(line) - 1;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line + n, sizeof(line) - n, fmt, ap);
  va_end(ap);
  if (log->cb)
    log->cb(log->ctx, level, line);
  else
    kp_log_stderr(NULL, level, line);
}
