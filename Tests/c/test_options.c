#define _GNU_SOURCE
/*
 * Zero-initialized options mean the defaults: a C program that sets only
 * the fields it needs (`= {.program = ...}`) gets no descriptor 0 where it
 * meant none. And the core never prints: libevent's own messages go to the
 * server's log while one runs.
 */
#include "check.h"
#include "libevent_fixture.h"
#include "fixtures.h"
#include "server_fixture.h"
#include "procord/delegation.h"
#include "procord/error.h"
#include "procord/loop.h"
#include "procord/server.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

static procord_loop_t *loop;

/* ---- What this program writes on its stderr, for a while ---- */

typedef struct {
  int saved; /* our stderr, put back by stderr_release */
  int read_fd;
} stderr_capture_t;

static int stderr_capture(stderr_capture_t *c) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) return -1;
  fflush(stderr);
  c->saved = fcntl(2, F_DUPFD_CLOEXEC, 3);
  dup2(fds[1], 2);
  close(fds[1]);
  c->read_fd = fds[0];
  return c->saved >= 0 ? 0 : -1;
}

/* Puts our stderr back and returns what was written meanwhile (NUL-terminated in `text`). */
static void stderr_release(stderr_capture_t *c, char *text, size_t size) {
  dup2(c->saved, 2);
  close(c->saved);
  ssize_t n = read(c->read_fd, text, size - 1);
  text[n > 0 ? n : 0] = 0;
  close(c->read_fd);
}

/* ---- Spawn options ---- */

static void zero_stderr_fd_gives_the_worker_the_callers_stderr(void) {
  BEGIN();
  const char *arguments[] = {"sh", "-c",
                             "head -c 9 >/dev/null; echo worker-stderr >&2; printf 3V120", NULL};
  /* Only what is needed: stderr_fd stays 0. */
  procord_delegation_options_t options = {
      .task_name = "fact",
      .input = "5",
      .input_length = 1,
      .worker = {.program = "/bin/sh", .arguments = arguments},
  };
  stderr_capture_t capture;
  CHECK_EQ_INT(stderr_capture(&capture), 0);
  procord_delegation_t *d = NULL;
  int started = procord_delegate(loop, &options, &d);
  int finished = started == 0 && procord_delegation_wait(loop, &d, 1, 1, 10000) == 1;
  const procord_outcome_t *o = finished ? procord_delegation_outcome(d) : NULL;
  int answered =
      o && o->kind == PROCORD_OUTCOME_VALUE && o->length == 3 && memcmp(o->body, "120", 3) == 0;
  if (started == 0) procord_delegation_release(d);
  char written[256];
  stderr_release(&capture, written, sizeof written);
  CHECK_EQ_INT(started, 0);
  CHECK(answered);
  CHECK(strcmp(written, "worker-stderr\n") == 0);
  CHECK_NOTHING_LEFT();
}

/* ---- Server options ---- */

/* One connection, then stop. */
static int stop_after_a_connection(void *context) {
  (void)context;
  return 0;
}

static const procord_worker_task_t server_tasks[] = {{"double", fixture_task_double, NULL}};

/* Starts a server on a thread of its own (server_fixture.h) with only these
   options set, the rest staying 0: dont_fork, one task, the log, one
   connection, and `listen_fd` and `port`. */
static int server_start_on(thread_server_t *s, int listen_fd, int port) {
  thread_server_prepare(s, server_tasks, 1);
  s->options.keep_running = stop_after_a_connection;
  s->options.listen_fd = listen_fd;
  s->options.port = port;
  return thread_server_run(s);
}

static int server_start(thread_server_t *s, int listen_fd) {
  return server_start_on(s, listen_fd, 0);
}

static void zero_listen_fd_binds_a_socket_of_the_servers_own(void) {
  BEGIN();
  thread_server_t s;
  CHECK_EQ_INT(server_start(&s, 0), 0);
  int port = thread_server_port(&s);
  procord_delegation_options_t options = {.task_name = "double",
                                          .input = "21",
                                          .input_length = 2,
                                          .remote_host = "127.0.0.1",
                                          .remote_port = port};
  procord_delegation_t *d = NULL;
  int answered = 0;
  if (port > 0 && procord_delegate(loop, &options, &d) == 0) {
    if (procord_delegation_wait(loop, &d, 1, 1, 10000) == 1) {
      const procord_outcome_t *o = procord_delegation_outcome(d);
      answered =
          o->kind == PROCORD_OUTCOME_VALUE && o->length == 2 && memcmp(o->body, "42", 2) == 0;
    }
    procord_delegation_release(d);
  }
  int joined = thread_server_join(&s);
  if (!joined) fprintf(stderr, "    the server still runs; its log:\n%s", s.log);
  CHECK(port > 0);
  CHECK(answered);
  CHECK(joined);
  CHECK_EQ_INT(s.result, 0);
  CHECK(!strstr(s.log, "libevent"));
  CHECK_NOTHING_LEFT();
}

static void listen_fd_that_is_not_a_socket_fails_the_start_saying_why(void) {
  BEGIN();
  int fds[2];
  CHECK_EQ_INT(pipe2(fds, O_CLOEXEC), 0);
  thread_server_t s;
  CHECK_EQ_INT(server_start(&s, fds[0]), 0);
  int joined = thread_server_join(&s);
  close(fds[0]);
  close(fds[1]);
  CHECK(joined);
  CHECK_EQ_INT(s.result, -ENOTSOCK);
  CHECK(strstr(s.log, "cannot serve descriptor"));
  CHECK(strstr(s.log, "(listen_fd): Socket operation on non-socket"));
  CHECK_NOTHING_LEFT();
}

static void listen_fd_of_a_socket_that_does_not_listen_fails_the_start_saying_why(void) {
  BEGIN();
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  CHECK(fd >= 0);
  thread_server_t s;
  CHECK_EQ_INT(server_start(&s, fd), 0);
  int joined = thread_server_join(&s);
  close(fd);
  CHECK(joined);
  CHECK_EQ_INT(s.result, PROCORD_EINVAL);
  CHECK(strstr(s.log, "(listen_fd): a socket that does not listen"));
  CHECK_NOTHING_LEFT();
}

/* A port in use: the log says so, and what takes it over when it is only
   a stopped server's connections waiting out TIME_WAIT. */
static void port_in_use_fails_the_start_naming_reuse_address(void) {
  BEGIN();
  int taken = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in address = {.sin_family = AF_INET};
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  CHECK(taken >= 0 && bind(taken, (struct sockaddr *)&address, sizeof address) == 0 &&
        listen(taken, 1) == 0 && getsockname(taken, (struct sockaddr *)&address, &length) == 0);
  thread_server_t s;
  CHECK_EQ_INT(server_start_on(&s, 0, ntohs(address.sin_port)), 0);
  int joined = thread_server_join(&s);
  close(taken);
  CHECK(joined);
  CHECK_EQ_INT(s.result, -EADDRINUSE);
  CHECK(strstr(s.log, "Address already in use (another server has it"));
  CHECK(strstr(s.log, "--procord-reuse-address"));
  CHECK_NOTHING_LEFT();
}

static void libevent_messages_go_to_the_servers_log_not_to_stderr(void) {
  BEGIN();
  thread_server_t s;
  CHECK_EQ_INT(server_start(&s, 0), 0);
  int port = thread_server_port(&s);
  stderr_capture_t capture;
  int captured = stderr_capture(&capture) == 0;
  make_libevent_warn();
  char written[512] = "";
  if (captured) stderr_release(&capture, written, sizeof written);
  int logged = thread_server_logged(&s, "libevent: ");
  if (port > 0) knock(port);
  int joined = thread_server_join(&s);
  CHECK(port > 0);
  CHECK(captured);
  CHECK(joined);
  CHECK(logged);
  CHECK(strcmp(written, "") == 0);
  CHECK_NOTHING_LEFT();
}

static void keep_last_line(void *context, procord_log_level_t level, const char *message) {
  (void)level;
  snprintf(context, 256, "%s", message);
}

/* A server with neither a worker program nor dont_fork, or dont_fork
   without tasks: refused at once, and the log says what to set. */
static void server_missing_its_workers_fails_the_start_saying_what_to_set(void) {
  BEGIN();
  char said[256] = "";
  procord_server_options_t options = {.log = keep_last_line, .context = said};
  CHECK_EQ_INT(procord_server_run(&options), PROCORD_EINVAL);
  CHECK_CONTAINS(said, "no worker program: set options.worker");
  said[0] = 0;
  options.dont_fork = 1;
  CHECK_EQ_INT(procord_server_run(&options), PROCORD_EINVAL);
  CHECK_CONTAINS(said, "dont_fork without tasks");
  CHECK_NOTHING_LEFT();
}

int main(void) {
  if (procord_loop_new(&loop) != 0 || procord_loop_start_thread(loop) != 0) {
    fprintf(stderr, "cannot start the loop\n");
    return 1;
  }
  RUN(zero_stderr_fd_gives_the_worker_the_callers_stderr);
  RUN(zero_listen_fd_binds_a_socket_of_the_servers_own);
  RUN(listen_fd_that_is_not_a_socket_fails_the_start_saying_why);
  RUN(listen_fd_of_a_socket_that_does_not_listen_fails_the_start_saying_why);
  RUN(port_in_use_fails_the_start_naming_reuse_address);
  RUN(libevent_messages_go_to_the_servers_log_not_to_stderr);
  RUN(server_missing_its_workers_fails_the_start_saying_what_to_set);
  procord_loop_free(loop);
  return CHECK_SUMMARY();
}
