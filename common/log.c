/* SPDX-License-Identifier: MIT */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
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
  /* No sink, no output: writing anywhere is the glue's business (the node
   * hands kp_log_stderr to its cores unless the caller has a sink). */
  if (log->cb) log->cb(log->ctx, level, line);
}
