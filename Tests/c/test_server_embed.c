#define _GNU_SOURCE
/*
 * A worker server embedded in a C program (procord/server.h):
 * procord_server_start on the program's loop, beside its delegations, the
 * address it bound, procord_server_stop (graceful or now, from another
 * thread or from the loop's own), on_stopped, procord_server_wait and
 * procord_server_free, two servers on one loop, a loop freed under a server,
 * signals, and libevent's log routed to the newest server.
 *
 * The servers run on this program's loop (fixture_start: a thread of its
 * own), their workers being this program again (--procord-worker
 * --procord-handoff-fd 3); their clients are delegations of the same loop
 * (remote_host 127.0.0.1, the server's port). Every test ends by checking
 * that no child process is left and that the number of open descriptors is
 * back to what it was.
 */
#include "check.h"
#include "libevent_fixture.h"
#include "fixtures.h"
#include "server_fixture.h"

#include "procord/delegation.h"
#include "procord/error.h"
#include "procord/log.h"
#include "procord/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static const procord_worker_task_t tasks[] = {
    {"echo", fixture_task_echo, NULL},
    {"announce-then-sleep", fixture_task_announce_then_sleep, NULL},
};
#define TASK_COUNT (sizeof tasks / sizeof tasks[0])

/* The tests' loop (fixture_start), running on a thread of its own. */
static procord_loop_t *loop;

/* ---- A server embedded in this program, and what its callbacks saw ---- */

typedef struct {
  procord_server_t *server;
  procord_server_options_t options;
  const char *arguments[5];
  pthread_mutex_t lock;
  pthread_cond_t changed; /* broadcast by every callback */
  char log[16384];
  char listening_on[80];
  int listening_port;
  int stopped_calls;
  int stopped_on_loop_thread; /* on_stopped ran on the loop's thread */
  int free_in_on_stopped;     /* on_stopped frees the server */
} embedded_t;

static void record_log(void *context, procord_log_level_t level, const char *message) {
  (void)level;
  embedded_t *e = context;
  pthread_mutex_lock(&e->lock);
  size_t used = strlen(e->log);
  snprintf(e->log + used, sizeof e->log - used, "%s\n", message);
  pthread_cond_broadcast(&e->changed);
  pthread_mutex_unlock(&e->lock);
}

static void record_listening(void *context, const char *address, int port) {
  embedded_t *e = context;
  pthread_mutex_lock(&e->lock);
  snprintf(e->listening_on, sizeof e->listening_on, "%s", address);
  e->listening_port = port;
  pthread_mutex_unlock(&e->lock);
}

static void record_stopped(void *context) {
  embedded_t *e = context;
  int on_loop = procord_loop_is_current_thread(loop);
  if (e->free_in_on_stopped) {
    procord_server_free(e->server);
    e->server = NULL;
  }
  pthread_mutex_lock(&e->lock);
  e->stopped_calls++;
  e->stopped_on_loop_thread = on_loop;
  pthread_cond_broadcast(&e->changed);
  pthread_mutex_unlock(&e->lock);
}

/* Options for a server on 127.0.0.1, an ephemeral port, one worker kept
   warm, its workers this program; the callbacks record into `e`. */
static void embedded_prepare(embedded_t *e) {
  memset(e, 0, sizeof *e);
  pthread_mutex_init(&e->lock, NULL);
  pthread_cond_init(&e->changed, NULL);
  e->arguments[0] = self_path;
  e->arguments[1] = "--procord-worker";
  e->arguments[2] = "--procord-handoff-fd";
  e->arguments[3] = "3";
  procord_server_options_init(&e->options);
  e->options.hostname = "127.0.0.1";
  e->options.max_simultaneous_tasks = 2;
  e->options.prestarted_workers = 1;
  e->options.worker = (procord_spawn_options_t){.program = self_path, .arguments = e->arguments};
  e->options.log = record_log;
  e->options.on_listening = record_listening;
  e->options.on_stopped = record_stopped;
  e->options.context = e;
}

static void embedded_destroy(embedded_t *e) {
  pthread_cond_destroy(&e->changed);
  pthread_mutex_destroy(&e->lock);
}

static int stopped_calls(embedded_t *e) {
  pthread_mutex_lock(&e->lock);
  int calls = e->stopped_calls;
  pthread_mutex_unlock(&e->lock);
  return calls;
}

/* Waits up to 10 s for on_stopped; true once it was called. */
static int on_stopped_within_10_s(embedded_t *e) {
  struct timespec limit;
  clock_gettime(CLOCK_REALTIME, &limit);
  limit.tv_sec += 10;
  pthread_mutex_lock(&e->lock);
  int timed_out = 0;
  while (!e->stopped_calls && !timed_out)
    timed_out = pthread_cond_timedwait(&e->changed, &e->lock, &limit) != 0;
  int called = e->stopped_calls > 0;
  pthread_mutex_unlock(&e->lock);
  return called;
}

static int logged(embedded_t *e, const char *text) {
  pthread_mutex_lock(&e->lock);
  int found = strstr(e->log, text) != NULL;
  pthread_mutex_unlock(&e->lock);
  return found;
}

static int port_of(const procord_server_t *server) {
  int port = 0;
  return procord_server_address(server, NULL, 0, &port) == 0 ? port : 0;
}

/* ---- Clients: delegations of the same loop ---- */

typedef struct {
  pthread_mutex_t lock;
  pthread_cond_t changed;
  int started; /* the task said "started" */
  /* Set to stop `server` from the print callback, on the loop's thread:
     how, what the stop returned, and errno of a connection tried right
     after it. */
  procord_server_t *server;
  procord_server_stop_how_t how;
  int stop_result;
  int connect_errno;
} watch_t;

static int connect_errno(int port);

static void on_print(procord_delegation_t *d, unsigned char destination, const unsigned char *text,
                     size_t length, void *context) {
  (void)d;
  (void)destination;
  watch_t *w = context;
  if (!text || !memmem(text, length, "started", 7)) return;
  if (w->server) {
    w->stop_result = procord_server_stop(w->server, w->how);
    w->connect_errno = connect_errno(port_of(w->server));
  }
  pthread_mutex_lock(&w->lock);
  w->started = 1;
  pthread_cond_broadcast(&w->changed);
  pthread_mutex_unlock(&w->lock);
}

static void watch_init(watch_t *w) {
  memset(w, 0, sizeof *w);
  pthread_mutex_init(&w->lock, NULL);
  pthread_cond_init(&w->changed, NULL);
}

static void watch_destroy(watch_t *w) {
  pthread_cond_destroy(&w->changed);
  pthread_mutex_destroy(&w->lock);
}

/* Waits up to 10 s for the task to say "started". */
static int started_within_10_s(watch_t *w) {
  struct timespec limit;
  clock_gettime(CLOCK_REALTIME, &limit);
  limit.tv_sec += 10;
  pthread_mutex_lock(&w->lock);
  int timed_out = 0;
  while (!w->started && !timed_out)
    timed_out = pthread_cond_timedwait(&w->changed, &w->lock, &limit) != 0;
  int started = w->started;
  pthread_mutex_unlock(&w->lock);
  return started;
}

/* Delegates `task` with `input` to the server at 127.0.0.1:port, on
   `on`; its prints (the worker's stdout) go to `watch`, if given. */
static procord_delegation_t *delegate_to(procord_loop_t *on, int port, const char *task,
                                         const char *input, watch_t *watch) {
  procord_delegation_options_t options = {
      .task_name = task,
      .input = input,
      .input_length = strlen(input),
      .remote_host = "127.0.0.1",
      .remote_port = port,
      .connect_timeout_ms = 5000,
      .capture_output = watch != NULL,
      .on_print = watch ? on_print : NULL,
      .context = watch,
  };
  procord_delegation_t *d = NULL;
  return procord_delegate(on, &options, &d) == 0 ? d : NULL;
}

/* Waits up to 10 s for the delegation; its outcome, or NULL. */
static const procord_outcome_t *outcome_within_10_s(procord_loop_t *on, procord_delegation_t *d) {
  if (!d || procord_delegation_wait(on, &d, 1, 1, 10000) != 1) return NULL;
  return procord_delegation_outcome(d);
}

/* Delegates `echo` of `text` to the server at `port` and waits: true if it
   was answered with `text`. */
static int echoes(procord_loop_t *on, int port, const char *text) {
  procord_delegation_t *d = delegate_to(on, port, "echo", text, NULL);
  const procord_outcome_t *outcome = outcome_within_10_s(on, d);
  int answered = outcome && outcome->kind == PROCORD_OUTCOME_VALUE &&
                 outcome->length == strlen(text) &&
                 memcmp(outcome->body, text, outcome->length) == 0;
  if (!answered && outcome)
    fprintf(stderr, "    echo to port %d: outcome %d, error %d (%s)\n", port, (int)outcome->kind,
            outcome->error, outcome->call ? outcome->call : "");
  if (d) procord_delegation_release(d);
  return answered;
}

/* Connects to 127.0.0.1:port: 0 if it could, else its errno. */
static int connect_errno(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int error = connect(fd, (struct sockaddr *)&address, sizeof address) == 0 ? 0 : errno;
  close(fd);
  return error;
}

/* ---- Starting, and the address ---- */

static void started_server_serves_a_delegation_of_the_same_loop(void) {
  BEGIN();
  embedded_t e;
  embedded_prepare(&e);
  CHECK_EQ_INT(procord_server_start(loop, &e.options, &e.server), 0);
  CHECK(e.server != NULL);
  CHECK(!procord_server_is_stopped(e.server));
  CHECK(echoes(loop, port_of(e.server), "hello"));
  CHECK(echoes(loop, port_of(e.server), "again"));
  /* Running: a bounded wait says so when it ends. */
  CHECK_EQ_INT(procord_server_wait(e.server, 50), 0);
  CHECK_EQ_INT(procord_server_stop(e.server, PROCORD_SERVER_STOP_GRACEFUL), 0);
  CHECK_EQ_INT(procord_server_wait(e.server, 10000), 1);
  CHECK(procord_server_is_stopped(e.server));
  CHECK(logged(&e, "stopping (procord_server_stop)"));
  CHECK(logged(&e, "stopped\n"));
  procord_server_free(e.server);
  embedded_destroy(&e);
  CHECK_NOTHING_LEFT();
}

static int turn_everyone_away(void *context, const struct sockaddr *peer, socklen_t length) {
  (void)context;
  (void)peer;
  (void)length;
  return 0;
}

static int say_stop(void *context) {
  (void)context;
  return 0;
}

/* The options are copied: the caller's struct may change, or be gone, once
   started. */
static void options_are_copied_at_the_start(void) {
  BEGIN();
  embedded_t e;
  embedded_prepare(&e);
  procord_server_options_t *options = malloc(sizeof *options);
  char *hostname = strdup("127.0.0.1");
  CHECK(options && hostname);
  *options = e.options;
  options->hostname = hostname;
  CHECK_EQ_INT(procord_server_start(loop, options, &e.server), 0);
  /* What the caller's struct holds next is not the server's business. */
  options->accept_filter = turn_everyone_away;
  options->keep_running = say_stop;
  memset(hostname, 'x', strlen(hostname));
  CHECK(echoes(loop, port_of(e.server), "copied"));
  free(options);
  free(hostname);
  CHECK(echoes(loop, port_of(e.server), "and gone"));
  CHECK_EQ_INT(procord_server_stop(e.server, PROCORD_SERVER_STOP_GRACEFUL), 0);
  CHECK_EQ_INT(procord_server_wait(e.server, 10000), 1);
  CHECK_EQ_INT(stopped_calls(&e), 1);
  procord_server_free(e.server);
  embedded_destroy(&e);
  CHECK_NOTHING_LEFT();
}

static void port_0_is_the_port_the_address_names_and_clients_reach(void) {
  BEGIN();
  embedded_t e;
  embedded_prepare(&e);
  CHECK_EQ_INT(procord_server_start(loop, &e.options, &e.server), 0);
  char address[PROCORD_SERVER_ADDRESS_SIZE];
  int port = -1;
  CHECK_EQ_INT(procord_server_address(e.server, address, sizeof address, &port), 0);
  CHECK(port > 0);
  char expected[64];
  snprintf(expected, sizeof expected, "127.0.0.1:%d", port);
  CHECK(strcmp(address, expected) == 0);
  /* What on_listening said, and the log's line. */
  CHECK(strcmp(e.listening_on, expected) == 0);
  CHECK_EQ_INT(e.listening_port, port);
  char line[96];
  snprintf(line, sizeof line, "listening on %s ", expected);
  CHECK(logged(&e, line));
  /* A buffer too small: as much as fits, and the error says so. */
  char small[8];
  CHECK_EQ_INT(procord_server_address(e.server, small, sizeof small, NULL), -ENOBUFS);
  CHECK(strcmp(small, "127.0.0") == 0);
  CHECK_EQ_INT(procord_server_address(NULL, address, sizeof address, &port), PROCORD_EINVAL);
  /* Clients reach it there. */
  CHECK_EQ_INT(connect_errno(port), 0);
  CHECK(echoes(loop, port, "there"));
  CHECK_EQ_INT(procord_server_stop(e.server, PROCORD_SERVER_STOP_GRACEFUL), 0);
  CHECK_EQ_INT(procord_server_wait(e.server, 10000), 1);
  /* Stopped: refused there, and the address is still the one it had. */
  CHECK_EQ_INT(connect_errno(port), ECONNREFUSED);
  int after = 0;
  CHECK_EQ_INT(procord_server_address(e.server, address, sizeof address, &after), 0);
  CHECK_EQ_INT(after, port);
  procord_server_free(e.server);
  embedded_destroy(&e);
  CHECK_NOTHING_LEFT();
}

/* Each refusal of procord_server_run, with its log line, and nothing left. */
static void start_refuses_what_run_refuses_and_leaves_nothing(void) {
  BEGIN();
  embedded_t e;
  embedded_prepare(&e);
  procord_server_t *server = NULL;
  e.options.worker.program = NULL;
  CHECK_EQ_INT(procord_server_start(loop, &e.options, &server), PROCORD_EINVAL);
  CHECK(server == NULL);
  CHECK(logged(&e, "no worker program: set options.worker"));
  e.options.worker.program = self_path;
  CHECK_EQ_INT(procord_server_start(NULL, &e.options, &server), PROCORD_EINVAL);
  CHECK_EQ_INT(procord_server_start(loop, NULL, &server), PROCORD_EINVAL);
  CHECK_EQ_INT(procord_server_start(loop, &e.options, NULL), PROCORD_EINVAL);
  /* Its port taken by another server. */
  embedded_t first;
  embedded_prepare(&first);
  CHECK_EQ_INT(procord_server_start(loop, &first.options, &first.server), 0);
  e.options.port = port_of(first.server);
  CHECK_EQ_INT(procord_server_start(loop, &e.options, &server), -EADDRINUSE);
  CHECK(server == NULL);
  CHECK(logged(&e, "cannot listen on 127.0.0.1 port"));
  CHECK(echoes(loop, port_of(first.server), "unharmed"));
  procord_server_free(first.server); /* running: stopped at once */
  CHECK_EQ_INT(stopped_calls(&e), 0);
  embedded_destroy(&first);
  embedded_destroy(&e);
  CHECK_NOTHING_LEFT();
}

/* Started before its loop runs (on the calling thread), it serves once the
   loop runs. */
static void started_before_its_loop_runs_it_serves_once_the_loop_runs(void) {
  BEGIN();
  procord_loop_t *own = NULL;
  CHECK_EQ_INT(procord_loop_new(&own), 0);
  embedded_t e;
  embedded_prepare(&e);
  CHECK_EQ_INT(procord_server_start(own, &e.options, &e.server), 0);
  CHECK_EQ_INT(procord_loop_start_thread(own), 0);
  CHECK(echoes(own, port_of(e.server), "later"));
  CHECK_EQ_INT(procord_server_stop(e.server, PROCORD_SERVER_STOP_GRACEFUL), 0);
  CHECK_EQ_INT(procord_server_wait(e.server, 10000), 1);
  procord_server_free(e.server);
  procord_loop_free(own);
  embedded_destroy(&e);
  CHECK_NOTHING_LEFT();
}

typedef struct {
  embedded_t *e;
  int result;
  int done;
  int on_loop;
} start_call_t;

static void start_here(void *argument) {
  start_call_t *call = argument;
  call->on_loop = procord_loop_is_current_thread(loop);
  call->result = procord_server_start(loop, &call->e->options, &call->e->server);
  pthread_mutex_lock(&call->e->lock);
  call->done = 1;
  pthread_cond_broadcast(&call->e->changed);
  pthread_mutex_unlock(&call->e->lock);
}

/* Started from the loop's own thread (a callback), at once: it serves. */
static void started_from_the_loops_own_thread_it_serves_too(void) {
  BEGIN();
  embedded_t e;
  embedded_prepare(&e);
  start_call_t call = {.e = &e, .result = -1};
  CHECK_EQ_INT(procord_loop_call(loop, start_here, &call), 0);
  pthread_mutex_lock(&e.lock);
  while (!call.done) pthread_cond_wait(&e.changed, &e.lock);
  pthread_mutex_unlock(&e.lock);
  CHECK(call.on_loop);
  CHECK_EQ_INT(call.result, 0);
  CHECK(echoes(loop, port_of(e.server), "from the loop"));
  CHECK_EQ_INT(procord_server_stop(e.server, PROCORD_SERVER_STOP_GRACEFUL), 0);
  CHECK_EQ_INT(procord_server_wait(e.server, 10000), 1);
  procord_server_free(e.server);
  embedded_destroy(&e);
  CHECK_NOTHING_LEFT();
}

/* ---- Stopping ---- */

static void graceful_stop_from_another_thread_lets_a_running_task_finish_and_answer(void) {
  BEGIN();
  embedded_t e;
  embedded_prepare(&e);
  CHECK_EQ_INT(procord_server_start(loop, &e.options, &e.server), 0);
  int port = port_of(e.server);
  watch_t w;
  watch_init(&w);
  procord_delegation_t *d = delegate_to(loop, port, "announce-then-sleep", "500", &w);
  CHECK(d != NULL);
  CHECK(started_within_10_s(&w));
  /* This thread is not the loop's: the stop is queued to it, and has taken
     effect when the call returns. */
  CHECK(!procord_loop_is_current_thread(loop));
  CHECK_EQ_INT(procord_server_stop(e.server, PROCORD_SERVER_STOP_GRACEFUL), 0);
  CHECK_EQ_INT(connect_errno(port), ECONNREFUSED);
  CHECK(!procord_server_is_stopped(e.server)); /* its task still runs */
  const procord_outcome_t *outcome = outcome_within_10_s(loop, d);
  CHECK(outcome != NULL);
  CHECK_EQ_INT(outcome->kind, PROCORD_OUTCOME_VALUE);
  CHECK_BYTES(outcome->body, outcome->length, "slept");
  procord_delegation_release(d);
  CHECK_EQ_INT(procord_server_wait(e.server, 10000), 1);
  CHECK(on_stopped_within_10_s(&e));
  /* Stops of a stopped server do nothing: on_stopped was called once. */
  CHECK_EQ_INT(procord_server_stop(e.server, PROCORD_SERVER_STOP_GRACEFUL), 0);
  CHECK_EQ_INT(procord_server_stop(e.server, PROCORD_SERVER_STOP_NOW), 0);
  CHECK_EQ_INT(stopped_calls(&e), 1);
  CHECK(e.stopped_on_loop_thread);
  CHECK_EQ_INT(procord_server_stop(e.server, (procord_server_stop_how_t)7), PROCORD_EINVAL);
  CHECK_EQ_INT(procord_server_stop(NULL, PROCORD_SERVER_STOP_NOW), PROCORD_EINVAL);
  procord_server_free(e.server);
  watch_destroy(&w);
  embedded_destroy(&e);
  CHECK_NOTHING_LEFT();
}

/* A task of 30 s, stopped now: its client sees the connection end at once,
   and once the server says it has stopped every worker has been reaped. */
static void stop_now_kills_a_running_task_and_reaps_every_worker(void) {
  BEGIN();
  embedded_t e;
  embedded_prepare(&e);
  e.options.prestarted_workers = 2; /* an idle one too */
  CHECK_EQ_INT(procord_server_start(loop, &e.options, &e.server), 0);
  watch_t w;
  watch_init(&w);
  procord_delegation_t *d =
      delegate_to(loop, port_of(e.server), "announce-then-sleep", "30000", &w);
  CHECK(d != NULL);
  CHECK(started_within_10_s(&w));
  long long stopped_at = now_ms();
  CHECK_EQ_INT(procord_server_stop(e.server, PROCORD_SERVER_STOP_NOW), 0);
  CHECK_EQ_INT(procord_server_wait(e.server, 10000), 1);
  /* Every worker reaped before the server said so. */
  CHECK(no_child_left());
  const procord_outcome_t *outcome = outcome_within_10_s(loop, d);
  CHECK(outcome != NULL);
  CHECK_EQ_INT(outcome->kind, PROCORD_OUTCOME_DISCONNECTED);
  CHECK(now_ms() - stopped_at < 5000);
  procord_delegation_release(d);
  CHECK(on_stopped_within_10_s(&e));
  CHECK_EQ_INT(stopped_calls(&e), 1);
  CHECK(logged(&e, "stopping now: killing 1 running tasks"));
  procord_server_free(e.server);
  watch_destroy(&w);
  embedded_destroy(&e);
  CHECK_NOTHING_LEFT();
}

/* From a callback on the loop's thread, a stop acts at once: the port is
   refused before the call returns. */
static void stop_from_the_loops_own_thread_acts_at_once(void) {
  BEGIN();
  embedded_t e;
  embedded_prepare(&e);
  CHECK_EQ_INT(procord_server_start(loop, &e.options, &e.server), 0);
  watch_t w;
  watch_init(&w);
  w.server = e.server;
  w.how = PROCORD_SERVER_STOP_NOW;
  w.stop_result = -1;
  procord_delegation_t *d =
      delegate_to(loop, port_of(e.server), "announce-then-sleep", "30000", &w);
  CHECK(d != NULL);
  CHECK(started_within_10_s(&w));
  CHECK_EQ_INT(w.stop_result, 0);
  CHECK_EQ_INT(w.connect_errno, ECONNREFUSED);
  const procord_outcome_t *outcome = outcome_within_10_s(loop, d);
  CHECK(outcome != NULL);
  CHECK_EQ_INT(outcome->kind, PROCORD_OUTCOME_DISCONNECTED);
  procord_delegation_release(d);
  CHECK_EQ_INT(procord_server_wait(e.server, 10000), 1);
  CHECK(no_child_left());
  procord_server_free(e.server);
  watch_destroy(&w);
  embedded_destroy(&e);
  CHECK_NOTHING_LEFT();
}

static void two_servers_on_one_loop_serve_and_stop_one_at_a_time(void) {
  BEGIN();
  embedded_t a, b;
  embedded_prepare(&a);
  embedded_prepare(&b);
  CHECK_EQ_INT(procord_server_start(loop, &a.options, &a.server), 0);
  CHECK_EQ_INT(procord_server_start(loop, &b.options, &b.server), 0);
  CHECK(port_of(a.server) != port_of(b.server));
  /* Both at once. */
  procord_delegation_t *to_a = delegate_to(loop, port_of(a.server), "echo", "to a", NULL);
  procord_delegation_t *to_b = delegate_to(loop, port_of(b.server), "echo", "to b", NULL);
  const procord_outcome_t *from_a = outcome_within_10_s(loop, to_a);
  const procord_outcome_t *from_b = outcome_within_10_s(loop, to_b);
  CHECK(from_a && from_b);
  CHECK_BYTES(from_a->body, from_a->length, "to a");
  CHECK_BYTES(from_b->body, from_b->length, "to b");
  procord_delegation_release(to_a);
  procord_delegation_release(to_b);
  /* One stops; the other, and the loop, go on. */
  CHECK_EQ_INT(procord_server_stop(a.server, PROCORD_SERVER_STOP_GRACEFUL), 0);
  CHECK_EQ_INT(procord_server_wait(a.server, 10000), 1);
  CHECK(!procord_server_is_stopped(b.server));
  CHECK(echoes(loop, port_of(b.server), "b serves on"));
  CHECK_EQ_INT(stopped_calls(&a), 1);
  CHECK_EQ_INT(stopped_calls(&b), 0);
  procord_server_free(a.server);
  CHECK(echoes(loop, port_of(b.server), "still"));
  CHECK_EQ_INT(procord_server_stop(b.server, PROCORD_SERVER_STOP_NOW), 0);
  CHECK_EQ_INT(procord_server_wait(b.server, 10000), 1);
  procord_server_free(b.server);
  embedded_destroy(&a);
  embedded_destroy(&b);
  CHECK_NOTHING_LEFT();
}

/* ---- Freeing ---- */

/* Freed while its task runs: every worker killed and reaped before the
   call returns, and no on_stopped. */
static void free_while_running_kills_and_reaps_every_worker_at_once(void) {
  BEGIN();
  embedded_t e;
  embedded_prepare(&e);
  e.options.prestarted_workers = 2;
  CHECK_EQ_INT(procord_server_start(loop, &e.options, &e.server), 0);
  watch_t w;
  watch_init(&w);
  procord_delegation_t *d =
      delegate_to(loop, port_of(e.server), "announce-then-sleep", "30000", &w);
  CHECK(d != NULL);
  CHECK(started_within_10_s(&w));
  procord_server_free(e.server);
  CHECK(no_child_left());
  const procord_outcome_t *outcome = outcome_within_10_s(loop, d);
  CHECK(outcome != NULL);
  CHECK_EQ_INT(outcome->kind, PROCORD_OUTCOME_DISCONNECTED);
  procord_delegation_release(d);
  CHECK_EQ_INT(stopped_calls(&e), 0);
  CHECK(logged(&e, "freed while running: stopping at once"));
  watch_destroy(&w);
  embedded_destroy(&e);
  CHECK_NOTHING_LEFT();
}

static void on_stopped_may_free_the_server(void) {
  BEGIN();
  embedded_t e;
  embedded_prepare(&e);
  e.free_in_on_stopped = 1;
  CHECK_EQ_INT(procord_server_start(loop, &e.options, &e.server), 0);
  CHECK(echoes(loop, port_of(e.server), "then free"));
  CHECK_EQ_INT(procord_server_stop(e.server, PROCORD_SERVER_STOP_GRACEFUL), 0);
  /* Not procord_server_wait: the server is gone once on_stopped returns. */
  CHECK(on_stopped_within_10_s(&e));
  CHECK(e.server == NULL);
  embedded_destroy(&e);
  CHECK_NOTHING_LEFT();
}

/* procord_loop_free stops a server still on its loop (at once, every worker
   reaped); the server is then freed after its loop. */
static void freeing_the_loop_stops_a_server_on_it(void) {
  BEGIN();
  procord_loop_t *own = NULL;
  CHECK_EQ_INT(procord_loop_new(&own), 0);
  CHECK_EQ_INT(procord_loop_start_thread(own), 0);
  embedded_t e;
  embedded_prepare(&e);
  CHECK_EQ_INT(procord_server_start(own, &e.options, &e.server), 0);
  CHECK(echoes(own, port_of(e.server), "before the loop goes"));
  procord_loop_free(own);
  CHECK(procord_server_is_stopped(e.server));
  CHECK(no_child_left());
  CHECK_EQ_INT(stopped_calls(&e), 1);
  CHECK(logged(&e, "stopping (its loop is being freed)"));
  procord_server_free(e.server);
  embedded_destroy(&e);
  CHECK_NOTHING_LEFT();
}

/* ---- Signals, the log, the options ---- */

/* SIGTERM to this program drains a started server that handles signals. */
static void sigterm_drains_a_started_server_that_handles_signals(void) {
  BEGIN();
  embedded_t e;
  embedded_prepare(&e);
  e.options.handle_signals = 1;
  CHECK_EQ_INT(procord_server_start(loop, &e.options, &e.server), 0);
  CHECK(echoes(loop, port_of(e.server), "before SIGTERM"));
  CHECK_EQ_INT(kill(getpid(), SIGTERM), 0);
  CHECK_EQ_INT(procord_server_wait(e.server, 10000), 1);
  CHECK(logged(&e, "stopping (SIGTERM)"));
  procord_server_free(e.server);
  embedded_destroy(&e);
  CHECK_NOTHING_LEFT();
}

static void record_process_log(void *context, procord_log_level_t level, const char *message) {
  (void)level;
  int *lines = context;
  if (strncmp(message, "libevent: ", 10) == 0) (*lines)++;
}

/* libevent's messages go to the newest running server's log, then to the
   one before it, then to the process's. */
static void libevent_messages_go_to_the_newest_server_then_the_one_before(void) {
  BEGIN();
  int process_lines = 0;
  procord_set_log(record_process_log, &process_lines);
  embedded_t a, b;
  embedded_prepare(&a);
  embedded_prepare(&b);
  CHECK_EQ_INT(procord_server_start(loop, &a.options, &a.server), 0);
  CHECK_EQ_INT(procord_server_start(loop, &b.options, &b.server), 0);
  make_libevent_warn();
  CHECK(logged(&b, "libevent: "));
  CHECK(!logged(&a, "libevent: "));
  procord_server_free(b.server);
  make_libevent_warn();
  CHECK(logged(&a, "libevent: "));
  CHECK_EQ_INT(process_lines, 0);
  procord_server_free(a.server);
  make_libevent_warn();
  procord_set_log(NULL, NULL);
  CHECK(process_lines >= 1);
  embedded_destroy(&a);
  embedded_destroy(&b);
  CHECK_NOTHING_LEFT();
}

static void options_init_gives_every_field_its_default(void) {
  procord_server_options_t options, zero;
  memset(&options, 0xa5, sizeof options);
  memset(&zero, 0, sizeof zero);
  procord_server_options_init(&options);
  /* Zero but the sizes, its own and its worker's. */
  CHECK_EQ_INT(options.size, sizeof options);
  CHECK_EQ_INT(options.worker.size, sizeof options.worker);
  zero.size = options.size;
  zero.worker.size = options.worker.size;
  CHECK(memcmp(&options, &zero, sizeof options) == 0);
}

/* procord_server_run calls on_stopped too, once, before it returns. */
static int run_on_stopped_calls;
static void count_run_stop(void *context) {
  (void)context;
  run_on_stopped_calls++;
}

static void run_calls_on_stopped_once_before_it_returns(void) {
  BEGIN();
  thread_server_t s;
  thread_server_prepare(&s, tasks, TASK_COUNT);
  s.options.hostname = "127.0.0.1";
  s.options.on_stopped = count_run_stop;
  run_on_stopped_calls = 0;
  int port = thread_server_start(&s);
  CHECK(port > 0);
  CHECK(thread_server_stop(&s, port));
  CHECK_EQ_INT(run_on_stopped_calls, 1);
  CHECK_NOTHING_LEFT();
}

int main(int argc, char **argv) {
  loop = fixture_start(argc, argv, tasks, TASK_COUNT, self_path, sizeof self_path);
  if (!loop) return 1;
  signal(SIGPIPE, SIG_IGN);

  RUN(started_server_serves_a_delegation_of_the_same_loop);
  RUN(options_are_copied_at_the_start);
  RUN(port_0_is_the_port_the_address_names_and_clients_reach);
  RUN(start_refuses_what_run_refuses_and_leaves_nothing);
  RUN(started_before_its_loop_runs_it_serves_once_the_loop_runs);
  RUN(started_from_the_loops_own_thread_it_serves_too);
  RUN(graceful_stop_from_another_thread_lets_a_running_task_finish_and_answer);
  RUN(stop_now_kills_a_running_task_and_reaps_every_worker);
  RUN(stop_from_the_loops_own_thread_acts_at_once);
  RUN(two_servers_on_one_loop_serve_and_stop_one_at_a_time);
  RUN(free_while_running_kills_and_reaps_every_worker_at_once);
  RUN(on_stopped_may_free_the_server);
  RUN(freeing_the_loop_stops_a_server_on_it);
  RUN(sigterm_drains_a_started_server_that_handles_signals);
  RUN(libevent_messages_go_to_the_newest_server_then_the_one_before);
  RUN(options_init_gives_every_field_its_default);
  RUN(run_calls_on_stopped_once_before_it_returns);

  procord_loop_free(loop);
  return CHECK_SUMMARY();
}
