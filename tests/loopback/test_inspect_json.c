/* SPDX-License-Identifier: MIT */
/* node/json.h: the reader the inspector's tests check its output with, and
 * the control socket parses requests with, must refuse what is not JSON;
 * the writer must only ever write JSON, whatever bytes it is given. */
#include <math.h>
#include <string.h>

#include "node/json.h"
#include "tests/harness/test.h"

void test_json_codec(void);

static void parses(const char *text) {
  kp_json_t *v;
  size_t at = 0;
  int err = kp_json_parse(text, strlen(text), &v, &at);
  KP_CHECK_MSG(err == 0, "'%s' should parse (%s at %zu)", text, kp_err_name(err), at);
  kp_json_free(v);
}

static void refuses(const char *text, size_t len) {
  kp_json_t *v = (kp_json_t *)1;
  KP_CHECK_MSG(kp_json_parse(text, len, &v, NULL) == KP_EMALFORMED, "'%.*s' should not parse",
               (int)len, text);
  KP_CHECK(v == NULL);
}

static void check_reader(void) {
  static const char *good[] = {
      "{}",
      "[]",
      " 0 ",
      "-0.5e+3",
      "true",
      "null",
      "\"\"",
      "[1,[2,[3]],{\"a\":{}}]",
      "{\"a\":1,\"a\":2}",
      "\"\\u00e9\\ud83d\\ude00\\n\\/\"",
      "\"\xc3\xa9\xf0\x9f\x98\x80\"",
  };
  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) parses(good[i]);
  static const char *bad[] = {
      "",
      "{",
      "[1,]",
      "{\"a\":1,}",
      "01",
      "1.",
      ".5",
      "+1",
      "1e",
      "tru",
      "nul",
      "NaN",
      "{\"a\" 1}",
      "{a:1}",
      "\"abc",
      "\"\\x\"",
      "\"\\u12\"",
      "\"\\ud800\"",
      "\"\\udc00\"",
      "\"\x01\"",
      "\"\xff\"",
      "\"\xc0\xaf\"",
      "\"\xed\xa0\x80\"",
      "[1]]",
      "{} {}",
      "'a'",
      "[1 2]",
      "{\"a\":1 \"b\":2}",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) refuses(bad[i], strlen(bad[i]));
  refuses("\"a\0b\"", 5); /* a raw NUL is a control character */
  /* Nesting is bounded. */
  char deep[2 * (KP_JSON_MAX_DEPTH + 2) + 1];
  memset(deep, '[', KP_JSON_MAX_DEPTH + 2);
  memset(deep + KP_JSON_MAX_DEPTH + 2, ']', KP_JSON_MAX_DEPTH + 2);
  refuses(deep, sizeof(deep) - 1);
  /* Values come out as written. */
  kp_json_t *v;
  const char *text = "{\"s\":\"a\\u0000b\\t\",\"n\":-12.5,\"b\":false,\"a\":[1,2,3]}";
  KP_CHECK_OK(kp_json_parse(text, strlen(text), &v, NULL));
  const kp_json_t *s = kp_json_get(v, "s");
  KP_CHECK(s && s->len == 4 && !memcmp(s->str, "a\0b\t", 4));
  KP_CHECK(kp_json_get_num(v, "n", 0) == -12.5);
  KP_CHECK(!kp_json_get_bool(v, "b", true));
  KP_CHECK_EQ(kp_json_get(v, "a")->len, 3);
  KP_CHECK(kp_json_get_str(v, "n") == NULL && kp_json_get(v, "missing") == NULL);
  kp_json_free(v);
}

static void check_writer(void) {
  kp_jw_t w;
  kp_jw_init(&w, 0);
  kp_jw_obj(&w);
  kp_jw_kstr(&w, "quote", "a\"b\\c\n\x01");
  kp_jw_key(&w, "bytes");
  kp_jw_str(&w, "\xff\xc0\xaf ok \xc3\xa9"); /* invalid UTF-8 becomes U+FFFD */
  kp_jw_knum(&w, "nan", NAN, 3);
  kp_jw_knum(&w, "neg0", -0.0001, 2);
  kp_jw_ku64(&w, "big", UINT64_MAX);
  kp_jw_key(&w, "list");
  kp_jw_arr(&w);
  kp_jw_i64(&w, -5);
  kp_jw_null(&w);
  kp_jw_str(&w, NULL);
  kp_jw_hex(&w, (const uint8_t *)"\x01\xab", 2);
  kp_jw_arr_end(&w);
  kp_jw_obj_end(&w);
  KP_CHECK(!w.failed);
  KP_CHECK_MSG(!strcmp(w.buf, "{\"quote\":\"a\\\"b\\\\c\\u000a\\u0001\",\"bytes\":\"\\ufffd\\ufffd"
                              "\\ufffd ok \xc3\xa9\",\"nan\":null,\"neg0\":0.00,\"big\":"
                              "18446744073709551615,\"list\":[-5,null,null,\"01ab\"]}"),
               "%s", w.buf);
  kp_json_t *v;
  KP_CHECK_OK(kp_json_parse(w.buf, w.len, &v, NULL));
  KP_CHECK(!strcmp(kp_json_get_str(v, "quote"), "a\"b\\c\n\x01"));
  kp_json_free(v);
  kp_jw_free(&w);
  /* Past its cap the writer fails, and says so, rather than truncate. */
  kp_jw_init(&w, 16);
  kp_jw_arr(&w);
  for (int i = 0; i < 10; i++) kp_jw_u64(&w, 12345);
  kp_jw_arr_end(&w);
  KP_CHECK(w.failed);
  kp_jw_free(&w);
}

void test_json_codec(void) {
  check_reader();
  check_writer();
}
