/* SPDX-License-Identifier: MIT */
/* kadpunch put / get: mutable and immutable values on the DHT. */
#include <getopt.h>
#include <string.h>
#include <unistd.h>

#include "node/cli/cli.h"

static const char put_help[] =
    "usage: kadpunch put [options] VALUE\n"
    "       kadpunch put --mutable [--key FILE] [--salt S] [--seq N] [--cas N] [options] VALUE\n"
    "\n"
    "Stores VALUE (at most 1000 bytes; - reads standard input) on the DHT.\n"
    "Immutable (the default): addressed by its hash, which is printed.\n"
    "Mutable: signed by the key, addressed by the public key and salt, versioned\n"
    "by a sequence number. Without --seq, put reads the current version and writes\n"
    "the next one with compare-and-swap, so concurrent writers cannot overwrite\n"
    "each other unseen: the loser gets a compare-and-swap error.\n"
    "\n"
    "options:\n"
    "  --mutable               store a mutable value\n"
    "  --key FILE              key file for --mutable (default $KADPUNCH_KEY, ~/.kadpunch/key)\n"
    "  --salt S                a name for one of several values under one key\n"
    "  --seq N                 the sequence number to write\n"
    "  --cas N                 store only where the current sequence number is N\n" KP_CLI_NET_HELP
    "\n"
    "examples:\n"
    "  kadpunch put 'hello world'\n"
    "  kadpunch put --mutable --salt status 'online' --bootstrap 203.0.113.7:49737\n"
    "\n"
    "exit codes: 0 stored, 1 not stored (the reason is printed: e.g. a\n"
    "compare-and-swap conflict), 2 bad options\n";

static const char get_help[] =
    "usage: kadpunch get HASH [options]\n"
    "       kadpunch get --mutable PUBKEY [--salt S] [options]\n"
    "\n"
    "Fetches a value and writes it to standard output (the sequence number of a\n"
    "mutable one goes to standard error). Values are verified: an immutable one\n"
    "against its hash, a mutable one against its signature.\n"
    "\n"
    "options:\n"
    "  --mutable               HASH is a public key: get its mutable value\n"
    "  --salt S                the value's salt\n" KP_CLI_NET_HELP "\n"
    "exit codes: 0 found, 1 not found or the network failed, 2 bad options\n";

typedef struct {
  bool done;
  int status;
  unsigned stored;
  uint64_t seq;
  size_t len;
  uint8_t value[KP_MUTABLE_MAX_VALUE];
} op_state_t;

static void on_put(kp_node_t *node, int status, unsigned stored, void *arg) {
  op_state_t *st = arg;
  (void)node;
  st->done = true;
  st->status = status;
  st->stored = stored;
}

static void on_get(kp_node_t *node, int status, uint64_t seq, const uint8_t *value, size_t len,
                   void *arg) {
  op_state_t *st = arg;
  (void)node;
  st->done = true;
  st->status = status;
  st->seq = seq;
  st->len = len;
  if (len) memcpy(st->value, value, len);
}

static bool op_done(void *ctx) {
  return ((op_state_t *)ctx)->done;
}

/* Runs a started operation to its end; false (after printing) on failure. */
static bool finish(kp_cli_session_t *s, int err, op_state_t *st, const char *cmd) {
  if (!err && !kp_cli_session_run(s, op_done, st, 60000)) err = UV_ETIMEDOUT;
  if (!err) err = st->status;
  if (err && err != KP_ENOTFOUND) fprintf(stderr, "kadpunch %s: %s\n", cmd, kp_strerror(err));
  return !err;
}

static int read_value(const char *arg, uint8_t *buf, size_t *len) {
  if (strcmp(arg, "-")) {
    *len = strlen(arg);
    if (*len > KP_MUTABLE_MAX_VALUE) return -1;
    memcpy(buf, arg, *len);
    return 0;
  }
  *len = 0;
  for (;;) {
    ssize_t n = read(0, buf + *len, KP_MUTABLE_MAX_VALUE + 1 - *len);
    if (n < 0) return -1;
    if (n == 0) break;
    *len += (size_t)n;
    if (*len > KP_MUTABLE_MAX_VALUE) return -1;
  }
  return 0;
}

int kp_cli_put(int argc, char **argv) {
  static const struct option longopts[] = {{"mutable", no_argument, 0, 'm'},
                                           {"key", required_argument, 0, 'k'},
                                           {"salt", required_argument, 0, 's'},
                                           {"seq", required_argument, 0, 'q'},
                                           {"cas", required_argument, 0, 'c'},
                                           {"help", no_argument, 0, 'h'},
                                           KP_CLI_NET_OPTIONS,
                                           {0, 0, 0, 0}};
  kp_cli_net_t net;
  kp_cli_net_init(&net, KP_NODE_EPHEMERAL);
  bool mutable_value = false, have_seq = false, have_cas = false;
  const char *key_path = NULL, *salt = NULL;
  unsigned long seq = 0, cas = 0;
  int c, rc;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
      case 'm': mutable_value = true; break;
      case 'k': key_path = optarg; break;
      case 's': salt = optarg; break;
      case 'q':
        if (!kp_cli_parse_uint(optarg, 0, UINT64_MAX, &seq))
          return kp_cli_usage_error("put", "--seq wants a number, got '%s'", optarg);
        have_seq = true;
        break;
      case 'c':
        if (!kp_cli_parse_uint(optarg, 0, UINT64_MAX, &cas))
          return kp_cli_usage_error("put", "--cas wants a number, got '%s'", optarg);
        have_cas = true;
        break;
      case 'h': fputs(put_help, stdout); return KP_EXIT_OK;
      default:
        if ((rc = kp_cli_net_option(&net, c, optarg, "put"))) return rc;
    }
  }
  if (optind + 1 != argc) return kp_cli_usage_error("put", "give exactly one VALUE");
  if (!mutable_value && (key_path || salt || have_seq || have_cas))
    return kp_cli_usage_error("put", "--key, --salt, --seq and --cas go with --mutable");
  if (salt && strlen(salt) > KP_MUTABLE_MAX_SALT)
    return kp_cli_usage_error("put", "--salt is longer than %d bytes", KP_MUTABLE_MAX_SALT);
  uint8_t value[KP_MUTABLE_MAX_VALUE + 1];
  size_t len;
  if (read_value(argv[optind], value, &len))
    return kp_cli_usage_error("put", "the value is longer than %d bytes", KP_MUTABLE_MAX_VALUE);
  size_t salt_len = salt ? strlen(salt) : 0;
  if (mutable_value && salt_len + len > 1006)
    return kp_cli_usage_error("put", "salt and value together must fit 1006 bytes");

  kp_keypair_t kp;
  if (mutable_value &&
      (rc = kp_cli_load_key(key_path ? key_path : kp_cli_default_key_path(), &kp, "put")))
    return rc;
  kp_cli_session_t s;
  if ((rc = kp_cli_session_open(&s, &net, "put"))) {
    if (mutable_value) kp_keypair_wipe(&kp);
    return rc;
  }
  op_state_t st = {0};
  bool ok;
  if (!mutable_value) {
    uint8_t hash[KP_ID_LEN];
    ok = finish(&s, kp_node_put_immutable(s.node, value, len, hash, on_put, &st), &st, "put");
    char text[KP_KEY_TEXT_LEN + 1];
    kp_key_to_text(hash, text);
    if (ok) printf("%s\nstored on %u nodes\n", text, st.stored);
  } else {
    /* Without --seq: read the current version, write the next with CAS. */
    if (!have_seq) {
      ok = finish(&s, kp_node_get_mutable(s.node, kp.public_key, salt, salt_len, on_get, &st), &st,
                  "put");
      if (!ok && st.status != KP_ENOTFOUND) {
        kp_keypair_wipe(&kp);
        kp_cli_session_close(&s);
        return KP_EXIT_FAIL;
      }
      seq = st.status ? 1 : st.seq + 1;
      cas = st.status ? 0 : st.seq;
      have_cas = true;
      memset(&st, 0, sizeof(st));
    }
    uint64_t cas64 = cas;
    ok = finish(&s,
                kp_node_put_mutable(s.node, &kp, salt, salt_len, seq, value, len,
                                    have_cas ? &cas64 : NULL, on_put, &st),
                &st, "put");
    char text[KP_KEY_TEXT_LEN + 1];
    kp_key_to_text(kp.public_key, text);
    kp_keypair_wipe(&kp);
    if (ok) printf("%s seq %lu\nstored on %u nodes\n", text, seq, st.stored);
  }
  int close_rc = kp_cli_session_close(&s);
  return ok ? close_rc : KP_EXIT_FAIL;
}

int kp_cli_get(int argc, char **argv) {
  static const struct option longopts[] = {{"mutable", no_argument, 0, 'm'},
                                           {"salt", required_argument, 0, 's'},
                                           {"help", no_argument, 0, 'h'},
                                           KP_CLI_NET_OPTIONS,
                                           {0, 0, 0, 0}};
  kp_cli_net_t net;
  kp_cli_net_init(&net, KP_NODE_EPHEMERAL);
  bool mutable_value = false;
  const char *salt = NULL;
  int c, rc;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
      case 'm': mutable_value = true; break;
      case 's': salt = optarg; break;
      case 'h': fputs(get_help, stdout); return KP_EXIT_OK;
      default:
        if ((rc = kp_cli_net_option(&net, c, optarg, "get"))) return rc;
    }
  }
  if (optind + 1 != argc) return kp_cli_usage_error("get", "give exactly one HASH or PUBKEY");
  uint8_t key[KP_ID_LEN];
  if (kp_key_from_text(argv[optind], key))
    return kp_cli_usage_error("get", "'%s' is not a %s (52 z-base-32 characters)", argv[optind],
                              mutable_value ? "public key" : "hash");
  if (!mutable_value && salt) return kp_cli_usage_error("get", "--salt goes with --mutable");
  if (salt && strlen(salt) > KP_MUTABLE_MAX_SALT)
    return kp_cli_usage_error("get", "--salt is longer than %d bytes", KP_MUTABLE_MAX_SALT);

  kp_cli_session_t s;
  if ((rc = kp_cli_session_open(&s, &net, "get"))) return rc;
  op_state_t st = {0};
  int err = mutable_value
                ? kp_node_get_mutable(s.node, key, salt, salt ? strlen(salt) : 0, on_get, &st)
                : kp_node_get_immutable(s.node, key, on_get, &st);
  bool ok = finish(&s, err, &st, "get");
  if (ok) {
    fwrite(st.value, 1, st.len, stdout);
    if (mutable_value) fprintf(stderr, "seq %llu\n", (unsigned long long)st.seq);
  } else if (st.status == KP_ENOTFOUND) {
    fprintf(stderr, "kadpunch get: not found\n");
  }
  int close_rc = kp_cli_session_close(&s);
  return ok ? close_rc : KP_EXIT_FAIL;
}
