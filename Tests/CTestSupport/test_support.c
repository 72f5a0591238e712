#define _GNU_SOURCE
#include "test_support.h"

#include <errno.h>
#include <sys/prctl.h>

int procord_test_become_subreaper(void) {
  return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0 ? 0 : -errno;
}
