/* SPDX-License-Identifier: MIT */
/* Shared pieces of the kadpunch command-line program. */
#ifndef KP_CLI_H
#define KP_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "common/rng.h"
#include "kadpunch.h"
#include "node/cli/cli_config.h"
#include "node/cli/prog.h" /* exit codes, shared with kadpunch-inspect */

typedef struct kp_cli_command_s {
  const char *name;
  const char *summary;
  int (*run)(int argc, char **argv);
} kp_cli_command_t;

int kp_cli_dht_node(int argc, char **argv);
int kp_cli_demo(int argc, char **argv);
int kp_cli_keygen(int argc, char **argv);
int kp_cli_announce(int argc, char **argv);
int kp_cli_lookup(int argc, char **argv);
int kp_cli_put(int argc, char **argv);
int kp_cli_get(int argc, char **argv);
int kp_cli_relay(int argc, char **argv);
int kp_cli_proxy(int argc, char **argv);
int kp_cli_serve(int argc, char **argv);
int kp_cli_connect(int argc, char **argv);
int kp_cli_ssh_config(int argc, char **argv);
int kp_cli_status(int argc, char **argv);
int kp_cli_ping(int argc, char **argv);

/* ---- The configuration file (cli_settings.c, cli_config.h) -------------- */

/* Reads the configuration files (main.c, before any command). 0, or
 * KP_EXIT_USAGE after printing the file, line and mistake. */
int kp_cli_settings_load(void);
/* What was read (empty if nothing). */
const kp_cli_config_t *kp_cli_settings(void);
/* A peer named on the command line: a public key, or a host of the
 * configuration (then *service, if given and still NULL, becomes the
 * host's service, if it names one). 0, or an exit code after printing
 * what is wrong. */
int kp_cli_peer(const char *text, uint8_t key[KP_PUBLIC_KEY_LEN], const char **service,
                const char *cmd);

/* ---- Options every networked command takes (cli_node.c) ----------------- */

/* --bind, --bootstrap (default: $KADPUNCH_BOOTSTRAP), --log. */
typedef struct kp_cli_net_s {
  const char *bind;
  const char *bind_also; /* a second --bind, of the other family: a dual-stack node */
  bool bind_given;       /* --bind was given (bind is no default) */
  char bootstrap[1024];
  kp_log_level_t log_level;
  kp_node_mode_t mode;
  const char *relays[4]; /* --relay, repeatable */
  size_t relay_count;
  bool relays_configured; /* relays[] is the config file's: --relay replaces it */
  bool run_relay;         /* kadpunch relay */
  bool relay_only;        /* kadpunch connect --relay-only */
  const char *tcp_relay;  /* --tcp-relay: UDP is blocked, go through it over TCP */
  kp_relay_limits_t relay_limits;
  const char *proxy;            /* --proxy: speak through this proxy */
  bool proxy_private;           /* --private: ... and never go direct */
  bool no_port_mapping;         /* --no-port-mapping: do not ask the gateway */
  const kp_keypair_t *identity; /* the key shown to the proxy (NULL: a fresh one) */
} kp_cli_net_t;

#define KP_CLI_NET_HELP                                                                            \
  "  --bind ADDR:PORT        local address; twice, one of each family, for a\n"                    \
  "                          dual-stack node (default 0.0.0.0:0; [::]:0 when\n"                    \
  "                          every --bootstrap is an IPv6 address; both when\n"                    \
  "                          they are of both families, or names on a host\n"                      \
  "                          with a global IPv6 address)\n"                                        \
  "  --bootstrap HOST:PORT   DHT node(s) to join through, comma separated\n"                       \
  "                          (default: $KADPUNCH_BOOTSTRAP, else the config\n"                     \
  "                          file's bootstrap: docs/config.md)\n"                                  \
  "  --relay HOST:PORT       a blind relay for when no direct path exists\n"                       \
  "                          (repeatable; default: the config file's, else\n"                      \
  "                          relays found on the DHT).\n"                                          \
  "                          If UDP gets nowhere in 3 s, the first is tried\n"                     \
  "                          over TCP (its UDP port number)\n"                                     \
  "  --tcp-relay HOST:PORT   UDP is blocked here: reach everything through\n"                      \
  "                          this relay over TCP (connections are relayed)\n"                      \
  "  --proxy [KEY@]HOST:PORT speak through this proxy (kadpunch proxy): peers\n"                   \
  "                          see its address, not this host's, until a\n"                          \
  "                          connection moves direct. A comma separated\n"                         \
  "                          list (at most 4): the next when one stops\n"                          \
  "                          answering. KEY alone, or auto (up to 4): proxies\n"                   \
  "                          announced on the DHT; tcp:LIST: over TCP\n"                           \
  "  --private               with --proxy: never go direct, so no peer or\n"                       \
  "                          DHT node learns this host's addresses\n"                              \
  "  --no-port-mapping       do not ask the gateway to forward a port to this\n"                   \
  "                          node (NAT-PMP, else UPnP-IGD; asked by default)\n"                    \
  "  --log LEVEL             error, warn (default), info, debug, trace\n"

/* getopt_long values of those options. */
enum {
  KP_CLI_OPT_BIND = 1000,
  KP_CLI_OPT_BOOTSTRAP,
  KP_CLI_OPT_LOG,
  KP_CLI_OPT_RELAY,
  KP_CLI_OPT_TCP_RELAY,
  KP_CLI_OPT_PROXY,
  KP_CLI_OPT_PRIVATE,
  KP_CLI_OPT_NO_PORT_MAPPING
};
#define KP_CLI_NET_OPTIONS                                                                         \
  {"bind", required_argument, 0, KP_CLI_OPT_BIND},                                                 \
      {"bootstrap", required_argument, 0, KP_CLI_OPT_BOOTSTRAP},                                   \
      {"relay", required_argument, 0, KP_CLI_OPT_RELAY},                                           \
      {"tcp-relay", required_argument, 0, KP_CLI_OPT_TCP_RELAY},                                   \
      {"proxy", required_argument, 0, KP_CLI_OPT_PROXY},                                           \
      {"private", no_argument, 0, KP_CLI_OPT_PRIVATE},                                             \
      {"no-port-mapping", no_argument, 0, KP_CLI_OPT_NO_PORT_MAPPING}, {                           \
    "log", required_argument, 0, KP_CLI_OPT_LOG                                                    \
  }

void kp_cli_net_init(kp_cli_net_t *net, kp_node_mode_t mode);
/* Handles one of KP_CLI_NET_OPTIONS. Returns 0, or an exit code after
 * printing the problem. */
int kp_cli_net_option(kp_cli_net_t *net, int opt, const char *arg, const char *cmd);

/* At most this many bootstrap addresses (after resolving names). */
#define KP_CLI_BOOTSTRAP_MAX 16
/* The node's local address, or a dual-stack node's two ("A and B"). */
#define KP_CLI_ADDRS_LEN (2 * KP_ADDR_STRLEN + 8)
const char *kp_cli_local_addrs(kp_node_t *node, char *buf, size_t cap);

/* The comma-separated --bootstrap list as numeric addresses of family
 * (AF_INET, AF_INET6, or AF_UNSPEC for a dual-stack node: both;
 * cli_bootstrap.c): a name gives each of its A or AAAA records. Returns 0
 * (count set, maybe 0), or an exit code after naming the entry that does
 * not resolve or parse. */
int kp_cli_bootstrap_resolve(const char *list, int family, char out[][KP_ADDR_STRLEN], size_t cap,
                             size_t *count, const char *cmd);

/* A node for the length of a command, stopped by SIGINT/SIGTERM. */
typedef kp_prog_session_t kp_cli_session_t; /* prog.h: shared with kadpunch-inspect */

/* Creates the node and waits (up to 10 s) until it has reached the DHT.
 * Returns 0 or an exit code after printing why (bad address, no bootstrap
 * nodes given, none answering). */
int kp_cli_session_open(kp_cli_session_t *s, const kp_cli_net_t *net, const char *cmd);
/* Runs the loop until pred(ctx) holds (or forever if pred is NULL) or a
 * signal arrives; false on timeout. timeout_ms 0: no limit. */
bool kp_cli_session_run(kp_cli_session_t *s, bool (*pred)(void *ctx), void *ctx,
                        unsigned timeout_ms);
/* At most this many proxies in --proxy's list (node/node_proxy.h's
 * KP_PROXY_LINK_MAX), and the longest such list. */
#define KP_CLI_PROXIES 4
#define KP_CLI_PROXY_TEXT (KP_CLI_PROXIES * (KP_KEY_TEXT_LEN + KP_ADDR_STRLEN + 2) + 8)
/* --proxy auto or KEY (cli_proxy_find.c): whether proxy names one to look
 * up on the DHT; the lookup (from a plain node), writing "KEY@ADDR:PORT"
 * to out (auto: up to KP_CLI_PROXIES, comma separated). 0, or an exit
 * code after saying why. */
bool kp_cli_proxy_by_dht(const char *proxy);
int kp_cli_proxy_find(const kp_cli_net_t *net, const char *cmd, char *out, size_t cap);
/* Closes the node and the loop. Returns 0, or KP_EXIT_FAIL if the loop did
 * not close cleanly. */
int kp_cli_session_close(kp_cli_session_t *s);

/* ---- Time on long-running programs' lines (cli_log.c) ------------------- */

/* Whether journald keeps our output ($JOURNAL_STREAM): it stamps lines. */
bool kp_cli_journald(void);
/* "2026-12-02T11:49:03.123+0000 " on out, unless under journald. */
void kp_cli_stamp(FILE *out);
/* The node's log sink for the programs: stamped as above; under journald
 * the library's own ("<N>" priorities). */
void kp_cli_log_sink(void *ctx, kp_log_level_t level, const char *line);

/* Tells the service manager (systemd's Type=notify) state, e.g.
 * "READY=1", if $NOTIFY_SOCKET names a socket (cli_notify.c). */
void kp_cli_notify(const char *state);

/* ---- Keys (cli_node.c) ------------------------------------------------ */

/* $KADPUNCH_KEY, else the config file's key, else ~/.kadpunch/key. */
const char *kp_cli_default_key_path(void);
/* Reads a key file, printing a clear message (what is wrong and what to do)
 * on failure. Returns 0 or an exit code. */
int kp_cli_load_key(const char *path, kp_keypair_t *kp, const char *cmd);
/* The identity a command runs as: --key's file (key_path), else the
 * default file if it exists, else a throwaway key (said on stderr). */
int kp_cli_identity(const char *key_path, kp_keypair_t *kp, const char *cmd);
/* The identity an invitation is redeemed for must outlive the command:
 * the --key file (key_path), else the default file, made now (0600, its
 * folder 0700) if there is none, and said on stderr. *used gets the path
 * to load. Returns 0 or an exit code after printing why. */
int kp_cli_identity_kept(const char *key_path, const char *cmd, const char **used);
/* The DHT target of a command-line TOPIC, or of a key given as --key-of. */
int kp_cli_target(const char *topic, const char *key_text, uint8_t target[KP_ID_LEN],
                  const char *cmd);

/* ---- The echo service (cli_echo.c) ---------------------------------------- */

/* A kp_conn_callbacks_t on_stream that echoes the stream back. */
void kp_cli_echo_stream(kp_conn_t *conn, kp_stream_t *s);

/* ---- Who may connect: --allow, --allow-file (cli_allow.c) --------------- */

#define KP_CLI_ALLOW_MAX 100000

typedef struct kp_cli_allow_s {
  uint8_t (*keys)[KP_PUBLIC_KEY_LEN];
  size_t count, cap;
  bool restricted; /* --allow or --allow-file given: everyone else is refused */
} kp_cli_allow_t;

/* --allow KEY and --allow-file FILE (one key per line, '#' comments, blank
 * lines). Return 0, or an exit code after printing the problem (a bad key,
 * the file and line that is not a key, an unreadable file). */
int kp_cli_allow_key(kp_cli_allow_t *a, const char *text, const char *cmd);
int kp_cli_allow_file(kp_cli_allow_t *a, const char *path, const char *cmd);
/* Whether key may connect: on the list, or no list given. */
bool kp_cli_allow_has(const kp_cli_allow_t *a, const uint8_t key[KP_PUBLIC_KEY_LEN]);
/* One more key (an invitee). 0, or an exit code after printing why. */
int kp_cli_allow_add(kp_cli_allow_t *a, const uint8_t key[KP_PUBLIC_KEY_LEN]);

/* ---- Invitations in a state directory (cli_invites.c) ------------------- */

/* How long an invitation lasts unless told (seconds), and at most. */
#define KP_CLI_INVITE_TTL_DEFAULT_S 3600
#define KP_CLI_INVITE_TTL_MAX_S (365ul * 86400)
/* A new invitation for server_key, valid until expires_s (unix seconds),
 * kept in DIR/invites. 0 or a negative errno. */
int kp_cli_invite_create(const char *dir, const uint8_t server_key[KP_PUBLIC_KEY_LEN],
                         uint64_t expires_s, kp_invite_t *out);
/* A client proving an invitation: 0 (it is used now, and the client's key
 * is in DIR/allow), KP_EINVITE, KP_EINVITEUSED or KP_EINVITEEXPIRED. */
int kp_cli_invite_redeem(const char *dir, const uint8_t server_key[KP_PUBLIC_KEY_LEN],
                         const kp_client_hello_t *hello, uint64_t now_s);

/* cmd_serve.c: kadpunch serve, under another name (daemon); check_only:
 * the options are checked, nothing runs. */
int kp_cli_serve_main(int argc, char **argv, const char *cmd, bool check_only);

/* cmd_daemon.c: a config file as serve's command line, and the state
 * directory and key file it names (also for kadpunch invite). */
#define KP_CLI_DAEMON_MAX_ARGS 128
typedef struct kp_cli_daemon_cfg_s {
  char *argv[KP_CLI_DAEMON_MAX_ARGS];
  int argc;
  char state[1024];
  char key[1100]; /* state + "/key" fits */
  bool control_set;
} kp_cli_daemon_cfg_t;
/* 0, or an exit code after naming the bad line. Free it either way. */
int kp_cli_daemon_config(const char *path, kp_cli_daemon_cfg_t *c);
void kp_cli_daemon_config_free(kp_cli_daemon_cfg_t *c);
int kp_cli_daemon(int argc, char **argv);
int kp_cli_invite(int argc, char **argv);
void kp_cli_allow_free(kp_cli_allow_t *a);

/* ---- TCP forwarding and stdio (cli_forward.c, cmd_listen.c, cmd_stdio.c) -- */

typedef struct kp_cli_forward_s kp_cli_forward_t;

/* serve --forward HOST:PORT: parses and resolves the target (once, now;
 * "localhost" is 127.0.0.1). loop carries the TCP connections from the
 * first stream on (it need not be initialized yet). Returns 0, or an exit
 * code after printing the problem. */
int kp_cli_forward_new(uv_loop_t *loop, const char *target, const char *cmd,
                       kp_cli_forward_t **out);
/* HOST:PORT or [IPv6]:PORT resolved now ("localhost" is 127.0.0.1), for
 * socktype. Returns 0, or an exit code after saying what is wrong with
 * option opt. */
int kp_cli_resolve(const char *target, int socktype, struct sockaddr_storage *out, const char *opt,
                   const char *cmd);
/* The target as resolved ("127.0.0.1:22"). */
const char *kp_cli_forward_target(const kp_cli_forward_t *f);
/* A kp_conn_callbacks_t on_stream: each stream becomes a TCP connection to
 * the target. The connection's data must be the forward. */
void kp_cli_forward_stream(kp_conn_t *conn, kp_stream_t *s);
/* The same for a connection whose data is something else (serve's). */
void kp_cli_forward_stream_to(kp_cli_forward_t *f, kp_conn_t *conn, kp_stream_t *s);
/* The connection is over: its TCP connections are reset. */
void kp_cli_forward_conn_closed(kp_cli_forward_t *f, const kp_conn_t *conn);
/* At exit: resets every TCP connection (before kp_cli_session_close), then
 * frees f (after it, once the loop has closed them). */
void kp_cli_forward_stop(kp_cli_forward_t *f);
void kp_cli_forward_free(kp_cli_forward_t *f);

/* "1.2.3.4:5" or "[::1]:5" (cli_forward.c). Returns out. */
const char *kp_cli_sockaddr_format(const struct sockaddr_storage *ss, char out[64]);

/* What kadpunch connect parsed, for its --listen and --stdio modes. */
typedef struct kp_cli_connect_args_s {
  kp_cli_net_t net;
  const char *key_path;
  uint8_t server_key[KP_PUBLIC_KEY_LEN];
  char key_text[KP_KEY_TEXT_LEN + 1];
  const char *listen;        /* --listen ADDR:PORT */
  const char *socks;         /* --socks ADDR:PORT (cli_socks_client.c) */
  const char *listen_udp;    /* --listen-udp ADDR:PORT (cli_udp_listen.c) */
  const char *control;       /* --control PATH: `kadpunch status` reads it */
  bool verbose;              /* --stdio: the connection's details on stderr */
  kp_connect_options_t opts; /* --service, --info, an invitation */
  kp_invite_t invite;
} kp_cli_connect_args_t;

int kp_cli_connect_listen(kp_cli_connect_args_t *a);
int kp_cli_connect_stdio(kp_cli_connect_args_t *a);

/* cmd_connect.c: how a connection came about (the NATs, the path and, for
 * a client, each phase's time), indented lines on out; and why a connect
 * failed, on stderr. */
void kp_cli_print_info(FILE *out, const kp_connect_info_t *info, bool client);
void kp_cli_print_connect_error(const char *key, int status, const kp_connect_info_t *info);
/* A path change in one line: "path: relay lost: moved to another relay
 * (relay 203.0.113.7:49737)". */
const char *kp_cli_path_text(const kp_path_event_t *ev, char *buf, size_t len);
/* A kp_conn_path_cb for --listen and --stdio --verbose: each path change
 * and its reason, on stderr. */
void kp_cli_print_path_change(kp_conn_t *conn, const kp_path_event_t *ev);
/* What a connection went through, one line: path changes, time without
 * a path, bytes sent again, the round trip. */
void kp_cli_print_conn_stats(FILE *out, const char *prefix, kp_conn_t *conn);
/* The peer's device info, one indented line. */
void kp_cli_print_device(FILE *out, const kp_device_info_t *d);

/* demo_connect.c: servers and connects by key on the demo's testnet. */
struct kp_testnet_s;
int kp_cli_demo_connects(struct kp_testnet_s *tn, unsigned connects, const kp_rng_t *rng);
/* demo_service.c: a TCP service forwarded by key, reached direct and relayed. */
int kp_cli_demo_service(struct kp_testnet_s *tn);

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
