/* Shared pieces of the kadpunch command-line program. */
#ifndef KP_CLI_H
#define KP_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "kadpunch.h"

/* Exit codes, documented in README.md and each command's --help. */
enum {
  KP_EXIT_OK = 0,
  KP_EXIT_FAIL = 1,  /* the operation failed (network, peer, timeout) */
  KP_EXIT_USAGE = 2, /* bad command line or configuration */
};

typedef struct kp_cli_command_s {
  const char *name;
  const char *summary;
  int (*run)(int argc, char **argv);
} kp_cli_command_t;

int kp_cli_dht_node(int argc, char **argv);
int kp_cli_demo(int argc, char **argv);

/* Prints "kadpunch CMD: message" to stderr and returns KP_EXIT_USAGE. */
int kp_cli_usage_error(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Parses an unsigned decimal in [min, max]; false on anything else. */
bool kp_cli_parse_uint(const char *text, unsigned long min, unsigned long max, unsigned long *out);

/* Splits "a,b,c" in place into at most cap strings; returns the count. */
size_t kp_cli_split_list(char *text, const char **out, size_t cap);

/* Lowercase hex of an id's first n bytes (buf: 2n+1). */
const char *kp_cli_hex(const uint8_t *id, size_t n, char *buf);

#endif
