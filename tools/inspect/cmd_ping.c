/* SPDX-License-Identifier: MIT */
/* kadpunch-inspect ping: one DHT node, as its PING replies describe it. */
#include <string.h>

#include "common/addr.h"
#include "tools/inspect/inspect.h"

static const char help[] =
    "usage: kadpunch-inspect ping HOST:PORT [options]\n"
    "\n"
    "Sends PINGs to one DHT node, one after another, and prints what the replies\n"
    "carry: the node's id (members send one, and it must match the address it\n"
    "comes from), the address the node saw us at, the DHT protocol version, and\n"
    "the round trip. A reply that needed a retry counts as a loss for the round\n"
    "trip (its time is not one).\n"
    "\n"
    "options:\n"
    "  --count N               PINGs to send (default 3, at most 100)\n"
    "  --interval MS           pause between them (default 200)\n"
    "  --bind ADDR:PORT        local address (default 0.0.0.0:0, or [::]:0 for IPv6)\n"
    "  --log LEVEL             error, warn (default), info, debug, trace\n"
    "  --json                  one JSON object on stdout (docs/inspect.md)\n"
    "\n"
    "examples:\n"
    "  kadpunch-inspect ping 203.0.113.7:49737\n"
    "  kadpunch-inspect ping dht.example.org:49737 --count 10 --json\n"
    "\n"
    "exit codes: 0 the node answered, 1 it did not (or the network failed),\n"
    "2 bad options\n";

#define PING_MAX 100

typedef struct ping_s {
  bool done;
  int status;
  double rtt_ms;
  unsigned sends;
  bool has_id;
  uint8_t id[KP_ID_LEN];
  kp_addr_t seen;
  bool token;
} ping_t;

typedef struct ping_run_s {
  kp_addr_t to;
  unsigned count, replies, retried;
  uint64_t bad_id_before, bad_id_after;
  double min, max, sum;
  unsigned samples;
  ping_t p[PING_MAX];
} ping_run_t;

static void on_ping(void *arg, int status, const kp_dht_msg_t *resp, const kp_addr_t *from,
                    double rtt_ms, unsigned sends) {
  ping_t *p = arg;
  (void)from;
  p->done = true;
  p->status = status;
  p->rtt_ms = rtt_ms;
  p->sends = sends;
  if (status) return;
  p->has_id = resp->has_id;
  memcpy(p->id, resp->id, KP_ID_LEN);
  p->seen = resp->to;
  p->token = resp->has_token;
}

static bool ping_done(void *ctx) {
  return ((ping_t *)ctx)->done;
}

/* One line per PING, printed as it ends. */
static void print_one(unsigned i, const ping_t *p) {
  char seen[KP_ADDR_STRLEN];
  if (p->status)
    printf("ping %u: no reply (%u tries)\n", i + 1, p->sends ? p->sends : 1);
  else if (p->rtt_ms >= 0)
    printf("ping %u: reply in %.2f ms, saw us at %s\n", i + 1, p->rtt_ms,
           kp_addr_format(&p->seen, seen, sizeof(seen)));
  else
    printf("ping %u: reply after %u tries\n", i + 1, p->sends);
  fflush(stdout);
}

static void print_text(const ping_run_t *r) {
  char text[KP_ADDR_STRLEN], seen[KP_ADDR_STRLEN], hex[2 * KP_ID_LEN + 1];
  const ping_t *last = NULL;
  kp_addr_format(&r->to, text, sizeof(text));
  for (unsigned i = 0; i < r->count; i++)
    if (!r->p[i].status) last = &r->p[i];
  printf("%s: %u sent, %u answered, %u needed a retry\n", text, r->count, r->replies, r->retried);
  if (r->samples)
    printf("round trip  min %.2f  avg %.2f  max %.2f ms\n", r->min, r->sum / r->samples, r->max);
  if (!last) return;
  if (last->has_id)
    printf("node id     %s (a member: the id matches its address)\n",
           kp_inspect_hex(last->id, KP_ID_LEN, hex));
  else if (r->bad_id_after > r->bad_id_before)
    printf("node id     none valid: it claims an id that does not match its address\n");
  else
    printf("node id     none (ephemeral: not in routing tables)\n");
  printf("protocol    %d\n", KP_DHT_VERSION);
  printf("saw us at   %s\n", kp_addr_format(&last->seen, seen, sizeof(seen)));
}

static int print_json(const ping_run_t *r) {
  kp_jw_t w;
  kp_jw_init(&w, 0);
  const ping_t *last = NULL;
  for (unsigned i = 0; i < r->count; i++)
    if (!r->p[i].status) last = &r->p[i];
  kp_jw_obj(&w);
  kp_inspect_jw_addr(&w, "addr", &r->to);
  kp_jw_ku64(&w, "sent", r->count);
  kp_jw_ku64(&w, "replies", r->replies);
  kp_jw_ku64(&w, "retried", r->retried);
  kp_jw_key(&w, "rtt_ms");
  if (r->samples) {
    kp_jw_obj(&w);
    kp_jw_knum(&w, "min", r->min, 3);
    kp_jw_knum(&w, "avg", r->sum / r->samples, 3);
    kp_jw_knum(&w, "max", r->max, 3);
    kp_jw_obj_end(&w);
  } else {
    kp_jw_null(&w);
  }
  kp_jw_key(&w, "id");
  if (last && last->has_id)
    kp_jw_hex(&w, last->id, KP_ID_LEN);
  else
    kp_jw_null(&w);
  kp_jw_kbool(&w, "member", last && last->has_id);
  kp_jw_kbool(&w, "id_mismatch", r->bad_id_after > r->bad_id_before);
  kp_jw_key(&w, "protocol");
  if (last)
    kp_jw_u64(&w, KP_DHT_VERSION);
  else
    kp_jw_null(&w);
  kp_inspect_jw_addr(&w, "seen_as", last ? &last->seen : NULL);
  kp_jw_kbool(&w, "token", last && last->token);
  kp_jw_key(&w, "pings");
  kp_jw_arr(&w);
  for (unsigned i = 0; i < r->count; i++) {
    kp_jw_obj(&w);
    kp_jw_kstr(&w, "status", r->p[i].status ? "timeout" : "ok");
    kp_jw_key(&w, "rtt_ms");
    if (r->p[i].status || r->p[i].rtt_ms < 0)
      kp_jw_null(&w);
    else
      kp_jw_num(&w, r->p[i].rtt_ms, 3);
    kp_jw_ku64(&w, "tries", r->p[i].sends);
    kp_jw_obj_end(&w);
  }
  kp_jw_arr_end(&w);
  kp_jw_obj_end(&w);
  return kp_inspect_print_json(&w, "ping");
}

/* Sends the PINGs one after another; false if interrupted. */
static bool run_pings(kp_inspect_session_t *s, ping_run_t *r, unsigned interval_ms, bool live) {
  kp_node_stats_t st;
  kp_node_stats(s->node, &st);
  r->bad_id_before = st.drops_bad_id;
  for (unsigned i = 0; i < r->count && !s->signalled; i++) {
    ping_t *p = &r->p[i];
    if (i) kp_inspect_session_run(s, NULL, NULL, interval_ms);
    int err = kp_inspect_request(s, &r->to, KP_DHT_CMD_PING, NULL, on_ping, p, NULL);
    if (err) {
      kp_inspect_fail("ping", "cannot send: %s", kp_strerror(err));
      return false;
    }
    kp_inspect_session_run(s, ping_done, p, 30000);
    if (!p->done) return false;
    if (live) print_one(i, p);
    if (p->status) continue;
    r->replies++;
    if (p->rtt_ms < 0) {
      r->retried++;
      continue;
    }
    r->min = r->samples && r->min < p->rtt_ms ? r->min : p->rtt_ms;
    r->max = r->max > p->rtt_ms ? r->max : p->rtt_ms;
    r->sum += p->rtt_ms;
    r->samples++;
  }
  kp_node_stats(s->node, &st);
  r->bad_id_after = st.drops_bad_id;
  return !s->signalled;
}

int kp_inspect_ping(int argc, char **argv) {
  static const struct option longopts[] = {{"count", required_argument, 0, 'c'},
                                           {"interval", required_argument, 0, 'i'},
                                           KP_INSPECT_NET_OPTIONS,
                                           {0, 0, 0, 0}};
  kp_inspect_opts_t o;
  kp_inspect_opts_init(&o, "ping");
  unsigned long count = 3, interval = 200;
  int c, rc;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
      case 'c':
        if (!kp_inspect_parse_uint(optarg, 1, PING_MAX, &count))
          return kp_inspect_usage("ping", "--count wants 1 to %d, got '%s'", PING_MAX, optarg);
        break;
      case 'i':
        if (!kp_inspect_parse_uint(optarg, 0, 60000, &interval))
          return kp_inspect_usage("ping", "--interval wants milliseconds, got '%s'", optarg);
        break;
      case 'h': fputs(help, stdout); return KP_EXIT_OK;
      default:
        if ((rc = kp_inspect_option(&o, c, optarg))) return rc;
    }
  }
  if (optind >= argc) return kp_inspect_usage("ping", "give the node to ping: HOST:PORT");
  if (optind + 1 < argc)
    return kp_inspect_usage("ping", "unexpected argument '%s'", argv[optind + 1]);
  ping_run_t r;
  memset(&r, 0, sizeof(r));
  r.count = (unsigned)count;
  int err = kp_inspect_resolve(argv[optind], &r.to);
  if (err)
    return kp_inspect_usage("ping", "'%s' is not HOST:PORT or does not resolve (%s)", argv[optind],
                            kp_strerror(err));
  kp_inspect_session_t s;
  if ((err = kp_inspect_session_open(&s, &o, r.to.family, NULL, 0, 0)))
    return kp_inspect_session_error(&o, err);
  bool finished = run_pings(&s, &r, (unsigned)interval, !o.json);
  rc = kp_inspect_session_close(&s);
  if (!finished) return KP_EXIT_FAIL;
  if (o.json)
    rc |= print_json(&r);
  else
    print_text(&r);
  if (!r.replies) return kp_inspect_fail("ping", "%s did not answer", argv[optind]);
  return rc ? KP_EXIT_FAIL : KP_EXIT_OK;
}
