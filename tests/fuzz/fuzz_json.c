/* SPDX-License-Identifier: MIT */
/* Fuzz target: the JSON reader behind a node's control socket
 * (node/json.h), which any local client can feed. It parses or refuses;
 * what it parses, the writer writes back as JSON that parses again to the
 * same shape. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "node/json.h"
#include "tests/fuzz/fuzz.h"

static size_t count(const kp_json_t *v) {
  size_t n = 1;
  for (const kp_json_t *c = v->child; c; c = c->next) n += count(c);
  return n;
}

static void write_back(kp_jw_t *w, const kp_json_t *v) {
  switch (v->type) {
    case KP_JSON_NULL: kp_jw_null(w); break;
    case KP_JSON_BOOL: kp_jw_bool(w, v->boolean); break;
    /* The writer puts null for what it cannot write exactly; keep the shape. */
    case KP_JSON_NUMBER: kp_jw_num(w, fabs(v->number) > 1e18 ? 0 : v->number, 3); break;
    case KP_JSON_STRING: kp_jw_strn(w, v->str, v->len); break;
    case KP_JSON_ARRAY:
      kp_jw_arr(w);
      for (const kp_json_t *c = v->child; c; c = c->next) write_back(w, c);
      kp_jw_arr_end(w);
      break;
    case KP_JSON_OBJECT:
      kp_jw_obj(w);
      for (const kp_json_t *c = v->child; c; c = c->next) {
        kp_jw_key(w, c->key);
        write_back(w, c);
      }
      kp_jw_obj_end(w);
      break;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kp_json_t *v = NULL;
  size_t err_at = 0;
  int r = kp_json_parse((const char *)data, size, &v, &err_at);
  if (r) {
    KP_FUZZ_ASSERT(!v && err_at <= size);
    return 0;
  }
  (void)kp_json_get_str(v, "cmd");
  (void)kp_json_get_num(v, "count", 0);
  kp_jw_t w;
  kp_jw_init(&w, 1u << 20);
  write_back(&w, v);
  size_t len;
  bool failed = w.failed; /* the writer nests less deep than the reader */
  char *text = kp_jw_release(&w, &len);
  if (text && !failed) {
    kp_json_t *again = NULL;
    KP_FUZZ_ASSERT(kp_json_parse(text, len, &again, NULL) == 0);
    KP_FUZZ_ASSERT(again->type == v->type && count(again) == count(v));
    kp_json_free(again);
  }
  kp_free(text);
  kp_jw_free(&w);
  kp_json_free(v);
  return 0;
}

size_t kp_fuzz_seeds(kp_fuzz_seed_t *seeds, size_t cap) {
  static const char *s[] = {
      "{\"cmd\":\"table\",\"count\":3}",
      "[1,2.5,-3e2,true,false,null,\"x\\u00e9\\n\"]",
      "{\"a\":{\"b\":[{\"c\":\"\\ud83d\\ude00\"}]}}",
      "  \"just a string\"  ",
  };
  size_t n = 0;
  for (; n < 4 && n < cap; n++) seeds[n] = (kp_fuzz_seed_t){(const uint8_t *)s[n], strlen(s[n])};
  return n;
}
