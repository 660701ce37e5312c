/* SPDX-License-Identifier: MIT */
/* libFuzzer glue: kp_fuzz_fail, and the seeds written into the corpus
 * directory (the first argument that is not a flag) before fuzzing starts. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "tests/fuzz/fuzz.h"

void kp_fuzz_fail(const char *file, int line, const char *what) {
  fprintf(stderr, "FUZZ FAIL %s:%d: %s\n", file, line, what);
  abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  const char *dir = NULL;
  for (int i = 1; i < *argc; i++)
    if ((*argv)[i][0] != '-') dir = (*argv)[i];
  if (!dir) return 0;
  mkdir(dir, 0755);
  kp_fuzz_seed_t seeds[64];
  size_t n = kp_fuzz_seeds(seeds, 64);
  for (size_t i = 0; i < n; i++) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/seed-%zu", dir, i);
    FILE *f = fopen(path, "wb");
    if (!f) continue;
    fwrite(seeds[i].data, 1, seeds[i].len, f);
    fclose(f);
  }
  return 0;
}
