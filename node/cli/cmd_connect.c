/* kadpunch serve / connect: reach a peer by its public key. serve runs an
 * echo service on a key pair (every stream the client opens is sent back);
 * connect reaches it and shows how: the NATs, the path, each phase. */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "node/cli/cli.h"

void kp_cli_print_info(FILE *out, const kp_connect_info_t *info, bool client) {
  char path[KP_ADDR_STRLEN], relay[KP_ADDR_STRLEN] = "-";
  kp_addr_format(&info->path, path, sizeof(path));
  if (info->relay.family) kp_addr_format(&info->relay, relay, sizeof(relay));
  fprintf(out, "  nat         local %s, remote %s\n", kp_nat_type_name(info->local_nat),
          kp_nat_type_name(info->remote_nat));
  fprintf(out, "  path        %s%s to %s (handshake via %s)\n", kp_punch_name(info->punch),
          info->relay_tcp ? " over TCP" : "", path, relay);
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
  char path[KP_ADDR_STRLEN], relay[KP_ADDR_STRLEN] = "";
  kp_addr_format(&info->path, path, sizeof(path));
  if (info->relay.family) kp_addr_format(&info->relay, relay, sizeof(relay));
  printf("\"peer\":\"%s\",\"local_nat\":\"%s\",\"remote_nat\":\"%s\",\"path\":\"%s\","
         "\"strategy\":\"%s\",\"relay\":\"%s\",\"lookup_ms\":%u,\"handshake_ms\":%u,"
         "\"punch_ms\":%u,\"datagrams\":%u,\"relay_tcp\":%s",
         key, kp_nat_type_name(info->local_nat), kp_nat_type_name(info->remote_nat), path,
         kp_punch_name(info->punch), relay, info->lookup_ms, info->handshake_ms, info->punch_ms,
         info->datagrams, info->relay_tcp ? "true" : "false");
}

/* ---- serve ---------------------------------------------------------------------------- */

static const char serve_help[] =
    "usage: kadpunch serve [options]\n"
    "\n"
    "Listens on this peer's key pair from wherever it is, behind a NAT too: the\n"
    "key is announced on the DHT and clients reach it with `kadpunch connect KEY`.\n"
    "Every stream a client opens is echoed back, or with --forward becomes a TCP\n"
    "connection to a local service (ssh, say), bytes both ways, until either end\n"
    "closes. Prints the key, then one line block per connection (the client, the\n"
    "NATs, the path). Runs until SIGINT or SIGTERM.\n"
    "\n"
    "options:\n"
    "  --key FILE              key file (default $KADPUNCH_KEY, else ~/.kadpunch/key;\n"
    "                          without one, a throwaway key is used)\n"
    "  --forward HOST:PORT     make each stream a TCP connection to HOST:PORT (an IP\n"
    "                          address, [IPv6]:PORT, localhost or a name, resolved\n"
    "                          once at start). A connection the service refuses\n"
    "                          resets the stream; the client is told why.\n"
    "  --allow KEY             let only this client key in (repeatable; default:\n"
    "                          everyone). Others are refused and told so.\n"
    "  --allow-file FILE       the same for every key in FILE: one key per line,\n"
    "                          '#' comments and blank lines ignored\n" KP_CLI_NET_HELP "\n"
    "examples:\n"
    "  kadpunch serve --bootstrap 203.0.113.7:49737\n"
    "  kadpunch serve --key ~/.kadpunch/key --allow "
    "1kbqs8tc39zasouiojo73fmb83iynjt7ppdn835bskst4nf4yrqy\n"
    "  kadpunch serve --forward localhost:22 --allow-file ~/.kadpunch/allowed\n"
    "      (then from anywhere: ssh -o ProxyCommand='kadpunch connect %h --stdio' KEY)\n"
    "\n"
    "exit codes: 0 stopped by a signal, 1 the network failed, 2 bad options, key,\n"
    "--forward address (unresolvable) or --allow-file (unreadable, a line that is\n"
    "not a key)\n";

/* kp_cli_serve's state. Options are checked before the node starts. */
typedef struct serve_s {
  kp_cli_session_t s;
  kp_cli_net_t net;
  const char *key_path;
  kp_cli_allow_t allow;
  kp_cli_forward_t *fwd;
  uint64_t connections, refused;
} serve_t;

static void on_serve_close(kp_conn_t *conn, int status, uint64_t code) {
  kp_cli_forward_t *fwd = kp_conn_get_data(conn);
  (void)code;
  if (fwd) kp_cli_forward_conn_closed(fwd, conn);
  printf("connection closed: %s\n", status ? kp_strerror(status) : "by us");
  fflush(stdout);
  kp_conn_close(conn, 0);
}

static bool serve_firewall(kp_server_t *server, const uint8_t key[KP_PUBLIC_KEY_LEN], void *arg) {
  serve_t *sv = arg;
  (void)server;
  if (kp_cli_allow_has(&sv->allow, key)) return true;
  char text[KP_KEY_TEXT_LEN + 1];
  kp_key_to_text(key, text);
  printf("refused %s: not in --allow or --allow-file\n", text);
  fflush(stdout);
  sv->refused++;
  return false;
}

static void on_serve_connection(kp_server_t *server, kp_conn_t *conn, const kp_connect_info_t *info,
                                void *arg) {
  serve_t *sv = arg;
  char key[KP_KEY_TEXT_LEN + 1];
  (void)server;
  /* Before any stream of the connection can arrive. */
  if (sv->fwd) kp_conn_set_data(conn, sv->fwd);
  kp_key_to_text(info->remote_key, key);
  sv->connections++;
  printf("connection from %s\n", key);
  kp_cli_print_info(stdout, info, false);
  fflush(stdout);
}

/* Returns -1 to go on, else the exit code. */
static int serve_options(serve_t *sv, int argc, char **argv) {
  static const struct option longopts[] = {{"key", required_argument, 0, 'k'},
                                           {"allow", required_argument, 0, 'a'},
                                           {"allow-file", required_argument, 0, 'A'},
                                           {"forward", required_argument, 0, 'f'},
                                           {"help", no_argument, 0, 'h'},
                                           KP_CLI_NET_OPTIONS,
                                           {0, 0, 0, 0}};
  const char *forward = NULL;
  int c, rc;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    rc = 0;
    switch (c) {
      case 'k': sv->key_path = optarg; break;
      case 'a': rc = kp_cli_allow_key(&sv->allow, optarg, "serve"); break;
      case 'A': rc = kp_cli_allow_file(&sv->allow, optarg, "serve"); break;
      case 'f': forward = optarg; break;
      case 'h': fputs(serve_help, stdout); return KP_EXIT_OK;
      default: rc = kp_cli_net_option(&sv->net, c, optarg, "serve"); break;
    }
    if (rc) return rc;
  }
  if (optind < argc) return kp_cli_usage_error("serve", "unexpected argument '%s'", argv[optind]);
  if (forward && (rc = kp_cli_forward_new(&sv->s.loop, forward, "serve", &sv->fwd))) return rc;
  return -1;
}

static int serve_run(serve_t *sv) {
  kp_keypair_t kp;
  int rc;
  if ((rc = kp_cli_identity(sv->key_path, &kp, "serve"))) return rc;
  if ((rc = kp_cli_session_open(&sv->s, &sv->net, "serve"))) {
    kp_keypair_wipe(&kp);
    return rc;
  }
  kp_conn_callbacks_t cb = {.on_stream = sv->fwd ? kp_cli_forward_stream : kp_cli_echo_stream,
                            .on_close = on_serve_close};
  kp_server_t *server;
  int err =
      kp_server_listen(sv->s.node, &kp, serve_firewall, &cb, on_serve_connection, sv, &server);
  char key[KP_KEY_TEXT_LEN + 1];
  kp_key_to_text(kp.public_key, key);
  kp_keypair_wipe(&kp);
  if (err) {
    fprintf(stderr, "kadpunch serve: %s\n", kp_strerror(err));
    kp_cli_session_close(&sv->s);
    return KP_EXIT_FAIL;
  }
  if (sv->fwd)
    printf("serving %s (forwarding to %s)\n", key, kp_cli_forward_target(sv->fwd));
  else
    printf("serving %s (echo)\n", key);
  fflush(stdout);
  kp_cli_session_run(&sv->s, NULL, NULL, 0);
  printf("stopping: %" PRIu64 " connections, %" PRIu64 " refused\n", sv->connections, sv->refused);
  kp_server_close(server);
  if (sv->fwd) kp_cli_forward_stop(sv->fwd);
  return kp_cli_session_close(&sv->s);
}

int kp_cli_serve(int argc, char **argv) {
  serve_t sv = {0};
  kp_cli_net_init(&sv.net, KP_NODE_AUTO);
  /* A TCP peer that went away must be an error on a write, not a signal. */
  signal(SIGPIPE, SIG_IGN);
  int rc = serve_options(&sv, argc, argv);
  if (rc < 0) rc = serve_run(&sv);
  kp_cli_allow_free(&sv.allow);
  if (sv.fwd) kp_cli_forward_free(sv.fwd);
  return rc;
}

/* ---- connect ---------------------------------------------------------------------------- */

static const char connect_help[] =
    "usage: kadpunch connect KEY [options]\n"
    "       kadpunch connect KEY --listen ADDR:PORT [options]\n"
    "       kadpunch connect KEY --stdio [options]\n"
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
    "accepted connects again.\n"
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
    "  --stdio                 join stdin and stdout to a stream\n"
    "  --verbose               with --stdio: the connection's details on stderr\n"
    "  --relay-only            through a blind relay even if a direct path may "
    "open\n" KP_CLI_NET_HELP "\n"
    "examples:\n"
    "  kadpunch connect 1kbqs8tc39zasouiojo73fmb83iynjt7ppdn835bskst4nf4yrqy \\\n"
    "      --bootstrap 203.0.113.7:49737\n"
    "  kadpunch connect KEY --listen 127.0.0.1:2222   # then: ssh -p 2222 localhost\n"
    "  ssh -o ProxyCommand='kadpunch connect %h --stdio' KEY\n"
    "\n"
    "exit codes: 0 connected and echoed (--stdio: both sides ended; --listen:\n"
    "stopped by a signal), 1 the connection failed (the reason is printed: peer\n"
    "not found, refused, no direct path, timeout; --stdio: the stream was reset;\n"
    "--listen: ADDR:PORT cannot be bound, e.g. in use), 2 bad options or key\n";

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
  kp_conn_set_data(conn, c);
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

static void report(const connect_t *c) {
  if (c->json) {
    printf("{\"ok\":%s,", c->status ? "false" : "true");
    if (c->status) printf("\"error\":\"%s\",", kp_err_name(c->status));
    print_info_json(&c->info, c->key);
    if (!c->status) printf(",\"echo_bytes\":%zu,\"echo_us\":%" PRIu64, c->echoed, c->echo_us);
    printf("}\n");
    return;
  }
  if (c->status) {
    kp_cli_print_connect_error(c->key, c->status, &c->info);
    return;
  }
  printf("connected to %s\n", c->key);
  kp_cli_print_info(stdout, &c->info, true);
  printf("  echo        %zu bytes back in %.2f ms\n", c->echoed, (double)c->echo_us / 1000.0);
}

static int connect_echo(connect_t *st, const kp_cli_net_t *net, const char *key_path,
                        const uint8_t server_key[KP_PUBLIC_KEY_LEN]) {
  kp_keypair_t kp;
  int rc;
  if ((rc = kp_cli_identity(key_path, &kp, "connect"))) return rc;
  kp_cli_session_t s;
  if ((rc = kp_cli_session_open(&s, net, "connect"))) {
    kp_keypair_wipe(&kp);
    return rc;
  }
  kp_conn_callbacks_t cb = {.on_close = on_client_close};
  int err = kp_node_connect(s.node, &kp, server_key, &cb, on_connected, st);
  kp_keypair_wipe(&kp);
  if (err) {
    fprintf(stderr, "kadpunch connect: %s\n", kp_strerror(err));
    kp_cli_session_close(&s);
    return KP_EXIT_FAIL;
  }
  /* The handshake and punch time out by themselves (10 s each). */
  kp_cli_session_run(&s, connect_done, st, 30000);
  if (!st->done) st->status = s.signalled ? UV_ECANCELED : UV_ETIMEDOUT;
  report(st);
  if (st->conn) kp_conn_close(st->conn, 0);
  /* Let the close reach the peer. */
  s.signalled = false;
  kp_cli_session_run(&s, NULL, NULL, 100);
  rc = kp_cli_session_close(&s);
  return st->status ? KP_EXIT_FAIL : rc;
}

/* --listen and --stdio take none of the echo's options; one of them at most. */
static int check_modes(const kp_cli_connect_args_t *a, bool stdio, const connect_t *st,
                       bool message_set) {
  if (a->listen && stdio) return kp_cli_usage_error("connect", "--listen or --stdio, not both");
  if ((a->listen || stdio) && (st->json || message_set))
    return kp_cli_usage_error("connect", "--json and --message go without --listen and --stdio");
  if (a->verbose && !stdio) return kp_cli_usage_error("connect", "--verbose goes with --stdio");
  return 0;
}

int kp_cli_connect(int argc, char **argv) {
  static const struct option longopts[] = {{"key", required_argument, 0, 'k'},
                                           {"message", required_argument, 0, 'm'},
                                           {"json", no_argument, 0, 'j'},
                                           {"relay-only", no_argument, 0, 'r'},
                                           {"listen", required_argument, 0, 'L'},
                                           {"stdio", no_argument, 0, 'S'},
                                           {"verbose", no_argument, 0, 'v'},
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
  while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    switch (c) {
      case 'k': a.key_path = optarg; break;
      case 'm': st.message = optarg, message_set = true; break;
      case 'j': st.json = true; break;
      case 'r': net->relay_only = true; break;
      case 'L': a.listen = optarg; break;
      case 'S': stdio = true; break;
      case 'v': a.verbose = true; break;
      case 'h': fputs(connect_help, stdout); return KP_EXIT_OK;
      default:
        if ((rc = kp_cli_net_option(net, c, optarg, "connect"))) return rc;
    }
  }
  if (optind >= argc) return kp_cli_usage_error("connect", "give the peer's public KEY");
  const char *key_text = argv[optind++];
  if (optind < argc) return kp_cli_usage_error("connect", "unexpected argument '%s'", argv[optind]);
  if (kp_key_from_text(key_text, a.server_key))
    return kp_cli_usage_error("connect", "'%s' is not a public key (52 z-base-32 characters)",
                              key_text);
  if ((rc = check_modes(&a, stdio, &st, message_set))) return rc;
  if (!*st.message || strlen(st.message) > 65536)
    return kp_cli_usage_error("connect", "--message must be 1 to 65536 bytes");
  kp_key_to_text(a.server_key, st.key);
  memcpy(a.key_text, st.key, sizeof(a.key_text));
  if (a.listen) return kp_cli_connect_listen(&a);
  if (stdio) return kp_cli_connect_stdio(&a);
  return connect_echo(&st, net, a.key_path, a.server_key);
}
