#define _GNU_SOURCE
#include "test_support.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

int procord_test_become_subreaper(void) {
  return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0 ? 0 : -errno;
}

int procord_test_limit_descriptors(int pid, unsigned long limit) {
  struct rlimit wanted = {(rlim_t)limit, (rlim_t)limit};
  return prlimit(pid, RLIMIT_NOFILE, &wanted, NULL) == 0 ? 0 : -errno;
}

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

/* Milliseconds on the monotonic clock. */
static long long now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Waits until `fd` has one of `events`, until `deadline` (ms, monotonic).
   Returns 1, 0 on timeout, or -errno. */
static int wait_until(int fd, short events, long long deadline) {
  for (;;) {
    long long left = deadline - now_ms();
    if (left < 0) left = 0;
    struct pollfd p = {.fd = fd, .events = events};
    int r = poll(&p, 1, (int)left);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -errno;
    return r > 0;
  }
}

int procord_test_notify_socket(const char *path) {
  struct sockaddr_un address = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof address.sun_path) return -ENAMETOOLONG;
  strcpy(address.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  unlink(path);
  if (bind(fd, (struct sockaddr *)&address, sizeof address) < 0) {
    int error = errno;
    close(fd);
    return -error;
  }
  return fd;
}

int procord_test_receive(int fd, char *buffer, size_t size, int timeout_ms) {
  if (size == 0) return -EINVAL;
  int ready = wait_until(fd, POLLIN, now_ms() + timeout_ms);
  if (ready < 0) return ready;
  if (ready == 0) return -ETIMEDOUT;
  ssize_t n;
  while ((n = recv(fd, buffer, size - 1, MSG_DONTWAIT)) < 0 && errno == EINTR) {
  }
  if (n < 0) return -errno;
  buffer[n] = 0;
  return (int)n;
}

static struct sockaddr_in loopback(int port) {
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return address;
}

int procord_test_listen(int family, int backlog, int *port) {
  struct sockaddr_storage address = {0};
  socklen_t length;
  if (family == AF_INET) {
    struct sockaddr_in v4 = loopback(0);
    memcpy(&address, &v4, sizeof v4);
    length = sizeof v4;
  } else if (family == AF_INET6) {
    struct sockaddr_in6 v6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    memcpy(&address, &v6, sizeof v6);
    length = sizeof v6;
  } else {
    return -EAFNOSUPPORT;
  }
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  if (bind(fd, (struct sockaddr *)&address, length) < 0 || listen(fd, backlog) < 0 ||
      getsockname(fd, (struct sockaddr *)&address, &length) < 0) {
    int error = errno;
    close(fd);
    return -error;
  }
  if (port) {
    *port = family == AF_INET ? ntohs(((struct sockaddr_in *)&address)->sin_port)
                              : ntohs(((struct sockaddr_in6 *)&address)->sin6_port);
  }
  return fd;
}

int procord_test_listen_loopback(int *port) { return procord_test_listen(AF_INET, 64, port); }

int procord_test_connect_pending(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  struct sockaddr_in address = loopback(port);
  if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0 && errno != EINPROGRESS &&
      errno != EAGAIN) {
    int error = errno;
    close(fd);
    return -error;
  }
  return fd;
}

int procord_test_free_port(void) {
  int port = 0;
  int fd = procord_test_listen_loopback(&port);
  if (fd < 0) return fd;
  close(fd);
  return port;
}

int procord_test_connect_loopback(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  struct sockaddr_in address = loopback(port);
  int r;
  while ((r = connect(fd, (struct sockaddr *)&address, sizeof address)) < 0 && errno == EINTR) {
  }
  if (r < 0) {
    int error = errno;
    close(fd);
    return -error;
  }
  return fd;
}

int procord_test_accept(int listen_fd, int timeout_ms) {
  int ready = wait_until(listen_fd, POLLIN, now_ms() + timeout_ms);
  if (ready < 0) return ready;
  if (ready == 0) return -ETIMEDOUT;
  int fd;
  while ((fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC)) < 0 && errno == EINTR) {
  }
  return fd < 0 ? -errno : fd;
}

int procord_test_write_all(int fd, const void *bytes, size_t length) {
  const char *next = bytes;
  while (length > 0) {
    ssize_t n = send(fd, next, length, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    next += n;
    length -= (size_t)n;
  }
  return 0;
}

long procord_test_read(int fd, void *buffer, size_t size, int timeout_ms, size_t *partial) {
  long long deadline = now_ms() + timeout_ms;
  size_t filled = 0;
  if (partial) *partial = 0;
  while (filled < size) {
    int ready = wait_until(fd, POLLIN, deadline);
    if (ready < 0) return ready;
    if (ready == 0) {
      if (partial) *partial = filled;
      return -ETIMEDOUT;
    }
    ssize_t n = recv(fd, (char *)buffer + filled, size - filled, MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) return -errno;
    if (n == 0) break;
    filled += (size_t)n;
  }
  return (long)filled;
}

int procord_test_shutdown_write(int fd) {
  return shutdown(fd, SHUT_WR) == 0 ? 0 : -errno;
}
