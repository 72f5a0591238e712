/*
 * A tiny test harness for the C tests: one function per behaviour, named for
 * it, registered in main with RUN(name), or RUN_WITHIN(name, seconds) for one
 * that needs more than the default limit. CHECK stops the current test at the
 * first failed condition. Each test runs within a time limit, and fails if it
 * leaves a child process or a descriptor behind; a failed test cannot affect
 * the next (check_runner.h says how). The last line is "N passed, N failed",
 * and the exit status is non-zero if anything failed.
 */
#ifndef PROCORD_TEST_CHECK_H
#define PROCORD_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

#include "check_runner.h"

#define CHECK(condition)                                                                           \
  do {                                                                                             \
    if (!(condition)) {                                                                            \
      fprintf(stderr, "    %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #condition);            \
      check_current_failed = 1;                                                                    \
      return;                                                                                      \
    }                                                                                              \
  } while (0)

#define CHECK_EQ_INT(actual, expected)                                                             \
  do {                                                                                             \
    long long check_a = (long long)(actual), check_e = (long long)(expected);                      \
    if (check_a != check_e) {                                                                      \
      fprintf(stderr, "    %s:%d: %s is %lld, expected %lld\n", __FILE__, __LINE__, #actual,       \
              check_a, check_e);                                                                   \
      check_current_failed = 1;                                                                    \
      return;                                                                                      \
    }                                                                                              \
  } while (0)

#define CHECK_BYTES(actual, length, expected)                                                      \
  CHECK((length) == strlen(expected) && memcmp((actual), (expected), (length)) == 0)

/* A message `text` contains `word`; says both when it does not. */
#define CHECK_CONTAINS(text, word)                                                                 \
  do {                                                                                             \
    const char *check_text = (text);                                                               \
    if (!check_text || !strstr(check_text, (word))) {                                              \
      fprintf(stderr, "    %s:%d: \"%s\" does not contain \"%s\"\n", __FILE__, __LINE__,           \
              check_text ? check_text : "(null)", (word));                                         \
      check_current_failed = 1;                                                                    \
      return;                                                                                      \
    }                                                                                              \
  } while (0)

#define RUN(test) check_run(#test, test, 0)
#define RUN_WITHIN(test, seconds) check_run(#test, test, (seconds))

#define CHECK_SUMMARY()                                                                            \
  (printf("%d passed, %d failed\n", check_passed, check_failed), check_failed ? 1 : 0)

#endif
