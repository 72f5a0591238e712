/* The monotonic clock and libevent timers, in milliseconds (base_private.h). */
#define _GNU_SOURCE
#include "base/base_private.h"

#include <event2/event.h>
#include <time.h>

long long procord_monotonic_ms(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

void procord_monotonic_now(struct timespec *now) { clock_gettime(CLOCK_MONOTONIC, now); }

double procord_ms_since(const struct timespec *start) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)(now.tv_sec - start->tv_sec) * 1e3 + (double)(now.tv_nsec - start->tv_nsec) / 1e6;
}

int procord_timer_arm(struct event *timer, int milliseconds) {
  struct timeval limit = {milliseconds / 1000, (milliseconds % 1000) * 1000};
  return evtimer_add(timer, &limit) == 0 ? 0 : -1;
}
