/* SPDX-License-Identifier: MIT */
/* The Port Control Protocol's MAP exchange (RFC 6887 sections 7 and 11), the
 * part a node needs to ask its gateway for a UDP mapping: the request's
 * bytes, and what the gateway's answer says. Pure: the socket, the timers
 * and the retransmissions are portmap_pcp.c's. */
#ifndef KP_NODE_PCP_MSG_H
#define KP_NODE_PCP_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kadpunch_base.h"

#define KP_PCP_PORT 5351
#define KP_PCP_VERSION 2
#define KP_PCP_MAP_LEN 60   /* common header (24) and the MAP opcode's data (36) */
#define KP_PCP_MAX_LEN 1100 /* section 7: no PCP message is longer */
#define KP_PCP_NONCE_LEN 12

/* Result codes (section 7.4) a node tells apart. */
enum {
  KP_PCP_SUCCESS = 0,
  KP_PCP_UNSUPP_VERSION = 1,
  KP_PCP_NOT_AUTHORIZED = 2,
  KP_PCP_MALFORMED_REQUEST = 3,
  KP_PCP_UNSUPP_OPCODE = 4,
  KP_PCP_UNSUPP_OPTION = 5,
  KP_PCP_MALFORMED_OPTION = 6,
  KP_PCP_NETWORK_FAILURE = 7,
  KP_PCP_NO_RESOURCES = 8,
  KP_PCP_UNSUPP_PROTOCOL = 9,
  KP_PCP_USER_EX_QUOTA = 10,
  KP_PCP_CANNOT_PROVIDE_EXTERNAL = 11,
  KP_PCP_ADDRESS_MISMATCH = 12,
  KP_PCP_EXCESSIVE_REMOTE_PEERS = 13,
};

/* A MAP request for UDP. lifetime_s 0 deletes the mapping the nonce made. */
typedef struct kp_pcp_map_req_s {
  uint8_t nonce[KP_PCP_NONCE_LEN]; /* random, the same for the mapping's life */
  uint32_t lifetime_s;
  kp_addr_t client; /* the address the gateway sees the request come from */
  uint16_t internal_port;
  kp_addr_t suggested; /* an external address and port to ask for (unset: any) */
} kp_pcp_map_req_t;

/* Writes the request's KP_PCP_MAP_LEN bytes. */
void kp_pcp_encode_map(const kp_pcp_map_req_t *req, uint8_t out[KP_PCP_MAP_LEN]);

typedef enum kp_pcp_decoded_e {
  KP_PCP_NOT_AN_ANSWER = 0, /* not a PCP response to a MAP request: dropped */
  KP_PCP_OLD_VERSION,       /* a NAT-PMP (version 0) or older PCP server: it does not speak PCP */
  KP_PCP_MAP_ANSWER,        /* a MAP response: result, and when it succeeded the rest */
} kp_pcp_decoded_t;

typedef struct kp_pcp_map_resp_s {
  uint8_t result;
  uint32_t lifetime_s; /* success: the mapping's; an error: how long it holds (section 7.4) */
  uint32_t epoch_s;    /* the server's epoch (section 8.5) */
  /* Filled when the response is long enough to carry them (every success
   * is; an error may be only a header). */
  bool has_map;
  uint8_t nonce[KP_PCP_NONCE_LEN];
  uint8_t protocol;
  uint16_t internal_port;
  kp_addr_t external; /* the assigned external address and port */
} kp_pcp_map_resp_t;

/* Reads a datagram from the gateway's PCP port. A success is a MAP
 * response of the full length with an external address; the caller checks
 * that the nonce, protocol and port are its own. */
kp_pcp_decoded_t kp_pcp_decode(const uint8_t *data, size_t len, kp_pcp_map_resp_t *out);

/* A short reason for a result code ("the gateway refused: not authorized"). */
const char *kp_pcp_result_why(uint8_t result);

#endif
