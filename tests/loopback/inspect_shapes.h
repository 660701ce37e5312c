/* SPDX-License-Identifier: MIT */
/* The JSON shapes docs/inspect.md documents, as kp_it_shape specs
 * ("member:types", types b n s a o z). A test fails when the output has a
 * member more or less than these: change both together. */
#ifndef KP_TEST_INSPECT_SHAPES_H
#define KP_TEST_INSPECT_SHAPES_H

#define KP_IT_PING                                                                                 \
  "addr:s sent:n replies:n retried:n rtt_ms:oz id:sz member:b id_mismatch:b protocol:nz "          \
  "seen_as:sz token:b pings:a"
#define KP_IT_PING_RTT "min:n avg:n max:n"
#define KP_IT_PING_EACH "status:s rtt_ms:nz tries:n"

#define KP_IT_QUERY_STATS "requests:n responses:n timeouts:n hops:n duration_ms:n"
#define KP_IT_FIND "target:s input:s kind:s status:s " KP_IT_QUERY_STATS " nodes:a"
#define KP_IT_FIND_NODE "id:s addr:s shared_bits:n hops:n rtt_ms:nz"

#define KP_IT_LOOKUP                                                                               \
  "target:s input:s kind:s status:s records:a not_listed:n signatures:o replies:n "                \
  "replies_with_records:n malformed_replies:n " KP_IT_QUERY_STATS
#define KP_IT_LOOKUP_RECORD "public_key:s seq:n relays:a data:s holders:n"
#define KP_IT_LOOKUP_SIGNATURES "checked:n valid:n rejected:n"

#define KP_IT_NAT "ipv4:oz ipv6:o"
#define KP_IT_NAT_FAMILY                                                                           \
  "answered:b local:sz public:sz behind_nat:b port_preserved:b mapping:s public_addresses:n "      \
  "unsolicited:o nat_type:s dht_nat_type:s dht_reachable:b port_mapping:o samples:a"
#define KP_IT_NAT_UNSOLICITED "tried:n reached:n"
#define KP_IT_NAT_PORT_MAPPING "state:s protocol:s gateway:sz external:sz lifetime_s:n why:s"
#define KP_IT_NAT_SAMPLE "reporter:s seen:sz rtt_ms:nz"
#define KP_IT_NAT_V6 "addresses:a route:b route_source:sz dht:oz"

#define KP_IT_CRAWL                                                                                \
  "bootstrap:s complete:b stopped_by:sz duration_ms:n requests:n answers:n timeouts:n "            \
  "datagrams:n rate:n found:n answered:n members:n relays:n proxies:n silent:n unasked:n "         \
  "not_tracked:n "                                                                                 \
  "max_hops:n rtt_ms:o coverage:o versions:o nodes:a"
#define KP_IT_CRAWL_RTT "samples:n p50:nz p90:nz p99:nz max:nz"
#define KP_IT_CRAWL_COVERAGE "sectors:n covered:n largest_gap:n gap_at:n expected_gap:n"
#define KP_IT_CRAWL_NODE "id:s addr:s state:s member:b relay:b proxy:b rtt_ms:nz hops:n"

/* The control socket's answers. */
#define KP_IT_CTL_ERROR "ok:b cmd:sz error:s"
#define KP_IT_CTL_COMMANDS "ok:b cmd:s commands:a"
#define KP_IT_CTL_TABLE "ok:b cmd:s id:sz member:b k:n count:n buckets:a nodes:a"
#define KP_IT_CTL_BUCKET "bucket:n count:n"
#define KP_IT_CTL_ENTRY "id:s addr:s bucket:n age_s:n fails:n"
#define KP_IT_CTL_RECORDS                                                                          \
  "ok:b cmd:s records:a count:n shown:n truncated:b announce:n mutable:n immutable:n "             \
  "tombstones:n bytes:n"
#define KP_IT_CTL_RECORD                                                                           \
  "kind:s target:s public_key:sz seq:n expires_in_s:n size:n origin:sz tombstone:b"
#define KP_IT_CTL_ANNOUNCE KP_IT_CTL_RECORD " signature_ok:b relays:a data:s"
#define KP_IT_CTL_STATS                                                                            \
  "ok:b cmd:s version:s id:sz member:b joined:b local:sz public:sz nat:s reachable:b "             \
  "table_size:n inflight:n counters:o store:o relay:oz"
#define KP_IT_CTL_COUNTERS                                                                         \
  "packets_in:n packets_out:n bytes_in:n bytes_out:n requests_in:n responses_in:n "                \
  "requests_out:n timeouts:n drops_malformed:n drops_truncated:n drops_too_big:n "                 \
  "drops_version:n drops_field:n drops_command:n drops_bad_id:n drops_unmatched:n drops_rate:n "   \
  "drops_send:n drops_other:n"
#define KP_IT_CTL_STORE "records:n bytes:n stored:n expired:n evicted:n refused:n"

#endif
