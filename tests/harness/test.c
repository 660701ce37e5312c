/* SPDX-License-Identifier: MIT */
#include "tests/harness/test.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

void kp_test_fail(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "FAIL %s:%d: ", file, line);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  fflush(NULL);
  exit(1);
}

void kp_test_skip(const char *why) {
  printf("SKIP: %s\n", why);
  fflush(NULL);
  exit(77);
}

uint64_t kp_test_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void kp_test_raise_fd_limit(size_t n) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl)) return;
  if (rl.rlim_cur >= n) return;
  rl.rlim_cur = n < rl.rlim_max ? n : rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
}

int kp_test_sh(const char *fmt, ...) {
  char cmd[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof(cmd), fmt, ap);
  va_end(ap);
  int rc = system(cmd);
  return rc == -1 ? -1 : WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

void kp_test_enter_netns(void) {
  if (geteuid() != 0) kp_test_skip("needs root to create a network namespace");
  if (unshare(CLONE_NEWNET) != 0) {
    char why[128];
    snprintf(why, sizeof(why), "cannot create a network namespace: %s", strerror(errno));
    kp_test_skip(why);
  }
  if (kp_test_sh("ip link set lo up") != 0) kp_test_skip("cannot bring up lo in the namespace");
}

static void list(const kp_test_case_t *cases, size_t count) {
  for (size_t i = 0; i < count; i++)
    printf("%s %s %d\n", cases[i].name, cases[i].label, cases[i].timeout_s);
}

int kp_test_main(int argc, char **argv, const kp_test_case_t *cases, size_t count) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  /* A test that writes to a socket its peer has closed (a node under test
   * dropping a client, as it may) wants EPIPE, not death by SIGPIPE. */
  signal(SIGPIPE, SIG_IGN);
  if (argc > 1 && !strcmp(argv[1], "--list")) {
    list(cases, count);
    return 0;
  }
  if (argc > 1) {
    for (size_t i = 0; i < count; i++) {
      if (strcmp(argv[1], cases[i].name)) continue;
      cases[i].fn();
      printf("ok %s\n", cases[i].name);
      return 0;
    }
    fprintf(stderr, "no test case named '%s' (try --list)\n", argv[1]);
    return 2;
  }
  /* No argument: run every unit case in this process (a quick dev loop). */
  for (size_t i = 0; i < count; i++) {
    if (strcmp(cases[i].label, "unit")) continue;
    cases[i].fn();
    printf("ok %s\n", cases[i].name);
  }
  return 0;
}
