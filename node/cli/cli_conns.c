/* SPDX-License-Identifier: MIT */
/* The live connections of a running program (cli_conns.h). */
#include <inttypes.h>
#include <string.h>

#include "node/cli/cli.h"
#include "node/cli/cli_conns.h"

void kp_cli_conns_init(kp_cli_conns_t *cs, uv_loop_t *loop) {
  memset(cs, 0, sizeof(*cs));
  cs->loop = loop;
}

/* The configuration's name for a key, if it gives one. */
static void host_of(const uint8_t key[KP_PUBLIC_KEY_LEN], char *out, size_t cap) {
  const kp_cli_config_t *cfg = kp_cli_settings();
  out[0] = '\0';
  for (size_t i = 0; i < cfg->host_count; i++) {
    if (!memcmp(cfg->hosts[i].key, key, KP_PUBLIC_KEY_LEN)) {
      snprintf(out, cap, "%s", cfg->hosts[i].name);
      return;
    }
  }
}

void kp_cli_conns_add(kp_cli_conns_t *cs, kp_cli_conn_t *e, kp_conn_t *conn,
                      const kp_connect_info_t *info, const char *service, bool outgoing) {
  memset(e, 0, sizeof(*e));
  e->conn = conn;
  kp_key_to_text(info->remote_key, e->key);
  host_of(info->remote_key, e->host, sizeof(e->host));
  snprintf(e->service, sizeof(e->service), "%s", service ? service : "");
  snprintf(e->path_kind, sizeof(e->path_kind), "%s", kp_punch_name(info->punch));
  e->started_ms = uv_now(cs->loop);
  e->outgoing = outgoing;
  e->next = cs->head;
  if (cs->head) cs->head->prev = e;
  cs->head = e;
  cs->count++;
}

void kp_cli_conns_path(kp_cli_conn_t *e, const kp_path_event_t *ev) {
  snprintf(e->path_kind, sizeof(e->path_kind), "%s", ev->direct ? "direct" : "relayed");
}

void kp_cli_conns_remove(kp_cli_conns_t *cs, kp_cli_conn_t *e) {
  if (!e->conn) return;
  if (e->prev)
    e->prev->next = e->next;
  else
    cs->head = e->next;
  if (e->next) e->next->prev = e->prev;
  e->next = e->prev = NULL;
  e->conn = NULL;
  cs->count--;
}

static void conn_json(kp_jw_t *out, const kp_cli_conns_t *cs, const kp_cli_conn_t *e) {
  kp_conn_stats_t st;
  char path[KP_ADDR_STRLEN];
  kp_conn_stats(e->conn, &st);
  kp_addr_format(&st.remote, path, sizeof(path));
  kp_jw_obj(out);
  kp_jw_kstr(out, "peer", e->key);
  kp_jw_key(out, "host");
  kp_jw_str(out, e->host[0] ? e->host : NULL);
  kp_jw_kstr(out, "service", e->service);
  kp_jw_kstr(out, "direction", e->outgoing ? "out" : "in");
  kp_jw_kstr(out, "path", e->path_kind);
  kp_jw_kstr(out, "address", path);
  kp_jw_key(out, "rtt_us"); /* null until the connection has measured one */
  if (st.min_rtt_us)
    kp_jw_u64(out, st.srtt_us);
  else
    kp_jw_null(out);
  kp_jw_ku64(out, "bytes_in", st.stream_bytes_received);
  kp_jw_ku64(out, "bytes_out", st.stream_bytes_sent);
  kp_jw_ku64(out, "age_ms", uv_now(cs->loop) - e->started_ms);
  kp_jw_ku64(out, "path_changes", st.path_changes);
  kp_jw_obj_end(out);
}

/* {"cmd":"connections"}: every live connection, newest first. */
static int control_connections(void *ctx, const kp_json_t *request, const char *line, size_t len,
                               kp_jw_t *out) {
  const kp_cli_conns_t *cs = ctx;
  (void)request, (void)line, (void)len;
  kp_jw_obj(out);
  kp_jw_kbool(out, "ok", true);
  kp_jw_kstr(out, "cmd", "connections");
  kp_jw_ku64(out, "count", cs->count);
  kp_jw_key(out, "connections");
  kp_jw_arr(out);
  for (const kp_cli_conn_t *e = cs->head; e; e = e->next) conn_json(out, cs, e);
  kp_jw_arr_end(out);
  kp_jw_obj_end(out);
  return 0;
}

int kp_cli_conns_control(kp_control_t *ctl, kp_cli_conns_t *cs) {
  return kp_control_add(ctl, "connections", control_connections, cs);
}

void kp_cli_conns_print_closed(FILE *out, const kp_cli_conns_t *cs, const kp_cli_conn_t *e,
                               int status) {
  kp_conn_stats_t st;
  kp_conn_stats(e->conn, &st);
  uint64_t ms = uv_now(cs->loop) - e->started_ms;
  kp_cli_stamp(out);
  fprintf(out,
          "connection closed: %s%s%s%s, service %s, %" PRIu64 ".%01" PRIu64 " s, %" PRIu64
          " bytes in, %" PRIu64 " out, %" PRIu64 " path change%s: %s\n",
          e->key, e->host[0] ? " (" : "", e->host, e->host[0] ? ")" : "",
          e->service[0] ? e->service : "default", ms / 1000, ms % 1000 / 100,
          st.stream_bytes_received, st.stream_bytes_sent, st.path_changes,
          st.path_changes == 1 ? "" : "s", status ? kp_strerror(status) : "closed here");
  fflush(out);
}
