/* memory.c: what the soak asks the allocator before it reads resident memory. */
#define _GNU_SOURCE
#include "procord_bench.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

void procord_bench_trim_memory(void) {
#ifdef __GLIBC__
  malloc_trim(0);
#endif
}

size_t procord_bench_heap_in_use(void) {
#ifdef __GLIBC__
  struct mallinfo2 info = mallinfo2();
  return info.uordblks + info.hblkhd;
#else
  return 0;
#endif
}
