/*
 * Helpers shared by the C tests that start processes: what a test must leave
 * behind (no child, no descriptor) and a monotonic clock. Include after
 * check.h, with _GNU_SOURCE defined.
 */
#ifndef PROCORD_TEST_FIXTURES_H
#define PROCORD_TEST_FIXTURES_H

#include <dirent.h>
#include <errno.h>
#include <sys/wait.h>
#include <time.h>

/* How many descriptors this process has open. */
static inline int count_descriptors(void) {
  DIR *dir = opendir("/proc/self/fd");
  if (!dir) return -1;
  int count = 0;
  struct dirent *entry;
  while ((entry = readdir(dir)) != NULL)
    if (entry->d_name[0] != '.') count++;
  closedir(dir);
  return count;
}

/* True when every child of ours has been reaped. */
static inline int no_child_left(void) {
  errno = 0;
  return waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD;
}

/* Milliseconds on the monotonic clock. */
static inline long long now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Opens a test: remember the descriptors. */
#define BEGIN() int begin_descriptors = count_descriptors()

/* Closes a test: nothing may be left behind. */
#define CHECK_NOTHING_LEFT()                                                                      \
  do {                                                                                            \
    CHECK(no_child_left());                                                                       \
    CHECK_EQ_INT(count_descriptors(), begin_descriptors);                                         \
  } while (0)

#endif
