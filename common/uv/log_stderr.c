/* SPDX-License-Identifier: MIT */
/* The default log sink: standard error, in journald's priority format
 * under systemd. Glue: the cores only call the sink they are given. */
#include <stdio.h>
#include <stdlib.h>

#include "common/log.h"

void kp_log_stderr(void *ctx, kp_log_level_t level, const char *line) {
  (void)ctx;
  /* syslog priorities: err=3 warning=4 info=6 debug=7. */
  static const int prio[] = {3, 4, 6, 7, 7};
  if (getenv("JOURNAL_STREAM"))
    fprintf(stderr, "<%d>%s\n", prio[(unsigned)level < 5 ? level : 4], line);
  else
    fprintf(stderr, "kadpunch[%s] %s\n", kp_log_level_name(level), line);
}
