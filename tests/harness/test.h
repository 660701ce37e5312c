/* SPDX-License-Identifier: MIT */
/* The test harness: each test binary holds a table of named cases; ctest
 * runs each case as its own process (`test_x CASE`), with the label and
 * timeout given in the table (cmake/KpTest.cmake reads them from there).
 *
 *   static void test_parse(void) { KP_CHECK(...); }
 *   static const kp_test_case_t cases[] = {
 *       KP_CASE(parse, unit, 10),
 *   };
 *   KP_TEST_MAIN(cases)
 *
 * A failed check prints where and why and exits 1. kp_test_skip() exits 77,
 * which ctest reports as skipped (never as passed). */
#ifndef KP_TEST_H
#define KP_TEST_H

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kadpunch.h"

typedef struct kp_test_case_s {
  const char *name;
  void (*fn)(void);
  const char *label;
  int timeout_s;
} kp_test_case_t;

#define KP_CASE(name, label, timeout)                                                              \
  { #name, test_##name, #label, timeout }

int kp_test_main(int argc, char **argv, const kp_test_case_t *cases, size_t count);

#define KP_TEST_MAIN(cases)                                                                        \
  int main(int argc, char **argv) {                                                                \
    return kp_test_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));                      \
  }

_Noreturn void kp_test_fail(const char *file, int line, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
_Noreturn void kp_test_skip(const char *why);

#define KP_CHECK(cond)                                                                             \
  do {                                                                                             \
    if (!(cond)) kp_test_fail(__FILE__, __LINE__, "check failed: %s", #cond);                      \
  } while (0)

#define KP_CHECK_MSG(cond, ...)                                                                    \
  do {                                                                                             \
    if (!(cond)) kp_test_fail(__FILE__, __LINE__, __VA_ARGS__);                                    \
  } while (0)

#define KP_CHECK_EQ(a, b)                                                                          \
  do {                                                                                             \
    int64_t kp_a_ = (int64_t)(a), kp_b_ = (int64_t)(b);                                            \
    if (kp_a_ != kp_b_)                                                                            \
      kp_test_fail(__FILE__, __LINE__, "%s == %s: %" PRId64 " != %" PRId64, #a, #b, kp_a_, kp_b_); \
  } while (0)

/* expr returns a kadpunch/libuv error code that must be 0. */
#define KP_CHECK_OK(expr)                                                                          \
  do {                                                                                             \
    int kp_e_ = (expr);                                                                            \
    if (kp_e_)                                                                                     \
      kp_test_fail(__FILE__, __LINE__, "%s failed: %s (%s)", #expr, kp_err_name(kp_e_),            \
                   kp_strerror(kp_e_));                                                            \
  } while (0)

/* expr must fail with exactly code. */
#define KP_CHECK_ERR(expr, code)                                                                   \
  do {                                                                                             \
    int kp_e_ = (expr);                                                                            \
    if (kp_e_ != (code))                                                                           \
      kp_test_fail(__FILE__, __LINE__, "%s: expected %s, got %s", #expr, kp_err_name(code),        \
                   kp_err_name(kp_e_));                                                            \
  } while (0)

#define KP_CHECK_MEM(a, b, n)                                                                      \
  do {                                                                                             \
    if (memcmp((a), (b), (n)) != 0)                                                                \
      kp_test_fail(__FILE__, __LINE__, "memory differs: %s vs %s (%zu bytes)", #a, #b,             \
                   (size_t)(n));                                                                   \
  } while (0)

/* Milliseconds on a monotonic clock, for bounding loops. */
uint64_t kp_test_now_ms(void);

/* Raises RLIMIT_NOFILE to at least n (tests with thousands of sockets). */
void kp_test_raise_fd_limit(size_t n);

/* Moves this process into a fresh network namespace with loopback up (for
 * tests that add iptables rules). The namespace dies with the process, so
 * nothing leaks if the test fails or is killed. Skips (exit 77) without
 * root or namespace support, saying why. */
void kp_test_enter_netns(void);

/* Runs a shell command (inside our namespace, if entered); returns its
 * exit status. */
int kp_test_sh(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

#endif
