/*
 * The delegated-task state machine (procord/delegation.h): send the task,
 * read the answer, map it to an outcome, enforce the deadline, and report.
 * The worker is a link (client_private.h): a one-off delegation starts its own
 * here; a pool (pool.c) lends one.
 */
#define _GNU_SOURCE
#include "client/client_private.h"
#include "procord/error.h"
#include "base/base_private.h"

#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* How long a worker that ended without answering may keep its stderr's pipe
   open after its reap (what it started may hold it), before the outcome. */
#define STDERR_END_WAIT_MS 100

/* The serialized input, shared by every attempt and the frames in flight. */
typedef struct procord_shared_input_s {
  procord_body_owner_t owner; /* how the frames in flight release it */
  int references;             /* atomic */
  size_t length;
  const unsigned char *data;               /* `bytes`, or the caller's own (borrowed) */
  void (*borrowed_release)(void *context); /* for borrowed input: gives it back */
  void *borrowed_context;
  unsigned char bytes[];
} procord_shared_input_t;

struct procord_delegation_s {
  procord_loop_work_t work; /* first: the loop hands this pointer back (one-off only) */
  procord_loop_t *loop;
  int references;                  /* atomic */
  int kill_requested;              /* atomic: 0, or the signal asked for (SIGKILL, SIGTERM) */
  int stop_queued;                 /* atomic: stop_call is in the loop's queue */
  procord_queued_call_t stop_call; /* its own: a kill or cancel needs no memory */
  char *task_name;
  procord_shared_input_t *input;
  int deadline_ms;
  procord_done_cb on_done;
  procord_print_cb on_print;
  int capture_output;
  void *context;
  /* What holds a pooled task (the hooks and their context); NULL: one-off. */
  const procord_delegation_owner_t *owner;
  void *owner_context;

  procord_link_t *link; /* one-off: the worker it runs on, or NULL */
  pid_t pid;            /* atomic: the worker's pid, or -1 */
  int spawn_failed;     /* one-off: its worker could not be started */
  struct event *deadline_timer;
  int timed_out;
  int answered;  /* a terminal frame set the outcome */
  int delivered; /* atomic: its frames went to a ready worker */
  procord_outcome_t outcome;
  void *body;
  /* One-off, the worker's stderr not redirected: its pipe, until the finish. */
  procord_worker_stderr_t *worker_stderr;
  int outcome_ready; /* atomic: the outcome is final (set before on_done) */
  int finished;      /* guarded by the loop's done lock: on_done has returned */
};

void procord_delegation_retain(procord_delegation_t *d) {
  __atomic_add_fetch(&d->references, 1, __ATOMIC_RELAXED);
}

static void input_release(procord_shared_input_t *input) {
  if (!input || __atomic_sub_fetch(&input->references, 1, __ATOMIC_ACQ_REL) != 0) return;
  if (input->borrowed_release) input->borrowed_release(input->borrowed_context);
  procord_free(input);
}

/* How a `V` frame in flight releases the shared input it was sent from. */
static void input_release_owner(procord_body_owner_t *owner) {
  input_release((procord_shared_input_t *)owner); /* the owner is the first member */
}

/* Its last reference is gone. */
static void free_delegation(procord_delegation_t *d) {
  if (d->owner) d->owner->released(d->owner_context);
  procord_free(d->task_name);
  input_release(d->input);
  procord_free(d->body);
  procord_worker_stderr_free(d->worker_stderr); /* a worker never started on the loop */
  procord_free((char *)d->outcome.stderr_tail); /* ours: the copy made at the finish */
  procord_free(d);
}

/* Drops a reference; true when it was the last. */
static int drop_reference(procord_delegation_t *d) {
  int left = __atomic_sub_fetch(&d->references, 1, __ATOMIC_ACQ_REL);
  PROCORD_ASSERT(left >= 0);
  return left == 0;
}

void procord_delegation_release(procord_delegation_t *d) {
  if (d && drop_reference(d)) free_delegation(d);
}

void procord_delegation_discard(procord_delegation_t *d) {
  PROCORD_ASSERT(__atomic_load_n(&d->references, __ATOMIC_ACQUIRE) == 2); /* no one else has it */
  d->references = 1;
  procord_delegation_release(d);
}

procord_delegation_t *procord_delegation_create(procord_loop_t *loop,
                                                const procord_delegation_options_t *options,
                                                const procord_delegation_owner_t *owner,
                                                void *owner_context) {
  procord_delegation_t *d = procord_allocate_zeroed(1, sizeof *d);
  if (!d) return NULL;
  d->loop = loop;
  d->references = 2; /* the caller's and the finishing one */
  d->task_name = procord_strdup(options->task_name);
  int borrowed = options->input_release != NULL;
  d->input = borrowed ? procord_allocate(sizeof *d->input)
                      : procord_malloc_body(sizeof *d->input + options->input_length);
  if (!d->task_name || !d->input) {
    procord_free(d->task_name);
    procord_free(d->input);
    procord_free(d);
    return NULL;
  }
  d->input->owner.release = input_release_owner;
  d->input->references = 1;
  d->input->length = options->input_length;
  d->input->data = borrowed ? options->input : d->input->bytes;
  d->input->borrowed_release = options->input_release;
  d->input->borrowed_context = options->input_context;
  if (!borrowed && options->input_length)
    memcpy(d->input->bytes, options->input, options->input_length);
  d->deadline_ms = options->deadline_ms;
  d->on_done = options->on_done;
  d->on_print = options->on_print;
  d->capture_output = options->capture_output;
  d->context = options->context;
  d->owner = owner;
  d->owner_context = owner_context;
  d->outcome.exit_code = -1;
  d->outcome.worker_pid = -1;
  d->pid = -1;
  return d;
}

void procord_delegation_finish(procord_delegation_t *d) {
  /* Once: its outcome is final from here on. */
  PROCORD_ASSERT(!__atomic_load_n(&d->outcome_ready, __ATOMIC_ACQUIRE) && !d->finished);
  if (d->deadline_timer) event_free(d->deadline_timer);
  d->deadline_timer = NULL;
  if (__atomic_load_n(&d->kill_requested, __ATOMIC_ACQUIRE)) {
    d->outcome.kind = PROCORD_OUTCOME_KILLED;
    d->outcome.error = 0;
    d->outcome.call = NULL;
    d->outcome.stage = PROCORD_STAGE_NONE;
  } else if (d->timed_out) {
    d->outcome.kind = PROCORD_OUTCOME_TIMED_OUT;
    d->outcome.error = PROCORD_ETIMEOUT;
    d->outcome.call = procord_stage_call(PROCORD_STAGE_DEADLINE);
    d->outcome.stage = PROCORD_STAGE_DEADLINE;
  }
  if (d->outcome.kind != PROCORD_OUTCOME_VALUE && d->outcome.kind != PROCORD_OUTCOME_EXCEPTION &&
      d->outcome.kind != PROCORD_OUTCOME_UNKNOWN_EXCEPTION) {
    d->outcome.body = NULL;
    d->outcome.length = 0;
  }
  if (d->worker_stderr) {
    if (d->outcome.kind == PROCORD_OUTCOME_DISCONNECTED)
      d->outcome.stderr_tail =
          procord_worker_stderr_tail(d->worker_stderr, &d->outcome.stderr_tail_length);
    procord_worker_stderr_free(d->worker_stderr);
    d->worker_stderr = NULL;
  }
  /* Readable from any thread before on_done runs: on_done may wake a
     thread that reads it at once. */
  __atomic_store_n(&d->outcome_ready, 1, __ATOMIC_RELEASE);
  if (d->on_done) d->on_done(d, &d->outcome, d->context);
  if (!d->owner) procord_loop_remove_work(d->loop, &d->work);
  /* The finishing reference goes with `finished` set, under the done lock:
     a waiter that sees it finished and drops its own reference frees the
     delegation then and there (nothing of it is held here any more). */
  procord_loop_t *loop = d->loop;
  pthread_mutex_lock(procord_loop_done_lock(loop));
  d->finished = 1;
  pthread_cond_broadcast(procord_loop_done_cond(loop));
  int last = drop_reference(d);
  pthread_mutex_unlock(procord_loop_done_lock(loop));
  if (last) free_delegation(d);
}

int procord_delegation_send(procord_delegation_t *d, procord_link_t *link) {
  /* Sent only while it may still be answered (a retry comes after no answer). */
  PROCORD_ASSERT(!d->answered && !__atomic_load_n(&d->outcome_ready, __ATOMIC_ACQUIRE));
  d->outcome.attempts++;
  procord_link_cork(link, 1); /* `T` and `V` in one write */
  int error = procord_link_send(link, PROCORD_FRAME_TASK, d->task_name, strlen(d->task_name));
  if (!error) {
    __atomic_add_fetch(&d->input->references, 1, __ATOMIC_RELAXED);
    error = procord_link_send_owned_by(link, PROCORD_FRAME_VALUE, d->input->data, d->input->length,
                                       &d->input->owner);
  }
  procord_link_cork(link, 0);
  /* Only now may the worker have it: before, a retry cannot run it twice. */
  if (!error) __atomic_store_n(&d->delivered, 1, __ATOMIC_RELEASE);
  return error;
}

int procord_delegation_is_delivered(const procord_delegation_t *d) {
  return __atomic_load_n(&d->delivered, __ATOMIC_ACQUIRE);
}

void procord_delegation_runs_on(procord_delegation_t *d, pid_t pid) {
  __atomic_store_n(&d->pid, pid, __ATOMIC_RELEASE);
  d->outcome.worker_pid = pid;
}

void procord_delegation_take_back(procord_delegation_t *d) {
  PROCORD_ASSERT(d->outcome.attempts > 0 && !d->answered);
  __atomic_store_n(&d->delivered, 0, __ATOMIC_RELEASE);
  d->outcome.attempts--; /* it was sent, but never taken up */
}

void procord_delegation_prepare_retry(procord_delegation_t *d) {
  PROCORD_ASSERT(!d->answered && !__atomic_load_n(&d->outcome_ready, __ATOMIC_ACQUIRE));
  procord_outcome_t fresh = {.exit_code = -1, .worker_pid = -1, .attempts = d->outcome.attempts};
  d->outcome = fresh;
  __atomic_store_n(&d->delivered, 0, __ATOMIC_RELEASE);
  __atomic_store_n(&d->pid, -1, __ATOMIC_RELEASE);
}

int procord_delegation_answered(const procord_delegation_t *d) { return d->answered; }

int procord_delegation_kill_requested(const procord_delegation_t *d) {
  return __atomic_load_n(&d->kill_requested, __ATOMIC_ACQUIRE);
}

int procord_delegation_timed_out(const procord_delegation_t *d) { return d->timed_out; }

void procord_delegation_end_as_killed(procord_delegation_t *d) {
  __atomic_store_n(&d->kill_requested, 1, __ATOMIC_RELEASE);
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
    /* An error means our own stdout is gone, or full and non-blocking
       (the loop does not wait for it): nothing better to do. */
    (void)procord_write_all(destination == 'O' ? STDOUT_FILENO : STDERR_FILENO, 0, frame->body + 1,
                            frame->length - 1, -1);
  }
}

static procord_frame_effect_t take_answer(procord_delegation_t *d, procord_outcome_kind_t kind,
                                          procord_link_t *link, const procord_frame_t *frame) {
  PROCORD_ASSERT(!d->answered); /* one terminal frame per task */
  d->answered = 1;
  d->outcome.kind = kind;
  d->body = procord_link_take_body(link);
  d->outcome.body = d->body;
  d->outcome.length = frame->length;
  if (d->deadline_timer) event_del(d->deadline_timer);
  return PROCORD_FRAME_ANSWERS;
}

procord_frame_effect_t procord_delegation_frame(procord_delegation_t *d, procord_link_t *link,
                                                const procord_frame_t *frame, int error) {
  if (error) {
    procord_link_fail(link, error, PROCORD_STAGE_PARSE);
    return PROCORD_FRAME_BREAKS;
  }
  switch (frame->kind) {
  case PROCORD_FRAME_PRINT:
  case PROCORD_FRAME_FLUSH: print(d, frame); return PROCORD_FRAME_CONTINUES;
  case PROCORD_FRAME_VALUE: return take_answer(d, PROCORD_OUTCOME_VALUE, link, frame);
  case PROCORD_FRAME_EXCEPTION: return take_answer(d, PROCORD_OUTCOME_EXCEPTION, link, frame);
  case PROCORD_FRAME_UNKNOWN_EXCEPTION:
    return take_answer(d, PROCORD_OUTCOME_UNKNOWN_EXCEPTION, link, frame);
  case PROCORD_FRAME_ERROR: {
    int code = PROCORD_EILL_FORMED; /* the parser checked the body already */
    procord_error_from_frame_body(frame->body, frame->length, &code);
    if (code == PROCORD_ETASK_NOT_SUPPORTED) {
      PROCORD_ASSERT(!d->answered);
      d->answered = 1;
      d->outcome.kind = PROCORD_OUTCOME_NO_WORKER;
      if (d->deadline_timer) event_del(d->deadline_timer);
    } else {
      procord_link_fail(link, code, PROCORD_STAGE_PEER);
    }
    return PROCORD_FRAME_BREAKS;
  }
  default:
    procord_link_fail(link, PROCORD_EUNEXPECTED, PROCORD_STAGE_RECEIVE);
    return PROCORD_FRAME_BREAKS;
  }
}

void procord_delegation_take_end(procord_delegation_t *d, const procord_link_end_t *end) {
  PROCORD_ASSERT(!__atomic_load_n(&d->outcome_ready, __ATOMIC_ACQUIRE));
  d->outcome.exit_code = end->exit_code;
  d->outcome.signal = end->signal;
  d->outcome.killed_after_grace = end->killed_after_grace;
  if (d->answered) return;
  d->outcome.kind = PROCORD_OUTCOME_DISCONNECTED;
  d->outcome.error = end->error ? end->error : PROCORD_EDISCONNECTED;
  d->outcome.call = end->call ? end->call : procord_stage_call(PROCORD_STAGE_READ);
  d->outcome.stage = end->call ? end->stage : PROCORD_STAGE_READ;
  d->outcome.detail = end->detail;
}

/* One-off: killing ends the worker; a pooled task asks its owner. */
static void stop_task(procord_delegation_t *d, int signal) {
  if (d->owner) d->owner->stop(d->owner_context, signal);
  else if (d->link)
    procord_link_kill(d->link, signal, signal == SIGKILL);
}

static void on_deadline(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  procord_delegation_t *d = context;
  if (d->answered || d->finished) return;
  PROCORD_ASSERT(!d->timed_out); /* armed once, and fires once */
  d->timed_out = 1;
  /* SIGTERM lets the task clean up; the grace period then SIGKILLs. */
  stop_task(d, SIGTERM);
}

int procord_delegation_arm_deadline(procord_delegation_t *d) {
  if (d->deadline_ms <= 0) return 0;
  d->deadline_timer = evtimer_new(procord_loop_base(d->loop), on_deadline, d);
  if (!d->deadline_timer) return -ENOMEM;
  procord_timer_arm(d->deadline_timer, d->deadline_ms);
  return evtimer_pending(d->deadline_timer, NULL) ? 0 : -ENOMEM;
}

/* ---- One-off delegations: a link of their own. ---- */

static void one_off_on_ready(procord_link_t *link, void *context) {
  procord_delegation_t *d = context;
  int error = procord_delegation_send(d, link);
  if (error) {
    procord_link_fail(link, error, PROCORD_STAGE_SETUP);
    procord_link_close(link);
  }
}

static void one_off_on_frame(procord_link_t *link, const procord_frame_t *frame, int error,
                             void *context) {
  procord_delegation_t *d = context;
  if (d->answered) {
    /* After the terminal frame only `0R` may come; either way we are done. */
    if (!error && frame->kind == PROCORD_FRAME_REUSABLE) d->outcome.reusable = 1;
    procord_link_close(link);
    return;
  }
  switch (procord_delegation_frame(d, link, frame, error)) {
  case PROCORD_FRAME_CONTINUES: return;
  /* Now only `0R` or the end of the stream may come, and soon. */
  case PROCORD_FRAME_ANSWERS: procord_link_start_grace(link); return;
  case PROCORD_FRAME_BREAKS: procord_link_close(link); return;
  }
}

static void finish_after_stderr(void *context) { procord_delegation_finish(context); }

/* After the reap, everything the worker wrote to its stderr is in the pipe:
   read it now. Without an answer (a crash), the evidence must be whole:
   wait for the pipe's end too, a little (something the worker started may
   hold it). True when waiting: the finish follows. */
static int waits_for_stderr(procord_delegation_t *d) {
  if (!d->worker_stderr || procord_worker_stderr_drain(d->worker_stderr)) return 0;
  if (d->answered || d->timed_out || __atomic_load_n(&d->kill_requested, __ATOMIC_ACQUIRE))
    return 0;
  return procord_worker_stderr_await_end(d->worker_stderr, STDERR_END_WAIT_MS, finish_after_stderr,
                                         d) == 0;
}

static void one_off_on_ended(procord_link_t *link, void *context) {
  procord_delegation_t *d = context;
  procord_delegation_take_end(d, &link->end);
  d->link = NULL;
  procord_link_free(link);
  /* The task is over: a deadline must not relabel a crash while the pipe drains. */
  if (d->deadline_timer) event_del(d->deadline_timer);
  if (waits_for_stderr(d)) return;
  procord_delegation_finish(d);
}

/* The loop is freed with the task still running: it ends as killed. */
static void kill_one_off_on_abort(procord_loop_work_t *work) {
  procord_delegation_t *d = (procord_delegation_t *)work;
  __atomic_store_n(&d->kill_requested, 1, __ATOMIC_RELEASE);
  stop_task(d, SIGKILL);
}

static void start_one_off_on_loop(void *context) {
  procord_delegation_t *d = context;
  procord_loop_add_work(d->loop, &d->work);
  int error = procord_link_start(d->link);
  if (!error) error = procord_delegation_arm_deadline(d);
  if (!error && d->worker_stderr) error = procord_worker_stderr_start(d->worker_stderr);
  if (error) {
    procord_link_fail(d->link, error, PROCORD_STAGE_SETUP); /* unless the start said why already */
    procord_delegation_take_end(d, &d->link->end);
    procord_link_free(d->link);
    d->link = NULL;
    procord_delegation_finish(d);
    return;
  }
  if (procord_link_ready(d->link)) one_off_on_ready(d->link, d);
  if (__atomic_load_n(&d->kill_requested, __ATOMIC_ACQUIRE)) kill_one_off_on_abort(&d->work);
}

typedef struct spawn_call_s {
  procord_delegation_t *delegation;
  procord_link_options_t options;
  int pipe_stderr; /* give the worker a pipe as its stderr */
} spawn_call_t;

/* Starts the worker: on the loop's thread, whose life a worker's
   parent-death signal follows. */
static void spawn_link(void *argument) {
  spawn_call_t *call = argument;
  procord_delegation_t *d = call->delegation;
  procord_link_options_t options = call->options;
  procord_spawn_options_t worker;
  int stderr_fd = -1;
  /* Without a pipe (out of descriptors, say) the worker inherits our stderr,
     as it always did: a crash then leaves no tail, and the task still runs. */
  if (call->pipe_stderr && procord_worker_stderr_new(d->loop, &d->worker_stderr, &stderr_fd) == 0) {
    worker = *options.worker;
    worker.stderr_fd = stderr_fd;
    options.worker = &worker;
  }
  d->link = procord_link_new(d->loop, &options);
  if (stderr_fd >= 0) close(stderr_fd); /* the worker has its copy */
  if (!d->link || d->link->spawn_error) {
    procord_worker_stderr_free(d->worker_stderr);
    d->worker_stderr = NULL;
  }
  if (!d->link) return;
  __atomic_store_n(&d->pid, d->link->pid, __ATOMIC_RELEASE);
  d->outcome.worker_pid = d->link->pid;
  d->spawn_failed = d->link->spawn_error != 0;
  if (d->worker_stderr) procord_worker_stderr_set_pid(d->worker_stderr, d->link->pid);
}

void procord_delegation_options_init(procord_delegation_options_t *options) {
  procord_options_clear(options, sizeof *options);
  procord_spawn_options_init(&options->worker);
}

int procord_delegation_options_copy(procord_delegation_options_t *copy,
                                    const procord_delegation_options_t *given) {
  int error = PROCORD_OPTIONS_COPY(*copy, given, PROCORD_FIRST_SIZE_DELEGATION_OPTIONS);
  if (!error) error = procord_spawn_options_nested(&copy->worker);
  return error;
}

void procord_delegation_refuse_input(const procord_delegation_options_t *options) {
  if (options && options->input_release) options->input_release(options->input_context);
}

int procord_delegation_options_accept(procord_delegation_options_t *copy,
                                      const procord_delegation_options_t *given, int usable) {
  if (!given) return PROCORD_EINVAL;
  if (procord_delegation_options_copy(copy, given) == 0 && copy->task_name && usable) return 0;
  procord_delegation_refuse_input(copy);
  return PROCORD_EINVAL;
}

int procord_delegate(procord_loop_t *loop, const procord_delegation_options_t *given,
                     procord_delegation_t **result) {
  procord_delegation_options_t copy;
  const procord_delegation_options_t *options = &copy;
  if (procord_delegation_options_accept(&copy, given, loop && result) != 0) return PROCORD_EINVAL;
  /* A local worker shares our stdout (socket mode): what we printed so far
     comes first. Here, on the caller's thread, not on the loop's. */
  if (!options->remote_host) fflush(stdout);
  procord_delegation_t *d = procord_delegation_create(loop, options, NULL, NULL);
  if (!d) {
    procord_delegation_refuse_input(options);
    return -ENOMEM;
  }
  d->work.abort = kill_one_off_on_abort;
  spawn_call_t call = {
      .delegation = d,
      .options =
          {
              .worker = &options->worker,
              .remote_host = options->remote_host,
              .remote_port = options->remote_port,
              .connect_timeout_ms = options->connect_timeout_ms,
              .security = options->security,
              .idle_timeout_ms = options->idle_timeout_ms,
              .max_message_size = options->max_message_size,
              .exit_grace_ms = options->exit_grace_ms,
              .events = {one_off_on_ready, one_off_on_frame, one_off_on_ended},
              .context = d,
          },
      /* Only a stderr that would be ours: not one the caller chose (2
         included), nor one a socket-mode worker sends as frames. */
      .pipe_stderr =
          !options->remote_host && options->worker.stderr_fd <= 0 &&
          !(options->capture_output && options->worker.channel == PROCORD_CHANNEL_SOCKET),
  };
  procord_loop_call_and_wait(loop, spawn_link, &call);
  int error = d->link ? 0 : -ENOMEM;
  if (!error) error = procord_loop_call(loop, start_one_off_on_loop, d);
  if (error) {
    procord_link_free(d->link); /* kills and reaps a child started already */
    procord_delegation_discard(d);
    return error;
  }
  *result = d;
  return 0;
}

pid_t procord_delegation_pid(const procord_delegation_t *d) {
  return __atomic_load_n(&d->pid, __ATOMIC_ACQUIRE);
}

static int is_finished(procord_delegation_t *d) {
  pthread_mutex_lock(procord_loop_done_lock(d->loop));
  int finished = d->finished;
  pthread_mutex_unlock(procord_loop_done_lock(d->loop));
  return finished;
}

int procord_delegation_is_finished(procord_delegation_t *d) { return is_finished(d); }

const procord_outcome_t *procord_delegation_outcome(procord_delegation_t *d) {
  return __atomic_load_n(&d->outcome_ready, __ATOMIC_ACQUIRE) ? &d->outcome : NULL;
}

static void kill_on_loop(void *context) {
  procord_delegation_t *d = context;
  /* Cleared before kill_requested is read: a request that found the call
     still queued, and did not queue it again, is read here. */
  __atomic_store_n(&d->stop_queued, 0, __ATOMIC_SEQ_CST);
  /* The strongest request wins: a kill after a cancellation is a kill. */
  int signal = __atomic_load_n(&d->kill_requested, __ATOMIC_SEQ_CST) == SIGTERM ? SIGTERM : SIGKILL;
  if (!is_finished(d)) stop_task(d, signal);
  procord_delegation_release(d);
}

/* Asks the loop to stop the worker with `signal` (SIGKILL, or SIGTERM and
   then SIGKILL after the grace period); kill_requested holds the signal (any value
   but SIGTERM, such as the 1 the pool sets when it shuts down, means SIGKILL). */
static int request_stop(procord_delegation_t *d, int signal) {
  /* A worker that could not start has nothing to kill: it ends as it is. */
  if (d->spawn_failed || is_finished(d)) return PROCORD_ECLOSED;
  int none = 0;
  if (signal == SIGKILL) __atomic_store_n(&d->kill_requested, SIGKILL, __ATOMIC_SEQ_CST);
  else if (!__atomic_compare_exchange_n(&d->kill_requested, &none, signal, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST))
    return 0; /* already being stopped, as hard or harder */
  /* One call in the queue at a time, in the delegation's own node. */
  if (__atomic_exchange_n(&d->stop_queued, 1, __ATOMIC_SEQ_CST)) return 0;
  procord_delegation_retain(d);
  procord_loop_queue(d->loop, &d->stop_call, kill_on_loop, d);
  return 0;
}

int procord_delegation_kill(procord_delegation_t *d) { return request_stop(d, SIGKILL); }

int procord_delegation_cancel(procord_delegation_t *d) { return request_stop(d, SIGTERM); }

typedef struct finished_count_s {
  procord_delegation_t *const *delegations;
  size_t count;
  int all;
  size_t prefix; /* all: the first `prefix` have finished (a finished one stays so) */
} finished_count_t;

/* With the done lock held: true when enough have finished. Waiting for all
   of many costs one pass in all, not one per wakeup. */
static int enough_finished(void *argument) {
  finished_count_t *c = argument;
  if (c->all) {
    while (c->prefix < c->count && c->delegations[c->prefix]->finished) c->prefix++;
    return c->prefix == c->count;
  }
  for (size_t i = 0; i < c->count; i++)
    if (c->delegations[i]->finished) return 1;
  return c->count == 0;
}

int procord_delegation_wait(procord_loop_t *loop, procord_delegation_t *const *delegations,
                            size_t count, int all, int timeout_ms) {
  finished_count_t counted = {delegations, count, all, 0};
  int waited = procord_loop_wait_until(loop, enough_finished, &counted, timeout_ms);
  if (waited < 0) return waited; /* -EDEADLK: on the loop's own thread */
  int finished = 0;
  pthread_mutex_lock(procord_loop_done_lock(loop));
  for (size_t i = 0; i < count; i++) finished += delegations[i]->finished;
  pthread_mutex_unlock(procord_loop_done_lock(loop));
  return finished;
}
