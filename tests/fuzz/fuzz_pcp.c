/* SPDX-License-Identifier: MIT */
/* Fuzz target: PCP answers (node/pcp_msg.c), which anything that can send
 * from the gateway's address and port feeds a node asking for a port
 * mapping. Every input gets one verdict and reads nothing past its end
 * (ASan); a MAP answer's fields are those bytes; and a request we encode
 * from the input reads back, once marked a response, as what was asked. */
#include <stdlib.h>
#include <string.h>

#include "node/pcp_msg.h"
#include "tests/fuzz/fuzz.h"

static void round_trip(const uint8_t *data, size_t size) {
  if (size < 16) return;
  kp_pcp_map_req_t req = {0};
  memcpy(req.nonce, data, KP_PCP_NONCE_LEN);
  req.lifetime_s = (uint32_t)data[12] << 24 | data[13];
  req.internal_port = (uint16_t)(data[14] << 8 | data[15]);
  req.client = (kp_addr_t){.family = KP_AF_INET, .ip = {data[0], data[1], data[2], data[3]}};
  req.suggested = (kp_addr_t){.family = KP_AF_INET, .port = req.internal_port};
  memcpy(req.suggested.ip, data + 4, 4);
  uint8_t m[KP_PCP_MAP_LEN];
  kp_pcp_encode_map(&req, m);
  m[1] |= 0x80;
  kp_pcp_map_resp_t r;
  KP_FUZZ_ASSERT(kp_pcp_decode(m, sizeof(m), &r) == KP_PCP_MAP_ANSWER);
  KP_FUZZ_ASSERT(r.has_map && r.result == KP_PCP_SUCCESS && r.lifetime_s == req.lifetime_s);
  KP_FUZZ_ASSERT(!memcmp(r.nonce, req.nonce, KP_PCP_NONCE_LEN) && r.protocol == 17);
  KP_FUZZ_ASSERT(r.internal_port == req.internal_port);
  KP_FUZZ_ASSERT(r.external.family == KP_AF_INET && r.external.port == req.internal_port);
  KP_FUZZ_ASSERT(!memcmp(r.external.ip, req.suggested.ip, 4));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* An exact-size copy: a read past the end is ASan's to catch. */
  uint8_t *buf = malloc(size ? size : 1);
  if (!buf) return 0;
  if (size) memcpy(buf, data, size);
  kp_pcp_map_resp_t r;
  kp_pcp_decoded_t d = kp_pcp_decode(buf, size, &r);
  KP_FUZZ_ASSERT(d == KP_PCP_NOT_AN_ANSWER || d == KP_PCP_OLD_VERSION || d == KP_PCP_MAP_ANSWER);
  if (d == KP_PCP_OLD_VERSION) KP_FUZZ_ASSERT(size >= 4 && buf[0] < KP_PCP_VERSION);
  if (d == KP_PCP_MAP_ANSWER) {
    KP_FUZZ_ASSERT(size >= 24 && size <= KP_PCP_MAX_LEN && size % 4 == 0);
    KP_FUZZ_ASSERT(buf[0] == KP_PCP_VERSION && buf[1] == 0x81 && r.result == buf[3]);
    KP_FUZZ_ASSERT(r.has_map == (size >= KP_PCP_MAP_LEN));
    if (r.result == KP_PCP_SUCCESS) KP_FUZZ_ASSERT(r.has_map);
    if (r.has_map) {
      KP_FUZZ_ASSERT(!memcmp(r.nonce, buf + 24, KP_PCP_NONCE_LEN) && r.protocol == buf[36]);
      KP_FUZZ_ASSERT(r.external.family == KP_AF_INET || r.external.family == KP_AF_INET6);
    }
    KP_FUZZ_ASSERT(kp_pcp_result_why(r.result)[0]);
  } else {
    KP_FUZZ_ASSERT(!r.has_map && !r.result);
  }
  round_trip(buf, size);
  free(buf);
  return 0;
}

size_t kp_fuzz_seeds(kp_fuzz_seed_t *seeds, size_t cap) {
  static uint8_t success[KP_PCP_MAP_LEN] = {2, 0x81, 0, 0, 0, 0, 0x0e, 0x10, 0, 0, 0x30, 0x39};
  static uint8_t v6[KP_PCP_MAP_LEN + 8] = {2, 0x81, 0, 0, 0, 0, 0, 60};
  static const uint8_t error[24] = {2, 0x81, 0, 8, 0, 0, 0, 30};
  static const uint8_t natpmp[8] = {0, 0x81, 0, 1};
  static bool made;
  if (!made) {
    made = true;
    success[36] = 17;
    success[40] = 0x10, success[41] = 0x92, success[42] = 0xa0, success[43] = 0x28;
    success[54] = success[55] = 0xff;
    success[56] = 203, success[57] = 0, success[58] = 113, success[59] = 7;
    v6[36] = 17;
    v6[44] = 0x20, v6[45] = 0x01, v6[46] = 0x0d, v6[47] = 0xb8, v6[59] = 1;
  }
  const kp_fuzz_seed_t s[] = {{success, sizeof(success)},
                              {v6, sizeof(v6)},
                              {error, sizeof(error)},
                              {natpmp, sizeof(natpmp)}};
  size_t n = 0;
  for (; n < sizeof(s) / sizeof(s[0]) && n < cap; n++) seeds[n] = s[n];
  return n;
}
