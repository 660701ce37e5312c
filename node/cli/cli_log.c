/* SPDX-License-Identifier: MIT */
/* Time on the lines of the programs that run for long (serve, the daemon,
 * relay, dht-node, connect --listen): a local ISO 8601 time in front of
 * each event line and each node log line, unless journald keeps the output
 * (it stamps lines itself; JOURNAL_STREAM is set for a unit's stdout and
 * stderr, systemd.exec(5)). */
#include <stdlib.h>
#include <time.h>

#include "common/log.h"
#include "node/cli/cli.h"

bool kp_cli_journald(void) {
  const char *js = getenv("JOURNAL_STREAM");
  return js && *js;
}

void kp_cli_stamp(FILE *out) {
  if (kp_cli_journald()) return;
  struct timespec ts;
  struct tm tm;
  char when[40], zone[8];
  clock_gettime(CLOCK_REALTIME, &ts);
  localtime_r(&ts.tv_sec, &tm);
  strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
  strftime(zone, sizeof(zone), "%z", &tm);
  fprintf(out, "%s.%03ld%s ", when, ts.tv_nsec / 1000000, zone);
}

void kp_cli_log_sink(void *ctx, kp_log_level_t level, const char *line) {
  (void)ctx;
  if (kp_cli_journald()) {
    kp_log_stderr(NULL, level, line); /* "<N>" priorities for the journal */
    return;
  }
  kp_cli_stamp(stderr);
  fprintf(stderr, "kadpunch[%s] %s\n", kp_log_level_name(level), line);
}
