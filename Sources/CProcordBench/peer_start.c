/*
 * peer_start.c: a peer process on one end of a connected pair (a UNIX
 * socketpair or a TCP loopback connection), and its end.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_private.h"

extern char **environ;

static int set_nodelay(int fd) {
  int on = 1;
  return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) < 0 ? -errno : 0;
}

/* fds[0]: the connecting end (the parent's), fds[1]: the accepted end. */
static int tcp_loopback_pair(int fds[2]) {
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = 0};
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  int error = 0, client = -1, server = -1;
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) return -errno;
  if (bind(listener, (struct sockaddr *)&address, sizeof address) < 0 || listen(listener, 1) < 0 ||
      getsockname(listener, (struct sockaddr *)&address, &length) < 0) {
    error = -errno;
    goto done;
  }
  client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (client < 0) {
    error = -errno;
    goto done;
  }
  /* Blocking: on loopback the handshake completes inside connect (the
     backlog holds the connection until accept4). */
  while (connect(client, (struct sockaddr *)&address, sizeof address) < 0) {
    if (errno == EINTR) continue; /* it goes on in the background: accept4 waits for it */
    error = -errno;
    goto done;
  }
  while ((server = accept4(listener, NULL, NULL, SOCK_CLOEXEC)) < 0) {
    if (errno == EINTR) continue;
    error = -errno;
    goto done;
  }
  if ((error = set_nodelay(client)) || (error = set_nodelay(server))) goto done;
  fds[0] = client;
  fds[1] = server;
  client = server = -1;
done:
  close(listener);
  if (client >= 0) close(client);
  if (server >= 0) close(server);
  return error;
}

static int open_pair(procord_bench_pair_kind_t kind, int fds[2]) {
  if (kind == PROCORD_BENCH_PAIR_TCP_LOOPBACK) return tcp_loopback_pair(fds);
  if (kind != PROCORD_BENCH_PAIR_UNIX_STREAM) return -EINVAL;
  return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0 ? -errno : 0;
}

/* posix_spawn with the child's end as descriptor 3, and nothing above it:
   not even what this program inherited without close-on-exec (as Procord
   does for its workers). */
static int spawn_with_fd(const char *program, const char *const *arguments, int fd, pid_t *pid) {
  /* dup2(3, 3) would keep close-on-exec on older C libraries: move it first. */
  int moved = -1;
  if (fd == PROCORD_BENCH_PEER_FD) {
    moved = fcntl(fd, F_DUPFD_CLOEXEC, PROCORD_BENCH_PEER_FD + 1);
    if (moved < 0) return -errno;
    fd = moved;
  }
  posix_spawn_file_actions_t actions;
  int error = posix_spawn_file_actions_init(&actions);
  if (!error) {
    error = posix_spawn_file_actions_adddup2(&actions, fd, PROCORD_BENCH_PEER_FD);
    if (!error)
      error = posix_spawn_file_actions_addclosefrom_np(&actions, PROCORD_BENCH_PEER_FD + 1);
    if (!error)
      error = posix_spawn(pid, program, &actions, NULL, (char *const *)arguments, environ);
    posix_spawn_file_actions_destroy(&actions);
  }
  if (moved >= 0) close(moved);
  return -error;
}

int bench_peer_start(procord_bench_pair_kind_t kind, const char *program,
                     const char *const *arguments, bench_peer_t *peer) {
  if (!program || !arguments || !arguments[0] || !peer) return -EINVAL;
  int fds[2];
  int error = open_pair(kind, fds);
  if (error) return error;
  error = spawn_with_fd(program, arguments, fds[1], &peer->pid);
  close(fds[1]);
  if (error) {
    close(fds[0]);
    return error;
  }
  peer->fd = fds[0];
  return 0;
}

int bench_peer_finish(bench_peer_t *peer, int error) {
  close(peer->fd);
  peer->fd = -1;
  if (error) kill(peer->pid, SIGKILL);
  int status = 0;
  int waited = bench_wait(peer->pid, &status);
  if (error) return error;
  if (waited) return waited;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -ECHILD;
}
