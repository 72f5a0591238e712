/*
 * Descriptor helpers (base_private.h): flags, the EINTR retries, and the
 * core's one write-all.
 */
#define _GNU_SOURCE
#include "base/base_private.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int procord_fd_set_nonblocking(int fd, int nonblocking) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) return -errno;
  int wanted = nonblocking ? flags | O_NONBLOCK : flags & ~O_NONBLOCK;
  if (wanted != flags && fcntl(fd, F_SETFL, wanted) < 0) return -errno;
  return 0;
}

int procord_fd_set_cloexec(int fd) {
  int flags = fcntl(fd, F_GETFD);
  if (flags < 0) return -errno;
  if (!(flags & FD_CLOEXEC) && fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) return -errno;
  return 0;
}

int procord_fd_is_socket(int fd) {
  struct stat status;
  return fstat(fd, &status) == 0 && S_ISSOCK(status.st_mode);
}

ssize_t procord_read_retrying(int fd, void *buffer, size_t size) {
  ssize_t n;
  while ((n = read(fd, buffer, size)) < 0 && errno == EINTR) {
  }
  return n;
}

ssize_t procord_write_retrying(int fd, const void *bytes, size_t size) {
  ssize_t n;
  while ((n = write(fd, bytes, size)) < 0 && errno == EINTR) {
  }
  return n;
}

int procord_poll_retrying(struct pollfd *descriptors, unsigned long count, int timeout_ms) {
  int n;
  while ((n = poll(descriptors, (nfds_t)count, timeout_ms)) < 0 && errno == EINTR) {
  }
  return n;
}

pid_t procord_waitpid_retrying(pid_t pid, int *status, int flags) {
  pid_t r;
  while ((r = waitpid(pid, status, flags)) < 0 && errno == EINTR) {
  }
  return r;
}

int procord_wait_for(int fd, short events, int timeout_ms) {
  struct pollfd p = {.fd = fd, .events = events};
  int r = procord_poll_retrying(&p, 1, timeout_ms > 0 ? timeout_ms : -1);
  if (r < 0) return -errno;
  return r == 0 ? PROCORD_ETIMEOUT : 0;
}

ssize_t procord_write_parts(int fd, int is_socket, struct iovec *parts, int count) {
  if (is_socket) {
    /* Never block in the send itself, so that the time limit applies even
       on a blocking socket (a server's client). */
    struct msghdr message = {.msg_iov = parts, .msg_iovlen = (size_t)count};
    return sendmsg(fd, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  int was_blocked = procord_sigpipe_block();
  ssize_t n = writev(fd, parts, count);
  int error = errno;
  procord_sigpipe_unblock(was_blocked, n < 0 && error == EPIPE);
  errno = error;
  return n;
}

int procord_write_all_parts(int fd, int is_socket, struct iovec *parts, int count, int timeout_ms,
                            size_t *unwritten) {
  while (count > 0) {
    ssize_t n = procord_write_parts(fd, is_socket, parts, count);
    if (n < 0) {
      int error = -errno;
      if (errno == EINTR) continue;
      if ((errno == EAGAIN || errno == EWOULDBLOCK) && timeout_ms >= 0)
        error = procord_wait_for(fd, POLLOUT, timeout_ms);
      if (!error) continue;
      if (unwritten)
        for (*unwritten = 0; count > 0; parts++, count--) *unwritten += parts->iov_len;
      return error;
    }
    while (count > 0 && (size_t)n >= parts->iov_len) {
      n -= (ssize_t)parts->iov_len;
      parts++;
      count--;
    }
    if (count > 0) {
      parts->iov_base = (unsigned char *)parts->iov_base + n;
      parts->iov_len -= (size_t)n;
    }
  }
  return 0;
}

int procord_write_all(int fd, int is_socket, const void *bytes, size_t length, int timeout_ms) {
  struct iovec part = {(void *)bytes, length};
  return procord_write_all_parts(fd, is_socket, &part, 1, timeout_ms, NULL);
}
