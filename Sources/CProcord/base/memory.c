/*
 * The core's allocations, on the process's allocator (procord/memory.h,
 * base_private.h).
 */
#define _GNU_SOURCE
#include "base/base_private.h"
#include "procord/error.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* The program's allocator (`allocate` NULL: libc's). Written only under
   `lock` and before `sealed`; read without a lock once sealed, when it can
   no longer change. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static procord_allocator_t chosen;
static int sealed; /* atomic: the core has allocated, `chosen` is final */

/* The allocator of an allocation (NULL: libc's), which is final from now on. */
static const procord_allocator_t *allocator(void) {
  if (!__atomic_load_n(&sealed, __ATOMIC_ACQUIRE)) {
    /* Under the lock, so that a procord_set_allocator running now either
       finished before (its allocator is the one) or sees the seal. */
    pthread_mutex_lock(&lock);
    __atomic_store_n(&sealed, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&lock);
  }
  return chosen.allocate ? &chosen : NULL;
}

void procord_allocator_init(procord_allocator_t *allocator) {
  if (!allocator) return;
  procord_options_clear(allocator, sizeof *allocator);
}

int procord_set_allocator(const procord_allocator_t *given) {
  procord_allocator_t copy = {0};
  if (given) {
    if (PROCORD_OPTIONS_COPY(copy, given, PROCORD_FIRST_SIZE_ALLOCATOR) != 0) return PROCORD_EINVAL;
    if (!copy.allocate || !copy.reallocate || !copy.free) return PROCORD_EINVAL;
  }
  pthread_mutex_lock(&lock);
  int busy = __atomic_load_n(&sealed, __ATOMIC_RELAXED);
  if (!busy) chosen = copy;
  pthread_mutex_unlock(&lock);
  return busy ? -EBUSY : 0;
}

void *procord_allocate(size_t size) {
  if (!size) size = 1;
  const procord_allocator_t *a = allocator();
  return a ? a->allocate(size, a->context) : malloc(size);
}

void *procord_allocate_zeroed(size_t count, size_t size) {
  if (size && count > SIZE_MAX / size) return NULL; /* calloc's own check */
  size_t total = count * size;
  if (!total) total = 1;
  const procord_allocator_t *a = allocator();
  if (!a) return calloc(1, total); /* libc's: fresh pages need no clearing */
  void *block = a->allocate(total, a->context);
  if (block) memset(block, 0, total);
  return block;
}

void *procord_reallocate(void *pointer, size_t size) {
  if (!pointer) return procord_allocate(size);
  if (!size) size = 1;
  const procord_allocator_t *a = allocator();
  return a ? a->reallocate(pointer, size, a->context) : realloc(pointer, size);
}

char *procord_strdup(const char *string) {
  size_t length = strlen(string);
  char *copy = procord_allocate(length + 1);
  if (copy) memcpy(copy, string, length + 1);
  return copy;
}

void procord_free(void *pointer) {
  if (!pointer) return;
  const procord_allocator_t *a = allocator();
  if (a) a->free(pointer, a->context);
  else
    free(pointer);
}

void *procord_malloc_body(size_t size) {
  if (allocator()) return procord_allocate(size); /* its memory, its advice */
  void *body = malloc(size ? size : 1);
  if (body && size >= PROCORD_HUGE_PAGE_THRESHOLD) {
    /* madvise wants whole pages: the part of the buffer they cover. */
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = ((uintptr_t)body + page - 1) & ~(page - 1);
    uintptr_t end = ((uintptr_t)body + size) & ~(page - 1);
    if (end > start)
      madvise((void *)start, end - start, MADV_HUGEPAGE); /* advice: failure is harmless */
  }
  return body;
}
