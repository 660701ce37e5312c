/* SPDX-License-Identifier: MIT */
/* Shared by the files of the test_inspect binary: running kadpunch-inspect
 * (and kadpunch) as a child while the test's own nodes keep serving, and
 * checking what it printed: JSON against its documented shape, SVG for
 * well-formedness. */
#ifndef KP_TEST_INSPECT_RUN_H
#define KP_TEST_INSPECT_RUN_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "kadpunch.h"
#include "node/json.h"

/* A private directory for sockets and output files (removed at exit). */
const char *kp_it_dir(void);

typedef struct kp_it_result_s {
  int status; /* exit status; 128+signal if killed; -1 if it had to be killed */
  char *out;  /* stdout, NUL-terminated (free with kp_it_result_free) */
  size_t out_len;
  char *err; /* stderr */
} kp_it_result_t;

/* Runs argv (NULL-terminated; argv[0] a path) on loop until it exits, at
 * most timeout_ms (then SIGKILL, by its pid). The environment is only PATH
 * and HOME (the private directory): no KADPUNCH_* leaks in from outside.
 * uid: run as this user (root only; 0 keeps ours). */
void kp_it_run(uv_loop_t *loop, const char *const *argv, unsigned timeout_ms, unsigned uid,
               kp_it_result_t *r);
void kp_it_result_free(kp_it_result_t *r);

/* Parses text as exactly one JSON value; fails the test (showing the text)
 * if it is not JSON. */
kp_json_t *kp_it_json(const char *text, size_t len);

/* Fails the test unless obj is an object with exactly the members of
 * spec, each of its type: "name:types ..." where types are letters
 * b(ool) n(umber) s(tring) a(rray) o(bject) z (null), e.g. "id:sz" for a
 * string or null. where names the object in the failure message. */
void kp_it_shape(const kp_json_t *obj, const char *spec, const char *where);

/* Checks that svg is well-formed (every tag closed in order, quotes
 * balanced, one <svg> root) and returns how many elements carry
 * class="node". */
size_t kp_it_svg_nodes(const char *svg);

/* Announces a fresh key under target from node with data, and waits (up
 * to 20 s) until a round stored it. key gets the key's text. Stop the
 * handle with kp_announce_stop. */
struct kp_testnet_s;
kp_announce_t *kp_it_announce(struct kp_testnet_s *tn, kp_node_t *node,
                              const uint8_t target[KP_ID_LEN], const char *data,
                              char key[KP_KEY_TEXT_LEN + 1]);

/* The whole file at path (NUL-terminated), or NULL. */
char *kp_it_read_file(const char *path, size_t *len);

#endif
