/*
 * The delegated-process state machine (procord/delegation.h): spawn, send the
 * task, read the answer, map it to an outcome, and report it once the worker
 * has been reaped.
 */
#define _GNU_SOURCE
#include "procord/delegation.h"
#include "loop_private.h"
#include "procord/connect.h"
#include "procord/connection.h"
#include "procord/error.h"

#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_EXIT_GRACE_MS 2000

struct procord_delegation_s {
  procord_loop_work_t work; /* first: the loop hands this pointer back */
  procord_loop_t *loop;
  int references;           /* atomic */
  int kill_requested;       /* atomic */
  char *task_name;
  void *input;
  size_t input_length;
  size_t max_message_size;
  int exit_grace_ms;
  procord_done_cb on_done;
  procord_print_cb on_print;
  int capture_output;
  void *context;

  int remote;               /* a worker server, not a child */
  char *host;
  int port;
  int connect_timeout_ms;
  int idle_timeout_ms;
  procord_connect_t *attempt; /* remote, while connecting */

  procord_child_t child;
  int spawn_error;
  int descriptors_taken;    /* the connection owns child.read_fd/write_fd */
  pid_t pid;                /* as spawned; child.pid becomes -1 once reaped */
  procord_connection_t *connection;
  struct event *exit_event; /* pidfd readable, or the reap poll timer */
  struct event *grace_timer;
  int answered;             /* a terminal frame (or a failure) set the outcome */
  int reaped;
  int wait_status;
  procord_outcome_t outcome;
  void *body;
  int finished;             /* guarded by the loop's done lock */
};

static void retain(procord_delegation_t *d) { __atomic_add_fetch(&d->references, 1, __ATOMIC_RELAXED); }

void procord_delegation_release(procord_delegation_t *d) {
  if (!d || __atomic_sub_fetch(&d->references, 1, __ATOMIC_ACQ_REL) != 0) return;
  free(d->task_name);
  free(d->host);
  free(d->input);
  free(d->body);
  free(d);
}

static void finish(procord_delegation_t *d) {
  if (d->grace_timer) event_free(d->grace_timer);
  if (d->exit_event) event_free(d->exit_event);
  d->grace_timer = d->exit_event = NULL;
  if (d->reaped && WIFEXITED(d->wait_status)) d->outcome.exit_code = WEXITSTATUS(d->wait_status);
  if (d->reaped && WIFSIGNALED(d->wait_status)) d->outcome.signal = WTERMSIG(d->wait_status);
  if (__atomic_load_n(&d->kill_requested, __ATOMIC_ACQUIRE)) {
    d->outcome.kind = PROCORD_OUTCOME_KILLED;
    d->outcome.body = NULL;
    d->outcome.length = 0;
    d->outcome.error = 0;
    d->outcome.call = NULL;
  }
  if (d->on_done) d->on_done(d, &d->outcome, d->context);
  pthread_mutex_lock(procord_loop_done_lock(d->loop));
  d->finished = 1;
  pthread_cond_broadcast(procord_loop_done_cond(d->loop));
  pthread_mutex_unlock(procord_loop_done_lock(d->loop));
  procord_loop_remove_work(d->loop, &d->work);
  procord_delegation_release(d); /* the loop's reference */
}

static void fail(procord_delegation_t *d, int error, const char *call) {
  if (d->answered) return;
  d->answered = 1;
  d->outcome.kind = PROCORD_OUTCOME_DISCONNECTED;
  d->outcome.error = error;
  d->outcome.call = call;
}

static void start_grace_timer(procord_delegation_t *d) {
  if (evtimer_pending(d->grace_timer, NULL)) return;
  struct timeval limit = {d->exit_grace_ms / 1000, (d->exit_grace_ms % 1000) * 1000};
  evtimer_add(d->grace_timer, &limit);
}

/* Both halves are over (stream closed, worker reaped): report. */
static void finish_if_done(procord_delegation_t *d) {
  if (!d->connection && !d->attempt && (d->reaped || d->remote)) finish(d);
  else start_grace_timer(d);
}

static void drop_connection(procord_delegation_t *d) {
  if (!d->connection) return;
  procord_connection_t *connection = d->connection;
  d->connection = NULL;
  procord_connection_free(connection); /* deferred if inside its callback */
}

static void on_state(procord_connection_t *connection, procord_connection_state_t state,
                     void *context) {
  procord_delegation_t *d = context;
  if (state != PROCORD_DISCONNECTED) return;
  procord_cause_t cause = procord_connection_cause(connection);
  fail(d, cause.error ? cause.error : PROCORD_EDISCONNECTED, cause.call ? cause.call : "read");
  drop_connection(d);
  finish_if_done(d);
}

static void write_all(int fd, const unsigned char *bytes, size_t length) {
  while (length > 0) {
    ssize_t n = write(fd, bytes, length);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return; /* our own stdout is gone: nothing better to do */
    bytes += n;
    length -= (size_t)n;
  }
}

/* `P` and `F`: to the owner's callback, or stdout/stderr for `O`/`E`. */
static void print(procord_delegation_t *d, const procord_frame_t *frame) {
  unsigned char destination = frame->body[0];
  int standard = destination == 'O' || destination == 'E';
  if (d->on_print && (!standard || d->capture_output)) {
    if (frame->kind == PROCORD_FRAME_PRINT)
      d->on_print(d, destination, frame->body + 1, frame->length - 1, d->context);
    else
      d->on_print(d, destination, NULL, 0, d->context);
    return;
  }
  /* Flushing needs nothing: these writes are unbuffered. Text for a custom
     destination nobody handles is dropped (PROTOCOL.md). */
  if (frame->kind == PROCORD_FRAME_PRINT && standard) {
    /* After what the program itself printed so far, as a terminal shows it. */
    fflush(destination == 'O' ? stdout : stderr);
    write_all(destination == 'O' ? STDOUT_FILENO : STDERR_FILENO, frame->body + 1, frame->length - 1);
  }
}

static void answer(procord_delegation_t *d, procord_outcome_kind_t kind, procord_connection_t *c,
                   const procord_frame_t *frame) {
  d->answered = 1;
  d->outcome.kind = kind;
  d->body = procord_connection_take_body(c);
  d->outcome.body = d->body;
  d->outcome.length = frame->length;
  /* Now only `0R` or the end of the stream may come, and soon. */
  start_grace_timer(d);
}

static void on_frame(procord_connection_t *c, const procord_frame_t *frame, int error,
                     void *context) {
  procord_delegation_t *d = context;
  if (error) {
    fail(d, error, "parse");
    procord_connection_close(c);
    return;
  }
  if (d->answered) {
    /* After the terminal frame only `0R` may come; either way we are done. */
    if (frame->kind == PROCORD_FRAME_REUSABLE) d->outcome.reusable = 1;
    procord_connection_close(c);
    return;
  }
  switch (frame->kind) {
  case PROCORD_FRAME_PRINT:
  case PROCORD_FRAME_FLUSH: print(d, frame); return;
  case PROCORD_FRAME_VALUE: answer(d, PROCORD_OUTCOME_VALUE, c, frame); return;
  case PROCORD_FRAME_EXCEPTION: answer(d, PROCORD_OUTCOME_EXCEPTION, c, frame); return;
  case PROCORD_FRAME_UNKNOWN_EXCEPTION: answer(d, PROCORD_OUTCOME_UNKNOWN_EXCEPTION, c, frame); return;
  case PROCORD_FRAME_ERROR: {
    int code = PROCORD_EILL_FORMED; /* the parser checked the body already */
    procord_error_from_frame_body(frame->body, frame->length, &code);
    if (code == PROCORD_ETASK_NOT_SUPPORTED) {
      d->answered = 1;
      d->outcome.kind = PROCORD_OUTCOME_NO_WORKER;
    } else {
      fail(d, code, "peer");
    }
    procord_connection_close(c);
    return;
  }
  default:
    fail(d, PROCORD_EUNEXPECTED, "receive");
    procord_connection_close(c);
    return;
  }
}

static void reap(procord_delegation_t *d) {
  int status = 0;
  int r = procord_child_try_reap(&d->child, &status);
  if (r == 0) return;
  d->reaped = 1;
  d->wait_status = r > 0 ? status : 0;
  event_del(d->exit_event);
  finish_if_done(d);
}

static void on_exit_event(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  reap(context);
}

static void on_grace_timeout(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  procord_delegation_t *d = context;
  /* The worker closed its stream but lingers, or died while something it
     started still holds the stream: end both. */
  if (!d->reaped && !d->remote) {
    d->outcome.killed_after_grace = 1;
    procord_child_kill(&d->child, SIGKILL);
  }
  if (d->connection) procord_connection_close(d->connection);
  else if (!d->reaped) start_grace_timer(d);
}

static void abort_work(procord_loop_work_t *work) {
  procord_delegation_t *d = (procord_delegation_t *)work;
  __atomic_store_n(&d->kill_requested, 1, __ATOMIC_RELEASE);
  if (d->remote) {
    /* Killing a remote task is closing its connection: its server kills it. */
    if (d->attempt) {
      procord_connect_cancel(d->attempt);
      d->attempt = NULL;
      finish_if_done(d);
    } else if (d->connection) {
      procord_connection_close(d->connection);
    }
    return;
  }
  if (!d->reaped) procord_child_kill(&d->child, SIGKILL);
  if (d->connection) procord_connection_close(d->connection);
}

static int open_connection(procord_delegation_t *d) {
  d->descriptors_taken = 1; /* procord_connection_open closes them even when it fails */
  procord_connection_options_t options = {
      .read_fd = d->child.read_fd,
      .write_fd = d->child.write_fd,
      .max_message_size = d->max_message_size,
      .idle_timeout_ms = d->idle_timeout_ms,
      .on_frame = on_frame,
      .on_state = on_state,
      .context = d,
  };
  int error = procord_connection_open(d->loop, &options, &d->connection);
  if (error) {
    d->connection = NULL;
    return error;
  }
  error = procord_connection_send(d->connection, PROCORD_FRAME_TASK, d->task_name,
                                  strlen(d->task_name));
  void *input = d->input;
  d->input = NULL; /* the connection owns it from here, even on failure */
  if (error) free(input);
  else error = procord_connection_send_owned(d->connection, PROCORD_FRAME_VALUE, input,
                                             d->input_length, free);
  return error;
}

static void close_child_descriptors(procord_child_t *child) {
  close(child->read_fd);
  if (child->write_fd != child->read_fd) close(child->write_fd);
  child->read_fd = child->write_fd = -1;
}

static void on_connected(int fd, int error, const char *call, const char *detail, void *context) {
  procord_delegation_t *d = context;
  d->attempt = NULL;
  if (error) {
    fail(d, error, call);
    d->outcome.detail = detail;
    finish(d);
    return;
  }
  d->child.read_fd = d->child.write_fd = fd;
  error = open_connection(d);
  if (error) {
    fail(d, error, "setup");
    drop_connection(d);
    finish(d);
  }
}

static void start_remote(procord_delegation_t *d) {
  procord_connect_options_t options = {
      .host = d->host,
      .port = d->port,
      .timeout_ms = d->connect_timeout_ms,
      .on_done = on_connected,
      .context = d,
  };
  int error = procord_connect(d->loop, &options, &d->attempt);
  if (error) {
    d->attempt = NULL;
    fail(d, error, "connect");
    finish(d);
  }
}

static void start_on_loop(void *context) {
  procord_delegation_t *d = context;
  struct event_base *base = procord_loop_base(d->loop);
  procord_loop_add_work(d->loop, &d->work);
  if (d->remote) {
    d->grace_timer = evtimer_new(base, on_grace_timeout, d);
    if (!d->grace_timer) {
      fail(d, -ENOMEM, "setup");
      finish(d);
    } else if (__atomic_load_n(&d->kill_requested, __ATOMIC_ACQUIRE)) {
      finish(d);
    } else {
      start_remote(d);
    }
    return;
  }
  if (d->spawn_error) {
    fail(d, d->spawn_error, "posix_spawn");
    finish(d);
    return;
  }
  d->grace_timer = evtimer_new(base, on_grace_timeout, d);
  if (d->grace_timer) d->exit_event = procord_loop_watch_child(d->loop, d->child.pidfd, on_exit_event, d);
  int error = d->grace_timer && d->exit_event ? 0 : -ENOMEM;
  if (!error) error = open_connection(d);
  if (error) {
    /* Out of memory setting up: end the worker at once, reaping it here. */
    fail(d, error, "setup");
    drop_connection(d);
    if (!d->descriptors_taken) close_child_descriptors(&d->child);
    procord_child_kill(&d->child, SIGKILL);
    if (d->exit_event) event_del(d->exit_event);
    int status = 0;
    procord_child_reap(&d->child, &status);
    d->reaped = 1;
    d->wait_status = status;
    finish(d);
    return;
  }
  if (__atomic_load_n(&d->kill_requested, __ATOMIC_ACQUIRE)) abort_work(&d->work);
}

int procord_delegate(procord_loop_t *loop, const procord_delegation_options_t *options,
                     procord_delegation_t **result) {
  if (!loop || !options || !options->task_name || !result) return PROCORD_EINVAL;
  procord_delegation_t *d = calloc(1, sizeof *d);
  if (!d) return -ENOMEM;
  d->loop = loop;
  d->references = 2; /* the caller's and the loop's */
  d->work.abort = abort_work;
  d->task_name = strdup(options->task_name);
  d->input_length = options->input_length;
  d->input = malloc(options->input_length ? options->input_length : 1);
  d->remote = options->remote_host != NULL;
  d->host = d->remote ? strdup(options->remote_host) : NULL;
  if (!d->task_name || !d->input || (d->remote && !d->host)) {
    free(d->task_name);
    free(d->input);
    free(d->host);
    free(d);
    return -ENOMEM;
  }
  d->port = options->remote_port;
  d->connect_timeout_ms = options->connect_timeout_ms;
  d->idle_timeout_ms = options->idle_timeout_ms;
  if (options->input_length) memcpy(d->input, options->input, options->input_length);
  d->max_message_size = options->max_message_size;
  d->exit_grace_ms = options->exit_grace_ms > 0 ? options->exit_grace_ms : DEFAULT_EXIT_GRACE_MS;
  d->on_done = options->on_done;
  d->on_print = options->on_print;
  d->capture_output = options->capture_output;
  d->context = options->context;
  d->outcome.exit_code = -1;
  d->child.pid = -1;
  d->child.pidfd = -1;
  /* A worker shares our stdout in socket mode: what we printed comes first. */
  fflush(stdout);
  if (!d->remote) d->spawn_error = procord_spawn(&options->worker, &d->child);
  d->pid = d->spawn_error || d->remote ? -1 : d->child.pid;
  int error = procord_loop_call(loop, start_on_loop, d);
  if (error) {
    if (!d->spawn_error && !d->remote) {
      close_child_descriptors(&d->child);
      procord_child_kill(&d->child, SIGKILL);
      int status;
      procord_child_reap(&d->child, &status);
    }
    d->references = 1;
    procord_delegation_release(d);
    return error;
  }
  *result = d;
  return 0;
}

pid_t procord_delegation_pid(const procord_delegation_t *d) { return d->pid; }

static int is_finished(procord_delegation_t *d) {
  pthread_mutex_lock(procord_loop_done_lock(d->loop));
  int finished = d->finished;
  pthread_mutex_unlock(procord_loop_done_lock(d->loop));
  return finished;
}

int procord_delegation_is_finished(procord_delegation_t *d) { return is_finished(d); }

const procord_outcome_t *procord_delegation_outcome(procord_delegation_t *d) {
  return is_finished(d) ? &d->outcome : NULL;
}

static void kill_on_loop(void *context) {
  procord_delegation_t *d = context;
  if (!is_finished(d) && d->work.next) abort_work(&d->work);
  procord_delegation_release(d);
}

int procord_delegation_kill(procord_delegation_t *d) {
  /* A worker that could not start has nothing to kill: it ends as it is. */
  if (d->spawn_error || is_finished(d)) return PROCORD_ECLOSED;
  __atomic_store_n(&d->kill_requested, 1, __ATOMIC_RELEASE);
  retain(d);
  int error = procord_loop_call(d->loop, kill_on_loop, d);
  if (error) procord_delegation_release(d);
  return error;
}

static int deadline_passed(const struct timespec *deadline) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return now.tv_sec > deadline->tv_sec ||
         (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

int procord_delegation_wait(procord_loop_t *loop, procord_delegation_t *const *delegations,
                            size_t count, int all, int timeout_ms) {
  struct timespec deadline;
  clock_gettime(CLOCK_MONOTONIC, &deadline);
  if (timeout_ms >= 0) {
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
      deadline.tv_sec++;
      deadline.tv_nsec -= 1000000000L;
    }
  }
  pthread_mutex_t *lock = procord_loop_done_lock(loop);
  pthread_mutex_lock(lock);
  int finished;
  for (;;) {
    finished = 0;
    for (size_t i = 0; i < count; i++) finished += delegations[i]->finished;
    if (all ? (size_t)finished == count : finished > 0 || count == 0) break;
    if (timeout_ms < 0) {
      pthread_cond_wait(procord_loop_done_cond(loop), lock);
    } else if (pthread_cond_timedwait(procord_loop_done_cond(loop), lock, &deadline) == ETIMEDOUT ||
               deadline_passed(&deadline)) {
      finished = 0;
      for (size_t i = 0; i < count; i++) finished += delegations[i]->finished;
      break;
    }
  }
  pthread_mutex_unlock(lock);
  return finished;
}
