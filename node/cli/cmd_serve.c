/* SPDX-License-Identifier: MIT */
/* kadpunch serve: a key pair reachable from anywhere, and what clients get
 * there: an echo, or local TCP services by name (--forward), a device info
 * for those who ask (--info), and who may come in (--allow, --allow-file,
 * invitations kept in --state). `kadpunch daemon` runs this from a config
 * file (cmd_daemon.c). SIGHUP re-reads the allow lists. UDP services
 * (--forward-udp) and SOCKS (--socks, --socks-allow) are in cli_socks.h. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "node/cli/cli.h"
#include "node/cli/cli_conns.h"
#include "node/cli/cli_metrics.h"
#include "node/cli/cli_socks.h"
#include "node/control.h"

static const char serve_help[] =
    "usage: kadpunch serve [options]\n"
    "\n"
    "Listens on this peer's key pair from wherever it is, behind a NAT too: the\n"
    "key is announced on the DHT and clients reach it with `kadpunch connect KEY`.\n"
    "Every stream a client opens is echoed back, or with --forward becomes a TCP\n"
    "connection to a local service (ssh, say), bytes both ways, until either end\n"
    "closes. Prints the key, then one line block per connection (the client, the\n"
    "NATs, the path). Runs until SIGINT or SIGTERM; SIGHUP re-reads the allow\n"
    "lists.\n"
    "\n"
    "options:\n"
    "  --key FILE              key file (default $KADPUNCH_KEY, else ~/.kadpunch/key;\n"
    "                          without one, a throwaway key is used)\n"
    "  --forward [NAME=]HOST:PORT\n"
    "                          make each stream a TCP connection to HOST:PORT (an IP\n"
    "                          address, [IPv6]:PORT, localhost or a name, resolved\n"
    "                          once at start). Up to 4, each a service by NAME\n"
    "                          (default \"default\"); clients pick one with\n"
    "                          `connect --service NAME`, else get the first. A\n"
    "                          connection the service refuses resets the stream;\n"
    "                          the client is told why.\n"
    "  --forward-udp [NAME=]HOST:PORT\n"
    "                          a UDP service: datagrams a client sends (`connect\n"
    "                          --listen-udp ADDR:PORT --service NAME`) go to\n"
    "                          HOST:PORT from a socket per client flow, replies go\n"
    "                          back; a flow unused for --udp-idle ends\n"
    "  --socks                 a SOCKS service (named socks): clients' `connect\n"
    "                          --socks` CONNECT and UDP ASSOCIATE requests go where\n"
    "                          --socks-allow says, names resolved here\n"
    "  --socks-allow DEST:PORTS\n"
    "                          where SOCKS may go (repeatable; default: nowhere):\n"
    "                          192.168.1.0/24:22,80,443, [fd00::]/64:*, nas.lan:445,\n"
    "                          *.lan:80. This host's loopback and link-local\n"
    "                          addresses only by a rule inside them (127.0.0.1:8080)\n"
    "  --udp-idle SECONDS      a UDP flow unused this long ends (default 60)\n"
    "  --allow KEY             let only this client key in (repeatable; default:\n"
    "                          everyone). Others are refused and told so.\n"
    "  --allow-file FILE       the same for every key in FILE: one key per line,\n"
    "                          '#' comments and blank lines ignored\n"
    "  --state DIR             keep invitations here (`kadpunch invite --state DIR`)\n"
    "                          and the keys they let in (DIR/allow). Only listed\n"
    "                          keys and invitees get in. DIR/server-key records\n"
    "                          the public key served, for `kadpunch invite`.\n"
    "  --name NAME             this device's name in its info (default: the host name)\n"
    "  --info WHO              who gets the device info (name, version, services) when\n"
    "                          they ask (`connect --info`): nobody, allowed (default),\n"
    "                          everyone (refused clients too)\n"
    "  --control PATH          a control socket (0600) for kadpunch-inspect: table,\n"
    "                          records, stats, and \"serve\" (this server's "
    "counters);\n"
    "                          with --state, `kadpunch invite --control PATH`;\n"
    "                          `kadpunch status` lists the live connections\n"
    "  --metrics ADDR:PORT     Prometheus metrics over HTTP at /metrics\n"
    "                          (docs/metrics.md; PORT alone is 127.0.0.1:PORT)\n" KP_CLI_NET_HELP
    "\n"
    "examples:\n"
    "  kadpunch serve --bootstrap 203.0.113.7:49737\n"
    "  kadpunch serve --key ~/.kadpunch/key --allow "
    "1kbqs8tc39zasouiojo73fmb83iynjt7ppdn835bskst4nf4yrqy\n"
    "  kadpunch serve --forward ssh=localhost:22 --forward web=localhost:80 --state ~/.kadpunch\n"
    "  kadpunch serve --socks --socks-allow 192.168.1.0/24:22,80,443 --forward-udp "
    "dns=192.168.1.1:53\n"
    "      (then from anywhere: ssh -o ProxyCommand='kadpunch connect %h --stdio' KEY)\n"
    "\n"
    "exit codes: 0 stopped by a signal, 1 the network failed, 2 bad options, key,\n"
    "--forward address (unresolvable) or --allow-file (unreadable, a line that is\n"
    "not a key)\n";

#define MAX_ALLOW_ARGS 64
#define MAX_ALLOW_FILES 8

typedef enum { SERVICE_TCP, SERVICE_UDP, SERVICE_SOCKS } service_kind_t;

typedef struct service_s {
  char name[KP_SERVICE_MAX + 1];
  service_kind_t kind;
  kp_cli_forward_t *fwd;        /* TCP */
  kp_cli_udp_flows_t *udp;      /* UDP, and SOCKS's UDP ASSOCIATE */
  kp_cli_socks_server_t *socks; /* SOCKS */
  char target[64];              /* what it reaches, for people */
} service_t;

/* A client's connection: its service (NULL: the echo), and who it is
 * (for the logs and `kadpunch status`). */
typedef struct serve_conn_s {
  const service_t *svc;
  struct serve_s *sv;
  char key[KP_KEY_TEXT_LEN + 1];
  kp_cli_conn_t entry;
} serve_conn_t;

/* What --metrics adds to the node's (cmd_serve_metrics.c). Refusal
 * reasons in the order of serve_refusal(). */
#define SERVE_PENDING 64
enum { REFUSED_NOT_ALLOWED, REFUSED_NO_SERVICE, REFUSED_INVITE, REFUSED_OVERLOADED, REFUSED_N };
typedef struct serve_stats_s {
  uint64_t by_path[KP_PUNCH_RELAYED + 1]; /* connections, by how the path was made */
  uint64_t refused[REFUSED_N];
  uint64_t path_changes;
  kp_cli_latency_t connect; /* a client's hello to its proven path */
  /* When a hello was let through, by client key (the newest 64). */
  struct {
    uint8_t key[KP_PUBLIC_KEY_LEN];
    uint64_t at_ms;
  } pending[SERVE_PENDING];
  unsigned pending_next;
} serve_stats_t;

/* kp_cli_serve's state. Options are checked before the node starts. */
typedef struct serve_s {
  kp_cli_session_t s;
  kp_cli_net_t net;
  const char *key_path, *state, *cmd, *control_path;
  kp_control_t *control;
  const char *allow_keys[MAX_ALLOW_ARGS], *allow_files[MAX_ALLOW_FILES];
  size_t allow_key_count, allow_file_count;
  kp_cli_allow_t allow;
  service_t services[KP_SERVICES_MAX];
  unsigned service_count;
  kp_device_info_t info;
  kp_info_policy_t info_policy;
  bool socks;
  kp_cli_socks_allow_t socks_allow;
  unsigned udp_idle_ms;
  uint8_t public_key[KP_PUBLIC_KEY_LEN];
  uv_signal_t sighup;
  uint64_t connections, refused, invited;
  kp_cli_conns_t conns; /* the live ones */
  serve_stats_t stats;  /* for --metrics */
  const char *metrics_addr;
  kp_cli_metrics_t *metrics;
  kp_server_t *server;
} serve_t;

/* ---- Who may come in ----------------------------------------------------------------- */

/* The allow list from the options and the state directory; at start and
 * on SIGHUP (then a broken file keeps the old list). */
static int load_allow(serve_t *sv, kp_cli_allow_t *out) {
  int rc = 0;
  memset(out, 0, sizeof(*out));
  for (size_t i = 0; i < sv->allow_key_count && !rc; i++)
    rc = kp_cli_allow_key(out, sv->allow_keys[i], sv->cmd);
  for (size_t i = 0; i < sv->allow_file_count && !rc; i++)
    rc = kp_cli_allow_file(out, sv->allow_files[i], sv->cmd);
  if (!rc && sv->state) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/allow", sv->state);
    out->restricted = true; /* listed keys and invitees only */
    if (access(path, F_OK) == 0) rc = kp_cli_allow_file(out, path, sv->cmd);
  }
  if (rc) kp_cli_allow_free(out);
  return rc;
}

static void on_sighup(uv_signal_t *h, int signum) {
  serve_t *sv = h->data;
  kp_cli_allow_t fresh;
  (void)signum;
  kp_cli_notify("RELOADING=1");
  if (load_allow(sv, &fresh)) {
    fprintf(stderr, "kadpunch %s: SIGHUP: keeping the old allow list\n", sv->cmd);
    kp_cli_notify("READY=1\nSTATUS=SIGHUP: an allow list did not parse; the old one stays");
    return;
  }
  kp_cli_allow_free(&sv->allow);
  sv->allow = fresh;
  kp_cli_stamp(stdout);
  printf("reloaded the allow list: %zu keys\n", sv->allow.count);
  fflush(stdout);
  kp_cli_notify("READY=1\nSTATUS=serving; the allow list reloaded");
}

static const service_t *find_service(const serve_t *sv, const char *name) {
  if (!sv->service_count) return NULL;
  if (!*name) return &sv->services[0];
  for (unsigned i = 0; i < sv->service_count; i++)
    if (!strcmp(sv->services[i].name, name)) return &sv->services[i];
  return NULL;
}

static int serve_firewall(kp_server_t *server, const kp_client_hello_t *hello, void *arg) {
  serve_t *sv = arg;
  char text[KP_KEY_TEXT_LEN + 1];
  (void)server;
  kp_key_to_text(hello->key, text);
  bool known = sv->service_count ? find_service(sv, hello->service) != NULL
                                 : !*hello->service || !strcmp(hello->service, "echo");
  int why = !known                                     ? KP_ENOSERVICE
            : kp_cli_allow_has(&sv->allow, hello->key) ? 0
            : !hello->has_invite                       ? KP_ENOTALLOWED
            : !sv->state
                ? KP_EINVITE
                : kp_cli_invite_redeem(sv->state, sv->public_key, hello, (uint64_t)time(NULL));
  if (!why && hello->has_invite && !kp_cli_allow_has(&sv->allow, hello->key)) {
    /* In for good: the key went to DIR/allow too (and in memory; if that
     * fails the next SIGHUP or start reads it from the file). */
    if (kp_cli_allow_add(&sv->allow, hello->key))
      fprintf(stderr, "kadpunch %s: the allow list is full in memory\n", sv->cmd);
    sv->invited++;
    kp_cli_stamp(stdout);
    printf("invited %s: allowed from now on\n", text);
  } else if (why) {
    kp_cli_stamp(stdout);
    printf("refused %s: %s\n", text, kp_strerror(why));
    sv->refused++;
    sv->stats.refused[why == KP_ENOSERVICE    ? REFUSED_NO_SERVICE
                      : why == KP_EOVERLOADED ? REFUSED_OVERLOADED
                      : why == KP_EINVITE || why == KP_EINVITEUSED || why == KP_EINVITEEXPIRED
                          ? REFUSED_INVITE
                          : REFUSED_NOT_ALLOWED]++;
  }
  if (!why) {
    serve_stats_t *st = &sv->stats;
    unsigned i = st->pending_next++ % SERVE_PENDING;
    memcpy(st->pending[i].key, hello->key, KP_PUBLIC_KEY_LEN);
    st->pending[i].at_ms = uv_now(&sv->s.loop);
  }
  fflush(stdout);
  return why;
}

/* ---- Connections ------------------------------------------------------------------------ */

static void on_serve_close(kp_conn_t *conn, int status, uint64_t code) {
  serve_conn_t *sc = kp_conn_get_data(conn);
  (void)code;
  if (sc) {
    const service_t *svc = sc->svc;
    if (svc && svc->fwd) kp_cli_forward_conn_closed(svc->fwd, conn);
    if (svc && svc->socks) kp_cli_socks_server_conn_closed(svc->socks, conn);
    if (svc && svc->udp) kp_cli_udp_flows_conn_closed(svc->udp, conn);
    serve_t *sv = sc->sv;
    kp_cli_conns_print_closed(stdout, &sv->conns, &sc->entry, status);
    kp_cli_conns_remove(&sv->conns, &sc->entry);
    kp_conn_set_data(conn, NULL);
    free(sc);
  } else {
    kp_cli_stamp(stdout);
    printf("connection closed: %s\n", status ? kp_strerror(status) : "closed here");
  }
  kp_cli_print_conn_stats(stdout, "  ", conn);
  kp_conn_close(conn, 0);
}

static void on_serve_path(kp_conn_t *conn, const kp_path_event_t *ev) {
  serve_conn_t *sc = kp_conn_get_data(conn);
  char text[128];
  if (sc) kp_cli_conns_path(&sc->entry, ev);
  if (sc) sc->sv->stats.path_changes++;
  kp_cli_stamp(stdout);
  printf("connection %s\n", kp_cli_path_text(ev, text, sizeof(text)));
  fflush(stdout);
}

static void on_serve_stream(kp_conn_t *conn, kp_stream_t *s) {
  serve_conn_t *sc = kp_conn_get_data(conn);
  if (!sc || !sc->svc) {
    kp_cli_echo_stream(conn, s);
  } else if (sc->svc->kind == SERVICE_TCP) {
    kp_cli_forward_stream_to(sc->svc->fwd, conn, s);
  } else if (sc->svc->kind == SERVICE_SOCKS) {
    kp_cli_socks_server_stream(sc->svc->socks, conn, s, sc->key);
  } else {
    kp_stream_reset(s, KP_STREAM_REFUSED); /* a UDP service carries datagrams only */
    kp_stream_close(s, NULL);
  }
}

/* Datagrams: a UDP service's flows, SOCKS's UDP ASSOCIATE, or the echo. */
static void on_serve_datagram(kp_conn_t *conn, const uint8_t *data, size_t len) {
  serve_conn_t *sc = kp_conn_get_data(conn);
  /* An empty one is `kadpunch ping` asking for an ack (a round-trip
   * sample): it carries nothing for any service. */
  if (!len) return;
  if (!sc || !sc->svc)
    kp_conn_datagram_send(conn, data, len);
  else if (sc->svc->udp)
    kp_cli_udp_flows_input(sc->svc->udp, conn, data, len);
}

static void on_serve_connection(kp_server_t *server, kp_conn_t *conn, const kp_connect_info_t *info,
                                void *arg) {
  serve_t *sv = arg;
  char key[KP_KEY_TEXT_LEN + 1];
  (void)server;
  /* Before any stream of the connection can arrive: where its streams go. */
  const service_t *svc = find_service(sv, info->service);
  kp_key_to_text(info->remote_key, key);
  serve_conn_t *sc = calloc(1, sizeof(*sc));
  if (!sc) {
    fprintf(stderr, "kadpunch %s: out of memory: connection closed\n", sv->cmd);
    kp_conn_close(conn, 0);
    return;
  }
  sc->svc = svc;
  sc->sv = sv;
  memcpy(sc->key, key, sizeof(sc->key));
  kp_cli_conns_add(&sv->conns, &sc->entry, conn, info, svc ? svc->name : "echo", false);
  kp_conn_set_data(conn, sc);
  sv->connections++;
  serve_stats_t *st = &sv->stats;
  if (info->punch <= KP_PUNCH_RELAYED) st->by_path[info->punch]++;
  for (unsigned i = 0; i < SERVE_PENDING; i++) {
    if (st->pending[i].at_ms && !memcmp(st->pending[i].key, info->remote_key, KP_PUBLIC_KEY_LEN)) {
      kp_cli_latency_add(&st->connect, (unsigned)(uv_now(&sv->s.loop) - st->pending[i].at_ms));
      st->pending[i].at_ms = 0;
      break;
    }
  }
  kp_cli_stamp(stdout);
  printf("connection from %s (service %s)\n", key, svc ? svc->name : "echo");
  kp_cli_print_info(stdout, info, false);
  fflush(stdout);
}

/* ---- Options ------------------------------------------------------------------------------ */

/* A service's slot and its name ("default" or NAME= in front of arg);
 * NULL after saying what is wrong (rc set). */
static service_t *new_service(serve_t *sv, const char *opt, const char *arg, const char **target,
                              int *rc) {
  *rc = 0;
  if (sv->service_count == KP_SERVICES_MAX) {
    *rc = kp_cli_usage_error(sv->cmd,
                             "at most %d services (--forward, --forward-udp, --socks together)",
                             KP_SERVICES_MAX);
    return NULL;
  }
  service_t *svc = &sv->services[sv->service_count];
  memset(svc, 0, sizeof(*svc));
  const char *eq = strchr(arg, '=');
  *target = eq ? eq + 1 : arg;
  snprintf(svc->name, sizeof(svc->name), "default");
  if (eq) {
    size_t n = (size_t)(eq - arg);
    if (n > KP_SERVICE_MAX) n = KP_SERVICE_MAX + 1; /* too long: fails the check */
    snprintf(svc->name, sizeof(svc->name), "%.*s", (int)n, arg);
    if (n > KP_SERVICE_MAX || !kp_service_name_ok(svc->name)) {
      *rc = kp_cli_usage_error(sv->cmd,
                               "%s '%s': a service name is 1 to %d letters, digits, "
                               "'.', '_' or '-'",
                               opt, arg, KP_SERVICE_MAX);
      return NULL;
    }
  }
  for (unsigned i = 0; i < sv->service_count; i++) {
    if (!strcmp(sv->services[i].name, svc->name)) {
      *rc = kp_cli_usage_error(sv->cmd, "%s: two services named '%s'", opt, svc->name);
      return NULL;
    }
  }
  return svc;
}

static int add_forward(serve_t *sv, const char *arg) {
  const char *target;
  int rc;
  service_t *svc = new_service(sv, "--forward", arg, &target, &rc);
  if (!svc) return rc;
  svc->kind = SERVICE_TCP;
  rc = kp_cli_forward_new(&sv->s.loop, target, sv->cmd, &svc->fwd);
  if (rc) return rc;
  snprintf(svc->target, sizeof(svc->target), "%s", kp_cli_forward_target(svc->fwd));
  sv->service_count++;
  return 0;
}

static int add_forward_udp(serve_t *sv, const char *arg) {
  const char *target;
  int rc;
  service_t *svc = new_service(sv, "--forward-udp", arg, &target, &rc);
  if (!svc) return rc;
  struct sockaddr_storage ss;
  if ((rc = kp_cli_resolve(target, SOCK_DGRAM, &ss, "--forward-udp", sv->cmd))) return rc;
  svc->kind = SERVICE_UDP;
  char text[64];
  snprintf(svc->target, sizeof(svc->target), "udp %s", kp_cli_sockaddr_format(&ss, text));
  if (kp_cli_udp_flows_new(&sv->s.loop, (const struct sockaddr *)&ss, NULL, sv->udp_idle_ms,
                           &svc->udp))
    return KP_EXIT_FAIL;
  sv->service_count++;
  return 0;
}

/* --socks: a service named "socks", after every --socks-allow is read. */
static int add_socks(serve_t *sv) {
  const char *target;
  int rc;
  service_t *svc = new_service(sv, "--socks", KP_CLI_SOCKS_SERVICE "=", &target, &rc);
  if (!svc) return rc;
  svc->kind = SERVICE_SOCKS;
  snprintf(svc->target, sizeof(svc->target), "socks, %u rule%s", sv->socks_allow.count,
           sv->socks_allow.count == 1 ? "" : "s");
  if (kp_cli_socks_server_new(&sv->s.loop, &sv->socks_allow, &svc->socks) ||
      kp_cli_udp_flows_new(&sv->s.loop, NULL, &sv->socks_allow, sv->udp_idle_ms, &svc->udp))
    return KP_EXIT_FAIL;
  sv->service_count++;
  if (!sv->socks_allow.count)
    fprintf(stderr, "kadpunch %s: --socks without --socks-allow: every request is refused\n",
            sv->cmd);
  return 0;
}

static int set_info(serve_t *sv, const char *name, const char *who) {
  char host[256] = "kadpunch";
  if (!name) {
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    name = host; /* cut to KP_NAME_MAX below */
  } else if (strlen(name) > KP_NAME_MAX || !*name) {
    return kp_cli_usage_error(sv->cmd, "--name: 1 to %d characters", KP_NAME_MAX);
  }
  snprintf(sv->info.name, sizeof(sv->info.name), "%.*s", KP_NAME_MAX, name);
  for (char *p = sv->info.name; *p; p++)
    if (*p < 0x20 || *p > 0x7e) *p = '?';
  snprintf(sv->info.version, sizeof(sv->info.version), "%s", KP_VERSION_STRING);
  for (unsigned i = 0; i < sv->service_count; i++)
    memcpy(sv->info.services[i], sv->services[i].name, sizeof(sv->info.services[i]));
  sv->info.service_count = sv->service_count;
  if (!sv->service_count) {
    snprintf(sv->info.services[0], sizeof(sv->info.services[0]), "echo");
    sv->info.service_count = 1;
  }
  if (!who || !strcmp(who, "allowed")) {
    sv->info_policy = KP_INFO_ALLOWED;
  } else if (!strcmp(who, "everyone")) {
    sv->info_policy = KP_INFO_EVERYONE;
  } else if (!strcmp(who, "nobody")) {
    sv->info_policy = KP_INFO_NOBODY;
  } else {
    return kp_cli_usage_error(sv->cmd, "--info '%s': nobody, allowed or everyone", who);
  }
  return 0;
}

/* Returns -1 to go on, else the exit code. */
static int serve_options(serve_t *sv, int argc, char **argv) {
  static const struct option longopts[] = {{"key", required_argument, 0, 'k'},
                                           {"allow", required_argument, 0, 'a'},
                                           {"allow-file", required_argument, 0, 'A'},
                                           {"forward", required_argument, 0, 'f'},
                                           {"forward-udp", required_argument, 0, 'F'},
                                           {"socks", no_argument, 0, 'S'},
                                           {"socks-allow", required_argument, 0, 'R'},
                                           {"udp-idle", required_argument, 0, 'U'},
                                           {"state", required_argument, 0, 's'},
                                           {"name", required_argument, 0, 'n'},
                                           {"info", required_argument, 0, 'i'},
                                           {"control", required_argument, 0, 'c'},
                                           {"metrics", required_argument, 0, 'M'},
                                           {"help", no_argument, 0, 'h'},
                                           KP_CLI_NET_OPTIONS,
                                           {0, 0, 0, 0}};
  const char *name = NULL, *who = NULL;
  const char *udp_args[KP_SERVICES_MAX + 1];
  unsigned udp_count = 0;
  char err[256];
  unsigned long secs;
  int c, rc;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    rc = 0;
    switch (c) {
      case 'k': sv->key_path = optarg; break;
      case 'a':
        if (sv->allow_key_count == MAX_ALLOW_ARGS)
          return kp_cli_usage_error(sv->cmd, "at most %d --allow", MAX_ALLOW_ARGS);
        sv->allow_keys[sv->allow_key_count++] = optarg;
        break;
      case 'A':
        if (sv->allow_file_count == MAX_ALLOW_FILES)
          return kp_cli_usage_error(sv->cmd, "at most %d --allow-file", MAX_ALLOW_FILES);
        sv->allow_files[sv->allow_file_count++] = optarg;
        break;
      case 'f': rc = add_forward(sv, optarg); break;
      case 'F':
        /* After the loop: --udp-idle may come later. */
        if (udp_count == KP_SERVICES_MAX)
          return kp_cli_usage_error(sv->cmd, "at most %d --forward-udp", KP_SERVICES_MAX);
        udp_args[udp_count++] = optarg;
        break;
      case 'S': sv->socks = true; break;
      case 'R':
        if (!kp_cli_socks_allow_add(&sv->socks_allow, optarg, err, sizeof(err)))
          return kp_cli_usage_error(sv->cmd, "--socks-allow: %s", err);
        break;
      case 'U':
        if (!kp_cli_parse_uint(optarg, 1, 86400, &secs))
          return kp_cli_usage_error(sv->cmd, "--udp-idle '%s': seconds, 1 to 86400", optarg);
        sv->udp_idle_ms = (unsigned)secs * 1000;
        break;
      case 's': sv->state = optarg; break;
      case 'n': name = optarg; break;
      case 'i': who = optarg; break;
      case 'c': sv->control_path = optarg; break;
      case 'M': sv->metrics_addr = optarg; break;
      case 'h': fputs(serve_help, stdout); return KP_EXIT_OK;
      default: rc = kp_cli_net_option(&sv->net, c, optarg, sv->cmd); break;
    }
    if (rc) return rc;
  }
  if (optind < argc) return kp_cli_usage_error(sv->cmd, "unexpected argument '%s'", argv[optind]);
  for (unsigned i = 0; i < udp_count; i++)
    if ((rc = add_forward_udp(sv, udp_args[i]))) return rc;
  if (sv->socks_allow.count && !sv->socks)
    return kp_cli_usage_error(sv->cmd, "--socks-allow goes with --socks");
  if (sv->socks && (rc = add_socks(sv))) return rc;
  if ((rc = set_info(sv, name, who))) return rc;
  if ((rc = load_allow(sv, &sv->allow))) return rc;
  return -1;
}

/* ---- Running ------------------------------------------------------------------------------ */

/* A UDP service's flows, SOCKS's requests. */
static void control_service_counters(kp_jw_t *out, const service_t *svc) {
  if (svc->udp) {
    kp_cli_udp_stats_t u;
    kp_cli_udp_flows_stats(svc->udp, &u);
    kp_jw_ku64(out, "udp_flows", u.open);
    kp_jw_ku64(out, "udp_flows_opened", u.flows_opened);
    kp_jw_ku64(out, "udp_flows_idle", u.flows_idle);
    kp_jw_ku64(out, "udp_flows_evicted", u.flows_evicted);
    kp_jw_ku64(out, "udp_to_service", u.to_service);
    kp_jw_ku64(out, "udp_from_service", u.from_service);
    kp_jw_ku64(out, "udp_dropped", u.dropped);
  }
  if (svc->socks) {
    kp_cli_socks_stats_t s;
    kp_cli_socks_server_stats(svc->socks, &s);
    kp_jw_ku64(out, "socks_requests", s.requests);
    kp_jw_ku64(out, "socks_connected", s.connected);
    kp_jw_ku64(out, "socks_refused", s.refused);
    kp_jw_ku64(out, "socks_failed", s.failed);
    kp_jw_ku64(out, "socks_pending", s.pending);
  }
}

/* {"cmd":"serve"}: the key, the services, the counters. */
static int control_serve(void *ctx, const kp_json_t *request, const char *line, size_t len,
                         kp_jw_t *out) {
  serve_t *sv = ctx;
  char key[KP_KEY_TEXT_LEN + 1];
  (void)request, (void)line, (void)len;
  kp_key_to_text(sv->public_key, key);
  kp_jw_obj(out);
  kp_jw_kbool(out, "ok", true);
  kp_jw_kstr(out, "cmd", "serve");
  kp_jw_kstr(out, "key", key);
  kp_jw_kstr(out, "name", sv->info.name);
  kp_jw_key(out, "services");
  kp_jw_arr(out);
  for (unsigned i = 0; i < sv->service_count; i++) {
    kp_jw_obj(out);
    kp_jw_kstr(out, "name", sv->services[i].name);
    kp_jw_kstr(out, "target", sv->services[i].target);
    control_service_counters(out, &sv->services[i]);
    kp_jw_obj_end(out);
  }
  kp_jw_arr_end(out);
  kp_jw_ku64(out, "allowed_keys", sv->allow.restricted ? sv->allow.count : 0);
  kp_jw_kbool(out, "restricted", sv->allow.restricted);
  kp_jw_ku64(out, "connections", sv->connections);
  kp_jw_ku64(out, "refused", sv->refused);
  kp_jw_ku64(out, "invited", sv->invited);
  kp_jw_obj_end(out);
  return 0;
}

/* {"cmd":"invite","expires":SECONDS}: a one-time invitation made by the
 * server itself, so its files belong to the user it runs as whoever asks
 * (docs/daemon.md, "Invitations"). */
static int control_invite(void *ctx, const kp_json_t *request, const char *line, size_t len,
                          kp_jw_t *out) {
  serve_t *sv = ctx;
  (void)line, (void)len;
  double ttl_s = kp_json_get_num(request, "expires", KP_CLI_INVITE_TTL_DEFAULT_S);
  kp_jw_obj(out);
  if (!sv->state || !(ttl_s >= 1 && ttl_s <= KP_CLI_INVITE_TTL_MAX_S) ||
      ttl_s != (double)(uint64_t)ttl_s) {
    kp_jw_kbool(out, "ok", false);
    kp_jw_kstr(out, "error",
               !sv->state ? "this server keeps no invitations (it runs without --state)"
                          : "expires: 1 to 31536000 seconds");
    kp_jw_obj_end(out);
    return 0;
  }
  kp_invite_t inv;
  uint64_t expires_s = (uint64_t)time(NULL) + (uint64_t)ttl_s;
  int err = kp_cli_invite_create(sv->state, sv->public_key, expires_s, &inv);
  if (err) {
    char why[512];
    snprintf(why, sizeof(why), "%s/invites: %s", sv->state, uv_strerror(err));
    fprintf(stderr, "kadpunch %s: cannot make an invitation: %s\n", sv->cmd, why);
    kp_jw_kbool(out, "ok", false);
    kp_jw_kstr(out, "error", why);
    kp_jw_obj_end(out);
    return 0;
  }
  char code[KP_INVITE_TEXT_LEN + 1], key[KP_KEY_TEXT_LEN + 1];
  kp_invite_to_text(&inv, code);
  sodium_memzero(&inv, sizeof(inv));
  kp_key_to_text(sv->public_key, key);
  kp_jw_kbool(out, "ok", true);
  kp_jw_kstr(out, "cmd", "invite");
  kp_jw_kstr(out, "code", code);
  kp_jw_kstr(out, "server", key);
  kp_jw_ku64(out, "expires", expires_s);
  kp_jw_obj_end(out);
  sodium_memzero(code, sizeof(code));
  kp_cli_stamp(stdout);
  printf("made an invitation, valid %.0f s (asked on the control socket)\n", ttl_s);
  fflush(stdout);
  return 0;
}

/* --metrics: what serve adds to the node's. */
static void serve_metrics(void *ctx, kp_cli_text_t *t) {
  const serve_t *sv = ctx;
  const serve_stats_t *st = &sv->stats;
  kp_cli_metric_head(t, "kadpunch_serve_connections_total", "counter",
                     "Clients' connections made, by how the path was made.");
  for (int p = KP_PUNCH_LAN; p <= KP_PUNCH_RELAYED; p++)
    kp_cli_text_printf(t, "kadpunch_serve_connections_total{path=\"%s\"} %llu\n",
                       kp_punch_name((kp_punch_t)p), (unsigned long long)st->by_path[p]);
  kp_cli_metric_head(t, "kadpunch_serve_connections", "gauge", "Clients connected now.");
  kp_cli_text_printf(t, "kadpunch_serve_connections %zu\n", sv->conns.count);
  kp_cli_metric_head(t, "kadpunch_serve_refused_total", "counter", "Clients refused, by reason.");
  static const char *const why[REFUSED_N] = {"not_allowed", "no_service", "invitation",
                                             "overloaded"};
  for (int i = 0; i < REFUSED_N; i++)
    kp_cli_text_printf(t, "kadpunch_serve_refused_total{reason=\"%s\"} %llu\n", why[i],
                       (unsigned long long)st->refused[i]);
  kp_cli_metric_head(t, "kadpunch_serve_invited_total", "counter", "Invitations redeemed.");
  kp_cli_text_printf(t, "kadpunch_serve_invited_total %llu\n", (unsigned long long)sv->invited);
  kp_cli_metric_head(t, "kadpunch_serve_path_changes_total", "counter",
                     "Path changes of clients' connections (lost, back, upgrades, moves).");
  kp_cli_text_printf(t, "kadpunch_serve_path_changes_total %llu\n",
                     (unsigned long long)st->path_changes);
  kp_cli_latency_write(t, "kadpunch_serve_connect_seconds",
                       "From a client's hello let through to its proven path.", &st->connect);
  if (!sv->server) return;
  kp_server_stats_t hs;
  kp_server_stats(sv->server, &hs);
  kp_cli_metric_head(t, "kadpunch_serve_handshakes_total", "counter",
                     "Hellos this server was sent, by what became of them.");
  const struct {
    const char *outcome;
    uint64_t n;
  } out[] = {{"accepted", hs.accepted}, {"refused", hs.refused}, {"busy", hs.busy},
             {"dropped", hs.dropped},   {"bad", hs.bad},         {"replay", hs.replays},
             {"evicted", hs.evicted}};
  for (size_t i = 0; i < sizeof(out) / sizeof(out[0]); i++)
    kp_cli_text_printf(t, "kadpunch_serve_handshakes_total{outcome=\"%s\"} %llu\n", out[i].outcome,
                       (unsigned long long)out[i].n);
  kp_cli_metric_head(t, "kadpunch_serve_punches_total", "counter",
                     "Clients let in, by whether their punch found a path.");
  kp_cli_text_printf(t, "kadpunch_serve_punches_total{outcome=\"path\"} %llu\n",
                     (unsigned long long)hs.connections);
  kp_cli_text_printf(t, "kadpunch_serve_punches_total{outcome=\"timeout\"} %llu\n",
                     (unsigned long long)hs.punch_timeouts);
  kp_cli_metric_head(t, "kadpunch_serve_handshakes_in_progress", "gauge",
                     "Handshakes and punches in progress.");
  kp_cli_text_printf(t, "kadpunch_serve_handshakes_in_progress %u\n", hs.sessions);
}

static int start_control(serve_t *sv) {
  if (!sv->control_path) return 0;
  int err = kp_control_start(sv->s.node, sv->control_path, &sv->control);
  if (!err) err = kp_control_add(sv->control, "serve", control_serve, sv);
  if (!err) err = kp_control_add(sv->control, "invite", control_invite, sv);
  if (!err) err = kp_cli_conns_control(sv->control, &sv->conns);
  if (!err) return 0;
  fprintf(stderr, "kadpunch %s: control socket %s: %s\n", sv->cmd, sv->control_path,
          kp_strerror(err));
  return KP_EXIT_FAIL;
}

static void print_serving(const serve_t *sv, const char *key) {
  kp_cli_stamp(stdout);
  printf("serving %s", key);
  if (!sv->service_count) printf(" (echo)");
  for (unsigned i = 0; i < sv->service_count; i++)
    printf("%s%s -> %s%s", i ? ", " : " (", sv->services[i].name, sv->services[i].target,
           i + 1 == sv->service_count ? ")" : "");
  printf("\n");
  fflush(stdout);
}

/* --state DIR: DIR/server-key names the key this server answers on, so
 * `kadpunch invite --state DIR` makes invitations for it whatever key file
 * it came from (docs/daemon.md, "Invitations"). */
static void record_server_key(const serve_t *sv, const char *key) {
  if (!sv->state) return;
  char path[4096], tmp[4100];
  snprintf(path, sizeof(path), "%s/server-key", sv->state);
  snprintf(tmp, sizeof(tmp), "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  bool ok = f && fprintf(f, "%s\n", key) > 0;
  if (f && fclose(f)) ok = false;
  if (!ok || rename(tmp, path)) {
    fprintf(stderr, "kadpunch %s: cannot write %s: %s (kadpunch invite --state needs --key)\n",
            sv->cmd, path, strerror(errno));
    unlink(tmp);
  }
}

static int serve_run(serve_t *sv) {
  kp_keypair_t kp;
  int rc;
  if (sv->state && access(sv->state, W_OK | X_OK))
    return kp_cli_usage_error(sv->cmd, "--state %s: not a writable directory", sv->state);
  if ((rc = kp_cli_identity(sv->key_path, &kp, sv->cmd))) return rc;
  memcpy(sv->public_key, kp.public_key, KP_PUBLIC_KEY_LEN);
  sv->net.identity = &kp; /* what a proxy sees */
  if ((rc = kp_cli_session_open(&sv->s, &sv->net, sv->cmd))) {
    kp_keypair_wipe(&kp);
    return rc;
  }
  kp_conn_callbacks_t cb = {.on_stream = on_serve_stream,
                            .on_close = on_serve_close,
                            .on_path = on_serve_path,
                            .on_datagram = on_serve_datagram};
  kp_server_t *server;
  int err =
      kp_server_listen(sv->s.node, &kp, serve_firewall, &cb, on_serve_connection, sv, &server);
  char key[KP_KEY_TEXT_LEN + 1];
  kp_key_to_text(kp.public_key, key);
  kp_keypair_wipe(&kp);
  if (err) {
    fprintf(stderr, "kadpunch %s: %s\n", sv->cmd, kp_strerror(err));
    kp_cli_session_close(&sv->s);
    return KP_EXIT_FAIL;
  }
  kp_server_set_info(server, &sv->info, sv->info_policy);
  sv->server = server;
  record_server_key(sv, key);
  if ((rc = start_control(sv))) {
    kp_server_close(server);
    kp_cli_session_close(&sv->s);
    return rc;
  }
  uv_signal_init(&sv->s.loop, &sv->sighup);
  sv->sighup.data = sv;
  uv_signal_start(&sv->sighup, on_sighup, SIGHUP);
  print_serving(sv, key);
  if (sv->metrics_addr)
    rc = kp_cli_metrics_start(&sv->s.loop, sv->s.node, sv->metrics_addr, sv->cmd, serve_metrics, sv,
                              &sv->metrics);
  if (!rc) {
    char ready[128];
    snprintf(ready, sizeof(ready), "READY=1\nSTATUS=serving %s", key);
    kp_cli_notify(ready);
    kp_cli_session_run(&sv->s, NULL, NULL, 0);
    kp_cli_notify("STOPPING=1");
  }
  kp_cli_stamp(stdout);
  printf("stopping: %" PRIu64 " connections, %" PRIu64 " refused, %" PRIu64 " invited\n",
         sv->connections, sv->refused, sv->invited);
  uv_close((uv_handle_t *)&sv->sighup, NULL);
  if (sv->control) kp_control_close(sv->control); /* before the node it reads */
  kp_cli_metrics_close(sv->metrics);
  kp_server_close(server);
  sv->server = NULL;
  for (unsigned i = 0; i < sv->service_count; i++) {
    service_t *svc = &sv->services[i];
    if (svc->fwd) kp_cli_forward_stop(svc->fwd);
    if (svc->socks) kp_cli_socks_server_stop(svc->socks);
    if (svc->udp) kp_cli_udp_flows_stop(svc->udp);
  }
  int closed = kp_cli_session_close(&sv->s);
  return rc ? rc : closed;
}

int kp_cli_serve_main(int argc, char **argv, const char *cmd, bool check_only) {
  serve_t *sv = calloc(1, sizeof(*sv));
  if (!sv) return KP_EXIT_FAIL;
  sv->cmd = cmd;
  kp_cli_net_init(&sv->net, KP_NODE_AUTO);
  kp_cli_conns_init(&sv->conns, &sv->s.loop);
  /* A TCP peer that went away must be an error on a write, not a signal. */
  signal(SIGPIPE, SIG_IGN);
  int rc = serve_options(sv, argc, argv);
  if (rc < 0) rc = check_only ? KP_EXIT_OK : serve_run(sv);
  kp_cli_allow_free(&sv->allow);
  for (unsigned i = 0; i <= sv->service_count && i < KP_SERVICES_MAX; i++) {
    /* (one past the count: a service whose making failed half way) */
    service_t *svc = &sv->services[i];
    if (svc->fwd) kp_cli_forward_free(svc->fwd);
    if (svc->socks) kp_cli_socks_server_free(svc->socks);
    if (svc->udp) kp_cli_udp_flows_free(svc->udp);
  }
  free(sv);
  return rc;
}

int kp_cli_serve(int argc, char **argv) {
  return kp_cli_serve_main(argc, argv, "serve", false);
}
