/* SPDX-License-Identifier: MIT */
/* dht/: signed records and the record store, as units on a virtual clock. */
#include <sodium.h>

#include "dht/dht_msg.h"
#include "dht/dht_record.h"
#include "dht/dht_store.h"
#include "tests/harness/test.h"
#include "tests/unit/test_dht.h"

#define MINUTE (60 * 1000ull)

static kp_record_t make_record(const kp_keypair_t *kp, uint64_t seq, const char *data) {
  kp_record_t r = {0};
  memcpy(r.public_key, kp->public_key, KP_PUBLIC_KEY_LEN);
  r.seq = seq;
  r.relay_count = 3;
  kp_addr_parse(&r.relays[0], "198.51.100.1:49737");
  kp_addr_parse(&r.relays[1], "198.51.100.2:49737");
  kp_addr_parse(&r.relays[2], "[2001:db8::3]:49737");
  r.data = (const uint8_t *)data;
  r.data_len = data ? strlen(data) : 0;
  return r;
}

void test_record_codec(void) {
  kp_keypair_t kp, other;
  kp_keypair_generate(&kp);
  kp_keypair_generate(&other);
  uint8_t target[KP_ID_LEN], elsewhere[KP_ID_LEN];
  kp_target_from_topic("chat", 4, target);
  kp_target_from_topic("chat2", 5, elsewhere);
  uint8_t buf[KP_RECORD_MAX_SIZE];
  size_t len;
  kp_record_t r = make_record(&kp, 42, "hello"), d;
  KP_CHECK_OK(kp_dht_record_encode(&r, target, kp.secret_key, buf, sizeof(buf), &len));
  KP_CHECK(len <= KP_RECORD_MAX_SIZE);
  KP_CHECK_OK(kp_dht_record_decode(buf, len, target, &d));
  KP_CHECK_MEM(d.public_key, kp.public_key, 32);
  KP_CHECK(d.seq == 42 && d.relay_count == 3 && d.data_len == 5);
  KP_CHECK(kp_addr_eq(&d.relays[2], &r.relays[2]));
  KP_CHECK_MEM(d.data, "hello", 5);

  /* Under another target, the same bytes do not verify. */
  KP_CHECK_ERR(kp_dht_record_decode(buf, len, elsewhere, &d), KP_EBADSIG);
  /* Altered anywhere: in the body (seq, relays, data) or the signature. */
  for (size_t i = 0; i < len; i++) {
    uint8_t bad[KP_RECORD_MAX_SIZE];
    memcpy(bad, buf, len);
    bad[i] ^= 0x01;
    KP_CHECK_MSG(kp_dht_record_decode(bad, len, target, &d) != 0, "flip at %zu accepted", i);
  }
  /* Forged: signed by another key but naming kp. */
  KP_CHECK_OK(kp_dht_record_encode(&r, target, other.secret_key, buf, sizeof(buf), &len));
  KP_CHECK_ERR(kp_dht_record_decode(buf, len, target, &d), KP_EBADSIG);
  /* Truncated. */
  KP_CHECK_OK(kp_dht_record_encode(&r, target, kp.secret_key, buf, sizeof(buf), &len));
  for (size_t i = 0; i < len; i++) KP_CHECK(kp_dht_record_decode(buf, i, target, &d) != 0);
  /* Over the bounds. */
  char big[KP_RECORD_MAX_DATA + 2];
  memset(big, 'x', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  r = make_record(&kp, 1, big);
  KP_CHECK_ERR(kp_dht_record_encode(&r, target, kp.secret_key, buf, sizeof(buf), &len), KP_ETOOBIG);
  r = make_record(&kp, 1, NULL);
  r.relay_count = 4;
  KP_CHECK_ERR(kp_dht_record_encode(&r, target, kp.secret_key, buf, sizeof(buf), &len), KP_ETOOBIG);

  /* Unannounce statements verify the same way. */
  uint8_t pk[32];
  uint64_t seq;
  KP_CHECK_OK(
      kp_dht_unannounce_encode(kp.public_key, 9, target, kp.secret_key, buf, sizeof(buf), &len));
  KP_CHECK_OK(kp_dht_unannounce_decode(buf, len, target, pk, &seq));
  KP_CHECK(seq == 9 && !memcmp(pk, kp.public_key, 32));
  KP_CHECK_ERR(kp_dht_unannounce_decode(buf, len, elsewhere, pk, &seq), KP_EBADSIG);
  KP_CHECK_OK(
      kp_dht_unannounce_encode(kp.public_key, 9, target, other.secret_key, buf, sizeof(buf), &len));
  KP_CHECK_ERR(kp_dht_unannounce_decode(buf, len, target, pk, &seq), KP_EBADSIG);
}

void test_record_mutable(void) {
  kp_keypair_t kp, other;
  kp_keypair_generate(&kp);
  kp_keypair_generate(&other);
  kp_dht_mutable_t m = {0}, d;
  memcpy(m.public_key, kp.public_key, 32);
  m.salt = (const uint8_t *)"profile";
  m.salt_len = 7;
  m.seq = 3;
  m.value = (const uint8_t *)"v3";
  m.value_len = 2;
  m.has_cas = true;
  m.cas = 2;
  KP_CHECK_OK(kp_dht_mutable_sign(&m, kp.secret_key));
  uint8_t buf[KP_DHT_MAX_VALUE], target[KP_ID_LEN], expect[KP_ID_LEN];
  size_t len;
  KP_CHECK_OK(kp_dht_mutable_put_encode(&m, buf, sizeof(buf), &len));
  KP_CHECK_OK(kp_dht_mutable_put_decode(buf, len, &d, target));
  kp_dht_target_mutable(kp.public_key, (const uint8_t *)"profile", 7, expect);
  KP_CHECK_MEM(target, expect, KP_ID_LEN);
  KP_CHECK(d.seq == 3 && d.has_cas && d.cas == 2 && d.value_len == 2 && d.salt_len == 7);
  /* Every altered byte is refused. */
  for (size_t i = 0; i < len; i++) {
    uint8_t bad[KP_DHT_MAX_VALUE];
    memcpy(bad, buf, len);
    bad[i] ^= 0x40;
    uint8_t t2[KP_ID_LEN];
    int err = kp_dht_mutable_put_decode(bad, len, &d, t2);
    /* Flipping the cas field changes nothing signed: a valid put for
     * another cas, which the store judges. Everything else must fail. */
    if (!err) KP_CHECK(d.cas != 2 || d.has_cas != true);
  }
  /* Wrongly signed: by another key. */
  kp_dht_mutable_t forged = m;
  KP_CHECK_OK(kp_dht_mutable_sign(&forged, other.secret_key));
  KP_CHECK_ERR(kp_dht_mutable_verify(&forged), KP_EBADSIG);
  /* A mutable put fits one datagram only up to salt + value bytes. */
  uint8_t value[KP_MUTABLE_MAX_VALUE] = {0};
  m.value = value;
  m.value_len = KP_MUTABLE_MAX_VALUE;
  m.salt_len = 7;
  KP_CHECK_OK(kp_dht_mutable_sign(&m, kp.secret_key));
  KP_CHECK_ERR(kp_dht_mutable_put_encode(&m, buf, sizeof(buf), &len), KP_ETOOBIG);
  m.salt_len = 6;
  KP_CHECK_OK(kp_dht_mutable_sign(&m, kp.secret_key));
  KP_CHECK_OK(kp_dht_mutable_put_encode(&m, buf, sizeof(buf), &len));

  /* Replies: full (verified on decode) and summary. */
  bool summary;
  kp_dht_mutable_t got = {0};
  memcpy(got.public_key, kp.public_key, 32);
  got.salt = m.salt;
  got.salt_len = m.salt_len;
  KP_CHECK_OK(kp_dht_mutable_reply_encode(&m, false, buf, sizeof(buf), &len));
  KP_CHECK_OK(kp_dht_mutable_reply_decode(buf, len, &got, &summary));
  KP_CHECK(!summary && got.seq == m.seq && got.value_len == KP_MUTABLE_MAX_VALUE);
  buf[len - 1] ^= 1; /* signature */
  KP_CHECK_ERR(kp_dht_mutable_reply_decode(buf, len, &got, &summary), KP_EBADSIG);
  KP_CHECK_OK(kp_dht_mutable_reply_encode(&m, true, buf, sizeof(buf), &len));
  KP_CHECK_OK(kp_dht_mutable_reply_decode(buf, len, &got, &summary));
  KP_CHECK(summary && got.seq == m.seq);
}

static kp_dht_store_t *new_store(unsigned records, unsigned per_target, unsigned per_source) {
  kp_dht_store_config_t cfg;
  kp_dht_store_config_defaults(&cfg);
  if (records) cfg.max_records = records;
  if (per_target) cfg.max_per_target = per_target;
  if (per_source) cfg.max_per_source = per_source;
  kp_rng_t rng = kp_rng_system();
  kp_dht_store_t *s;
  KP_CHECK_OK(kp_dht_store_new(&cfg, &rng, &s));
  return s;
}

static int announce(kp_dht_store_t *s, const uint8_t *target, const kp_keypair_t *kp, uint64_t seq,
                    const char *source, uint64_t now) {
  uint8_t buf[KP_RECORD_MAX_SIZE];
  size_t len;
  kp_record_t r = make_record(kp, seq, "x");
  KP_CHECK_OK(kp_dht_record_encode(&r, target, kp->secret_key, buf, sizeof(buf), &len));
  kp_addr_t src;
  kp_addr_parse(&src, source);
  return kp_dht_store_announce(s, target, &r, buf, len, &src, now);
}

typedef struct {
  size_t seen;
  uint8_t keys[256][32];
} collect_t;

static bool collect(void *ctx, const kp_dht_stored_t *rec) {
  collect_t *c = ctx;
  if (c->seen < 256) memcpy(c->keys[c->seen], rec->public_key, 32);
  c->seen++;
  return true;
}

static bool holds(kp_dht_store_t *s, const uint8_t *target, const kp_keypair_t *kp) {
  collect_t c = {0};
  kp_dht_store_each(s, target, collect, &c);
  for (size_t i = 0; i < c.seen && i < 256; i++)
    if (!memcmp(c.keys[i], kp->public_key, 32)) return true;
  return false;
}

void test_store_announce_seq_expiry(void) {
  kp_dht_store_t *s = new_store(0, 0, 0);
  kp_keypair_t kp;
  kp_keypair_generate(&kp);
  uint8_t t[KP_ID_LEN];
  kp_target_from_topic("t", 1, t);
  KP_CHECK_OK(announce(s, t, &kp, 10, "198.51.100.1:1", 0));
  KP_CHECK(holds(s, t, &kp));
  /* Replayed with a lower seq: rejected; the same record again: harmless,
   * and it does not extend the record's life. */
  KP_CHECK_ERR(announce(s, t, &kp, 9, "198.51.100.1:1", 1000), KP_ESEQ);
  uint8_t buf[KP_RECORD_MAX_SIZE];
  size_t len;
  kp_record_t r = make_record(&kp, 10, "x");
  kp_dht_record_encode(&r, t, kp.secret_key, buf, sizeof(buf), &len);
  kp_addr_t src;
  kp_addr_parse(&src, "198.51.100.9:9");
  KP_CHECK_OK(kp_dht_store_announce(s, t, &r, buf, len, &src, 5 * MINUTE));
  /* The same seq with other contents: refused. */
  r = make_record(&kp, 10, "y");
  kp_dht_record_encode(&r, t, kp.secret_key, buf, sizeof(buf), &len);
  KP_CHECK_ERR(kp_dht_store_announce(s, t, &r, buf, len, &src, 5 * MINUTE), KP_ESEQ);

  /* Expiry: gone 20 minutes after the last real write. */
  KP_CHECK_EQ(kp_dht_store_next_expiry(s), 20 * MINUTE);
  kp_dht_store_tick(s, 20 * MINUTE - 1);
  KP_CHECK(holds(s, t, &kp));
  kp_dht_store_tick(s, 20 * MINUTE);
  KP_CHECK(!holds(s, t, &kp));
  kp_dht_store_stats_t st;
  kp_dht_store_stats(s, &st);
  KP_CHECK_EQ(st.records, 0);
  KP_CHECK_EQ(st.bytes, 0);
  KP_CHECK_EQ(st.expired, 1);

  /* Refreshed (a newer seq) before expiry: it lives on. */
  uint64_t now = 30 * MINUTE;
  for (int i = 0; i < 6; i++, now += 10 * MINUTE) {
    KP_CHECK_OK(announce(s, t, &kp, 100 + (uint64_t)i, "198.51.100.1:1", now));
    kp_dht_store_tick(s, now + 9 * MINUTE);
    KP_CHECK(holds(s, t, &kp));
  }

  /* Unannounce: gone, and an old record cannot be replayed back. */
  KP_CHECK_ERR(kp_dht_store_unannounce(s, t, kp.public_key, 50, &src, now), KP_ESEQ);
  KP_CHECK_OK(kp_dht_store_unannounce(s, t, kp.public_key, 200, &src, now));
  KP_CHECK(!holds(s, t, &kp));
  KP_CHECK_ERR(announce(s, t, &kp, 105, "198.51.100.1:1", now), KP_ESEQ);
  KP_CHECK_OK(announce(s, t, &kp, 201, "198.51.100.1:1", now));
  KP_CHECK(holds(s, t, &kp));
  kp_dht_store_free(s);
}

void test_store_mutable_cas(void) {
  kp_dht_store_t *s = new_store(0, 0, 0);
  kp_keypair_t kp;
  kp_keypair_generate(&kp);
  kp_addr_t src;
  kp_addr_parse(&src, "198.51.100.1:1");
  kp_dht_mutable_t m = {0}, got;
  memcpy(m.public_key, kp.public_key, 32);
  uint8_t t[KP_ID_LEN];
  kp_dht_target_mutable(kp.public_key, NULL, 0, t);

  m.seq = 1;
  m.value = (const uint8_t *)"one";
  m.value_len = 3;
  m.has_cas = true;
  m.cas = 5; /* nothing stored: only cas 0 matches */
  KP_CHECK_ERR(kp_dht_store_put_mutable(s, t, &m, &src, 0), KP_ECAS);
  m.cas = 0;
  KP_CHECK_OK(kp_dht_store_put_mutable(s, t, &m, &src, 0));
  KP_CHECK(kp_dht_store_get_mutable(s, t, &got));
  KP_CHECK(got.seq == 1 && got.value_len == 3 && !memcmp(got.value, "one", 3));

  /* Two writers both read seq 1 and write seq 2 with cas 1: the second one
   * finds seq 2 and gets a CAS conflict, distinct from a stale seq. */
  m.seq = 2;
  m.cas = 1;
  m.value = (const uint8_t *)"two-a";
  m.value_len = 5;
  KP_CHECK_OK(kp_dht_store_put_mutable(s, t, &m, &src, 1));
  m.value = (const uint8_t *)"two-b";
  KP_CHECK_ERR(kp_dht_store_put_mutable(s, t, &m, &src, 2), KP_ECAS);
  m.has_cas = false;
  KP_CHECK_ERR(kp_dht_store_put_mutable(s, t, &m, &src, 2), KP_ESEQ); /* same seq, other value */
  m.seq = 1;
  KP_CHECK_ERR(kp_dht_store_put_mutable(s, t, &m, &src, 2), KP_ESEQ); /* older */
  m.seq = 2;
  m.value = (const uint8_t *)"two-a";
  KP_CHECK_OK(kp_dht_store_put_mutable(s, t, &m, &src, 10 * MINUTE)); /* republish: refreshes */
  kp_dht_store_tick(s, 25 * MINUTE);
  KP_CHECK(kp_dht_store_get_mutable(s, t, &got) && got.seq == 2);
  kp_dht_store_tick(s, 30 * MINUTE);
  KP_CHECK(!kp_dht_store_get_mutable(s, t, &got));

  /* Immutable: stored by hash, refreshed by a re-put. */
  uint8_t h[KP_ID_LEN];
  const uint8_t *v;
  size_t vlen;
  kp_dht_target_immutable((const uint8_t *)"blob", 4, h);
  KP_CHECK_OK(kp_dht_store_put_immutable(s, h, (const uint8_t *)"blob", 4, &src, 30 * MINUTE));
  KP_CHECK(kp_dht_store_get_immutable(s, h, &v, &vlen) && vlen == 4 && !memcmp(v, "blob", 4));
  kp_dht_store_free(s);
}

void test_store_flood(void) {
  /* A small store: 200 records, 16 per target, 20 per source. */
  kp_dht_store_t *s = new_store(200, 16, 20);
  uint8_t topic[KP_ID_LEN];
  kp_target_from_topic("popular", 7, topic);
  kp_keypair_t honest[150];
  char src[64];
  /* 150 honest announcers from 150 addresses: 10 on the popular topic,
   * the rest each on its own topic. */
  for (int i = 0; i < 150; i++) {
    kp_keypair_generate(&honest[i]);
    uint8_t t[KP_ID_LEN];
    if (i < 10)
      memcpy(t, topic, KP_ID_LEN);
    else
      kp_target_from_topic(&i, sizeof(i), t);
    snprintf(src, sizeof(src), "198.51.100.%d:4000", i + 1);
    KP_CHECK_OK(announce(s, t, &honest[i], 1, src, 0));
  }
  kp_dht_store_stats_t before;
  kp_dht_store_stats(s, &before);
  KP_CHECK_EQ(before.records, 150);

  /* One source floods: 5000 announces under fresh keys, half on the popular
   * topic, half on topics of its own, from every port of one address. */
  kp_keypair_t fk;
  for (int i = 0; i < 5000; i++) {
    kp_keypair_generate(&fk);
    uint8_t t[KP_ID_LEN];
    if (i & 1)
      memcpy(t, topic, KP_ID_LEN);
    else
      kp_target_from_topic(&i, sizeof(i), t);
    snprintf(src, sizeof(src), "203.0.113.66:%d", 1000 + i);
    int err = announce(s, t, &fk, 1, src, (uint64_t)i);
    KP_CHECK(err == 0 || err == KP_ELIMIT);
    kp_dht_store_stats_t st;
    kp_dht_store_stats(s, &st);
    KP_CHECK(st.records <= 200);
  }
  /* Every honest record is still there; the flooder holds its quota. */
  for (int i = 0; i < 150; i++) {
    uint8_t t[KP_ID_LEN];
    if (i < 10)
      memcpy(t, topic, KP_ID_LEN);
    else
      kp_target_from_topic(&i, sizeof(i), t);
    KP_CHECK_MSG(holds(s, t, &honest[i]), "honest record %d was pushed out", i);
  }
  kp_dht_store_stats_t after;
  kp_dht_store_stats(s, &after);
  KP_CHECK(after.records > 150 && after.records <= 150 + 20);
  KP_CHECK(after.bytes <= before.bytes * 2);

  /* The popular topic is full (16): a new honest announcer displaces a
   * record of the flooder, who holds more there than it does. */
  collect_t c = {0};
  kp_dht_store_each(s, topic, collect, &c);
  KP_CHECK_EQ(c.seen, 16);
  kp_keypair_t late;
  kp_keypair_generate(&late);
  KP_CHECK_OK(announce(s, topic, &late, 1, "198.51.100.200:4000", 9000));
  KP_CHECK(holds(s, topic, &late));
  for (int i = 0; i < 10; i++) KP_CHECK(holds(s, topic, &honest[i]));
  kp_dht_store_free(s);
}

void test_store_bytes_bound(void) {
  /* The memory bound holds with many sources too (each under quota). */
  kp_dht_store_config_t cfg;
  kp_dht_store_config_defaults(&cfg);
  cfg.max_bytes = 64 * 1024;
  kp_rng_t rng = kp_rng_system();
  kp_dht_store_t *s;
  KP_CHECK_OK(kp_dht_store_new(&cfg, &rng, &s));
  uint8_t value[KP_IMMUTABLE_MAX_VALUE];
  for (int i = 0; i < 2000; i++) {
    memset(value, 0, sizeof(value));
    memcpy(value, &i, sizeof(i));
    uint8_t h[KP_ID_LEN];
    kp_dht_target_immutable(value, sizeof(value), h);
    char text[64];
    snprintf(text, sizeof(text), "10.%d.%d.1:1", i / 250, i % 250);
    kp_addr_t src;
    kp_addr_parse(&src, text);
    int err = kp_dht_store_put_immutable(s, h, value, sizeof(value), &src, 0);
    KP_CHECK(err == 0 || err == KP_ELIMIT);
    kp_dht_store_stats_t st;
    kp_dht_store_stats(s, &st);
    KP_CHECK(st.bytes <= cfg.max_bytes);
  }
  kp_dht_store_free(s);
}
