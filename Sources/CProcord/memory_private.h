/*
 * memory_private.h: allocations for message bodies.
 */
#ifndef PROCORD_MEMORY_PRIVATE_H
#define PROCORD_MEMORY_PRIVATE_H

#include <stddef.h>

/* Bodies from this size on are asked to use transparent huge pages. */
#define PROCORD_HUGE_PAGE_THRESHOLD ((size_t)2 * 1024 * 1024)

/*
 * malloc(size), for a body about to be filled. A large one is a fresh
 * mapping whose every 4 KiB page faults and is zeroed when first written:
 * on some machines that costs more than copying the bytes. Such a buffer is
 * asked to use transparent huge pages (madvise MADV_HUGEPAGE, honoured
 * where /sys/kernel/mm/transparent_hugepage/enabled is `madvise` or
 * `always`), which takes a 256 MiB fill from about 215 to 95 ms on the
 * machine of the benchmark's README. Freed with free().
 */
void *procord_malloc_body(size_t size);

#endif
