/* clock.c: the one clock of the benchmark. */
#define _GNU_SOURCE
#include <time.h>

#include "procord_bench.h"

uint64_t procord_bench_now_ns(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}
