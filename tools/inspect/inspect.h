/* SPDX-License-Identifier: MIT */
/* kadpunch-inspect: what the DHT is doing, and what kind of network this
 * is (docs/inspect.md). Each subcommand lives in its own file; this header
 * holds what they share: options, a node for the length of a command,
 * single requests with their round trip, targets and output. */
#ifndef KP_INSPECT_H
#define KP_INSPECT_H

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>

#include "dht/dht.h"
#include "kadpunch.h"
#include "node/cli/prog.h" /* exit codes, the same as the kadpunch program's */
#include "node/json.h"

typedef struct kp_inspect_opts_s {
  const char *cmd;  /* the subcommand, for messages */
  const char *bind; /* --bind; NULL: any address of the family needed */
  char bootstrap[1024];
  kp_log_level_t log_level;
  bool json;
} kp_inspect_opts_t;

/* The options every networked subcommand takes. */
#define KP_INSPECT_NET_HELP                                                                        \
  "  --bootstrap HOST:PORT   DHT node(s) to start from, comma separated\n"                         \
  "                          (default: $KADPUNCH_BOOTSTRAP)\n"                                     \
  "  --bind ADDR:PORT        local address (default 0.0.0.0:0, or [::]:0 for IPv6)\n"              \
  "  --log LEVEL             error, warn (default), info, debug, trace\n"                          \
  "  --json                  one JSON object on stdout instead of tables (docs/inspect.md)\n"

enum {
  KP_INSPECT_OPT_BIND = 1000,
  KP_INSPECT_OPT_BOOTSTRAP,
  KP_INSPECT_OPT_LOG,
  KP_INSPECT_OPT_JSON
};
#define KP_INSPECT_NET_OPTIONS                                                                     \
  {"bind", required_argument, 0, KP_INSPECT_OPT_BIND},                                             \
      {"bootstrap", required_argument, 0, KP_INSPECT_OPT_BOOTSTRAP},                               \
      {"log", required_argument, 0, KP_INSPECT_OPT_LOG},                                           \
      {"json", no_argument, 0, KP_INSPECT_OPT_JSON}, {                                             \
    "help", no_argument, 0, 'h'                                                                    \
  }

void kp_inspect_opts_init(kp_inspect_opts_t *o, const char *cmd);
/* Handles one of KP_INSPECT_NET_OPTIONS (not --help). Returns 0, or an
 * exit code after printing the problem. */
int kp_inspect_option(kp_inspect_opts_t *o, int opt, const char *arg);

/* Prints "kadpunch-inspect CMD: message" and a hint to stderr; returns
 * KP_EXIT_USAGE. */
int kp_inspect_usage(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Prints "kadpunch-inspect CMD: message" to stderr; returns KP_EXIT_FAIL. */
int kp_inspect_fail(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
bool kp_inspect_parse_uint(const char *text, unsigned long min, unsigned long max,
                           unsigned long *out);

/* ---- A node for the length of a command (session.c) ------------------------ */

typedef kp_prog_session_t kp_inspect_session_t; /* node/cli/prog.h: shared with kadpunch */

/* An ephemeral node of family (KP_AF_INET or KP_AF_INET6) bound to
 * o->bind or any address; with hosts, it bootstraps from them and waits
 * up to wait_ms for a DHT node to answer. Returns 0; KP_ENONODES when none
 * answered (the session is then closed); UV_ECANCELED on a signal; or the
 * node's create error (KP_EBADADDR, ...). */
int kp_inspect_session_open(kp_inspect_session_t *s, const kp_inspect_opts_t *o, int family,
                            const char *const *hosts, size_t count, unsigned wait_ms);
/* The usual messages for a failed open; returns the exit code. */
int kp_inspect_session_error(const kp_inspect_opts_t *o, int err);
/* Runs the loop until pred(ctx) (NULL: the timeout) or a signal; false if
 * pred did not hold. */
bool kp_inspect_session_run(kp_inspect_session_t *s, bool (*pred)(void *ctx), void *ctx,
                            unsigned timeout_ms);
/* Closes the node (callbacks of requests in flight fire with UV_ECANCELED
 * now) and the loop. Returns 0, or KP_EXIT_FAIL if the loop leaked. */
int kp_inspect_session_close(kp_inspect_session_t *s);
kp_dht_t *kp_inspect_dht(kp_inspect_session_t *s);

/* Splits o->bootstrap into up to cap hosts of family (names go to both
 * families; literals to their own). text is scratch for the strings. */
size_t kp_inspect_hosts(const kp_inspect_opts_t *o, int family, char text[1024], const char **hosts,
                        size_t cap);
/* The family of the first host in o->bootstrap (IPv4 when unsure). */
int kp_inspect_bootstrap_family(const kp_inspect_opts_t *o);

/* ---- Single requests (session.c) --------------------------------------------- */

/* status 0 (resp valid during the call), UV_ETIMEDOUT after the retries,
 * UV_ECANCELED. rtt_ms is the round trip of an answer to the first try,
 * negative when a retry was needed (that time would not be a round trip). */
typedef void (*kp_inspect_reply_cb)(void *arg, int status, const kp_dht_msg_t *resp,
                                    const kp_addr_t *from, double rtt_ms, unsigned sends);

/* Sends one request (PING, PING_NAT, FIND_NODE with target ...) from the
 * session's node. cb fires once, later. *out (may be NULL) is the request
 * until then. */
int kp_inspect_request(kp_inspect_session_t *s, const kp_addr_t *to, uint8_t command,
                       const uint8_t *target, kp_inspect_reply_cb cb, void *arg,
                       kp_dht_req_t **out);

/* ---- Targets and addresses (target.c) ---------------------------------------- */

/* TARGET as the inspector reads it: 64 hex digits (an id), a public key
 * (52 z-base-32 characters: its own announce target), or a topic (any other
 * text, or anything with force_topic), hashed as `kadpunch lookup` does.
 * *kind: "id", "key" or "topic". Returns 0 or a usage exit code. */
int kp_inspect_target(const char *cmd, const char *text, bool force_topic,
                      uint8_t target[KP_ID_LEN], const char **kind);
/* "HOST:PORT" (names resolved now, literals as is) into *out. Returns 0 or
 * an error (KP_EBADADDR, or the resolver's). */
int kp_inspect_resolve(const char *text, kp_addr_t *out);
/* Lowercase hex of n bytes (buf: 2n+1). */
const char *kp_inspect_hex(const uint8_t *p, size_t n, char *buf);
/* Prints w's text and a newline on stdout; KP_EXIT_FAIL if the writer
 * failed (out of memory). */
int kp_inspect_print_json(kp_jw_t *w, const char *cmd);
/* Writes an address, or null, as the value of key. */
void kp_inspect_jw_addr(kp_jw_t *w, const char *key, const kp_addr_t *a);

/* ---- Iterative queries with their path (query.c) ----------------------------- */

#define KP_INSPECT_SEEN_MAX 1024

typedef struct kp_inspect_result_s {
  uint8_t id[KP_ID_LEN];
  kp_addr_t addr;
  unsigned hops; /* referral depth: 1 = known before the query started */
  double rtt_ms; /* a PING after the query; negative: none measured */
} kp_inspect_result_t;

typedef struct kp_inspect_query_s {
  /* In: what to ask, and a hook for every reply (may be NULL). */
  uint8_t target[KP_ID_LEN];
  uint8_t command; /* 0: FIND_NODE */
  void (*on_reply)(void *arg, const kp_dht_msg_t *reply, const kp_addr_t *from);
  void *arg;
  /* Out. */
  bool done;
  int status; /* the query's: 0, KP_ENONODES */
  kp_dht_query_stats_t stats;
  double duration_ms;
  unsigned replies;
  size_t count;
  kp_inspect_result_t results[KP_DHT_K];
  /* Internal: the depth at which each node was first heard of. */
  kp_dht_query_t *handle;
  uint64_t started_ns;
  unsigned pings;
  void *ping_ctx[KP_DHT_K][2];
  size_t seen_count;
  struct {
    kp_addr_t addr;
    uint8_t hops;
  } seen[KP_INSPECT_SEEN_MAX];
} kp_inspect_query_t;

/* Runs q to its end (at most timeout_ms), then PINGs each result for its
 * round trip. q must live until the session closes. Returns 0 (q->status says how the query went),
 * UV_ECANCELED on a signal, UV_ETIMEDOUT, or the error starting it. */
int kp_inspect_query_run(kp_inspect_session_t *s, kp_inspect_query_t *q, unsigned timeout_ms);
/* The results as a table on stdout, and as "nodes": [...] in w. */
void kp_inspect_query_print_nodes(const kp_inspect_query_t *q);
void kp_inspect_query_json_nodes(kp_jw_t *w, const kp_inspect_query_t *q);
/* "requests", "responses", "timeouts", "hops", "duration_ms" into w. */
void kp_inspect_query_json_stats(kp_jw_t *w, const kp_inspect_query_t *q);

/* ---- Subcommands ---------------------------------------------------------------- */

int kp_inspect_ping(int argc, char **argv);
int kp_inspect_find_node(int argc, char **argv);
int kp_inspect_lookup(int argc, char **argv);
int kp_inspect_nat(int argc, char **argv);
int kp_inspect_table(int argc, char **argv);
int kp_inspect_records(int argc, char **argv);
int kp_inspect_stats(int argc, char **argv);
int kp_inspect_crawl(int argc, char **argv);

#endif
