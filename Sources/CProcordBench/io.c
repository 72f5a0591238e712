/* io.c: whole reads and writes, and waiting for a child, through EINTR. */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_private.h"

ssize_t bench_read_full(int fd, void *buffer, size_t length) {
  unsigned char *bytes = buffer;
  size_t done = 0;
  while (done < length) {
    ssize_t n = read(fd, bytes + done, length - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) break;
    done += (size_t)n;
  }
  return (ssize_t)done;
}

int bench_write_full(int fd, const void *buffer, size_t length) {
  const unsigned char *bytes = buffer;
  int is_socket = 1;
  while (length > 0) {
    ssize_t n = is_socket ? send(fd, bytes, length, MSG_NOSIGNAL) : write(fd, bytes, length);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOTSOCK && is_socket) {
        is_socket = 0;
        continue;
      }
      return -errno;
    }
    bytes += n;
    length -= (size_t)n;
  }
  return 0;
}

int bench_wait(pid_t pid, int *status) {
  while (waitpid(pid, status, 0) < 0)
    if (errno != EINTR) return -errno;
  return 0;
}
