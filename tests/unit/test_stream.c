/* SPDX-License-Identifier: MIT */
/* The data plane's pieces on their own: packet and frame codecs, packet
 * protection, the replay window, range sets, loss recovery and CUBIC. The
 * connection on a simulated link is in test_stream_sim.c. */
#include <math.h>
#include <sodium.h>

#include "stream/stream_cc.h"
#include "stream/stream_conn.h"
#include "stream/stream_crypto.h"
#include "stream/stream_frame.h"
#include "stream/stream_ranges.h"
#include "stream/stream_recovery.h"
#include "tests/harness/test.h"
#include "tests/unit/test_stream.h"

/* ---- Codecs -------------------------------------------------------------- */

static void test_header_codec(void) {
  uint8_t buf[KP_STREAM_HEADER_MAX];
  kp_stream_header_t h, d;
  memset(&h, 0, sizeof(h));
  h.cid = 0x0102030405060708ull;
  h.pn = 0xfffffffffffffffeull;
  size_t n = kp_stream_header_encode(&h, buf, sizeof(buf));
  KP_CHECK_EQ(n, KP_STREAM_HEADER_MIN);
  KP_CHECK_EQ(buf[0], 0x41);
  KP_CHECK_EQ(kp_stream_header_decode(&d, buf, n), n);
  KP_CHECK(d.cid == h.cid && d.pn == h.pn && d.flags == 0);
  KP_CHECK(kp_stream_packet_cid(buf) == h.cid);

  /* A full ack block. */
  h.flags = KP_STREAM_FLAG_ACK;
  h.ack.largest = 1000000;
  h.ack.delay_8us = 65535;
  h.ack.max_data = 1ull << 40;
  h.ack.first = 7;
  h.ack.count = KP_STREAM_MAX_ACK_RANGES;
  for (int i = 0; i < KP_STREAM_MAX_ACK_RANGES; i++) {
    h.ack.ranges[i].gap = (uint16_t)(i * 3);
    h.ack.ranges[i].length = (uint16_t)(1000 + i);
  }
  n = kp_stream_header_encode(&h, buf, sizeof(buf));
  KP_CHECK_EQ(n, KP_STREAM_HEADER_MAX);
  KP_CHECK_EQ(kp_stream_header_decode(&d, buf, n), n);
  KP_CHECK(!memcmp(&d.ack, &h.ack, sizeof(h.ack)));
  /* Every truncation is refused, never read past. */
  for (size_t cut = 0; cut < n; cut++) KP_CHECK_EQ(kp_stream_header_decode(&d, buf, cut), 0);
  /* Encoding into too little room fails instead of overflowing. */
  KP_CHECK_EQ(kp_stream_header_encode(&h, buf, n - 1), 0);
  /* Unknown flags, too many ranges, another class byte. */
  n = kp_stream_header_encode(&h, buf, sizeof(buf));
  buf[1] = 0x04;
  KP_CHECK_EQ(kp_stream_header_decode(&d, buf, n), 0);
  buf[1] = KP_STREAM_FLAG_ACK;
  buf[36] = KP_STREAM_MAX_ACK_RANGES + 1;
  KP_CHECK_EQ(kp_stream_header_decode(&d, buf, sizeof(buf)), 0);
  buf[36] = KP_STREAM_MAX_ACK_RANGES;
  buf[0] = 0x42;
  KP_CHECK_EQ(kp_stream_header_decode(&d, buf, n), 0);
  KP_CHECK(!kp_stream_is_packet(buf, n + KP_STREAM_TAG_LEN));
  buf[0] = 0x41;
  KP_CHECK(kp_stream_is_packet(buf, KP_STREAM_HEADER_MIN + KP_STREAM_TAG_LEN));
  KP_CHECK(!kp_stream_is_packet(buf, KP_STREAM_HEADER_MIN + KP_STREAM_TAG_LEN - 1));
}

/* The example in docs/protocol.md, "Stream packets", byte for byte. */
static void test_packet_vector(void) {
  kp_stream_header_t h;
  memset(&h, 0, sizeof(h));
  h.flags = KP_STREAM_FLAG_ACK | KP_STREAM_FLAG_ACK_NOW;
  h.cid = 0x0123456789abcdefull;
  h.pn = 7;
  h.ack.largest = 5;
  h.ack.delay_8us = 125;
  h.ack.max_data = 16777216;
  h.ack.first = 2;
  h.ack.count = 1;
  h.ack.ranges[0].gap = 0;
  h.ack.ranges[0].length = 1;
  uint8_t buf[128];
  size_t hlen = kp_stream_header_encode(&h, buf, sizeof(buf));
  kp_wbuf_t w;
  kp_wbuf_init(&w, buf + hlen, sizeof(buf) - hlen);
  kp_frame_put_stream(&w, 0, 0, (const uint8_t *)"hello", 5, true);
  static const uint8_t plain[] = {0x41, 0x03, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x00,
                                  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00,
                                  0x00, 0x00, 0x00, 0x05, 0x00, 0x7d, 0x00, 0x00, 0x00, 0x00, 0x01,
                                  0x00, 0x00, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x09,
                                  0x00, 0x00, 0x05, 0x68, 0x65, 0x6c, 0x6c, 0x6f};
  KP_CHECK_EQ(hlen + w.len, sizeof(plain));
  KP_CHECK_MEM(buf, plain, sizeof(plain));
  uint8_t key[32];
  for (int i = 0; i < 32; i++) key[i] = (uint8_t)i;
  kp_aead_t a;
  KP_CHECK_OK(kp_aead_init(&a, KP_CIPHER_CHACHA20_POLY1305, key));
  static const uint8_t iv[12] = {0x99, 0x28, 0x3c, 0x34, 0x48, 0x31,
                                 0x26, 0xae, 0x3b, 0xcd, 0xc4, 0x34};
  KP_CHECK_MEM(a.iv, iv, 12);
  kp_aead_seal(&a, h.pn, buf, hlen, buf + hlen, w.len, buf + hlen + w.len);
  static const uint8_t sealed[] = {0xcc, 0xb8, 0x4e, 0x4b, 0x0a, 0x50, 0xd1, 0x19, 0xe0,
                                   0x6d, 0x99, 0x60, 0x3a, 0xae, 0x5b, 0xf0, 0xf2, 0x73,
                                   0x76, 0x5c, 0x0d, 0xa2, 0x39, 0xa3, 0x56};
  KP_CHECK_MEM(buf + hlen, sealed, sizeof(sealed));
  kp_aead_destroy(&a);
}

static void test_varint(void) {
  const uint64_t values[] = {0, 63, 64, 16383, 16384, 1073741823, 1073741824, KP_VARINT_MAX};
  const size_t lens[] = {1, 1, 2, 2, 4, 4, 8, 8};
  for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
    uint8_t buf[8];
    kp_wbuf_t w;
    kp_wbuf_init(&w, buf, sizeof(buf));
    kp_varint_put(&w, values[i]);
    KP_CHECK_EQ(w.len, lens[i]);
    KP_CHECK_EQ(kp_varint_len(values[i]), lens[i]);
    kp_rbuf_t r;
    kp_rbuf_init(&r, buf, w.len);
    KP_CHECK(kp_varint_get(&r) == values[i] && !r.error && !kp_rbuf_left(&r));
    kp_rbuf_init(&r, buf, w.len - 1);
    kp_varint_get(&r);
    KP_CHECK(r.error);
  }
}

static int one_frame(const uint8_t *buf, size_t len, kp_frame_t *f) {
  kp_rbuf_t r;
  kp_rbuf_init(&r, buf, len);
  return kp_frame_next(&r, f);
}

/* ACK_FREQUENCY: type 0x1d, sequence number, packets per ack; every
 * truncation refused. */
static void test_ack_frequency_frame(void) {
  uint8_t buf[32];
  kp_wbuf_t w;
  kp_wbuf_init(&w, buf, sizeof(buf));
  kp_frame_put_ack_frequency(&w, 300, 16);
  KP_CHECK(!w.overflow);
  const uint8_t want[] = {0x1d, 0x41, 0x2c, 0x10};
  KP_CHECK_EQ(w.len, sizeof(want));
  KP_CHECK_MEM(buf, want, sizeof(want));
  kp_rbuf_t r;
  kp_frame_t f;
  kp_rbuf_init(&r, buf, w.len);
  KP_CHECK_EQ(kp_frame_next(&r, &f), 1);
  KP_CHECK(f.type == KP_FRAME_ACK_FREQUENCY && f.stream_id == 300 && f.value == 16);
  KP_CHECK_EQ(kp_frame_next(&r, &f), 0);
  for (size_t len = 1; len < w.len; len++) {
    kp_rbuf_init(&r, buf, len);
    KP_CHECK_EQ(kp_frame_next(&r, &f), -1);
  }
}

static void test_frames(void) {
  uint8_t buf[256];
  kp_wbuf_t w;
  kp_frame_t f;
  const uint8_t data[5] = {1, 2, 3, 4, 5}, path[8] = {9, 8, 7, 6, 5, 4, 3, 2};

  kp_wbuf_init(&w, buf, sizeof(buf));
  kp_frame_put_padding(&w, 3);
  kp_frame_put_stream(&w, 5, 1ull << 40, data, sizeof(data), true);
  kp_frame_put_ping(&w);
  kp_frame_put_reset(&w, 6, 99, 12345);
  kp_frame_put_stop(&w, 7, 100);
  kp_frame_put_max_stream_data(&w, 8, 1ull << 33);
  kp_frame_put_path(&w, false, path);
  kp_frame_put_path(&w, true, path);
  kp_frame_put_close(&w, 42, "bye");
  KP_CHECK(!w.overflow);
  kp_rbuf_t r;
  kp_rbuf_init(&r, buf, w.len);
  KP_CHECK_EQ(kp_frame_next(&r, &f), 1);
  KP_CHECK(f.type == KP_FRAME_STREAM && f.fin && f.stream_id == 5 && f.offset == 1ull << 40);
  KP_CHECK(f.len == 5 && !memcmp(f.data, data, 5));
  KP_CHECK(kp_frame_next(&r, &f) == 1 && f.type == KP_FRAME_PING);
  KP_CHECK(kp_frame_next(&r, &f) == 1 && f.type == KP_FRAME_RESET_STREAM);
  KP_CHECK(f.stream_id == 6 && f.value == 99 && f.final_size == 12345);
  KP_CHECK(kp_frame_next(&r, &f) == 1 && f.type == KP_FRAME_STOP_SENDING);
  KP_CHECK(f.stream_id == 7 && f.value == 100);
  KP_CHECK(kp_frame_next(&r, &f) == 1 && f.type == KP_FRAME_MAX_STREAM_DATA);
  KP_CHECK(f.stream_id == 8 && f.value == 1ull << 33);
  KP_CHECK(kp_frame_next(&r, &f) == 1 && f.type == KP_FRAME_PATH_CHALLENGE);
  KP_CHECK(!memcmp(f.data, path, 8));
  KP_CHECK(kp_frame_next(&r, &f) == 1 && f.type == KP_FRAME_PATH_RESPONSE);
  KP_CHECK(kp_frame_next(&r, &f) == 1 && f.type == KP_FRAME_CLOSE);
  KP_CHECK(f.value == 42 && f.len == 3 && !memcmp(f.data, "bye", 3));
  KP_CHECK_EQ(kp_frame_next(&r, &f), 0);

  /* The header-only writer plus the data equals the whole-frame writer. */
  uint8_t a[32], b[32];
  kp_wbuf_t wa, wb;
  kp_wbuf_init(&wa, a, sizeof(a));
  kp_wbuf_init(&wb, b, sizeof(b));
  kp_frame_put_stream(&wa, 300, 70000, data, 5, false);
  kp_frame_put_stream_header(&wb, 300, 70000, 5, false);
  KP_CHECK_EQ(wb.len, kp_frame_stream_header_len(300, 70000, 5));
  kp_wbuf_put(&wb, data, 5);
  KP_CHECK(wa.len == wb.len && !memcmp(a, b, wa.len));

  /* Malformed: an unknown type, data running past the packet, an offset
   * past 2^62, a cut PATH_CHALLENGE, a cut varint, a reason past the end. */
  const uint8_t unknown[] = {0x30};
  KP_CHECK_EQ(one_frame(unknown, sizeof(unknown), &f), -1);
  const uint8_t too_long[] = {0x08, 0x01, 0x00, 0x05, 0xaa, 0xbb};
  KP_CHECK_EQ(one_frame(too_long, sizeof(too_long), &f), -1);
  const uint8_t past[] = {0x08, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0};
  KP_CHECK_EQ(one_frame(past, sizeof(past), &f), -1);
  const uint8_t cut_path[] = {0x1a, 1, 2, 3};
  KP_CHECK_EQ(one_frame(cut_path, sizeof(cut_path), &f), -1);
  const uint8_t cut_varint[] = {0x12, 0x40};
  KP_CHECK_EQ(one_frame(cut_varint, sizeof(cut_varint), &f), -1);
  const uint8_t cut_reason[] = {0x1c, 0x01, 0x09, 'a'};
  KP_CHECK_EQ(one_frame(cut_reason, sizeof(cut_reason), &f), -1);
  /* Only padding: no frame, not an error. */
  const uint8_t pad[] = {0, 0, 0};
  KP_CHECK_EQ(one_frame(pad, sizeof(pad), &f), 0);
}

/* ---- Protection ------------------------------------------------------------ */

static void check_cipher(kp_cipher_t cipher) {
  uint8_t key[32];
  for (int i = 0; i < 32; i++) key[i] = (uint8_t)i;
  kp_aead_t a;
  KP_CHECK_OK(kp_aead_init(&a, cipher, key));
  const uint8_t ad[18] = {0x41, 0, 1, 2, 3};
  uint8_t msg[100], ct[100], ct2[100], tag[16], tag2[16];
  for (int i = 0; i < 100; i++) msg[i] = (uint8_t)(i * 7);
  memcpy(ct, msg, sizeof(ct));
  kp_aead_seal(&a, 5, ad, sizeof(ad), ct, sizeof(ct), tag);
  KP_CHECK(memcmp(ct, msg, sizeof(ct)));
  /* Another packet number: another nonce, another ciphertext. */
  memcpy(ct2, msg, sizeof(ct2));
  kp_aead_seal(&a, 6, ad, sizeof(ad), ct2, sizeof(ct2), tag2);
  KP_CHECK(memcmp(ct, ct2, sizeof(ct)));

  uint8_t t[100];
  memcpy(t, ct, sizeof(t));
  KP_CHECK_EQ(kp_aead_open(&a, 5, ad, sizeof(ad), t, sizeof(t), tag), 0);
  KP_CHECK_MEM(t, msg, sizeof(msg));
  /* Any change fails: ciphertext, tag, header (associated data), packet
   * number, key. */
  memcpy(t, ct, sizeof(t));
  t[50] ^= 1;
  KP_CHECK_EQ(kp_aead_open(&a, 5, ad, sizeof(ad), t, sizeof(t), tag), -1);
  uint8_t bad_tag[16];
  memcpy(bad_tag, tag, 16);
  bad_tag[15] ^= 0x80;
  memcpy(t, ct, sizeof(t));
  KP_CHECK_EQ(kp_aead_open(&a, 5, ad, sizeof(ad), t, sizeof(t), bad_tag), -1);
  uint8_t bad_ad[18];
  memcpy(bad_ad, ad, sizeof(ad));
  bad_ad[17] ^= 1;
  memcpy(t, ct, sizeof(t));
  KP_CHECK_EQ(kp_aead_open(&a, 5, bad_ad, sizeof(bad_ad), t, sizeof(t), tag), -1);
  memcpy(t, ct, sizeof(t));
  KP_CHECK_EQ(kp_aead_open(&a, 4, ad, sizeof(ad), t, sizeof(t), tag), -1);
  kp_aead_t other;
  key[0] ^= 1;
  KP_CHECK_OK(kp_aead_init(&other, cipher, key));
  memcpy(t, ct, sizeof(t));
  KP_CHECK_EQ(kp_aead_open(&other, 5, ad, sizeof(ad), t, sizeof(t), tag), -1);
  kp_aead_destroy(&other);
  kp_aead_destroy(&a);
}

static void test_aead(void) {
  check_cipher(KP_CIPHER_CHACHA20_POLY1305);
  kp_aead_t a;
  uint8_t key[32] = {0};
  kp_cipher_t preferred = kp_cipher_preferred(); /* initialises libsodium */
  if (crypto_aead_aes256gcm_is_available()) {
    KP_CHECK_EQ(preferred, KP_CIPHER_AES256_GCM);
    check_cipher(KP_CIPHER_AES256_GCM);
  } else {
    KP_CHECK_EQ(preferred, KP_CIPHER_CHACHA20_POLY1305);
    KP_CHECK_ERR(kp_aead_init(&a, KP_CIPHER_AES256_GCM, key), KP_ECONFIG);
  }
  KP_CHECK_ERR(kp_aead_init(&a, (kp_cipher_t)9, key), KP_ECONFIG);
}

/* ChaCha20-Poly1305 through libcrypto and through libsodium are the same
 * AEAD (RFC 8439): for random keys, packet numbers, headers and lengths
 * (empty to a jumbo datagram), what one seals the other opens, bytes and
 * tags equal; a flipped bit fails both. */
static void test_aead_libcrypto(void) {
  kp_aead_t fast, ref;
  uint8_t key[32] = {1};
  KP_CHECK_OK(kp_aead_init(&fast, KP_CIPHER_CHACHA20_POLY1305, key));
  bool libcrypto = kp_aead_uses_libcrypto(&fast);
  kp_aead_destroy(&fast);
  if (!libcrypto) kp_test_skip("built without libcrypto: every packet goes through libsodium");
  kp_rng_seeded_t rng;
  kp_rng_seeded_init(&rng, 77);
  static uint8_t msg[1500], a[1500], b[1500];
  uint8_t ad[80], tag_a[16], tag_b[16];
  for (int round = 0; round < 2000; round++) {
    for (int i = 0; i < 32; i++) key[i] = (uint8_t)kp_rng_seeded_next(&rng);
    KP_CHECK_OK(kp_aead_init(&fast, KP_CIPHER_CHACHA20_POLY1305, key));
    fast.evp_min = 0; /* libcrypto for every length, not only big packets */
    KP_CHECK_OK(kp_aead_init_sodium(&ref, KP_CIPHER_CHACHA20_POLY1305, key));
    KP_CHECK(!kp_aead_uses_libcrypto(&ref));
    size_t len = (size_t)(kp_rng_seeded_next(&rng) % sizeof(msg));
    if (round < 70) len = (size_t)round; /* every short length, tails of each block size */
    size_t ad_len = 18 + (size_t)(kp_rng_seeded_next(&rng) % (sizeof(ad) - 18));
    uint64_t pn = kp_rng_seeded_next(&rng) >> (kp_rng_seeded_next(&rng) % 64);
    for (size_t i = 0; i < ad_len; i++) ad[i] = (uint8_t)kp_rng_seeded_next(&rng);
    for (size_t i = 0; i < len; i++) msg[i] = (uint8_t)kp_rng_seeded_next(&rng);
    memcpy(a, msg, len);
    memcpy(b, msg, len);
    kp_aead_seal(&fast, pn, ad, ad_len, a, len, tag_a);
    kp_aead_seal(&ref, pn, ad, ad_len, b, len, tag_b);
    KP_CHECK_MEM(a, b, len);
    KP_CHECK_MEM(tag_a, tag_b, 16);
    KP_CHECK_EQ(kp_aead_open(&ref, pn, ad, ad_len, a, len, tag_a), 0);
    KP_CHECK_EQ(kp_aead_open(&fast, pn, ad, ad_len, b, len, tag_b), 0);
    KP_CHECK_MEM(a, msg, len);
    KP_CHECK_MEM(b, msg, len);
    /* Sealed again and altered (tag, or the data when there is some). */
    kp_aead_seal(&fast, pn, ad, ad_len, a, len, tag_a);
    if (len && round % 2)
      a[kp_rng_seeded_next(&rng) % len] ^= 1;
    else
      tag_a[round % 16] ^= 0x10;
    memcpy(b, a, len);
    KP_CHECK_EQ(kp_aead_open(&fast, pn, ad, ad_len, a, len, tag_a), -1);
    KP_CHECK_EQ(kp_aead_open(&ref, pn, ad, ad_len, b, len, tag_a), -1);
    kp_aead_destroy(&fast);
    kp_aead_destroy(&ref);
  }
}

static void test_replay_window(void) {
  kp_replay_t r;
  memset(&r, 0, sizeof(r));
  KP_CHECK(kp_replay_check(&r, 0));
  kp_replay_mark(&r, 0);
  KP_CHECK(!kp_replay_check(&r, 0));
  /* Out of order inside the window: each accepted once. */
  kp_replay_mark(&r, 10);
  for (uint64_t pn = 1; pn < 10; pn++) {
    KP_CHECK(kp_replay_check(&r, pn));
    kp_replay_mark(&r, pn);
    KP_CHECK(!kp_replay_check(&r, pn));
  }
  for (uint64_t pn = 0; pn <= 10; pn++) KP_CHECK(!kp_replay_check(&r, pn));
  KP_CHECK(kp_replay_check(&r, 11));
  /* Slide by a bit over two words: what was seen stays seen. */
  kp_replay_mark(&r, 140);
  for (uint64_t pn = 0; pn <= 10; pn++) KP_CHECK(!kp_replay_check(&r, pn));
  for (uint64_t pn = 11; pn < 140; pn++) KP_CHECK(kp_replay_check(&r, pn));
  KP_CHECK(!kp_replay_check(&r, 140));
  /* Too old: the window's far edge. */
  kp_replay_mark(&r, 140 + KP_REPLAY_WINDOW - 1);
  KP_CHECK(!kp_replay_check(&r, 139));
  KP_CHECK(kp_replay_check(&r, 141));
  KP_CHECK(!kp_replay_check(&r, 140));
  /* A jump past the whole window forgets it all but the largest. */
  kp_replay_mark(&r, 100000);
  KP_CHECK(!kp_replay_check(&r, 100000));
  KP_CHECK(kp_replay_check(&r, 100000 - 1));
  KP_CHECK(!kp_replay_check(&r, 100000 - KP_REPLAY_WINDOW));
}

/* ---- Ranges --------------------------------------------------------------------- */

static void test_ranges(void) {
  kp_ranges_t s;
  kp_ranges_init(&s);
  KP_CHECK_OK(kp_ranges_add(&s, 10, 20));
  KP_CHECK_OK(kp_ranges_add(&s, 30, 40));
  KP_CHECK_OK(kp_ranges_add(&s, 50, 60));
  KP_CHECK_EQ(s.n, 3);
  KP_CHECK_OK(kp_ranges_add(&s, 20, 30)); /* touching: merges three into one... */
  KP_CHECK_EQ(s.n, 2);
  KP_CHECK(s.r[0].lo == 10 && s.r[0].hi == 40);
  KP_CHECK_OK(kp_ranges_add(&s, 5, 70)); /* ...and a cover swallows all */
  KP_CHECK(s.n == 1 && s.r[0].lo == 5 && s.r[0].hi == 70);
  KP_CHECK_OK(kp_ranges_remove(&s, 20, 30)); /* a split */
  KP_CHECK(s.n == 2 && s.r[0].hi == 20 && s.r[1].lo == 30);
  KP_CHECK_OK(kp_ranges_remove(&s, 0, 6)); /* a trim */
  KP_CHECK(s.r[0].lo == 6);
  KP_CHECK_OK(kp_ranges_remove(&s, 6, 20)); /* a whole one */
  KP_CHECK(s.n == 1 && s.r[0].lo == 30);
  kp_ranges_drop_below(&s, 35);
  KP_CHECK(s.n == 1 && s.r[0].lo == 35 && s.r[0].hi == 70);
  uint64_t lo, hi;
  KP_CHECK(kp_ranges_pop(&s, 10, &lo, &hi) && lo == 35 && hi == 45);
  KP_CHECK(kp_ranges_pop(&s, 100, &lo, &hi) && lo == 45 && hi == 70);
  KP_CHECK(!kp_ranges_pop(&s, 100, &lo, &hi) && kp_ranges_empty(&s));
  /* Many disjoint ranges grow the set. */
  for (uint64_t i = 0; i < 100; i++) KP_CHECK_OK(kp_ranges_add(&s, i * 10, i * 10 + 5));
  KP_CHECK_EQ(s.n, 100);
  KP_CHECK_OK(kp_ranges_add(&s, 0, 1000));
  KP_CHECK_EQ(s.n, 1);
  kp_ranges_free(&s);
}

/* ---- Recovery ---------------------------------------------------------------------- */

typedef struct {
  unsigned frames_acked, frames_lost, packets_acked, packets_lost;
  uint64_t lost_offsets[64];
} rec_log_t;

static void rl_frame_acked(void *ctx, const kp_sent_frame_t *f) {
  ((rec_log_t *)ctx)->frames_acked++;
  (void)f;
}
static void rl_frame_lost(void *ctx, const kp_sent_frame_t *f) {
  rec_log_t *l = ctx;
  l->lost_offsets[l->frames_lost++ % 64] = f->offset;
}
static void rl_packet_acked(void *ctx, const kp_sent_t *p, uint64_t now) {
  ((rec_log_t *)ctx)->packets_acked++;
  (void)p, (void)now;
}
static void rl_packet_lost(void *ctx, const kp_sent_t *p, uint64_t now) {
  ((rec_log_t *)ctx)->packets_lost++;
  (void)p, (void)now;
}

static void send_packets(kp_recovery_t *r, unsigned n, uint64_t now) {
  for (unsigned i = 0; i < n; i++) {
    kp_sent_t p;
    memset(&p, 0, sizeof(p));
    p.sent_us = now;
    p.size = 1200;
    p.flags = KP_SENT_ACK_ELICITING | KP_SENT_IN_FLIGHT;
    p.nframes = 1;
    p.frames[0].type = KP_FRAME_STREAM;
    p.frames[0].offset = kp_recovery_next_pn(r) * 1000; /* marks which packet */
    p.frames[0].len = 1000;
    KP_CHECK_OK(kp_recovery_on_sent(r, &p));
  }
}

static kp_stream_ack_t ack_of(uint64_t largest, uint16_t first) {
  kp_stream_ack_t a;
  memset(&a, 0, sizeof(a));
  a.largest = largest;
  a.first = first;
  return a;
}

static void test_recovery_acks_and_losses(void) {
  rec_log_t log;
  memset(&log, 0, sizeof(log));
  kp_recovery_hooks_t hooks = {rl_frame_acked, rl_frame_lost, rl_packet_acked, rl_packet_lost,
                               &log};
  kp_recovery_t r;
  KP_CHECK_OK(kp_recovery_init(&r, &hooks));
  send_packets(&r, 10, 1000); /* packets 0..9 */
  KP_CHECK_EQ(r.bytes_in_flight, 12000);

  /* Ack 9..8 and 6..0 (7 missing): 7 is one short of the packet threshold
   * (9 >= 7 + 3 fails)... */
  kp_stream_ack_t a = ack_of(9, 1);
  a.count = 1;
  a.ranges[0].gap = 0; /* skips 7 */
  a.ranges[0].length = 6;
  KP_CHECK_EQ(kp_recovery_on_ack(&r, &a, 51000), 9);
  KP_CHECK_EQ(log.packets_lost, 0);
  KP_CHECK(r.have_rtt && r.srtt_us == 50000 && r.min_rtt_us == 50000);
  /* ...so it is late by time: 9/8 RTT after it left. */
  uint64_t when = kp_recovery_deadline(&r);
  KP_CHECK_EQ(when, 1000 + 50000 * 9 / 8);
  bool rto;
  KP_CHECK_EQ(kp_recovery_on_timeout(&r, when, &rto), 0);
  KP_CHECK(log.packets_lost == 1 && log.lost_offsets[0] == 7000 && !rto);
  KP_CHECK_EQ(r.bytes_in_flight, 0);

  /* Packet threshold: 10..15 sent, 11..15 acked: 10 is lost at once. */
  send_packets(&r, 6, 100000);
  kp_stream_ack_t with_gap = {.largest = 15, .first = 4, .count = 2}; /* 15..11 */
  with_gap.ranges[0].gap = 0;                                         /* 10 missing */
  with_gap.ranges[0].length = 1;                                      /* 9..8 */
  with_gap.ranges[1].gap = 0;                                         /* 7 missing */
  with_gap.ranges[1].length = 6;                                      /* 6..0 */
  KP_CHECK_EQ(kp_recovery_on_ack(&r, &with_gap, 150000), 5);
  KP_CHECK(log.packets_lost == 2 && log.lost_offsets[1] == 10000);

  /* Acks of packets never sent are ignored whole. */
  KP_CHECK_EQ(kp_recovery_on_ack(&r, &(kp_stream_ack_t){.largest = 999, .first = 990}, 150000), 0);
  /* Duplicate acks change nothing. */
  KP_CHECK_EQ(kp_recovery_on_ack(&r, &with_gap, 150000), 0);
  KP_CHECK_EQ(log.frames_acked, 14);

  /* The late packet 10 arrives after all: reordering, not loss. The
   * thresholds widen. */
  KP_CHECK_EQ(r.packet_threshold, KP_PACKET_THRESHOLD);
  with_gap.first = 7; /* 15..8 */
  with_gap.count = 1;
  with_gap.ranges[0] = with_gap.ranges[1]; /* 7 missing, 6..0 */
  kp_recovery_on_ack(&r, &with_gap, 151000);
  KP_CHECK_EQ(r.spurious_losses, 1);
  KP_CHECK_EQ(r.packet_threshold, 2 * KP_PACKET_THRESHOLD);
  KP_CHECK_EQ(r.reorder_mult, 1);
  kp_recovery_destroy(&r);
}

static void test_recovery_probe_timeouts(void) {
  rec_log_t log;
  memset(&log, 0, sizeof(log));
  kp_recovery_hooks_t hooks = {rl_frame_acked, rl_frame_lost, rl_packet_acked, rl_packet_lost,
                               &log};
  kp_recovery_t r;
  KP_CHECK_OK(kp_recovery_init(&r, &hooks));
  KP_CHECK_EQ(kp_recovery_deadline(&r), UINT64_MAX); /* nothing out */
  send_packets(&r, 1, 0);
  kp_recovery_on_ack(&r, &(kp_stream_ack_t){.largest = 0}, 40000); /* RTT 40 ms */
  uint64_t pto = kp_recovery_pto(&r);
  KP_CHECK_EQ(pto, 40000 + 4 * 20000 + KP_GRANULARITY_US);

  /* The tail goes missing. First expiry: a probe, nothing declared lost. */
  send_packets(&r, 3, 100000);
  uint64_t t = kp_recovery_deadline(&r);
  KP_CHECK_EQ(t, 100000 + pto);
  bool rto;
  KP_CHECK_EQ(kp_recovery_on_timeout(&r, t, &rto), 1);
  KP_CHECK(!rto && log.packets_lost == 0);
  /* The probe goes unanswered too: an RTO, everything lost, and the next
   * timeout is twice as long, then four times. */
  send_packets(&r, 1, t);
  uint64_t t2 = kp_recovery_deadline(&r);
  KP_CHECK_EQ(t2, t + 2 * pto);
  KP_CHECK_EQ(kp_recovery_on_timeout(&r, t2, &rto), 1);
  KP_CHECK(rto && log.packets_lost == 4);
  send_packets(&r, 1, t2);
  KP_CHECK_EQ(kp_recovery_deadline(&r), t2 + 4 * pto);
  /* An ack resets the backoff. */
  kp_recovery_on_ack(&r, &(kp_stream_ack_t){.largest = 5}, t2 + 1000);
  KP_CHECK_EQ(r.pto_count, 0);
  KP_CHECK_EQ(kp_recovery_deadline(&r), UINT64_MAX);
  kp_recovery_destroy(&r);
}

/* The RTT floor: a one-off slow sample leaves it; a standing queue moves
 * it (what the loss gate reads). */
static void test_rtt_floor(void) {
  rec_log_t log;
  memset(&log, 0, sizeof(log));
  kp_recovery_hooks_t hooks = {rl_frame_acked, rl_frame_lost, rl_packet_acked, rl_packet_lost,
                               &log};
  kp_recovery_t r;
  KP_CHECK_OK(kp_recovery_init(&r, &hooks));
  uint64_t now = 0;
  /* 100 us round trips, one sample of 5 ms among them. */
  for (int i = 0; i < 200; i++) {
    send_packets(&r, 1, now);
    uint64_t rtt = i == 100 ? 5000 : 100;
    now += rtt;
    kp_recovery_on_ack(&r, &(kp_stream_ack_t){.largest = kp_recovery_next_pn(&r) - 1}, now);
    KP_CHECK(kp_recovery_rtt_floor(&r) <= 100);
  }
  /* Then a queue: every sample 3 ms. Within two windows the floor is there. */
  for (int i = 0; i < 10; i++) {
    send_packets(&r, 1, now);
    now += 3000;
    kp_recovery_on_ack(&r, &(kp_stream_ack_t){.largest = kp_recovery_next_pn(&r) - 1}, now);
  }
  KP_CHECK_EQ(kp_recovery_rtt_floor(&r), 3000);
  KP_CHECK_EQ(r.min_rtt_us, 100);
  kp_recovery_destroy(&r);
}

/* ---- CUBIC ------------------------------------------------------------------------------ */

static void test_cubic(void) {
  kp_cubic_t c;
  kp_cubic_init(&c, 1200);
  KP_CHECK_EQ(c.cwnd, 12000);
  /* Slow start: a byte acked, a byte more; nothing while app-limited. */
  kp_cubic_on_ack(&c, 1200, 1000, 2000, 1000, true);
  KP_CHECK_EQ(c.cwnd, 13200);
  kp_cubic_on_ack(&c, 1200, 1000, 2000, 1000, false);
  KP_CHECK_EQ(c.cwnd, 13200);
  c.cwnd = 120000; /* 100 packets */

  /* A loss: beta = 0.7, and one cut per round trip. */
  kp_cubic_on_loss(&c, 5000, 10000);
  KP_CHECK_EQ(c.cwnd, 84000);
  KP_CHECK_EQ(c.ssthresh, 84000);
  kp_cubic_on_loss(&c, 9000, 10500); /* sent before the cut */
  KP_CHECK_EQ(c.cwnd, 84000);
  KP_CHECK_EQ(c.congestion_events, 1);
  /* K = cbrt(W_max (1 - beta) / C) seconds: the window is back at W_max
   * (100 packets) then, whatever the RTT. */
  double k = cbrt(100 * 0.3 / 0.4);
  KP_CHECK(fabs(c.k - k) < 1e-9);
  uint64_t now = 10000, rtt = 100000;
  while (now < 10000 + (uint64_t)(k * 1e6) - rtt) {
    now += 1000;
    kp_cubic_on_ack(&c, 1200, now - rtt, now, rtt, true);
  }
  double w = (double)c.cwnd / 1200;
  KP_CHECK_MSG(w > 95 && w < 102, "cwnd at K is %.1f packets", w);
  /* A timeout collapses the window to two packets. */
  kp_cubic_on_rto(&c, now);
  KP_CHECK_EQ(c.cwnd, 2400);
}

static void test_hystart(void) {
  kp_cubic_t c;
  kp_cubic_init(&c, 1000);
  /* Rounds of 20 ms RTT, then the queue grows: 20 ms more. Slow start
   * turns conservative, then ends after a few rounds, instead of
   * doubling into a loss. */
  uint64_t now = 0;
  for (int round = 0; round < 12 && kp_cubic_in_slow_start(&c); round++) {
    uint64_t rtt = round < 5 ? 20000 : 40000;
    uint64_t start = now;
    for (int i = 0; i < 16; i++) kp_cubic_on_ack(&c, 1000, start + 1, now + rtt + i, rtt, true);
    now += rtt + 16;
    if (round == 5) KP_CHECK(c.in_css);
  }
  KP_CHECK(!kp_cubic_in_slow_start(&c));
  KP_CHECK_EQ(c.congestion_events, 0);
}

static void test_loss_gate(void) {
  kp_loss_gate_t g = {0};
  /* 1% random loss, no queue: not congestion. */
  for (int i = 0; i < 10000; i++) kp_loss_gate_on_outcome(&g, i % 100 == 0);
  KP_CHECK(!kp_loss_gate_congestive(&g, 20500, 20000));
  /* A queue: congestion. */
  KP_CHECK(kp_loss_gate_congestive(&g, 30000, 20000));
  /* Heavy loss even without a queue (a shallow buffer): congestion. */
  for (int i = 0; i < 1000; i++) kp_loss_gate_on_outcome(&g, i % 20 == 0);
  KP_CHECK(kp_loss_gate_congestive(&g, 20000, 20000));
}

static void test_pacer(void) {
  kp_cubic_t c;
  kp_cubic_init(&c, 1000);
  c.cwnd = 100000;
  c.ssthresh = 50000; /* congestion avoidance: gain 1.25 */
  kp_pacer_t p;
  kp_pacer_init(&p);
  kp_pacer_update(&p, &c, 10000, 1000);
  /* 1.25 x 100 kB per 10 ms = 12.5 bytes/us; a full bucket to start. */
  KP_CHECK(fabs(p.rate - 12.5) < 1e-9);
  unsigned sent = 0;
  while (kp_pacer_next(&p, 1000, 1000) == 0) {
    kp_pacer_on_sent(&p, 1000);
    sent++;
  }
  KP_CHECK_EQ(sent, 25); /* 2 ms worth */
  /* The next packet may leave when 1000 bytes' worth of tokens are back. */
  uint64_t at = kp_pacer_next(&p, 1000, 1000);
  KP_CHECK(at > 1000 && at <= 1000 + 81);
}

/* A connection's keys do not outlive it: nothing the allocator gets back
 * from a freed connection holds either key. */
static size_t freed_with_key; /* blocks freed still holding key bytes */

static void *track_malloc(size_t n) {
  size_t *p = malloc(n + 16);
  if (!p) return NULL;
  *p = n;
  return (uint8_t *)p + 16;
}

static void *track_calloc(size_t count, size_t n) {
  void *p = track_malloc(count * n);
  if (p) memset(p, 0, count * n);
  return p;
}

static void track_free(void *ptr) {
  if (!ptr) return;
  size_t *p = (size_t *)((uint8_t *)ptr - 16), n = *p;
  const uint8_t *b = ptr;
  for (size_t i = 0; i + 8 <= n; i++) {
    static const uint8_t a[8] = {0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5};
    static const uint8_t z[8] = {0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a};
    if (!memcmp(b + i, a, 8) || !memcmp(b + i, z, 8)) {
      freed_with_key++;
      break;
    }
  }
  free(p);
}

static void *track_realloc(void *ptr, size_t n) {
  void *q = track_malloc(n);
  if (q && ptr) {
    size_t old = *(size_t *)((uint8_t *)ptr - 16);
    memcpy(q, ptr, old < n ? old : n);
    track_free(ptr);
  }
  return q;
}

static void test_keys_wiped(void) {
  KP_CHECK_OK(kp_replace_allocator(track_malloc, track_realloc, track_calloc, track_free));
  for (int cipher = KP_CIPHER_CHACHA20_POLY1305; cipher <= KP_CIPHER_AES256_GCM; cipher++) {
    if (cipher == KP_CIPHER_AES256_GCM && !crypto_aead_aes256gcm_is_available()) continue;
    kp_sconn_config_t cfg;
    kp_sconn_config_defaults(&cfg);
    cfg.rng = kp_rng_system();
    cfg.cipher = (kp_cipher_t)cipher;
    cfg.local_cid = 1, cfg.remote_cid = 2;
    memset(cfg.tx_key, 0xa5, 32);
    memset(cfg.rx_key, 0x5a, 32);
    KP_CHECK_OK(kp_addr_parse(&cfg.remote, "203.0.113.1:2000"));
    kp_sconn_events_t ev = {0};
    kp_sconn_t *c;
    KP_CHECK_OK(kp_sconn_new(&cfg, &ev, 1000, &c));
    kp_sconn_free(c);
  }
  KP_CHECK_EQ(freed_with_key, 0);
}

static const kp_test_case_t cases[] = {
    KP_CASE(header_codec, unit, 10),
    KP_CASE(packet_vector, unit, 10),
    KP_CASE(varint, unit, 10),
    KP_CASE(frames, unit, 10),
    KP_CASE(ack_frequency_frame, unit, 10),
    KP_CASE(aead, unit, 10),
    KP_CASE(keys_wiped, unit, 10),
    KP_CASE(aead_libcrypto, unit, 10),
    KP_CASE(replay_window, unit, 10),
    KP_CASE(ranges, unit, 10),
    KP_CASE(recovery_acks_and_losses, unit, 10),
    KP_CASE(recovery_probe_timeouts, unit, 10),
    KP_CASE(rtt_floor, unit, 10),
    KP_CASE(cubic, unit, 10),
    KP_CASE(hystart, unit, 10),
    KP_CASE(loss_gate, unit, 10),
    KP_CASE(pacer, unit, 10),
    KP_CASE(transfer_clean, sim, 60),
    KP_CASE(transfer_loss, sim, 120),
    KP_CASE(transfer_reorder_duplicate, sim, 60),
    KP_CASE(transfer_bottleneck, sim, 60),
    KP_CASE(path_change, sim, 60),
    KP_CASE(path_pinned, sim, 60),
    KP_CASE(path_change_smaller_mtu, sim, 60),
    KP_CASE(path_spoof, sim, 60),
    KP_CASE(tamper_replay_truncate, sim, 60),
    KP_CASE(idle_and_dead_peer, sim, 60),
    KP_CASE(close, sim, 60),
    KP_CASE(slow_reader, sim, 60),
    KP_CASE(stream_reset, sim, 60),
    KP_CASE(stream_limit, sim, 60),
    KP_CASE(stream_flood, sim, 60),
    KP_CASE(conn_window_credit, sim, 60),
    KP_CASE(tiny_chunks_bounded, sim, 60),
    KP_CASE(path_mtu, sim, 60),
    KP_CASE(path_death_times, sim, 60),
    KP_CASE(path_death_silent_receiver, sim, 60),
    KP_CASE(resume_grace, sim, 60),
    KP_CASE(path_mtu_parallel, sim, 60),
    KP_CASE(window_autotune, sim, 60),
    KP_CASE(window_chunk_runs, sim, 60),
    KP_CASE(ack_frequency, sim, 60),
    KP_CASE(cc_random_loss, sim, 60),
    KP_CASE(cc_convergence, sim, 60),
    KP_CASE(cc_fairness, sim, 60),
    KP_CASE(cc_shallow_buffer, sim, 60),
    KP_CASE(cc_vs_reno, sim, 60),
    KP_CASE(datagram_frame, unit, 10),
    KP_CASE(datagram_clean, sim, 60),
    KP_CASE(datagram_loss, sim, 60),
    KP_CASE(datagram_queue_bounded, sim, 60),
    KP_CASE(datagram_beside_stream, sim, 60),
};
KP_TEST_MAIN(cases)
