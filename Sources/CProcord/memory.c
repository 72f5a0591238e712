/*
 * Allocations for message bodies (memory_private.h).
 */
#define _GNU_SOURCE
#include "memory_private.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

void *procord_malloc_body(size_t size) {
  void *body = malloc(size ? size : 1);
  if (body && size >= PROCORD_HUGE_PAGE_THRESHOLD) {
    /* madvise wants whole pages: the part of the buffer they cover. */
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = ((uintptr_t)body + page - 1) & ~(page - 1);
    uintptr_t end = ((uintptr_t)body + size) & ~(page - 1);
    if (end > start) madvise((void *)start, end - start, MADV_HUGEPAGE); /* advice: failure is harmless */
  }
  return body;
}
