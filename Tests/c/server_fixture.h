/*
 * A worker server for the C tests to talk to, run in one of two ways.
 *
 * On a thread of the test (thread_server_*): procord_server_run with
 * dont_fork, for options only the C API has (stats, keep_running, listen_fd,
 * max_buffered_task_bytes). Its state is all in the caller's
 * thread_server_t: the options, its figures, its log (the log callback
 * appends every line, under its lock) and whether it ended. The server owns
 * its sockets and closes them as it ends; thread_server_join waits for that.
 *
 * As a child process (start_server ... stop_server): this very program run
 * with --procord-server on 127.0.0.1 and an ephemeral port, its workers being
 * this program again (the test's main starts with fixture_start, which
 * serves as a worker through procord_worker_main and fills in self_path).
 * The server's stderr comes through a pipe: its log, read into server.log
 * whenever a helper waits (read_log, logged_within, CHECK_LOGGED). Its port
 * comes from its sd_notify message (READY=1, STATUS=listening on
 * 127.0.0.1:PORT) on a datagram socket of ours named in its NOTIFY_SOCKET:
 * an abstract one, or a file in server.notify_directory when a test sets it.
 * One server at a time; its state is the global `server`:
 * - server.child: from procord_spawn; its pid, its pidfd (-1 where
 *   pidfd_open is missing), its stdout and stdin (read_fd, write_fd: unused,
 *   kept open while it runs). Ours to close: stop_server closes read_fd and
 *   write_fd, and the reap (server_exits_within) the pidfd.
 * - server.log_fd (the read end of the log pipe; the write end is closed in
 *   ours once the server has it) and server.notify_fd: ours, closed by
 *   stop_server, which also removes the notify socket's file, if any.
 * - server.running: started and not yet reaped. A test that reaps the server
 *   itself (server_exits_within) closes read_fd and write_fd and clears it.
 * - server.quiet: set by a test that expects the server not to start or not
 *   to exit cleanly: start_server and stop_server say nothing of it then.
 * A test that started a server ends it with stop_server, whatever the
 * outcome: it stops what is left (SIGTERM, SIGKILL after its time) and
 * closes every descriptor above (start_server does so itself when it fails).
 *
 * Include after check.h, with _GNU_SOURCE defined.
 */
#ifndef PROCORD_TEST_SERVER_FIXTURE_H
#define PROCORD_TEST_SERVER_FIXTURE_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fixtures.h"
#include "procord/server.h"
#include "procord/spawn.h"

extern char **environ;

/* ---- On a thread of the test ---- */

typedef struct {
  procord_server_options_t options;
  procord_server_stats_t stats; /* where options.stats points, when a test sets it */
  pthread_t thread;
  int result; /* procord_server_run's */
  int stop;   /* read by keep_running, set by thread_server_stop (atomically) */
  pthread_mutex_t lock;
  pthread_cond_t logged; /* broadcast on each line logged, and at the end */
  char log[16384];
  int ended;
  int port;              /* from on_listening */
  char listening_on[80]; /* the address on_listening gave */
} thread_server_t;

static inline void thread_server_record_log(void *context, procord_log_level_t level,
                                            const char *message) {
  (void)level;
  thread_server_t *s = context;
  pthread_mutex_lock(&s->lock);
  size_t used = strlen(s->log);
  snprintf(s->log + used, sizeof s->log - used, "%s\n", message);
  pthread_cond_broadcast(&s->logged);
  pthread_mutex_unlock(&s->lock);
}

/* The server's on_listening: where it listens, as the log line says too. */
static inline void thread_server_record_listening(void *context, const char *address, int port) {
  thread_server_t *s = context;
  pthread_mutex_lock(&s->lock);
  snprintf(s->listening_on, sizeof s->listening_on, "%s", address);
  s->port = port;
  pthread_cond_broadcast(&s->logged);
  pthread_mutex_unlock(&s->lock);
}

/* Keeps serving until thread_server_stop. */
static inline int thread_server_keep_running(void *context) {
  thread_server_t *s = context;
  return !__atomic_load_n(&s->stop, __ATOMIC_SEQ_CST);
}

static inline void *thread_server_main(void *argument) {
  thread_server_t *s = argument;
  s->result = procord_server_run(&s->options);
  pthread_mutex_lock(&s->lock);
  s->ended = 1;
  pthread_cond_broadcast(&s->logged);
  pthread_mutex_unlock(&s->lock);
  return NULL;
}

/* Fills in what every such server has: dont_fork, `tasks`, the log, and
   keep_running until thread_server_stop. The rest of `s->options` stays 0
   for the caller to set (options.stats = &s->stats for figures); then
   thread_server_run or thread_server_start. */
static inline void thread_server_prepare(thread_server_t *s, const procord_worker_task_t *tasks,
                                         size_t task_count) {
  memset(s, 0, sizeof *s);
  pthread_mutex_init(&s->lock, NULL);
  pthread_cond_init(&s->logged, NULL);
  s->options.dont_fork = 1;
  s->options.tasks = tasks;
  s->options.task_count = task_count;
  s->options.log = thread_server_record_log;
  s->options.keep_running = thread_server_keep_running;
  s->options.on_listening = thread_server_record_listening;
  s->options.context = s;
}

/* Starts its thread: 0, or pthread_create's error. */
static inline int thread_server_run(thread_server_t *s) {
  return pthread_create(&s->thread, NULL, thread_server_main, s);
}

/* Waits up to 10 s for `text` in the log, or the end of the server; true if logged. */
static inline int thread_server_logged(thread_server_t *s, const char *text) {
  struct timespec limit;
  clock_gettime(CLOCK_REALTIME, &limit);
  limit.tv_sec += 10;
  pthread_mutex_lock(&s->lock);
  int timed_out = 0;
  while (!strstr(s->log, text) && !s->ended && !timed_out)
    timed_out = pthread_cond_timedwait(&s->logged, &s->lock, &limit) != 0;
  int found = strstr(s->log, text) != NULL;
  pthread_mutex_unlock(&s->lock);
  return found;
}

/* The port on_listening gave (waiting up to 10 s, or for the end of the
   server), or 0; the log's "listening on" line must name the same address. */
static inline int thread_server_port(thread_server_t *s) {
  struct timespec limit;
  clock_gettime(CLOCK_REALTIME, &limit);
  limit.tv_sec += 10;
  pthread_mutex_lock(&s->lock);
  int timed_out = 0;
  while (!s->port && !s->ended && !timed_out)
    timed_out = pthread_cond_timedwait(&s->logged, &s->lock, &limit) != 0;
  int port = s->port;
  char expected[128];
  snprintf(expected, sizeof expected, "listening on %s ", s->listening_on);
  pthread_mutex_unlock(&s->lock);
  return port > 0 && thread_server_logged(s, expected) ? port : 0;
}

/* Starts it and returns its port, or 0 (its thread then joined). */
static inline int thread_server_start(thread_server_t *s) {
  if (thread_server_run(s) != 0) return 0;
  int port = thread_server_port(s);
  if (port <= 0) {
    __atomic_store_n(&s->stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(s->thread, NULL);
  }
  return port;
}

/* Waits up to 10 s for the server's thread to end; true if it did (its
   lock is gone then). */
static inline int thread_server_join(thread_server_t *s) {
  struct timespec limit;
  clock_gettime(CLOCK_REALTIME, &limit);
  limit.tv_sec += 10;
  if (pthread_timedjoin_np(s->thread, NULL, &limit) != 0) return 0;
  pthread_cond_destroy(&s->logged);
  pthread_mutex_destroy(&s->lock);
  return 1;
}

/* Connects to 127.0.0.1:port and closes: a server asks keep_running after it. */
static inline void knock(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0) {
    connect(fd, (struct sockaddr *)&address, sizeof address);
    close(fd);
  }
}

/* Stops it (keep_running says no after the next connection's end: a knock)
   and joins its thread within 10 s; true if it ended, with 0. */
static inline int thread_server_stop(thread_server_t *s, int port) {
  __atomic_store_n(&s->stop, 1, __ATOMIC_SEQ_CST);
  knock(port);
  if (!thread_server_join(s)) {
    fprintf(stderr, "    the server's thread did not end; its log:\n%.4000s\n", s->log);
    return 0;
  }
  return s->result == 0;
}

/* ---- As a child process: this program run with --procord-server ---- */

/* This program's path (fixture_start fills it in): the server started. */
static char self_path[4096];

typedef struct {
  procord_child_t child;
  int running;
  int quiet;
  const char
      *notify_directory; /* set by a test: the notify socket is a file there; NULL: abstract */
  int notify_fd;
  char notify_socket[108]; /* its NOTIFY_SOCKET: "@NAME" (abstract) or a file's path */
  int log_fd;
  char log[65536];
  size_t log_length;
  int port;
} server_t;

static server_t server = {.notify_fd = -1, .log_fd = -1};

/* Reads what the server logged, waiting up to `timeout_ms`; 0 at the end of its log. */
static inline int read_log(int timeout_ms) {
  if (server.log_fd < 0) return 0;
  struct pollfd p = {.fd = server.log_fd, .events = POLLIN};
  if (poll(&p, 1, timeout_ms) <= 0) return 1;
  /* Once the buffer is full, the rest is read and dropped. */
  char sink[4096];
  size_t room = sizeof server.log - 1 - server.log_length;
  char *into = room ? server.log + server.log_length : sink;
  ssize_t n = read(server.log_fd, into, room ? room : sizeof sink);
  if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) return 0;
  if (n > 0 && room) {
    server.log_length += (size_t)n;
    server.log[server.log_length] = 0;
  }
  return 1;
}

/* Takes what the server logged so far, without waiting. */
static inline void read_log_now(void) {
  while (server.log_fd >= 0) {
    struct pollfd p = {.fd = server.log_fd, .events = POLLIN};
    if (poll(&p, 1, 0) <= 0 || !read_log(0)) return;
  }
}

/* Waits up to `timeout_ms` for `text` in the server's log. */
static inline int logged_within(const char *text, int timeout_ms) {
  long long end = now_ms() + timeout_ms;
  while (!strstr(server.log, text)) {
    long long left = end - now_ms();
    if (left <= 0 || !read_log((int)left)) return strstr(server.log, text) != NULL;
  }
  return 1;
}

/* The server said `text` in its log (`found`, from logged_within, say);
   shows the log when not. */
#define CHECK_LOGGED(found, text)                                                                  \
  do {                                                                                             \
    if (!(found)) {                                                                                \
      fprintf(stderr, "    %s:%d: the server did not log \"%s\"; its log:\n%.4000s\n", __FILE__,   \
              __LINE__, (text), server.log);                                                       \
      check_current_failed = 1;                                                                    \
      return;                                                                                      \
    }                                                                                              \
  } while (0)

/* Waits for the server's READY=1 and reads its port from STATUS=listening on 127.0.0.1:PORT. */
static inline int await_ready(int timeout_ms) {
  long long end = now_ms() + timeout_ms;
  for (;;) {
    long long left = end - now_ms();
    if (left <= 0) return -1;
    struct pollfd p[3] = {{.fd = server.notify_fd, .events = POLLIN},
                          {.fd = server.log_fd, .events = POLLIN},
                          {.fd = server.child.pidfd, .events = POLLIN}};
    if (poll(p, server.child.pidfd >= 0 ? 3 : 2, (int)left) < 0 && errno != EINTR) return -1;
    if (p[1].revents) read_log(0);
    if (p[2].revents) return -1; /* it ended before it was ready */
    if (!p[0].revents) continue;
    char message[512];
    ssize_t n = recv(server.notify_fd, message, sizeof message - 1, 0);
    if (n <= 0) continue;
    message[n] = 0;
    static const char status[] = "STATUS=listening on 127.0.0.1:";
    const char *at = strstr(message, status);
    if (strstr(message, "READY=1") && at) {
      server.port = atoi(at + sizeof status - 1);
      return server.port > 0 ? 0 : -1;
    }
  }
}

/* Waits up to `timeout_ms` for the server to exit (reading its log
   meanwhile); kills it if it does not. Reaps it. */
static inline int server_exits_within(int timeout_ms, int *status) {
  long long end = now_ms() + timeout_ms;
  int exited = 0;
  while (!exited) {
    long long left = end - now_ms();
    if (left <= 0) break;
    if (server.child.pidfd >= 0) {
      struct pollfd p[2] = {{.fd = server.child.pidfd, .events = POLLIN},
                            {.fd = server.log_fd, .events = POLLIN}};
      if (poll(p, 2, (int)left) < 0 && errno != EINTR) break;
      if (p[1].revents) read_log(0);
      exited = p[0].revents != 0;
    } else {
      /* No pidfd: whether it has exited, leaving it to be reaped below. */
      siginfo_t info;
      memset(&info, 0, sizeof info);
      exited = waitid(P_PID, (id_t)server.child.pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
               info.si_pid == server.child.pid;
      if (!exited) read_log(10);
    }
  }
  if (!exited) procord_child_kill(&server.child, SIGKILL);
  procord_child_reap(&server.child, status);
  return exited;
}

/* Stops the server with SIGTERM and reaps it; returns 1 when it exited with 0
   within `timeout_ms` and its log has no sanitizer report. Closes all of ours. */
static inline int stop_server_within(int timeout_ms) {
  int clean = 0;
  if (server.running) {
    procord_child_kill(&server.child, SIGTERM);
    int status = 0;
    int exited = server_exits_within(timeout_ms, &status);
    clean = exited && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!clean && !server.quiet)
      fprintf(stderr, "    the server %s (status %d); its log:\n%.4000s\n",
              exited ? "did not exit cleanly" : "was still running after SIGTERM", status,
              server.log);
    close(server.child.read_fd);
    close(server.child.write_fd);
    server.running = 0;
  }
  /* Its log ends when the server and its workers are gone. */
  long long end = now_ms() + 5000;
  while (server.log_fd >= 0 && now_ms() < end && read_log((int)(end - now_ms()))) {
  }
  /* Under the sanitizers, the server and its workers are sanitized too: any report fails. */
  if (clean && strstr(server.log, "Sanitizer")) {
    if (!server.quiet)
      fprintf(stderr, "    the server's log has a sanitizer report:\n%.4000s\n", server.log);
    clean = 0;
  }
  if (server.log_fd >= 0) close(server.log_fd);
  if (server.notify_fd >= 0) close(server.notify_fd);
  if (server.notify_socket[0] && server.notify_socket[0] != '@') unlink(server.notify_socket);
  server.log_fd = server.notify_fd = -1;
  return clean;
}

static inline int stop_server(void) { return stop_server_within(5000); }

/* Makes and binds the socket the server's READY=1 comes to: 0 or -1. */
static inline int open_notify_socket(void) {
  struct sockaddr_un address = {.sun_family = AF_UNIX};
  socklen_t length = sizeof address;
  if (server.notify_directory) {
    /* A file, made anew for each server (stop_server removes it). */
    int n = snprintf(server.notify_socket, sizeof server.notify_socket, "%s/notify",
                     server.notify_directory);
    unlink(server.notify_socket);
    if (n < 0 || (size_t)n >= sizeof address.sun_path) return -1;
    memcpy(address.sun_path, server.notify_socket, (size_t)n + 1);
  } else {
    /* Abstract, named for this program and this server of it: no file to remove. */
    static int started;
    snprintf(server.notify_socket, sizeof server.notify_socket, "@procord-test-server-%d-%d",
             (int)getpid(), ++started);
    size_t name = strlen(server.notify_socket + 1);
    memcpy(address.sun_path + 1, server.notify_socket + 1, name);
    length = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + name);
  }
  server.notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  return server.notify_fd >= 0 && bind(server.notify_fd, (struct sockaddr *)&address, length) == 0
             ? 0
             : -1;
}

/*
 * Starts this program as a worker server on 127.0.0.1 and an ephemeral
 * port, with the options of `extra` (NULL-terminated, or NULL) and, in its
 * environment, `variable` (NAME=VALUE, or NULL); waits until it is ready.
 * 0, or -1 or -errno with nothing of it left (its log kept in server.log).
 */
static inline int start_server(const char *const *extra, const char *variable) {
  server.log[0] = 0;
  server.log_length = 0;
  server.port = 0;
  server.running = 0;
  server.notify_socket[0] = 0;
  int log_pipe[2] = {-1, -1};
  if (open_notify_socket() != 0 || pipe2(log_pipe, O_CLOEXEC) != 0) {
    stop_server();
    return -1;
  }
  server.log_fd = log_pipe[0];
  const char *arguments[48];
  size_t n = 0;
  arguments[n++] = self_path;
  arguments[n++] = "--procord-server";
  arguments[n++] = "--procord-hostname";
  arguments[n++] = "127.0.0.1";
  arguments[n++] = "--procord-port";
  arguments[n++] = "0";
  for (; extra && *extra && n < 47; extra++) arguments[n++] = *extra;
  arguments[n] = NULL;
  /* Ours, without what would make it a systemd service of another's, and with our notify socket. */
  size_t count = 0;
  while (environ[count]) count++;
  const char **environment = calloc(count + 3, sizeof *environment);
  char notify[160];
  snprintf(notify, sizeof notify, "NOTIFY_SOCKET=%s", server.notify_socket);
  size_t e = 0;
  for (size_t i = 0; environment && i < count; i++)
    if (strncmp(environ[i], "NOTIFY_SOCKET=", 14) != 0 && strncmp(environ[i], "LISTEN_", 7) != 0)
      environment[e++] = environ[i];
  if (environment) {
    environment[e++] = notify;
    if (variable) environment[e++] = variable;
  }
  procord_spawn_options_t options = {.program = self_path,
                                     .arguments = arguments,
                                     .environment = environment,
                                     .channel = PROCORD_CHANNEL_STDIO,
                                     .stderr_fd = log_pipe[1]};
  int spawned = environment ? procord_spawn(&options, &server.child) : -ENOMEM;
  free(environment);
  close(log_pipe[1]);
  if (spawned != 0) {
    stop_server();
    return spawned;
  }
  server.running = 1;
  if (await_ready(10000) != 0) {
    if (!server.quiet)
      fprintf(stderr, "    the server did not say it was ready; its log:\n%.4000s\n", server.log);
    stop_server();
    return -1;
  }
  return 0;
}

#endif
