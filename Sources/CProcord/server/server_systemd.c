/*
 * A worker server under systemd (server_private.h): the listening socket
 * it may be given (socket activation), and what it says of itself
 * (Type=notify).
 */
#define _GNU_SOURCE
#include "server/server_private.h"
#include "base/base_private.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int procord_server_activated_socket(void) {
  const char *pid = getenv("LISTEN_PID");
  const char *count = getenv("LISTEN_FDS");
  if (!pid || !count || atol(pid) != (long)getpid() || atoi(count) < 1) return -1;
  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDS");
  unsetenv("LISTEN_FDNAMES");
  int fd = 3; /* SD_LISTEN_FDS_START */
  procord_fd_set_cloexec(fd);
  return fd;
}

/* systemd's Type=notify: READY=1 once listening (with the address),
   STOPPING=1 at a drain. Only procord_server_run's server speaks for the
   process: one embedded in a program leaves that to the program. */
void server_notify(server_t *s, const char *state) {
  if (!s->own_loop) return;
  const char *path = getenv("NOTIFY_SOCKET");
  if (!path || !*path || strlen(path) >= sizeof((struct sockaddr_un *)0)->sun_path) return;
  struct sockaddr_un address = {.sun_family = AF_UNIX};
  memcpy(address.sun_path, path, strlen(path));
  if (address.sun_path[0] == '@') address.sun_path[0] = 0; /* abstract namespace */
  socklen_t length = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
  char message[256];
  int n = snprintf(message, sizeof message, "%s\nMAINPID=%d", state, (int)getpid());
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  sendto(fd, message, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&address, length);
  close(fd);
}
