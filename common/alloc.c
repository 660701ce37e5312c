/* SPDX-License-Identifier: MIT */
#include "common/alloc.h"

#include <stdlib.h>
#include <string.h>

/* The allocator is the single deliberate piece of process-wide state, set
 * once before any object exists, exactly like uv_replace_allocator(). */
static struct {
  kp_malloc_func malloc_f;
  kp_realloc_func realloc_f;
  kp_calloc_func calloc_f;
  kp_free_func free_f;
} allocator = {malloc, realloc, calloc, free};

int kp_replace_allocator(kp_malloc_func malloc_func, kp_realloc_func realloc_func,
                         kp_calloc_func calloc_func, kp_free_func free_func) {
  if (!malloc_func || !realloc_func || !calloc_func || !free_func) return KP_EINVAL;
  allocator.malloc_f = malloc_func;
  allocator.realloc_f = realloc_func;
  allocator.calloc_f = calloc_func;
  allocator.free_f = free_func;
  return 0;
}

void *kp_malloc(size_t size) {
  return allocator.malloc_f(size ? size : 1);
}

void *kp_calloc(size_t count, size_t size) {
  return allocator.calloc_f(count ? count : 1, size ? size : 1);
}

void *kp_realloc(void *ptr, size_t size) {
  return allocator.realloc_f(ptr, size ? size : 1);
}

void kp_free(void *ptr) {
  if (ptr) allocator.free_f(ptr);
}

char *kp_strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = kp_malloc(n);
  if (p) memcpy(p, s, n);
  return p;
}
