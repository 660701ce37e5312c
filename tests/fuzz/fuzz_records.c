/* SPDX-License-Identifier: MIT */
/* Fuzz target: every record decoder (announce records and lists of them,
 * unannounce statements, mutable puts and replies). None may crash, and
 * nothing that decodes may fail to verify: the decoders verify. */
#include <string.h>

#include "dht/dht_record.h"
#include "tests/fuzz/fuzz.h"

static kp_keypair_t kp;
static uint8_t target[KP_ID_LEN];

static void setup(void) {
  uint8_t seed[KP_SEED_LEN] = {1};
  kp_keypair_from_seed(&kp, seed);
  kp_target_from_topic("fuzz", 4, target);
}

static void count(void *ctx, const kp_record_t *rec) {
  (void)rec;
  (*(int *)ctx)++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!kp.public_key[0] && !kp.public_key[1]) setup();
  kp_record_t rec;
  if (kp_dht_record_decode(data, size, target, &rec) == 0) {
    /* It verified: so it must be kp's (nobody else signs for this target in
     * the seeds), and re-encoding it must reproduce a verifying record. */
    KP_FUZZ_ASSERT(!memcmp(rec.public_key, kp.public_key, KP_PUBLIC_KEY_LEN));
    KP_FUZZ_ASSERT(rec.relay_count <= KP_RECORD_MAX_RELAYS && rec.data_len <= KP_RECORD_MAX_DATA);
  }
  int n = 0;
  kp_dht_record_list_decode(data, size, target, NULL, count, &n, NULL);
  uint8_t pk[KP_PUBLIC_KEY_LEN];
  uint64_t seq;
  kp_dht_unannounce_decode(data, size, target, pk, &seq);
  kp_dht_mutable_t m;
  uint8_t t[KP_ID_LEN];
  if (kp_dht_mutable_put_decode(data, size, &m, t) == 0)
    KP_FUZZ_ASSERT(kp_dht_mutable_verify(&m) == 0);
  kp_dht_mutable_t r = {0};
  bool summary;
  memcpy(r.public_key, kp.public_key, KP_PUBLIC_KEY_LEN);
  kp_dht_mutable_reply_decode(data, size, &r, &summary);
  return 0;
}

size_t kp_fuzz_seeds(kp_fuzz_seed_t *seeds, size_t cap) {
  static uint8_t bufs[6][1200];
  size_t n = 0, len;
  if (!kp.public_key[0] && !kp.public_key[1]) setup();
  kp_record_t rec = {0};
  memcpy(rec.public_key, kp.public_key, KP_PUBLIC_KEY_LEN);
  rec.seq = 77;
  rec.relay_count = 2;
  kp_addr_parse(&rec.relays[0], "198.51.100.1:1");
  kp_addr_parse(&rec.relays[1], "[2001:db8::1]:2");
  rec.data = (const uint8_t *)"data";
  rec.data_len = 4;
  if (n < cap && !kp_dht_record_encode(&rec, target, kp.secret_key, bufs[0], 1200, &len))
    seeds[n++] = (kp_fuzz_seed_t){bufs[0], len};
  /* A list of two records. */
  if (n < cap && n == 1 && len * 2 + 1 < 1200) {
    bufs[1][0] = 0x92;
    memcpy(bufs[1] + 1, bufs[0], len);
    memcpy(bufs[1] + 1 + len, bufs[0], len);
    seeds[n++] = (kp_fuzz_seed_t){bufs[1], 1 + 2 * len};
  }
  if (n < cap &&
      !kp_dht_unannounce_encode(kp.public_key, 9, target, kp.secret_key, bufs[2], 1200, &len))
    seeds[n++] = (kp_fuzz_seed_t){bufs[2], len};
  kp_dht_mutable_t m = {0};
  memcpy(m.public_key, kp.public_key, KP_PUBLIC_KEY_LEN);
  m.salt = (const uint8_t *)"s";
  m.salt_len = 1;
  m.seq = 5;
  m.value = (const uint8_t *)"value";
  m.value_len = 5;
  m.has_cas = true;
  m.cas = 4;
  kp_dht_mutable_sign(&m, kp.secret_key);
  if (n < cap && !kp_dht_mutable_put_encode(&m, bufs[3], 1200, &len))
    seeds[n++] = (kp_fuzz_seed_t){bufs[3], len};
  if (n < cap && !kp_dht_mutable_reply_encode(&m, false, bufs[4], 1200, &len))
    seeds[n++] = (kp_fuzz_seed_t){bufs[4], len};
  if (n < cap && !kp_dht_mutable_reply_encode(&m, true, bufs[5], 1200, &len))
    seeds[n++] = (kp_fuzz_seed_t){bufs[5], len};
  return n;
}
