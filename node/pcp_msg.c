/* SPDX-License-Identifier: MIT */
#include "node/pcp_msg.h"

#include <string.h>

#define OPCODE_MAP 1
#define RESPONSE_BIT 0x80
#define HEADER_LEN 24
#define UDP 17

static void put16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v) {
  put16(p, (uint16_t)(v >> 16));
  put16(p + 2, (uint16_t)v);
}

static uint16_t get16(const uint8_t *p) {
  return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p) {
  return (uint32_t)get16(p) << 16 | get16(p + 2);
}

/* PCP carries every address in 16 bytes, IPv4 as ::ffff:a.b.c.d; an unset
 * IPv4 one is ::ffff:0.0.0.0 (section 11.1: "the all-zeros address" of the
 * family). */
static void put_ip(uint8_t out[16], const kp_addr_t *a) {
  memset(out, 0, 16);
  if (a->family == KP_AF_INET6) {
    memcpy(out, a->ip, 16);
    return;
  }
  out[10] = out[11] = 0xff;
  if (a->family == KP_AF_INET) memcpy(out + 12, a->ip, 4);
}

static void get_ip(kp_addr_t *out, const uint8_t in[16], uint16_t port) {
  static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  memset(out, 0, sizeof(*out));
  out->port = port;
  if (!memcmp(in, v4_mapped, sizeof(v4_mapped))) {
    out->family = KP_AF_INET;
    memcpy(out->ip, in + 12, 4);
  } else {
    out->family = KP_AF_INET6;
    memcpy(out->ip, in, 16);
  }
}

void kp_pcp_encode_map(const kp_pcp_map_req_t *req, uint8_t out[KP_PCP_MAP_LEN]) {
  memset(out, 0, KP_PCP_MAP_LEN);
  out[0] = KP_PCP_VERSION;
  out[1] = OPCODE_MAP;
  put32(out + 4, req->lifetime_s);
  put_ip(out + 8, &req->client);
  memcpy(out + 24, req->nonce, KP_PCP_NONCE_LEN);
  out[36] = UDP;
  put16(out + 40, req->internal_port);
  put16(out + 42, req->suggested.port);
  /* The suggestion's family is the client's: an unset one is that family's
   * all-zeros address. */
  kp_addr_t suggested = req->suggested;
  if (!suggested.family) suggested.family = req->client.family;
  put_ip(out + 44, &suggested);
}

kp_pcp_decoded_t kp_pcp_decode(const uint8_t *data, size_t len, kp_pcp_map_resp_t *out) {
  memset(out, 0, sizeof(*out));
  if (len < 4 || !(data[1] & RESPONSE_BIT)) return KP_PCP_NOT_AN_ANSWER;
  /* A NAT-PMP server answers any version it does not know with its own
   * version 0 (RFC 6886 section 3.5, RFC 6887 appendix A). */
  if (data[0] < KP_PCP_VERSION) return KP_PCP_OLD_VERSION;
  if (data[0] != KP_PCP_VERSION || data[1] != (RESPONSE_BIT | OPCODE_MAP))
    return KP_PCP_NOT_AN_ANSWER;
  if (len < HEADER_LEN || len > KP_PCP_MAX_LEN || len % 4) return KP_PCP_NOT_AN_ANSWER;
  out->result = data[3];
  out->lifetime_s = get32(data + 4);
  out->epoch_s = get32(data + 8);
  if (len < KP_PCP_MAP_LEN)
    return out->result == KP_PCP_SUCCESS ? KP_PCP_NOT_AN_ANSWER : KP_PCP_MAP_ANSWER;
  out->has_map = true;
  memcpy(out->nonce, data + 24, KP_PCP_NONCE_LEN);
  out->protocol = data[36];
  out->internal_port = get16(data + 40);
  get_ip(&out->external, data + 44, get16(data + 42));
  return KP_PCP_MAP_ANSWER;
}

const char *kp_pcp_result_why(uint8_t result) {
  switch (result) {
    case KP_PCP_SUCCESS: return "mapped";
    case KP_PCP_UNSUPP_VERSION: return "the gateway speaks another PCP version";
    case KP_PCP_NOT_AUTHORIZED: return "the gateway refused: not authorized";
    case KP_PCP_MALFORMED_REQUEST: return "the gateway could not read the request";
    case KP_PCP_UNSUPP_OPCODE: return "the gateway does not map with PCP";
    case KP_PCP_UNSUPP_OPTION: return "the gateway refused an option";
    case KP_PCP_MALFORMED_OPTION: return "the gateway could not read an option";
    case KP_PCP_NETWORK_FAILURE: return "the gateway has no public address";
    case KP_PCP_NO_RESOURCES: return "the gateway is out of mappings";
    case KP_PCP_UNSUPP_PROTOCOL: return "the gateway does not map UDP";
    case KP_PCP_USER_EX_QUOTA: return "the gateway refused: this host has too many mappings";
    case KP_PCP_CANNOT_PROVIDE_EXTERNAL: return "the gateway cannot give the port asked for";
    case KP_PCP_ADDRESS_MISMATCH: return "the gateway saw the request come from another address";
    case KP_PCP_EXCESSIVE_REMOTE_PEERS: return "the gateway refused: too many remote peers";
    default: return "PCP failed";
  }
}
