/*
 * notify.c: systemd's readiness protocol, the receiving end: where a worker
 * server (started with NOTIFY_SOCKET) says it listens, and on which port.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "bench_private.h"

#define LISTENING "STATUS=listening on "

/* Removes the last component of `path` in place: the directory remains. */
static void cut_to_directory(char *path) {
  char *slash = strrchr(path, '/');
  if (slash) *slash = 0;
}

int procord_bench_notify_open(char *path, size_t path_size) {
  struct sockaddr_un address = {.sun_family = AF_UNIX};
  char directory[] = "/tmp/procord-bench-XXXXXX";
  const size_t needed = sizeof directory - 1 + sizeof "/notify";
  if (!path || path_size < needed) return -ENAMETOOLONG;
  _Static_assert(sizeof directory - 1 + sizeof "/notify" <= sizeof address.sun_path,
                 "the path fits a socket address");
  if (!mkdtemp(directory)) return -errno;
  snprintf(address.sun_path, sizeof address.sun_path, "%s/notify", directory);
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || bind(fd, (struct sockaddr *)&address, sizeof address) < 0) {
    int error = -errno;
    if (fd >= 0) close(fd);
    unlink(address.sun_path);
    rmdir(directory);
    return error;
  }
  snprintf(path, path_size, "%s", address.sun_path);
  return fd;
}

/* The port after the last ':' of the address at `text` (ending at a line
   end), or -EPROTO. */
static int parse_port(const char *text) {
  size_t length = strcspn(text, "\n");
  const char *colon = NULL;
  for (size_t i = 0; i < length; i++)
    if (text[i] == ':') colon = text + i;
  if (!colon || colon + 1 >= text + length) return -EPROTO;
  long port = 0;
  for (const char *p = colon + 1; p < text + length; p++) {
    if (*p < '0' || *p > '9' || port > 65535) return -EPROTO;
    port = port * 10 + (*p - '0');
  }
  return port >= 1 && port <= 65535 ? (int)port : -EPROTO;
}

int procord_bench_notify_wait_port(int fd, int timeout_ms) {
  uint64_t deadline =
      procord_bench_now_ns() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms) * 1000000u;
  for (;;) {
    int wait_ms = -1;
    if (timeout_ms >= 0) {
      uint64_t now = procord_bench_now_ns();
      if (now >= deadline) return -ETIMEDOUT;
      wait_ms = (int)((deadline - now + 999999) / 1000000);
    }
    struct pollfd readable = {.fd = fd, .events = POLLIN};
    int ready = poll(&readable, 1, wait_ms);
    if (ready < 0 && errno != EINTR) return -errno;
    if (ready <= 0) continue; /* interrupted, or the time ran out (checked above) */
    char message[1024];
    ssize_t n = recv(fd, message, sizeof message - 1, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      return -errno;
    }
    message[n] = 0;
    const char *status = strstr(message, LISTENING);
    if (status) return parse_port(status + strlen(LISTENING));
  }
}

void procord_bench_notify_close(int fd, const char *path) {
  if (fd >= 0) close(fd);
  if (!path) return;
  unlink(path);
  char directory[sizeof((struct sockaddr_un *)0)->sun_path];
  if (snprintf(directory, sizeof directory, "%s", path) >= (int)sizeof directory) return;
  cut_to_directory(directory);
  if (directory[0]) rmdir(directory);
}
