/*
 * memory_private.h: every allocation of the core, through the allocator of
 * procord_set_allocator (procord/memory.h) or libc's.
 *
 * The core calls these, never malloc, calloc, realloc, strdup or free, except
 * for memory whose contract says malloc and free (procord/memory.h lists
 * it). Each accepts a size of 0 (asking for 1 byte) and procord_free
 * NULL, so callers keep the habits of libc's.
 */
#ifndef PROCORD_MEMORY_PRIVATE_H
#define PROCORD_MEMORY_PRIVATE_H

#include <stddef.h>

#include "procord/memory.h" /* procord_free, for the core's own blocks too */

/* Bodies from this size on are asked to use transparent huge pages. */
#define PROCORD_HUGE_PAGE_THRESHOLD ((size_t)2 * 1024 * 1024)

/* malloc, calloc (NULL when count * size overflows), realloc (`pointer`
   may be NULL), strdup, and free, on the process's allocator. */
void *procord_allocate(size_t size);
void *procord_allocate_zeroed(size_t count, size_t size);
void *procord_reallocate(void *pointer, size_t size);
char *procord_strdup(const char *string);

/*
 * procord_allocate(size), for a body about to be filled. A large one is a
 * fresh mapping whose every 4 KiB page faults and is zeroed when first
 * written: on some machines that costs more than copying the bytes. Such a
 * buffer from malloc is asked to use transparent huge pages (madvise
 * MADV_HUGEPAGE, honoured where /sys/kernel/mm/transparent_hugepage/enabled
 * is `madvise` or `always`), which takes a 256 MiB fill from about 215 to 95
 * ms on the machine of the benchmark's README. A program's own allocator's
 * memory is left as it gives it: its mappings are its own to advise. Freed
 * with procord_free.
 */
void *procord_malloc_body(size_t size);

#endif
