#define _GNU_SOURCE
/*
 * The version (procord/version.h): the macros agree with each other, and the
 * library says the version it was built as.
 */
#include "check.h"
#include "procord/version.h"

#include <stdio.h>

static void version_string_is_the_three_numbers(void) {
  char expected[32];
  snprintf(expected, sizeof expected, "%d.%d.%d", PROCORD_VERSION_MAJOR, PROCORD_VERSION_MINOR,
           PROCORD_VERSION_PATCH);
  CHECK(strcmp(PROCORD_VERSION_STRING, expected) == 0);
}

static void version_number_orders_the_three_numbers(void) {
  CHECK(PROCORD_VERSION_NUMBER ==
        PROCORD_VERSION_MAJOR * 10000 + PROCORD_VERSION_MINOR * 100 + PROCORD_VERSION_PATCH);
  CHECK(PROCORD_VERSION_MINOR < 100 && PROCORD_VERSION_PATCH < 100);
}

static void library_says_the_version_of_its_header(void) {
  CHECK(strcmp(procord_version(), PROCORD_VERSION_STRING) == 0);
  CHECK(procord_version_number() == PROCORD_VERSION_NUMBER);
}

int main(void) {
  RUN(version_string_is_the_three_numbers);
  RUN(version_number_orders_the_three_numbers);
  RUN(library_says_the_version_of_its_header);
  return CHECK_SUMMARY();
}
