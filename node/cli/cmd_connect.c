/* kadpunch serve / connect: reach a peer by its public key. serve runs an
 * echo service on a key pair (every stream the client opens is sent back);
 * connect reaches it and shows how: the NATs, the path, each phase. */
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "node/cli/cli.h"

#define MAX_ALLOWED 64

static void print_info_lines(const kp_connect_info_t *info, bool client) {
  char path[KP_ADDR_STRLEN], relay[KP_ADDR_STRLEN] = "-";
  kp_addr_format(&info->path, path, sizeof(path));
  if (info->relay.family)
    kp_addr_format(&info->relay, relay, sizeof(relay));
  printf("  nat         local %s, remote %s\n",
         kp_nat_type_name(info->local_nat), kp_nat_type_name(info->remote_nat));
  printf("  path        %s%s to %s (handshake via %s)\n",
         kp_punch_name(info->punch), info->relay_tcp ? " over TCP" : "", path,
         relay);
  if (client)
    printf("  phases      lookup %u ms, handshake %u ms, punch %u ms (%u "
           "datagrams)\n",
           info->lookup_ms, info->handshake_ms, info->punch_ms,
           info->datagrams);
}

static void print_info_json(const kp_connect_info_t *info, const char *key) {
  char path[KP_ADDR_STRLEN], relay[KP_ADDR_STRLEN] = "";
  kp_addr_format(&info->path, path, sizeof(path));
  if (info->relay.family)
    kp_addr_format(&info->relay, relay, sizeof(relay));
  printf("\"peer\":\"%s\",\"local_nat\":\"%s\",\"remote_nat\":\"%s\",\"path\":"
         "\"%s\","
         "\"strategy\":\"%s\",\"relay\":\"%s\",\"lookup_ms\":%u,\"handshake_"
         "ms\":%u,"
         "\"punch_ms\":%u,\"datagrams\":%u,\"relay_tcp\":%s",
         key, kp_nat_type_name(info->local_nat),
         kp_nat_type_name(info->remote_nat), path, kp_punch_name(info->punch),
         relay, info->lookup_ms, info->handshake_ms, info->punch_ms,
         info->datagrams, info->relay_tcp ? "true" : "false");
}

/* ---- serve
 * ----------------------------------------------------------------------------
 */

static const char serve_help[] =
    "usage: kadpunch serve [options]\n"
    "\n"
    "Listens on this peer's key pair from wherever it is, behind a NAT too: "
    "the\n"
    "key is announced on the DHT and clients reach it with `kadpunch connect "
    "KEY`.\n"
    "Every stream a client opens is echoed back. Prints the key, then one "
    "line\n"
    "block per connection (the client, the NATs, the path). Runs until SIGINT "
    "or\n"
    "SIGTERM.\n"
    "\n"
    "options:\n"
    "  --key FILE              key file (default $KADPUNCH_KEY, else "
    "~/.kadpunch/key;\n"
    "                          without one, a throwaway key is used)\n"
    "  --allow KEY             let only this client key in (repeatable; "
    "default:\n"
    "                          everyone). Others are refused and told "
    "so.\n" KP_CLI_NET_HELP "\n"
    "examples:\n"
    "  kadpunch serve --bootstrap 203.0.113.7:49737\n"
    "  kadpunch serve --key ~/.kadpunch/key --allow "
    "ybndrfg8ejkmcpqxot1uwisza345h769ybndrfg8ejkmcpqxot1u\n"
    "\n"
    "exit codes: 0 stopped by a signal, 1 the network failed, 2 bad options or "
    "key\n";

typedef struct serve_s {
  uint8_t allowed[MAX_ALLOWED][KP_PUBLIC_KEY_LEN];
  size_t allowed_count;
  uint64_t connections, refused;
} serve_t;

static void on_echo_close(kp_conn_t *conn, int status, uint64_t code) {
  (void)code;
  printf("connection closed: %s\n", status ? kp_strerror(status) : "by us");
  fflush(stdout);
  kp_conn_close(conn, 0);
}

static bool serve_firewall(kp_server_t *server,
                           const uint8_t key[KP_PUBLIC_KEY_LEN], void *arg) {
  serve_t *sv = arg;
  (void)server;
  if (!sv->allowed_count)
    return true;
  for (size_t i = 0; i < sv->allowed_count; i++)
    if (!memcmp(sv->allowed[i], key, KP_PUBLIC_KEY_LEN))
      return true;
  char text[KP_KEY_TEXT_LEN + 1];
  kp_key_to_text(key, text);
  printf("refused %s: not in --allow\n", text);
  fflush(stdout);
  sv->refused++;
  return false;
}

static void on_serve_connection(kp_server_t *server, kp_conn_t *conn,
                                const kp_connect_info_t *info, void *arg) {
  serve_t *sv = arg;
  char key[KP_KEY_TEXT_LEN + 1];
  (void)server, (void)conn;
  kp_key_to_text(info->remote_key, key);
  sv->connections++;
  printf("connection from %s\n", key);
  print_info_lines(info, false);
  fflush(stdout);
}

int kp_cli_serve(int argc, char **argv) {
  static const struct option longopts[] = {{"key", required_argument, 0, 'k'},
                                           {"allow", required_argument, 0, 'a'},
                                           {"help", no_argument, 0, 'h'},
                                           KP_CLI_NET_OPTIONS,
                                           {0, 0, 0, 0}};
  kp_cli_net_t net;
  kp_cli_net_init(&net, KP_NODE_AUTO);
  serve_t sv = {0};
  const char *key_path = NULL;
  int c, rc;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    switch (c) {
    case 'k':
      key_path = optarg;
      break;
    case 'a':
      if (sv.allowed_count == MAX_ALLOWED)
        return kp_cli_usage_error("serve", "more than %d --allow keys",
                                  MAX_ALLOWED);
      if (kp_key_from_text(optarg, sv.allowed[sv.allowed_count++]))
        return kp_cli_usage_error("serve", "--allow '%s' is not a public key",
                                  optarg);
      break;
    case 'h':
      fputs(serve_help, stdout);
      return KP_EXIT_OK;
    default:
      if ((rc = kp_cli_net_option(&net, c, optarg, "serve")))
        return rc;
    }
  }
  if (optind < argc)
    return kp_cli_usage_error("serve", "unexpected argument '%s'",
                              argv[optind]);
  kp_keypair_t kp;
  if ((rc = kp_cli_identity(key_path, &kp, "serve")))
    return rc;
  kp_cli_session_t s;
  if ((rc = kp_cli_session_open(&s, &net, "serve"))) {
    kp_keypair_wipe(&kp);
    return rc;
  }
  kp_conn_callbacks_t cb = {.on_stream = kp_cli_echo_stream,
                            .on_close = on_echo_close};
  kp_server_t *server;
  int err = kp_server_listen(s.node, &kp, serve_firewall, &cb,
                             on_serve_connection, &sv, &server);
  char key[KP_KEY_TEXT_LEN + 1];
  kp_key_to_text(kp.public_key, key);
  kp_keypair_wipe(&kp);
  if (err) {
    fprintf(stderr, "kadpunch serve: %s\n", kp_strerror(err));
    kp_cli_session_close(&s);
    return KP_EXIT_FAIL;
  }
  printf("serving %s (echo)\n", key);
  fflush(stdout);
  kp_cli_session_run(&s, NULL, NULL, 0);
  printf("stopping: %" PRIu64 " connections, %" PRIu64 " refused\n",
         sv.connections, sv.refused);
  kp_server_close(server);
  return kp_cli_session_close(&s);
}

/* ---- connect
 * ----------------------------------------------------------------------------
 */

static const char connect_help[] =
    "usage: kadpunch connect KEY [options]\n"
    "\n"
    "Connects to the peer whose public key is KEY: finds it on the DHT, "
    "shakes\n"
    "hands through the DHT nodes it announced to, punches a direct path "
    "through\n"
    "both NATs, then sends a message on a stream and reads the echo (against\n"
    "`kadpunch serve`). Prints the NAT types, the path and how it was found\n"
    "(lan, open, simultaneous, birthday), and each phase's time.\n"
    "\n"
    "options:\n"
    "  --key FILE              our key file (default $KADPUNCH_KEY, else\n"
    "                          ~/.kadpunch/key; without one, a throwaway key)\n"
    "  --message TEXT          what to send (default \"hello\")\n"
    "  --json                  one JSON object on stdout instead of text\n"
    "  --relay-only            through a blind relay even if a direct path may "
    "open\n" KP_CLI_NET_HELP "\n"
    "examples:\n"
    "  kadpunch connect ybndrfg8ejkmcpqxot1uwisza345h769ybndrfg8ejkmcpqxot1u "
    "\\\n"
    "      --bootstrap 203.0.113.7:49737\n"
    "\n"
    "exit codes: 0 connected and echoed, 1 the connection failed (the reason "
    "is\n"
    "printed: peer not found, refused, no direct path, timeout), 2 bad options "
    "or key\n";

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

static uint64_t now_us(void) { return uv_hrtime() / 1000; }

static void on_echo(kp_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  connect_t *c = kp_stream_get_data(s);
  if (n > 0) {
    size_t len = strlen(c->message);
    if (c->echoed + (size_t)n <= len &&
        !memcmp(c->message + c->echoed, buf->base, (size_t)n))
      c->echoed += (size_t)n;
    else
      c->status = UV_EPROTO;
    return;
  }
  c->echo_us = now_us() - c->sent_at;
  if (n != UV_EOF)
    c->status = (int)n;
  c->echo_ok = !c->status && c->echoed == strlen(c->message);
  kp_stream_close(s, NULL);
  c->stream = NULL;
  c->done = true;
}

static void on_client_close(kp_conn_t *conn, int status, uint64_t code) {
  connect_t *c = kp_conn_get_data(conn);
  (void)code;
  if (!c->done)
    c->status = status ? status : KP_ECLOSED;
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
  if (!err)
    err = kp_stream_end(c->stream);
  if (!err)
    err = kp_stream_read_start(c->stream, on_echo);
  if (err) {
    c->status = err;
    c->done = true;
  }
}

static bool connect_done(void *ctx) { return ((connect_t *)ctx)->done; }

static void report(const connect_t *c) {
  if (c->json) {
    printf("{\"ok\":%s,", c->status ? "false" : "true");
    if (c->status)
      printf("\"error\":\"%s\",", kp_err_name(c->status));
    print_info_json(&c->info, c->key);
    if (!c->status)
      printf(",\"echo_bytes\":%zu,\"echo_us\":%" PRIu64, c->echoed, c->echo_us);
    printf("}\n");
    return;
  }
  if (c->status) {
    fprintf(stderr, "kadpunch connect: %s: %s", c->key, kp_strerror(c->status));
    if (c->status == KP_ENODIRECT)
      fprintf(stderr, " (local NAT %s, remote NAT %s)",
              kp_nat_type_name(c->info.local_nat),
              kp_nat_type_name(c->info.remote_nat));
    fprintf(stderr, "\n");
    return;
  }
  printf("connected to %s\n", c->key);
  print_info_lines(&c->info, true);
  printf("  echo        %zu bytes back in %.2f ms\n", c->echoed,
         (double)c->echo_us / 1000.0);
}

int kp_cli_connect(int argc, char **argv) {
  static const struct option longopts[] = {
      {"key", required_argument, 0, 'k'},
      {"message", required_argument, 0, 'm'},
      {"json", no_argument, 0, 'j'},
      {"relay-only", no_argument, 0, 'r'},
      {"help", no_argument, 0, 'h'},
      KP_CLI_NET_OPTIONS,
      {0, 0, 0, 0}};
  kp_cli_net_t net;
  kp_cli_net_init(&net, KP_NODE_EPHEMERAL);
  connect_t st = {.message = "hello"};
  const char *key_path = NULL;
  int c, rc;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    switch (c) {
    case 'k':
      key_path = optarg;
      break;
    case 'm':
      st.message = optarg;
      break;
    case 'j':
      st.json = true;
      break;
    case 'r':
      net.relay_only = true;
      break;
    case 'h':
      fputs(connect_help, stdout);
      return KP_EXIT_OK;
    default:
      if ((rc = kp_cli_net_option(&net, c, optarg, "connect")))
        return rc;
    }
  }
  if (optind >= argc)
    return kp_cli_usage_error("connect", "give the peer's public KEY");
  const char *key_text = argv[optind++];
  if (optind < argc)
    return kp_cli_usage_error("connect", "unexpected argument '%s'",
                              argv[optind]);
  uint8_t server_key[KP_PUBLIC_KEY_LEN];
  if (kp_key_from_text(key_text, server_key))
    return kp_cli_usage_error(
        "connect", "'%s' is not a public key (52 z-base-32 characters)",
        key_text);
  if (!*st.message || strlen(st.message) > 65536)
    return kp_cli_usage_error("connect", "--message must be 1 to 65536 bytes");
  kp_key_to_text(server_key, st.key);
  kp_keypair_t kp;
  if ((rc = kp_cli_identity(key_path, &kp, "connect")))
    return rc;
  kp_cli_session_t s;
  if ((rc = kp_cli_session_open(&s, &net, "connect"))) {
    kp_keypair_wipe(&kp);
    return rc;
  }
  kp_conn_callbacks_t cb = {.on_close = on_client_close};
  int err = kp_node_connect(s.node, &kp, server_key, &cb, on_connected, &st);
  kp_keypair_wipe(&kp);
  if (err) {
    fprintf(stderr, "kadpunch connect: %s\n", kp_strerror(err));
    kp_cli_session_close(&s);
    return KP_EXIT_FAIL;
  }
  /* The handshake and punch time out by themselves (10 s each). */
  kp_cli_session_run(&s, connect_done, &st, 30000);
  if (!st.done)
    st.status = s.signalled ? UV_ECANCELED : UV_ETIMEDOUT;
  report(&st);
  if (st.conn)
    kp_conn_close(st.conn, 0);
  /* Let the close reach the peer. */
  s.signalled = false;
  kp_cli_session_run(&s, NULL, NULL, 100);
  rc = kp_cli_session_close(&s);
  return st.status ? KP_EXIT_FAIL : rc;
}
