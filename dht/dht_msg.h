/* SPDX-License-Identifier: MIT */
/* DHT wire codec: one control-plane message <-> kp_dht_msg_t.
 *
 * A message is a msgpack array (docs/protocol.md, "DHT messages"):
 *
 *   [version, type, tid, to, id, token, command, target, nodes, value, error]
 *   [ ... the same ..., padding]                     (requests only)
 *
 * Pure: no allocation that outlives a call, every field validated, never
 * asserts on input. Decoded views (nodes, value) point into the input. */
#ifndef KP_DHT_MSG_H
#define KP_DHT_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/addr.h"
#include "kadpunch_base.h"

#define KP_DHT_VERSION 1
/* Every DHT datagram fits this (the IPv6 minimum MTU less headers, rounded). */
#define KP_DHT_MAX_DATAGRAM 1200
#define KP_DHT_MAX_NODES KP_DHT_K
#define KP_DHT_MAX_VALUE 1150
#define KP_DHT_MSG_FIELDS 11

typedef enum { KP_DHT_REQUEST = 0, KP_DHT_RESPONSE = 1 } kp_dht_msg_type_t;

/* Core commands. Higher layers register their own, from KP_DHT_CMD_USER up
 * (dht.h: kp_dht_register). */
typedef enum {
  KP_DHT_CMD_PING = 0,
  KP_DHT_CMD_PING_NAT = 1,
  KP_DHT_CMD_FIND_NODE = 2,
  KP_DHT_CMD_DOWN_HINT = 3,
  KP_DHT_CMD_USER = 16,
  KP_DHT_CMD_MAX = 63
} kp_dht_command_t;

/* Error codes carried in responses. Extensions define theirs from
 * KP_DHT_ERR_USER up; the core maps these to KP_E* for the caller. */
typedef enum {
  KP_DHT_ERR_NONE = 0,
  KP_DHT_ERR_UNKNOWN_COMMAND = 1,
  KP_DHT_ERR_BAD_TOKEN = 2,
  KP_DHT_ERR_TRUNCATED = 3, /* the reply did not fit the request; ask again with a token */
  KP_DHT_ERR_USER = 16,
  KP_DHT_ERR_MAX = 255
} kp_dht_wire_error_t;

typedef struct kp_dht_msg_s {
  uint8_t type; /* kp_dht_msg_type_t */
  uint16_t tid; /* transaction id, echoed by the response */
  kp_addr_t to; /* where the sender addressed this packet */
  bool has_id;
  uint8_t id[KP_ID_LEN]; /* sender's node id, only while it is a member */
  bool has_token;
  uint8_t token[32]; /* request: one the receiver issued to us; response: one for the requester */
  uint8_t command;
  bool has_target;
  uint8_t target[KP_ID_LEN];
  const uint8_t *nodes; /* compact addresses of the packet's family, or NULL */
  size_t nodes_len;
  const uint8_t *value; /* opaque to the DHT, or NULL */
  size_t value_len;
  uint8_t error;  /* kp_dht_wire_error_t, responses only */
  size_t padding; /* requests: bytes of padding to add (encode) or found (decode) */
} kp_dht_msg_t;

/* Encodes msg into buf. Nodes must be whole compact addresses of one family.
 * Returns 0 and sets *len, or KP_ETOOBIG if it would not fit in cap or in
 * KP_DHT_MAX_DATAGRAM. */
int kp_dht_msg_encode(const kp_dht_msg_t *msg, uint8_t *buf, size_t cap, size_t *len);

/* Like kp_dht_msg_encode, but pads a request to at least min_len bytes
 * (used when the requester holds no token, so the reply may be as large). */
int kp_dht_msg_encode_min(const kp_dht_msg_t *msg, size_t min_len, uint8_t *buf, size_t cap,
                          size_t *len);

/* Decodes one datagram. family is the receiving socket's (nodes must be
 * compact addresses of that family). Errors: KP_ETOOBIG, KP_EMALFORMED,
 * KP_ETRUNCATED, KP_EVERSION, KP_EFIELD. */
int kp_dht_msg_decode(const uint8_t *data, size_t len, int family, kp_dht_msg_t *msg);

/* An upper bound on the size of a response with an id, a token, nodes_count
 * nodes of family and a value_len-byte value: the padding a requester without
 * a token adds so the reply may be that large (docs/protocol.md, "No
 * amplification"). */
size_t kp_dht_msg_reply_bound(int family, size_t nodes_count, size_t value_len);

/* True if the datagram's first byte marks a control-plane message. */
static inline bool kp_dht_msg_is_control(const uint8_t *data, size_t len) {
  return len > 0 && (data[0] & 0xf0) == 0x90;
}

#endif
