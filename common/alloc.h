/* SPDX-License-Identifier: MIT */
/* The one allocator every kadpunch allocation goes through (replaceable with
 * kp_replace_allocator so tests can inject failure). Library code turns a NULL
 * into KP_ENOMEM; only main() may abort. */
#ifndef KP_COMMON_ALLOC_H
#define KP_COMMON_ALLOC_H

#include <stddef.h>
#include "kadpunch_base.h"

void *kp_malloc(size_t size);
void *kp_calloc(size_t count, size_t size);
void *kp_realloc(void *ptr, size_t size);
void kp_free(void *ptr);

/* Like strdup, through kp_malloc. */
char *kp_strdup(const char *s);

#endif
