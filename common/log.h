/* SPDX-License-Identifier: MIT */
/* Levelled logging. Each object that logs holds a kp_log_t (level, sink);
 * there is no global logger. KP_LOG checks the level before formatting, so a
 * disabled line costs one comparison. */
#ifndef KP_COMMON_LOG_H
#define KP_COMMON_LOG_H

#include <stdbool.h>

#include "kadpunch_base.h"

typedef struct kp_log_s {
  kp_log_level_t level;
  kp_log_cb cb; /* NULL: stderr */
  void *ctx;
  const char *prefix; /* printed before each line, may be NULL */
} kp_log_t;

void kp_log_init(kp_log_t *log, kp_log_level_t level, kp_log_cb cb, void *ctx);

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
void kp_log_write(const kp_log_t *log, kp_log_level_t level, const char *fmt, ...);

/* The default sink (glue: common/uv/log_stderr.c; a core only calls the sink
 * it is given): one line to stderr, "kadpunch[level] prefix: text". When
 * stderr is the journal (JOURNAL_STREAM set) lines carry a "<N>" priority. */
void kp_log_stderr(void *ctx, kp_log_level_t level, const char *line);

const char *kp_log_level_name(kp_log_level_t level);
/* Parses "error".."trace"; returns KP_ECONFIG for anything else. */
int kp_log_level_parse(const char *name, kp_log_level_t *out);

/* A function, not an expression, so `&my_log` does not warn as always true. */
static inline bool kp_log_enabled(const kp_log_t *log, kp_log_level_t level) {
  return log && level <= log->level;
}

#define KP_LOG(log, lvl, ...)                                                                      \
  do {                                                                                             \
    if (kp_log_enabled((log), (lvl))) kp_log_write((log), (lvl), __VA_ARGS__);                     \
  } while (0)

#define KP_ERROR(log, ...) KP_LOG(log, KP_LOG_ERROR, __VA_ARGS__)
#define KP_WARN(log, ...) KP_LOG(log, KP_LOG_WARN, __VA_ARGS__)
#define KP_INFO(log, ...) KP_LOG(log, KP_LOG_INFO, __VA_ARGS__)
#define KP_DEBUG(log, ...) KP_LOG(log, KP_LOG_DEBUG, __VA_ARGS__)
#define KP_TRACE(log, ...) KP_LOG(log, KP_LOG_TRACE, __VA_ARGS__)

#endif
