/*
 * A tiny test harness for the C tests: one function per behaviour, named for
 * it, registered in main with RUN(name). CHECK stops the current test at the
 * first failed condition. The last line is "N passed, N failed", and the exit
 * status is non-zero if anything failed.
 */
#ifndef PROCORD_TEST_CHECK_H
#define PROCORD_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_passed, check_failed, check_current_failed;

#define CHECK(condition)                                                                  \
  do {                                                                                    \
    if (!(condition)) {                                                                   \
      fprintf(stderr, "    %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #condition);   \
      check_current_failed = 1;                                                           \
      return;                                                                             \
    }                                                                                     \
  } while (0)

#define CHECK_EQ_INT(actual, expected)                                                    \
  do {                                                                                    \
    long long check_a = (long long)(actual), check_e = (long long)(expected);             \
    if (check_a != check_e) {                                                             \
      fprintf(stderr, "    %s:%d: %s is %lld, expected %lld\n", __FILE__, __LINE__, #actual, \
              check_a, check_e);                                                          \
      check_current_failed = 1;                                                           \
      return;                                                                             \
    }                                                                                     \
  } while (0)

#define CHECK_BYTES(actual, length, expected)                                             \
  CHECK((length) == strlen(expected) && memcmp((actual), (expected), (length)) == 0)

#define RUN(test)                                                                         \
  do {                                                                                    \
    check_current_failed = 0;                                                             \
    test();                                                                               \
    if (check_current_failed) {                                                           \
      check_failed++;                                                                     \
      printf("FAIL %s\n", #test);                                                         \
    } else {                                                                              \
      check_passed++;                                                                     \
      printf("ok   %s\n", #test);                                                         \
    }                                                                                     \
  } while (0)

#define CHECK_SUMMARY()                                                                   \
  (printf("%d passed, %d failed\n", check_passed, check_failed), check_failed ? 1 : 0)

#endif
