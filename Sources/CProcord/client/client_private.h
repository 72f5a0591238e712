/*
 * Private to the C core: client/, the main program's side: the link to one
 * worker (worker_link.c), a local worker's stderr (worker_stderr.c), a
 * delegation (delegation.c), the pool (pool.c over pool_workers.c over
 * pool_sources.c, and pool_queue.c); task.c and outcome_describe.c serve
 * public headers only.
 * The one header of this folder that others include (docs/ARCHITECTURE.md).
 */
#ifndef PROCORD_CLIENT_PRIVATE_H
#define PROCORD_CLIENT_PRIVATE_H

#include "io/io_private.h"
#include "procord/connect.h"
#include "procord/connection.h"
#include "procord/delegation.h"
#include "procord/loop.h"
#include "procord/pool.h"
#include "procord/spawn.h"

#include <pthread.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

/* ---- worker_link ---- */

/*
 * The link to one worker, a child process started
 * here or a connection to a worker server, with the frame connection over
 * it. A one-off delegation owns a link for its one task; a pool keeps links
 * and lends them to task after task.
 *
 * The link knows nothing of tasks: it starts the worker, carries frames,
 * and reports once, through on_ended, that nothing of the worker is left
 * (its stream closed and, for a child, the child reaped). Why it ended is
 * the first cause recorded: the connection's, or one the owner gave with
 * procord_link_fail.
 */

typedef struct procord_link_s procord_link_t;

typedef struct procord_link_events_s {
  /* A remote link is connected: frames may be sent. (A local link is ready
     as soon as procord_link_start returns 0; this is not called for it.) */
  void (*on_ready)(procord_link_t *link, void *context);
  /* A frame from the worker, or a parse error (`frame` NULL); see
     procord_frame_cb. */
  void (*on_frame)(procord_link_t *link, const procord_frame_t *frame, int error, void *context);
  /* Nothing is left of the worker. Called once, on a loop turn of its own
     (never inside a procord_link_* call); the owner may free the link here. */
  void (*on_ended)(procord_link_t *link, void *context);
} procord_link_events_t;

typedef struct procord_link_options_s {
  const procord_spawn_options_t *worker; /* a local worker: how to start it */
  const char *remote_host;               /* or a worker server (copied) */
  int remote_port;
  int connect_timeout_ms;
  procord_security_t *security; /* a worker server's: TLS, a secret (a reference is taken) */
  int idle_timeout_ms;
  size_t max_message_size;
  int exit_grace_ms; /* 0: 2000 ms */
  procord_link_events_t events;
  void *context;
} procord_link_options_t;

/* How the link ended, once on_ended has been called. */
typedef struct procord_link_end_s {
  int error; /* the first cause recorded; 0 if the stream ended only because the
                owner closed it (an owner's reader takes 0 as the end of stream) */
  const char *call;
  procord_stage_t stage; /* where it failed; the call's (procord/error.h) */
  const char *detail;
  int exit_code; /* the child's exit code, or -1 */
  int signal;    /* the signal that ended the child, or 0 */
  int killed_after_grace;
} procord_link_end_t;

struct procord_link_s {
  procord_loop_t *loop;
  procord_link_events_t events;
  void *context;
  int remote;
  char *host;
  int port;
  int connect_timeout_ms;
  struct timespec connect_start; /* the connect limit covers the handshake too */
  procord_security_t *security;
  int idle_timeout_ms;
  size_t max_message_size;
  int exit_grace_ms;

  procord_child_t child;
  pid_t pid; /* as spawned (-1 for none); child.pid is -1 once reaped */
  int spawn_error;
  procord_connect_t *attempt;
  procord_connection_t *connection;
  struct event *exit_event; /* pidfd readable, or the reap poll */
  struct event *grace_timer;
  struct event *end_event; /* calls on_ended on a turn of its own */
  int reaped;
  int wait_status;
  int status_known; /* reaped by us: wait_status is real (not when the host reaped it) */
  int ended;
  procord_link_end_t end;
};

/*
 * Makes a link; for a local worker, starts the child now, on the calling
 * thread (a spawn error is kept and reported by procord_link_start).
 * Returns NULL when out of memory.
 */
procord_link_t *procord_link_new(procord_loop_t *loop, const procord_link_options_t *options);

/*
 * On the loop's thread: watches the child and opens its connection, or
 * starts connecting to the server. Returns 0, or the error that ended the
 * link at once (a spawn error, out of memory; recorded in `end`, the child
 * killed and reaped, on_ended never called): the owner frees the link.
 */
int procord_link_start(procord_link_t *link);

/* True when frames may be sent. */
int procord_link_ready(const procord_link_t *link);

/* See procord_connection_send and procord_connection_send_owned_by. */
int procord_link_send(procord_link_t *link, unsigned char kind, const void *body, size_t length);
/* See procord_connection_send_owned_by. */
int procord_link_send_owned_by(procord_link_t *link, unsigned char kind, const void *body,
                               size_t length, procord_body_owner_t *owner);
void *procord_link_take_body(procord_link_t *link);
void procord_link_cork(procord_link_t *link, int corked);

/* Records why the link ends, unless a cause is recorded already: `error`
   at `stage`, whose call (procord_stage_call) goes with it. */
void procord_link_fail(procord_link_t *link, int error, procord_stage_t stage);
/* The same with a call of its own: one a callback reported ("getaddrinfo"
   from a connect), or one that is not the stage's usual ("spawn"). */
void procord_link_fail_call(procord_link_t *link, int error, procord_stage_t stage,
                            const char *call);

/* Closes the stream (a worker that sent `0R` then exits); the child has the
   grace period to exit before it is killed. */
void procord_link_close(procord_link_t *link);

/* Sends `signal` to the child's process group (a remote link is closed
   instead); with `close_stream`, also closes the stream at once. */
void procord_link_kill(procord_link_t *link, int signal, int close_stream);

/* Starts the grace period: if the worker has neither closed its stream nor
   exited when it runs out, the child is killed (SIGKILL) and the stream
   closed. */
void procord_link_start_grace(procord_link_t *link);
void procord_link_cancel_grace(procord_link_t *link);

/* The child's resident memory in bytes, or 0 if unknown (remote, gone). */
size_t procord_link_resident_bytes(const procord_link_t *link);

/* Frees the link: only once it has ended, or after procord_link_start failed,
   or before it was started (a spawned child is then killed and reaped). */
void procord_link_free(procord_link_t *link);

/* ---- worker_stderr ---- */

/*
 * A local worker's stderr, read through a pipe
 * instead of inherited (one-off delegations, see procord/delegation.h).
 * What the worker writes there goes on at once to this program's stderr
 * (descriptor 2), and its last PROCORD_STDERR_TAIL_MAX bytes are kept: the
 * evidence of a worker that ends without answering (a crash leaves the
 * Swift runtime's `Fatal error:` line there).
 *
 * Descriptor 2 is shared with the whole program, so it is never made
 * non-blocking: each write goes only as far as poll(2) says it can without
 * blocking; what must wait is kept (up to 64 KiB) and written when
 * descriptor 2 can take it, and beyond that the worker's output is dropped,
 * with a note once it can be written again. The loop never blocks on a
 * stuck stderr, and the tail keeps everything all the same.
 */

typedef struct procord_worker_stderr_s procord_worker_stderr_t;

/*
 * Makes the pipe (our end close-on-exec and non-blocking) and its events,
 * not yet watched. `*child_fd` is the other end, close-on-exec, to give the
 * worker as its stderr (procord_spawn_options_t.stderr_fd); the caller
 * closes it once the worker has been started. Returns 0, the -errno of
 * pipe2 (-EMFILE...), or -ENOMEM; nothing is left open on failure.
 */
int procord_worker_stderr_new(procord_loop_t *loop, procord_worker_stderr_t **pipe, int *child_fd);

/* The worker's pid, for the note about dropped output. */
void procord_worker_stderr_set_pid(procord_worker_stderr_t *pipe, pid_t pid);

/* Starts reading, on the loop's thread. Returns 0 or -ENOMEM. */
int procord_worker_stderr_start(procord_worker_stderr_t *pipe);

/*
 * Reads what is in the pipe now, without waiting (after the worker's reap,
 * that is everything it wrote). Returns 1 once the end of the pipe has been
 * read (no writer is left), 0 otherwise. On the loop's thread.
 */
int procord_worker_stderr_drain(procord_worker_stderr_t *pipe);

/*
 * Calls `on_end(context)` once, on a loop turn of its own: when the end of
 * the pipe has been read, or `limit_ms` from now, whichever comes first
 * (something the worker started may hold the pipe open). On the loop's
 * thread. Returns 0 or -ENOMEM (then on_end is never called).
 */
int procord_worker_stderr_await_end(procord_worker_stderr_t *pipe, int limit_ms,
                                    void (*on_end)(void *context), void *context);

/*
 * A copy of the tail, NUL-terminated, its length in `*length` (the NUL not
 * counted): at most PROCORD_STDERR_TAIL_MAX bytes, see procord_outcome_t.
 * NULL with `*length` 0 when the worker wrote nothing (or out of memory).
 * The caller frees it.
 */
char *procord_worker_stderr_tail(const procord_worker_stderr_t *pipe, size_t *length);

/*
 * Closes the pipe and frees it (NULL: nothing). Output still waiting for
 * this program's stderr is tried once more, without blocking, then dropped
 * with a note. On the loop's thread once started; any thread before.
 */
void procord_worker_stderr_free(procord_worker_stderr_t *pipe);

/* ---- delegation ---- */

/*
 * What a pool needs of a delegation. A delegation is
 * the task's side (name, input, outcome, deadline, kill); the worker it runs
 * on is a link (worker_link.c), its own for a one-off delegation, lent by a
 * pool for a pooled one. Its struct is delegation.c's own: a pool keeps its
 * bookkeeping (queue, retries, the worker a task is on) in entries of its
 * own, and the delegation reaches the pool only through the owner hooks it
 * was given.
 */

/* What holds a delegation that is not one-off (a pool), called through
   these: the delegation never knows what holds it. On the loop's thread. */
typedef struct procord_delegation_owner_s {
  /* Ends the task early: a kill or a cancel (procord_delegation_kill_requested
     says which), or its deadline (procord_delegation_timed_out). The owner
     finishes a task that has no worker yet at once; it sends a running one's
     worker `signal` (SIGKILL also closes its stream), and finishes the task
     once that worker has ended. */
  void (*stop)(void *owner_context, int signal);
  /* The delegation's last reference is gone: it is freed next, and no hook
     is called again. On any thread (the one that released it). */
  void (*released)(void *owner_context);
} procord_delegation_owner_t;

/* What a frame from the worker means for the task. */
typedef enum procord_frame_effect {
  PROCORD_FRAME_CONTINUES, /* printed; the answer is still to come */
  PROCORD_FRAME_ANSWERS,   /* a terminal frame: the outcome is set */
  PROCORD_FRAME_BREAKS,    /* the task cannot go on: close the link (the
                              outcome is set if it was `E0`) */
} procord_frame_effect_t;

/* Makes a delegation with no worker yet: the caller's reference and the
   finishing one. `owner` NULL: a one-off delegation, which starts its own
   worker; otherwise the hooks of what holds it, with `owner_context`. NULL
   when out of memory. Any thread. */
procord_delegation_t *procord_delegation_create(procord_loop_t *loop,
                                                const procord_delegation_options_t *options,
                                                const procord_delegation_owner_t *owner,
                                                void *owner_context);

/* One more reference (a pool's list of tasks sent ahead holds one). */
void procord_delegation_retain(procord_delegation_t *delegation);

/* Frees a delegation that never reached the loop: both its references. */
void procord_delegation_discard(procord_delegation_t *delegation);

/* A call that fails before a delegation holds its input gives a borrowed
   input back at once (see input_release in procord/delegation.h). */
void procord_delegation_refuse_input(const procord_delegation_options_t *options);

/* Copies a caller's options into `*copy` by their size, and their worker's
   by its own (base_private.h). Returns 0, or PROCORD_EINVAL for a size
   refused (`*copy` then holds what could be copied: enough to refuse the
   input). */
int procord_delegation_options_copy(procord_delegation_options_t *copy,
                                    const procord_delegation_options_t *given);

/* Copies a caller's options for procord_delegate or procord_pool_delegate
   into `*copy`. Returns 0, or PROCORD_EINVAL, a borrowed input given back:
   no options, a size refused, no task name, or not `usable` (no loop or
   pool, nowhere to store the delegation). */
int procord_delegation_options_accept(procord_delegation_options_t *copy,
                                      const procord_delegation_options_t *given, int usable);

/* Starts the deadline timer, if any. On the loop's thread. */
int procord_delegation_arm_deadline(procord_delegation_t *delegation);

/* The task now runs on the worker of `pid` (procord_delegation_pid, and the
   outcome's worker_pid). */
void procord_delegation_runs_on(procord_delegation_t *delegation, pid_t pid);

/* Sends the task (`T`, then `V`) on a ready link. */
int procord_delegation_send(procord_delegation_t *delegation, procord_link_t *link);

/* A task sent ahead came back from a worker that never started it: it was
   not delivered, and that attempt does not count. */
void procord_delegation_take_back(procord_delegation_t *delegation);

/* Its worker ended without an answer, and the task runs again: a fresh
   outcome (the attempts kept), not delivered, on no worker. */
void procord_delegation_prepare_retry(procord_delegation_t *delegation);

/* Handles one frame of the task's answer (see procord_frame_cb). */
procord_frame_effect_t procord_delegation_frame(procord_delegation_t *delegation,
                                                procord_link_t *link, const procord_frame_t *frame,
                                                int error);

/* True once a terminal frame set the outcome. On the loop's thread. */
int procord_delegation_answered(const procord_delegation_t *delegation);

/* A kill or cancel was asked for (the signal), or the owner ended it as
   killed (procord_delegation_end_as_killed); 0 otherwise. Any thread. */
int procord_delegation_kill_requested(const procord_delegation_t *delegation);

/* True once its deadline passed. On the loop's thread. */
int procord_delegation_timed_out(const procord_delegation_t *delegation);

/* Its owner ends it unstarted (a pool shut down at once): the outcome is
   KILLED. */
void procord_delegation_end_as_killed(procord_delegation_t *delegation);

/* Fills in the outcome from how its worker ended (its exit code, signal),
   and, if it did not answer, the cause. */
void procord_delegation_take_end(procord_delegation_t *delegation, const procord_link_end_t *end);

/* Reports the outcome (KILLED or TIMED_OUT if asked for) and drops the
   finishing reference. Once. On the loop's thread. */
void procord_delegation_finish(procord_delegation_t *delegation);

/* ---- pool ---- */

/*
 * Private to the pool's files: pool.c (handing tasks out, a worker's
 * events, shutdown, the calls of other threads), pool_queue.c,
 * pool_workers.c and pool_sources.c, each calling only those after it in
 * this list. All on the loop's thread unless said otherwise.
 */

typedef enum pool_worker_state {
  POOL_WORKER_NEW,      /* made, not yet counted */
  POOL_WORKER_STARTING, /* a server connection in progress */
  POOL_WORKER_IDLE,     /* ready, no task */
  POOL_WORKER_BUSY,     /* running a task (sent, or to be sent once ready) */
  POOL_WORKER_DRAINING, /* answered: waiting for `0R` (or the end of an original worker) */
  POOL_WORKER_CLOSING,  /* retired or killed: waiting for the link to end */
} pool_worker_state_t;

/* Where a pooled task is: in exactly one place at a time. */
typedef enum pool_task_place {
  POOL_TASK_ARRIVING,   /* submitted, on its way to the loop's thread */
  POOL_TASK_QUEUED,     /* in the pool's queue */
  POOL_TASK_SENT_AHEAD, /* in a busy worker's list of tasks sent ahead */
  POOL_TASK_RUNNING,    /* the task of a worker (sent, or to be sent once it is ready) */
  POOL_TASK_OUT,        /* in none: being moved, or finished */
} pool_task_place_t;

struct pool_worker_s;

/* The pool's entry for one of its tasks: its place and retries, which the
   delegation knows nothing of. It lives as long as the delegation (freed by
   the `released` hook). */
typedef struct pool_task_s {
  procord_list_t node; /* in the queue, or a worker's list sent ahead */
  procord_pool_t *pool;
  procord_delegation_t *delegation;
  pool_task_place_t place;
  struct pool_worker_s *worker; /* running it, or holding it sent ahead */
  int idempotent;
  int retries;
  int finished; /* its outcome is reported */
} pool_task_t;

typedef struct pool_worker_s {
  procord_list_t node; /* in the pool's list of workers */
  procord_pool_t *pool;
  procord_link_t *link;
  size_t source;
  pool_worker_state_t state;
  int was_ready;
  int stopped_by_pool; /* retired or killed by the pool: not the source's fault */
  pool_task_t *task;
  /* Tasks sent ahead, in order: they wait in the worker behind `task`. The
     list holds a reference to each delegation. */
  procord_list_t ahead;
  int ahead_count;
  int retire_due;    /* to be retired once its tasks sent ahead are done */
  int said_reusable; /* has sent `0R`: takes task after task */
  int tasks_done;
  struct event *idle_timer;
} pool_worker_t;

typedef struct pool_source_s {
  procord_pool_source_t spec; /* deep copy */
  long long down_until_ms;    /* skipped until then after a failed start */
  int backoff_ms;
  int start_failed;                 /* its last worker could not be started or reached */
  procord_link_end_t start_failure; /* why, for the tasks that come while it rests */
} pool_source_t;

struct procord_pool_s {
  procord_loop_work_t work; /* first: the loop hands this pointer back */
  procord_loop_t *loop;
  int references; /* atomic: the caller's, each task's, the loop's until stopped */
  procord_pool_options_t options;
  pool_source_t *sources;
  size_t next_source;
  procord_list_t workers;              /* the workers, the most recently idle last */
  procord_list_t queue;                /* the tasks waiting for a worker, in order */
  procord_link_events_t worker_events; /* pool.c's, for every worker's link */
  struct event *replenish_timer;
  /* After a start failed for lack of resources, the pool is held at the
     workers it had (procord_pool_hold_size); its end and why, on the loop thread: */
  int hold_backoff_ms;             /* 0 once a start succeeds */
  procord_link_end_t hold_failure; /* for the tasks that come while it holds at none */
  struct event *hold_timer;        /* pumps when the hold ends */

  /* On the loop's thread: */
  int closing;
  int immediate;
  int stopped;

  /* Guarded by lock, readable from any thread: */
  pthread_mutex_t lock;
  int refusing; /* shut down: new tasks are refused */
  int shutdown_requested;
  int shutdown_immediate;              /* an immediate shutdown was asked for */
  int shutdown_queued;                 /* shutdown_call is in the loop's queue */
  procord_queued_call_t shutdown_call; /* the pool's own: a shutdown cannot fail */
  size_t held_at;             /* the most workers while held (written on the loop thread) */
  long long held_until_ms;    /* held until then; 0: not held */
  procord_pool_stats_t stats; /* its `queued`: submitted and not yet handed to a worker */
};

/* pool_sources.c: the sources, copied deep (every string, a reference to
   the security object); procord_pool_read_sources reads a caller's array
   by its size (shallow copies, the array the caller's to free). */
void procord_pool_free_source(procord_pool_source_t *source);
int procord_pool_copy_source(procord_pool_source_t *to, const procord_pool_source_t *from);
int procord_pool_read_sources(const procord_pool_source_t *sources, size_t count,
                              procord_pool_source_t **copies);
/* The next source in turn that does not rest; `*all_down` when all do. */
size_t procord_pool_choose_source(procord_pool_t *pool, int *all_down);
/* A source rests after a failure (for longer each time), or no more once it served. */
void procord_pool_source_failed(procord_pool_t *pool, size_t source,
                                const procord_link_end_t *start_failure);
void procord_pool_source_served(procord_pool_t *pool, size_t source);
/* An error that every source would meet alike: this program's limits. */
int procord_pool_lacks_resources(int error);
/* The most workers the pool may have now (any thread). */
size_t procord_pool_worker_limit(procord_pool_t *pool);
/* Holds the pool at `live` workers for a while after a start failed for
   lack of resources; a worker's end gives them back and ends the hold. */
void procord_pool_hold_size(procord_pool_t *pool, size_t live, const procord_link_end_t *failure);
void procord_pool_end_hold(procord_pool_t *pool);

/* pool_queue.c: stats.queued counts the tasks submitted and not yet handed
   to a worker (`delta`; `retried` counts a retry too); returns the count
   before. */
size_t procord_pool_count_queued(procord_pool_t *pool, int delta, int retried);
/* Into the queue (already counted), or back at its front, counted again. */
void procord_pool_queue_task(procord_pool_t *pool, pool_task_t *task, int at_front);
void procord_pool_requeue_task(procord_pool_t *pool, pool_task_t *task, int retried);
/* Out of the queue, uncounted (on_room if it was full). */
void procord_pool_unqueue_task(procord_pool_t *pool, pool_task_t *task);
pool_task_t *procord_pool_first_queued(procord_pool_t *pool);
pool_task_t *procord_pool_dequeue_first(procord_pool_t *pool);
/* Reports the task's outcome, once (with why it never reached a worker);
   its entry may be gone after it. */
void procord_pool_finish_task(procord_pool_t *pool, pool_task_t *task);
void procord_pool_fail_task(procord_pool_t *pool, pool_task_t *task,
                            const procord_link_end_t *failure);

/* pool_workers.c: a worker's state, counted in the stats (any thread reads
   procord_pool_live_workers). */
void procord_pool_set_worker_state(pool_worker_t *worker, pool_worker_state_t state);
size_t procord_pool_live_workers(procord_pool_t *pool);
/* The pool's workers, first to last, or NULL. */
pool_worker_t *procord_pool_first_worker(procord_pool_t *pool);
pool_worker_t *procord_pool_next_worker(procord_pool_t *pool, pool_worker_t *worker);
/* Closes a worker's stream (retire), or signals it; either way it is
   CLOSING, and stopped by the pool, not by its source's fault. */
void procord_pool_retire_worker(pool_worker_t *worker);
void procord_pool_kill_worker(pool_worker_t *worker, int signal);
/* The worker no longer runs its task, which is returned (in no place). */
pool_task_t *procord_pool_unbind_task(pool_worker_t *worker);
/* Idle, last in the list, its idle timer armed. */
void procord_pool_become_idle(pool_worker_t *worker);
/* Starts a worker from source `s`: STARTING, or IDLE (a local one), or
   NULL with `*failure` (the source then rests, or the pool holds). */
pool_worker_t *procord_pool_start_worker(procord_pool_t *pool, size_t s,
                                         procord_link_end_t *failure);
/* Sends the worker's task (a failure retires the worker); hands a task to
   an idle or starting worker. */
void procord_pool_send_task(pool_worker_t *worker);
void procord_pool_assign_task(pool_worker_t *worker, pool_task_t *task);
/* The most recently used ready idle worker, or a starting one with no task. */
pool_worker_t *procord_pool_find_free_worker(procord_pool_t *pool);
/* Tasks sent ahead to a busy worker that serves task after task: whether
   it takes one more, the one with the shortest line, sending one, taking
   one off (the first, or `last`; the caller gets the list's reference),
   and starting the first once the worker said `0R`. */
int procord_pool_may_send_ahead(procord_pool_t *pool, const pool_worker_t *worker);
pool_worker_t *procord_pool_find_busy_for_more(procord_pool_t *pool);
void procord_pool_send_ahead(pool_worker_t *worker, pool_task_t *task);
pool_task_t *procord_pool_take_ahead(pool_worker_t *worker, int last);
void procord_pool_start_task_sent_ahead(pool_worker_t *worker);

#endif
