#define _GNU_SOURCE
#include "test_support.h"

#include <errno.h>
#include <sys/prctl.h>

int procord_test_become_subreaper(void) {
  return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0 ? 0 : -errno;
}

#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

int procord_test_wait_for_exit(int pid, int timeout_ms) {
  int fd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0) return -errno;
  struct pollfd p = {.fd = fd, .events = POLLIN};
  int r;
  while ((r = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR) {
  }
  int error = errno;
  close(fd);
  return r < 0 ? -error : r > 0;
}
