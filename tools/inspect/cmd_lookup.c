/* SPDX-License-Identifier: MIT */
/* kadpunch-inspect lookup: the records stored under a topic or key, who
 * holds them, and how many signatures checked out. */
#include <string.h>

#include "common/alloc.h"
#include "dht/dht_record.h"
#include "dht/dht_swarm.h"
#include "tools/inspect/inspect.h"

static const char help[] =
    "usage: kadpunch-inspect lookup TOPIC|KEY [options]\n"
    "\n"
    "Runs a LOOKUP query like `kadpunch lookup`, but shows its workings: every\n"
    "record the nodes returned is checked (signature over the record and the\n"
    "target); each distinct announcer is listed once with its newest sequence\n"
    "number, relay nodes, data and how many nodes hold it; then the signatures\n"
    "checked and rejected, and what the query cost. A KEY (52 z-base-32\n"
    "characters) looks up that peer's own announcement; anything else is a\n"
    "topic (64 hex digits: a raw target).\n"
    "\n"
    "options:\n"
    "  --topic                 read the argument as a topic whatever it looks like\n"
    "  --closest               also list the closest nodes, as find-node does\n" KP_INSPECT_NET_HELP
    "\n"
    "examples:\n"
    "  kadpunch-inspect lookup chat-room-7 --bootstrap 203.0.113.7:49737\n"
    "  kadpunch-inspect lookup <public key> --json\n"
    "\n"
    "exit codes: 0 the lookup ran (records found or not), 1 no node answered\n"
    "(or the network failed), 2 bad options\n";

#define RECORDS_MAX 256

typedef struct rec_s {
  uint8_t public_key[KP_PUBLIC_KEY_LEN];
  uint64_t seq;
  kp_addr_t relays[KP_RECORD_MAX_RELAYS];
  size_t relay_count;
  uint8_t data[KP_RECORD_MAX_DATA];
  size_t data_len;
  unsigned holders; /* replies that carried a valid copy */
} rec_t;

typedef struct lookup_s {
  kp_inspect_query_t q;
  rec_t recs[RECORDS_MAX];
  size_t count;
  unsigned valid, rejected, malformed, with_records, not_listed;
} lookup_t;

static void on_record(void *ctx, const kp_record_t *rec) {
  lookup_t *l = ctx;
  rec_t *r = NULL;
  for (size_t i = 0; i < l->count && !r; i++)
    if (!memcmp(l->recs[i].public_key, rec->public_key, KP_PUBLIC_KEY_LEN)) r = &l->recs[i];
  if (!r) {
    if (l->count == RECORDS_MAX) {
      l->not_listed++;
      return;
    }
    r = &l->recs[l->count++];
    memset(r, 0, sizeof(*r));
    memcpy(r->public_key, rec->public_key, KP_PUBLIC_KEY_LEN);
  }
  r->holders++;
  if (r->holders > 1 && rec->seq <= r->seq) return;
  r->seq = rec->seq;
  r->relay_count =
      rec->relay_count < KP_RECORD_MAX_RELAYS ? rec->relay_count : KP_RECORD_MAX_RELAYS;
  if (r->relay_count) memcpy(r->relays, rec->relays, r->relay_count * sizeof(kp_addr_t));
  r->data_len = rec->data_len < KP_RECORD_MAX_DATA ? rec->data_len : KP_RECORD_MAX_DATA;
  /* A record without data has no data pointer either (memcpy from NULL is
   * undefined even for 0 bytes). */
  if (r->data_len) memcpy(r->data, rec->data, r->data_len);
}

static void on_reply(void *arg, const kp_dht_msg_t *reply, const kp_addr_t *from) {
  lookup_t *l = arg;
  (void)from;
  if (!reply->value || !reply->value_len || reply->error) return;
  unsigned rejected = 0;
  int n = kp_dht_record_list_decode(reply->value, reply->value_len, l->q.target, NULL, on_record, l,
                                    &rejected);
  if (n < 0) {
    l->malformed++;
    return;
  }
  l->valid += (unsigned)n;
  l->rejected += rejected;
  l->with_records += n > 0;
}

static void json_record(kp_jw_t *w, const rec_t *r) {
  char key[KP_KEY_TEXT_LEN + 1];
  kp_key_to_text(r->public_key, key);
  kp_jw_obj(w);
  kp_jw_kstr(w, "public_key", key);
  kp_jw_ku64(w, "seq", r->seq);
  kp_jw_key(w, "relays");
  kp_jw_arr(w);
  for (size_t i = 0; i < r->relay_count; i++) {
    char text[KP_ADDR_STRLEN];
    kp_jw_str(w, kp_addr_format(&r->relays[i], text, sizeof(text)));
  }
  kp_jw_arr_end(w);
  kp_jw_key(w, "data");
  kp_jw_strn(w, (const char *)r->data, r->data_len);
  kp_jw_ku64(w, "holders", r->holders);
  kp_jw_obj_end(w);
}

static int print_json(const lookup_t *l, const char *input, const char *kind, bool closest) {
  kp_jw_t w;
  kp_jw_init(&w, 0);
  kp_jw_obj(&w);
  kp_jw_khex(&w, "target", l->q.target, KP_ID_LEN);
  kp_jw_kstr(&w, "input", input);
  kp_jw_kstr(&w, "kind", kind);
  kp_jw_kstr(&w, "status", "ok");
  kp_jw_key(&w, "records");
  kp_jw_arr(&w);
  for (size_t i = 0; i < l->count; i++) json_record(&w, &l->recs[i]);
  kp_jw_arr_end(&w);
  kp_jw_ku64(&w, "not_listed", l->not_listed);
  kp_jw_key(&w, "signatures");
  kp_jw_obj(&w);
  kp_jw_ku64(&w, "checked", l->valid + l->rejected);
  kp_jw_ku64(&w, "valid", l->valid);
  kp_jw_ku64(&w, "rejected", l->rejected);
  kp_jw_obj_end(&w);
  kp_jw_ku64(&w, "replies", l->q.replies);
  kp_jw_ku64(&w, "replies_with_records", l->with_records);
  kp_jw_ku64(&w, "malformed_replies", l->malformed);
  kp_inspect_query_json_stats(&w, &l->q);
  if (closest) kp_inspect_query_json_nodes(&w, &l->q);
  kp_jw_obj_end(&w);
  return kp_inspect_print_json(&w, "lookup");
}

static void print_text(const lookup_t *l, const char *input, const char *kind, bool closest) {
  char hex[2 * KP_ID_LEN + 1];
  printf("target %s  (%s \"%s\")\n", kp_inspect_hex(l->q.target, KP_ID_LEN, hex), kind, input);
  printf("%zu record%s; signatures checked: %u valid, %u rejected\n", l->count,
         l->count == 1 ? "" : "s", l->valid, l->rejected);
  if (l->count) printf("  %-52s  %10s  %7s  %s\n", "PUBLIC KEY", "SEQ", "HOLDERS", "RELAYS / DATA");
  for (size_t i = 0; i < l->count; i++) {
    const rec_t *r = &l->recs[i];
    char key[KP_KEY_TEXT_LEN + 1];
    kp_key_to_text(r->public_key, key);
    printf("  %s  %10llu  %7u ", key, (unsigned long long)r->seq, r->holders);
    for (size_t j = 0; j < r->relay_count; j++) {
      char text[KP_ADDR_STRLEN];
      printf(" %s", kp_addr_format(&r->relays[j], text, sizeof(text)));
    }
    if (r->data_len) printf("  data %.*s", (int)r->data_len, (const char *)r->data);
    printf("\n");
  }
  if (l->not_listed) printf("  (%u more announcers not listed)\n", l->not_listed);
  if (l->malformed) printf("%u replies held a malformed record list\n", l->malformed);
  if (closest) kp_inspect_query_print_nodes(&l->q);
  printf("%u nodes answered, %u with records; %u hops, %u requests, %u timeouts, %.1f ms\n",
         l->q.replies, l->with_records, l->q.stats.hops, l->q.stats.requests, l->q.stats.timeouts,
         l->q.duration_ms);
}

/* Parses the command line into l->q.target; returns 0 or an exit code. */
static int parse(int argc, char **argv, kp_inspect_opts_t *o, lookup_t *l, const char **input,
                 const char **kind, bool *closest) {
  static const struct option longopts[] = {{"topic", no_argument, 0, 't'},
                                           {"closest", no_argument, 0, 'c'},
                                           KP_INSPECT_NET_OPTIONS,
                                           {0, 0, 0, 0}};
  bool topic = false;
  int c, rc;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
      case 't': topic = true; break;
      case 'c': *closest = true; break;
      case 'h': fputs(help, stdout); return -1;
      default:
        if ((rc = kp_inspect_option(o, c, optarg))) return rc;
    }
  }
  if (optind + 1 < argc)
    return kp_inspect_usage(o->cmd, "unexpected argument '%s'", argv[optind + 1]);
  *input = optind < argc ? argv[optind] : NULL;
  return kp_inspect_target(o->cmd, *input, topic, l->q.target, kind);
}

int kp_inspect_lookup(int argc, char **argv) {
  kp_inspect_opts_t o;
  kp_inspect_opts_init(&o, "lookup");
  lookup_t *l = kp_calloc(1, sizeof(*l));
  if (!l) return kp_inspect_fail(o.cmd, "out of memory");
  const char *input = NULL, *kind = NULL;
  bool closest = false;
  int rc = parse(argc, argv, &o, l, &input, &kind, &closest);
  char text[1024];
  const char *hosts[16];
  int family = kp_inspect_bootstrap_family(&o);
  size_t n = rc ? 0 : kp_inspect_hosts(&o, family, text, hosts, 16);
  if (!rc && !n)
    rc = kp_inspect_usage(o.cmd, "no bootstrap node: pass --bootstrap HOST:PORT or set "
                                 "KADPUNCH_BOOTSTRAP");
  kp_inspect_session_t s;
  int err = rc ? 0 : kp_inspect_session_open(&s, &o, family, hosts, n, 10000);
  if (rc || err) {
    kp_free(l);
    return rc < 0 ? KP_EXIT_OK : rc ? rc : kp_inspect_session_error(&o, err);
  }
  l->q.command = KP_DHT_CMD_LOOKUP;
  l->q.on_reply = on_reply;
  l->q.arg = l;
  err = kp_inspect_query_run(&s, &l->q, 60000);
  rc = kp_inspect_session_close(&s);
  if (err || l->q.status)
    rc = kp_inspect_fail(o.cmd, "%s", kp_strerror(err ? err : l->q.status));
  else if (o.json)
    rc |= print_json(l, input, kind, closest);
  else
    print_text(l, input, kind, closest);
  kp_free(l);
  return rc ? KP_EXIT_FAIL : KP_EXIT_OK;
}
