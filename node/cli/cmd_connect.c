/* SPDX-License-Identifier: MIT */
/* kadpunch connect: reach a peer by its public key (or an invitation) and
 * show how: the NATs, the path, each phase; then a message echoed, or
 * --listen / --stdio (cmd_listen.c, cmd_stdio.c). */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "node/cli/cli.h"
#include "node/cli/cli_socks.h"

void kp_cli_print_info(FILE *out, const kp_connect_info_t *info, bool client) {
  char path[KP_ADDR_STRLEN], relay[KP_ADDR_STRLEN] = "-";
  kp_addr_format(&info->path, path, sizeof(path));
  if (info->relay.family) kp_addr_format(&info->relay, relay, sizeof(relay));
  fprintf(out, "  nat         local %s, remote %s\n", kp_nat_type_name(info->local_nat),
          kp_nat_type_name(info->remote_nat));
  fprintf(out, "  path        %s%s to %s (handshake via %s)\n", kp_punch_name(info->punch),
          info->relay_tcp ? " over TCP" : "", path, relay);
  if (info->proxy.family) {
    char proxy[KP_ADDR_STRLEN];
    fprintf(out, "  proxied via %s\n", kp_addr_format(&info->proxy, proxy, sizeof(proxy)));
  }
  if (client)
    fprintf(out, "  phases      lookup %u ms, handshake %u ms, punch %u ms (%u datagrams)\n",
            info->lookup_ms, info->handshake_ms, info->punch_ms, info->datagrams);
}

void kp_cli_print_connect_error(const char *key, int status, const kp_connect_info_t *info) {
  fprintf(stderr, "kadpunch connect: %s: %s", key, kp_strerror(status));
  if (status == KP_ENODIRECT)
    fprintf(stderr, " (local NAT %s, remote NAT %s)", kp_nat_type_name(info->local_nat),
            kp_nat_type_name(info->remote_nat));
  fprintf(stderr, "\n");
}

static void print_info_json(const kp_connect_info_t *info, const char *key) {
  char path[KP_ADDR_STRLEN], relay[KP_ADDR_STRLEN] = "", proxy[KP_ADDR_STRLEN] = "";
  kp_addr_format(&info->path, path, sizeof(path));
  if (info->relay.family) kp_addr_format(&info->relay, relay, sizeof(relay));
  if (info->proxy.family) kp_addr_format(&info->proxy, proxy, sizeof(proxy));
  printf(
      "\"proxy\":\"%s\",\"peer\":\"%s\",\"local_nat\":\"%s\",\"remote_nat\":\"%s\",\"path\":\"%s\","
      "\"strategy\":\"%s\",\"relay\":\"%s\",\"lookup_ms\":%u,\"handshake_ms\":%u,"
      "\"punch_ms\":%u,\"datagrams\":%u,\"relay_tcp\":%s",
      proxy, key, kp_nat_type_name(info->local_nat), kp_nat_type_name(info->remote_nat), path,
      info->proxy.family ? "proxied" : kp_punch_name(info->punch), relay, info->lookup_ms,
      info->handshake_ms, info->punch_ms, info->datagrams, info->relay_tcp ? "true" : "false");
}

/* ---- connect ---------------------------------------------------------------------------- */

static const char connect_help[] =
    "usage: kadpunch connect KEY|HOST|INVITATION [options]\n"
    "       kadpunch connect KEY --listen ADDR:PORT [options]\n"
    "       kadpunch connect KEY --stdio [options]\n"
    "       kadpunch connect KEY --socks ADDR:PORT [options]\n"
    "       kadpunch connect KEY --listen-udp ADDR:PORT --service NAME [options]\n"
    "       kadpunch connect KEY --info\n"
    "\n"
    "KEY is the peer's public key (52 characters); a HOST is a name the config\n"
    "file gives one (`host laptop key KEY service ssh`, docs/config.md), with\n"
    "its service unless --service says otherwise. An INVITATION (90 characters,\n"
    "from `kadpunch invite` on the peer) names the peer and proves a one-time\n"
    "secret: the peer lets this key in from then on (use KEY after that). It\n"
    "prints \"paired with KEY: it lets you in from now on\" and exits 0. With no\n"
    "key file, one is made at the default path first: the key let in is kept.\n"
    "\n"
    "Connects to the peer whose public key is KEY: finds it on the DHT, shakes\n"
    "hands through the DHT nodes it announced to, punches a direct path through\n"
    "both NATs, then sends a message on a stream and reads the echo (against\n"
    "`kadpunch serve`). Prints the NAT types, the path and how it was found\n"
    "(lan, open, simultaneous, birthday), and each phase's time.\n"
    "\n"
    "With --listen it forwards a local TCP port instead (against `kadpunch serve\n"
    "--forward`): it connects once, prints \"listening on ADDR:PORT, forwarding\n"
    "to KEY\" and the connection, and carries every TCP connection accepted there\n"
    "as a stream of that one encrypted connection, until SIGINT or SIGTERM. If\n"
    "the connection dies, the TCP connections on it are reset and the next one\n"
    "accepted connects again. A peer not reachable at start is no reason to\n"
    "stop either (a tunnel may start before its server): it says so, keeps\n"
    "listening, and each TCP connection accepted tries again.\n"
    "\n"
    "With --socks it is a SOCKS5 server on ADDR:PORT (against `kadpunch serve\n"
    "--socks`): every CONNECT (IPv4, IPv6 or a name, which the peer resolves) is\n"
    "a stream of the one connection, as with --listen; the peer decides where\n"
    "it may go (--socks-allow) and a refusal comes back as its SOCKS reply.\n"
    "UDP ASSOCIATE works too. No authentication: keep ADDR on loopback.\n"
    "\n"
    "With --listen-udp it forwards a local UDP port to a UDP service of the\n"
    "peer (`serve --forward-udp NAME=HOST:PORT`): each program sending there\n"
    "gets its own flow, and the service's replies come back to it.\n"
    "\n"
    "With --stdio it joins stdin and stdout to one stream: stdout carries only\n"
    "the peer's bytes, messages go to stderr. End of stdin ends our side; it\n"
    "exits once both sides have ended. This is what ssh's ProxyCommand needs.\n"
    "\n"
    "options:\n"
    "  --key FILE              our key file (default $KADPUNCH_KEY, else\n"
    "                          ~/.kadpunch/key; without one, a throwaway key)\n"
    "  --message TEXT          what to send (default \"hello\")\n"
    "  --json                  one JSON object on stdout instead of text\n"
    "  --listen ADDR:PORT      accept TCP connections on ADDR:PORT and carry each\n"
    "                          to KEY (ADDR an IP address or localhost; PORT alone\n"
    "                          is 127.0.0.1:PORT; port 0 picks a free one, printed)\n"
    "  --socks ADDR:PORT       a SOCKS5 server there (ADDR as for --listen)\n"
    "  --listen-udp ADDR:PORT  a UDP port forwarded to the service --service names\n"
    "  --stdio                 join stdin and stdout to a stream\n"
    "  --control PATH          with --listen, --socks, --listen-udp: a control\n"
    "                          socket (0600) for `kadpunch status`\n"
    "  --verbose               with --stdio: the connection's details on stderr\n"
    "  --service NAME          the peer's service to reach (default: its first)\n"
    "  --info                  ask for the peer's device info (name, version,\n"
    "                          services); alone, that is all it does\n"
    "  --relay-only            through a blind relay even if a direct path may "
    "open\n"
    "  --wait-direct SECONDS   a relayed connection: hold it this long for the\n"
    "                          background punch to find a direct path, and say\n"
    "                          whether and when it did\n" KP_CLI_NET_HELP "\n"
    "examples:\n"
    "  kadpunch connect 1kbqs8tc39zasouiojo73fmb83iynjt7ppdn835bskst4nf4yrqy \\\n"
    "      --bootstrap 203.0.113.7:49737\n"
    "  kadpunch connect KEY --listen 127.0.0.1:2222   # then: ssh -p 2222 localhost\n"
    "  kadpunch connect KEY --socks 127.0.0.1:1080    # curl --socks5-hostname ...\n"
    "  kadpunch connect KEY --listen-udp 127.0.0.1:5353 --service dns\n"
    "  ssh -o ProxyCommand='kadpunch connect %h --stdio' KEY\n"
    "  kadpunch connect KEY --info\n"
    "  kadpunch connect <90-character invitation>\n"
    "\n"
    "exit codes: 0 connected and echoed (an invitation: paired; --stdio: both sides ended; "
    "--listen:\n"
    "stopped by a signal), 1 the connection failed (the reason is printed: peer\n"
    "not found, refused, no direct path, timeout; --stdio: the stream was reset;\n"
    "--listen: ADDR:PORT cannot be bound, e.g. in use; an invitation unknown,\n"
    "used or expired), 2 bad options, key, or a --bootstrap name that does not\n"
    "resolve\n";

typedef struct connect_s {
  bool json;
  const char *message;
  char key[KP_KEY_TEXT_LEN + 1];
  bool done;
  int status;
  kp_connect_info_t info;
  kp_conn_t *conn;
  kp_stream_t *stream;
  kp_write_t write;
  size_t echoed;
  bool echo_ok;
  uint64_t sent_at, echo_us;
  bool info_only; /* --info alone: the device info is the answer */
  bool pair_only; /* an invitation alone: getting in is the answer */
  /* --wait-direct: a relayed connection is held this long for its
   * upgrade to a direct path; when (ms after connecting) it came. */
  unsigned wait_direct_ms;
  uint64_t connected_us, upgraded_ms;
  bool upgraded;
} connect_t;

static uint64_t now_us(void) {
  return uv_hrtime() / 1000;
}

static void on_echo(kp_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  connect_t *c = kp_stream_get_data(s);
  if (n > 0) {
    size_t len = strlen(c->message);
    if (c->echoed + (size_t)n <= len && !memcmp(c->message + c->echoed, buf->base, (size_t)n))
      c->echoed += (size_t)n;
    else
      c->status = UV_EPROTO;
    return;
  }
  c->echo_us = now_us() - c->sent_at;
  if (n != UV_EOF) c->status = (int)n;
  c->echo_ok = !c->status && c->echoed == strlen(c->message);
  kp_stream_close(s, NULL);
  c->stream = NULL;
  c->done = true;
}

static void on_client_path(kp_conn_t *conn, const kp_path_event_t *ev) {
  connect_t *c = kp_conn_get_data(conn);
  if (!c || c->upgraded || !ev->direct) return;
  c->upgraded = true;
  c->upgraded_ms = (now_us() - c->connected_us) / 1000;
}

static bool upgraded(void *ctx) {
  return ((connect_t *)ctx)->upgraded;
}

static void on_client_close(kp_conn_t *conn, int status, uint64_t code) {
  connect_t *c = kp_conn_get_data(conn);
  (void)code;
  if (!c->done) c->status = status ? status : KP_ECLOSED;
  c->done = true;
}

static void on_connected(kp_node_t *node, int status, kp_conn_t *conn,
                         const kp_connect_info_t *info, void *arg) {
  connect_t *c = arg;
  (void)node;
  c->info = *info;
  c->status = status;
  if (status) {
    c->done = true;
    return;
  }
  c->conn = conn;
  c->connected_us = now_us();
  kp_conn_set_data(conn, c);
  if (c->info_only || c->pair_only) {
    c->done = true;
    return;
  }
  uv_buf_t b = uv_buf_init((char *)c->message, (unsigned)strlen(c->message));
  int err = kp_stream_open(conn, &c->stream);
  if (!err) {
    kp_stream_set_data(c->stream, c);
    c->sent_at = now_us();
    err = kp_stream_write(&c->write, c->stream, &b, 1, NULL);
  }
  if (!err) err = kp_stream_end(c->stream);
  if (!err) err = kp_stream_read_start(c->stream, on_echo);
  if (err) {
    c->status = err;
    c->done = true;
  }
}

static bool connect_done(void *ctx) {
  return ((connect_t *)ctx)->done;
}

static void print_device_json(const kp_device_info_t *d) {
  printf(",\"device\":{\"name\":\"");
  for (const char *p = d->name; *p; p++) printf(*p == '"' || *p == '\\' ? "\\%c" : "%c", *p);
  printf("\",\"version\":\"%s\",\"services\":[", d->version);
  for (unsigned i = 0; i < d->service_count; i++) printf("%s\"%s\"", i ? "," : "", d->services[i]);
  printf("]}");
}

const char *kp_cli_path_text(const kp_path_event_t *ev, char *buf, size_t len) {
  char to[KP_ADDR_STRLEN], when[16];
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  localtime_r(&ts.tv_sec, &tm);
  strftime(when, sizeof(when), "%H:%M:%S", &tm);
  kp_addr_format(&ev->remote, to, sizeof(to));
  snprintf(buf, len, "%s.%03ld path: %s (%s %s)", when, ts.tv_nsec / 1000000,
           kp_path_why_str(ev->why), ev->direct ? "direct to" : "relay", to);
  return buf;
}

void kp_cli_print_conn_stats(FILE *out, const char *prefix, kp_conn_t *conn) {
  kp_conn_stats_t st;
  kp_conn_stats(conn, &st);
  fprintf(out,
          "%sconnection: %" PRIu64 " path change(s), %" PRIu64 " ms without a path, %" PRIu64
          " bytes sent again, rtt %" PRIu64 " us\n",
          prefix, st.path_changes, st.pathless_ms, st.retransmitted_bytes, st.srtt_us);
  fflush(out);
}

void kp_cli_print_path_change(kp_conn_t *conn, const kp_path_event_t *ev) {
  char text[128];
  (void)conn;
  fprintf(stderr, "kadpunch connect: %s\n", kp_cli_path_text(ev, text, sizeof(text)));
}

void kp_cli_print_device(FILE *out, const kp_device_info_t *d) {
  fprintf(out, "  device      %s, kadpunch %s, services:", d->name, d->version);
  for (unsigned i = 0; i < d->service_count; i++) fprintf(out, " %s", d->services[i]);
  fprintf(out, "%s\n", d->service_count ? "" : " none");
}

static void report(const connect_t *c) {
  if (c->json) {
    printf("{\"ok\":%s,", c->status ? "false" : "true");
    if (c->status) printf("\"error\":\"%s\",", kp_err_name(c->status));
    if (c->pair_only && !c->status) printf("\"paired\":true,");
    print_info_json(&c->info, c->key);
    if (c->info.has_device) print_device_json(&c->info.device);
    if (!c->status && !c->info_only && !c->pair_only)
      printf(",\"echo_bytes\":%zu,\"echo_us\":%" PRIu64, c->echoed, c->echo_us);
    if (c->upgraded) printf(",\"upgraded_ms\":%" PRIu64, c->upgraded_ms);
    printf("}\n");
    return;
  }
  if (c->status) {
    kp_cli_print_connect_error(c->key, c->status, &c->info);
    if (c->info.has_device) kp_cli_print_device(stderr, &c->info.device);
    return;
  }
  if (c->pair_only)
    printf("paired with %s: it lets you in from now on (kadpunch connect %s)\n", c->key, c->key);
  else
    printf("connected to %s\n", c->key);
  kp_cli_print_info(stdout, &c->info, true);
  if (c->info.has_device) kp_cli_print_device(stdout, &c->info.device);
  if (c->info_only && !c->info.has_device) printf("  device      (the peer does not tell)\n");
  if (!c->info_only && !c->pair_only)
    printf("  echo        %zu bytes back in %.2f ms\n", c->echoed, (double)c->echo_us / 1000.0);
  if (c->upgraded) {
    printf("  upgraded    to a direct path %" PRIu64 " ms after connecting\n", c->upgraded_ms);
  } else if (c->wait_direct_ms && c->info.punch == KP_PUNCH_RELAYED) {
    printf("  upgraded    no: still relayed after %u ms\n", c->wait_direct_ms);
  }
}

static int connect_echo(connect_t *st, const kp_cli_connect_args_t *a) {
  const kp_cli_net_t *net = &a->net;
  const char *key_path = a->key_path;
  const uint8_t *server_key = a->server_key;
  kp_keypair_t kp;
  int rc;
  if ((rc = kp_cli_identity(key_path, &kp, "connect"))) return rc;
  kp_cli_session_t s;
  kp_cli_net_t with_key = *net;
  with_key.identity = &kp; /* what a proxy sees */
  if ((rc = kp_cli_session_open(&s, &with_key, "connect"))) {
    kp_keypair_wipe(&kp);
    return rc;
  }
  kp_conn_callbacks_t cb = {.on_close = on_client_close, .on_path = on_client_path};
  int err = kp_node_connect_with(s.node, &kp, server_key, &a->opts, &cb, on_connected, st);
  kp_keypair_wipe(&kp);
  if (err) {
    fprintf(stderr, "kadpunch connect: %s\n", kp_strerror(err));
    kp_cli_session_close(&s);
    return KP_EXIT_FAIL;
  }
  /* The handshake and punch time out by themselves (10 s each). */
  kp_cli_session_run(&s, connect_done, st, 30000);
  if (!st->done) st->status = s.signalled ? UV_ECANCELED : UV_ETIMEDOUT;
  /* Relayed: held for the background punch, if asked. */
  if (!st->status && st->conn && st->wait_direct_ms && st->info.punch == KP_PUNCH_RELAYED) {
    uint64_t held = (now_us() - st->connected_us) / 1000;
    if (held < st->wait_direct_ms)
      kp_cli_session_run(&s, upgraded, st, st->wait_direct_ms - (unsigned)held);
  }
  report(st);
  if (st->conn) kp_conn_close(st->conn, 0);
  /* Let the close reach the peer. */
  s.signalled = false;
  kp_cli_session_run(&s, NULL, NULL, 100);
  rc = kp_cli_session_close(&s);
  return st->status ? KP_EXIT_FAIL : rc;
}

/* --listen, --socks, --listen-udp and --stdio take none of the echo's
 * options; one of them at most. */
static int check_modes(kp_cli_connect_args_t *a, bool stdio, const connect_t *st,
                       bool message_set) {
  const char *given[4];
  int modes = 0;
  if (a->listen) given[modes++] = "--listen";
  if (a->socks) given[modes++] = "--socks";
  if (a->listen_udp) given[modes++] = "--listen-udp";
  if (stdio) given[modes++] = "--stdio";
  if (modes > 1)
    return kp_cli_usage_error("connect",
                              "%s and %s: not both (one of --listen, --socks, --listen-udp, "
                              "--stdio)",
                              given[0], given[1]);
  if (modes && (st->json || message_set || st->wait_direct_ms))
    return kp_cli_usage_error("connect",
                              "--json, --message and --wait-direct go without --listen, --socks, "
                              "--listen-udp and --stdio");
  if (a->socks) {
    if (a->opts.service && strcmp(a->opts.service, KP_CLI_SOCKS_SERVICE))
      return kp_cli_usage_error("connect", "--socks reaches the peer's \"%s\" service",
                                KP_CLI_SOCKS_SERVICE);
    a->opts.service = KP_CLI_SOCKS_SERVICE;
  }
  if (a->verbose && !stdio) return kp_cli_usage_error("connect", "--verbose goes with --stdio");
  if (a->control && !a->listen && !a->socks && !a->listen_udp)
    return kp_cli_usage_error("connect", "--control goes with --listen, --socks or --listen-udp");
  return 0;
}

int kp_cli_connect(int argc, char **argv) {
  static const struct option longopts[] = {{"key", required_argument, 0, 'k'},
                                           {"message", required_argument, 0, 'm'},
                                           {"json", no_argument, 0, 'j'},
                                           {"relay-only", no_argument, 0, 'r'},
                                           {"listen", required_argument, 0, 'L'},
                                           {"stdio", no_argument, 0, 'S'},
                                           {"socks", required_argument, 0, 'X'},
                                           {"listen-udp", required_argument, 0, 'U'},
                                           {"verbose", no_argument, 0, 'v'},
                                           {"service", required_argument, 0, 's'},
                                           {"info", no_argument, 0, 'i'},
                                           {"wait-direct", required_argument, 0, 'w'},
                                           {"control", required_argument, 0, 'C'},
                                           {"help", no_argument, 0, 'h'},
                                           KP_CLI_NET_OPTIONS,
                                           {0, 0, 0, 0}};
  kp_cli_connect_args_t a = {0};
  kp_cli_net_t *net = &a.net;
  kp_cli_net_init(net, KP_NODE_EPHEMERAL);
  connect_t st = {.message = "hello"};
  bool stdio = false, message_set = false;
  int c, rc;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
      case 'k': a.key_path = optarg; break;
      case 'm': st.message = optarg, message_set = true; break;
      case 'j': st.json = true; break;
      case 'r': net->relay_only = true; break;
      case 'L': a.listen = optarg; break;
      case 'S': stdio = true; break;
      case 'X': a.socks = optarg; break;
      case 'U': a.listen_udp = optarg; break;
      case 'v': a.verbose = true; break;
      case 'C': a.control = optarg; break;
      case 's':
        if (!kp_service_name_ok(optarg))
          return kp_cli_usage_error("connect",
                                    "--service '%s': 1 to %d letters, digits, '.', "
                                    "'_' or '-'",
                                    optarg, KP_SERVICE_MAX);
        a.opts.service = optarg;
        break;
      case 'i': a.opts.want_info = st.info_only = true; break;
      case 'w': {
        unsigned long secs;
        if (!kp_cli_parse_uint(optarg, 0, 3600, &secs))
          return kp_cli_usage_error("connect", "--wait-direct '%s': seconds, 0 to 3600", optarg);
        st.wait_direct_ms = (unsigned)secs * 1000;
        break;
      }
      case 'h': fputs(connect_help, stdout); return KP_EXIT_OK;
      default:
        if ((rc = kp_cli_net_option(net, c, optarg, "connect"))) return rc;
    }
  }
  if (optind >= argc) return kp_cli_usage_error("connect", "give the peer's public KEY");
  const char *key_text = argv[optind++];
  if (optind < argc) return kp_cli_usage_error("connect", "unexpected argument '%s'", argv[optind]);
  bool invitation = strlen(key_text) == KP_INVITE_TEXT_LEN;
  if (invitation && kp_invite_from_text(key_text, &a.invite))
    return kp_cli_usage_error("connect", "'%s' is not an invitation (90 z-base-32 characters)",
                              key_text);
  if (invitation) {
    /* An invitation: its server, and the secret to prove. */
    memcpy(a.server_key, a.invite.server_key, KP_PUBLIC_KEY_LEN);
    a.opts.invite = &a.invite;
  }
  if (st.info_only && (message_set || a.listen || stdio)) st.info_only = false;
  if ((rc = check_modes(&a, stdio, &st, message_set))) return rc;
  /* A key, or a named host of the config file (and its service, unless
   * --service or --socks chose one). */
  if (!invitation && (rc = kp_cli_peer(key_text, a.server_key, &a.opts.service, "connect")))
    return rc;
  if (a.opts.invite) {
    /* Pairing: the key let in must be one kept, never a throwaway; and
     * alone, getting in is the whole answer (the peer may forward to a
     * service that does not echo). */
    if ((rc = kp_cli_identity_kept(a.key_path, "connect", &a.key_path))) return rc;
    st.pair_only = !message_set && !st.info_only && !a.listen && !a.socks && !a.listen_udp &&
                   !stdio && !st.wait_direct_ms;
  }
  if (!*st.message || strlen(st.message) > 65536)
    return kp_cli_usage_error("connect", "--message must be 1 to 65536 bytes");
  kp_key_to_text(a.server_key, st.key);
  memcpy(a.key_text, st.key, sizeof(a.key_text));
  if (a.listen || a.socks || a.listen_udp) return kp_cli_connect_listen(&a);
  if (stdio) return kp_cli_connect_stdio(&a);
  return connect_echo(&st, &a);
}
