/*
 * A pool of reusable workers (procord/pool.h): one queue of tasks, workers
 * lent to them in turn over links (worker_link.h), started, reused on `0R`,
 * retired and replaced on the loop's thread.
 */
#define _GNU_SOURCE
#include "client/client_private.h"
#include "base/base_private.h"
#include "procord/error.h"

#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_QUEUE_LENGTH 65536
#define FIRST_BACKOFF_MS 250
#define LAST_BACKOFF_MS 10000

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
  procord_list_t node;      /* in the queue, or a worker's list sent ahead */
  procord_pool_t *pool;
  procord_delegation_t *delegation;
  pool_task_place_t place;
  struct pool_worker_s *worker; /* running it, or holding it sent ahead */
  int idempotent;
  int retries;
  int finished;             /* its outcome is reported */
} pool_task_t;

typedef struct pool_worker_s {
  procord_list_t node;       /* in the pool's list of workers */
  procord_pool_t *pool;
  procord_link_t *link;
  size_t source;
  pool_worker_state_t state;
  int was_ready;
  int stopped_by_pool;       /* retired or killed by the pool: not the source's fault */
  pool_task_t *task;
  /* Tasks sent ahead, in order: they wait in the worker behind `task`. The
     list holds a reference to each delegation. */
  procord_list_t ahead;
  int ahead_count;
  int retire_due;                  /* to be retired once its tasks sent ahead are done */
  int said_reusable;               /* has sent `0R`: takes task after task */
  int tasks_done;
  struct event *idle_timer;
} pool_worker_t;

typedef struct pool_source_s {
  procord_pool_source_t spec; /* deep copy */
  long long down_until_ms;    /* skipped until then after a failed start */
  int backoff_ms;
  int start_failed;           /* its last worker could not be started or reached */
  procord_link_end_t start_failure; /* why, for the tasks that come while it rests */
} pool_source_t;

struct procord_pool_s {
  procord_loop_work_t work; /* first: the loop hands this pointer back */
  procord_loop_t *loop;
  int references;           /* atomic: the caller's, each task's, the loop's until stopped */
  procord_pool_options_t options;
  pool_source_t *sources;
  size_t next_source;
  procord_list_t workers;     /* the workers, the most recently idle last */
  procord_list_t queue;     /* the tasks waiting for a worker, in order */
  struct event *replenish_timer;
  /* After a start failed for lack of resources, the pool is held at the
     workers it had (see hold_size); its end and why, on the loop thread: */
  int hold_backoff_ms;               /* 0 once a start succeeds */
  procord_link_end_t hold_failure;   /* for the tasks that come while it holds at none */
  struct event *hold_timer;          /* pumps when the hold ends */

  /* On the loop's thread: */
  int closing;
  int immediate;
  int stopped;

  /* Guarded by lock, readable from any thread: */
  pthread_mutex_t lock;
  int refusing;             /* shut down: new tasks are refused */
  int shutdown_requested;
  int shutdown_immediate;   /* an immediate shutdown was asked for */
  int shutdown_queued;      /* shutdown_call is in the loop's queue */
  procord_queued_call_t shutdown_call; /* the pool's own: a shutdown cannot fail */
  size_t held_at;           /* the most workers while held (written on the loop thread) */
  long long held_until_ms;  /* held until then; 0: not held */
  procord_pool_stats_t stats; /* its `queued`: submitted and not yet handed to a worker */
};

/* ---- Options: a deep copy, so the caller's may go away. ---- */

static void free_strings(const char *const *strings) {
  if (!strings) return;
  for (size_t i = 0; strings[i]; i++) procord_free((char *)strings[i]);
  procord_free((void *)strings);
}

static char **copy_strings(const char *const *strings, int *failed) {
  if (!strings) return NULL;
  size_t count = 0;
  while (strings[count]) count++;
  char **copy = procord_allocate_zeroed(count + 1, sizeof *copy);
  for (size_t i = 0; copy && i < count; i++) {
    if (!(copy[i] = procord_strdup(strings[i]))) {
      free_strings((const char *const *)copy); /* those before, up to this NULL */
      copy = NULL;
    }
  }
  if (!copy) *failed = 1;
  return copy;
}

static char *copy_string(const char *string, int *failed) {
  if (!string) return NULL;
  char *copy = procord_strdup(string);
  if (!copy) *failed = 1;
  return copy;
}

static void free_source(procord_pool_source_t *s) {
  procord_free((char *)s->worker.program);
  free_strings(s->worker.arguments);
  free_strings(s->worker.environment);
  procord_free((char *)s->worker.working_directory);
  procord_free((char *)s->remote_host);
  procord_security_release(s->security);
}

static int copy_source(procord_pool_source_t *to, const procord_pool_source_t *from) {
  int failed = 0;
  *to = *from;
  to->worker.program = copy_string(from->worker.program, &failed);
  to->worker.arguments = (const char *const *)copy_strings(from->worker.arguments, &failed);
  to->worker.environment = (const char *const *)copy_strings(from->worker.environment, &failed);
  to->worker.working_directory = copy_string(from->worker.working_directory, &failed);
  to->remote_host = copy_string(from->remote_host, &failed);
  procord_security_retain(to->security);
  if (failed) free_source(to);
  return failed ? -ENOMEM : 0;
}

/* ---- References and counts. ---- */

static void pool_unref(procord_pool_t *p) {
  int left = __atomic_sub_fetch(&p->references, 1, __ATOMIC_ACQ_REL);
  PROCORD_ASSERT(left >= 0);
  if (left != 0) return;
  for (size_t i = 0; i < p->options.source_count; i++) free_source(&p->sources[i].spec);
  procord_free(p->sources);
  pthread_mutex_destroy(&p->lock);
  procord_free(p);
}

static int counts_as_live(pool_worker_state_t state) {
  return state != POOL_WORKER_NEW && state != POOL_WORKER_CLOSING;
}

static void count_state(procord_pool_t *p, pool_worker_state_t state, int delta) {
  if (counts_as_live(state)) p->stats.workers += (size_t)delta;
  if (state == POOL_WORKER_IDLE) p->stats.idle += (size_t)delta;
  if (state == POOL_WORKER_BUSY || state == POOL_WORKER_DRAINING) p->stats.busy += (size_t)delta;
}

static void set_worker_state(pool_worker_t *w, pool_worker_state_t state) {
  procord_pool_t *p = w->pool;
  /* Forward only: a closing worker waits for its end, and never works again. */
  PROCORD_ASSERT(state != POOL_WORKER_NEW);
  PROCORD_ASSERT(w->state != POOL_WORKER_CLOSING || state == POOL_WORKER_CLOSING);
  /* A busy worker has a task; an idle, starting or draining one has none. */
  PROCORD_ASSERT(state == POOL_WORKER_BUSY ? w->task != NULL
                                           : state == POOL_WORKER_CLOSING || w->task == NULL);
  pthread_mutex_lock(&p->lock);
  count_state(p, w->state, -1);
  count_state(p, state, 1);
  /* No count below zero (they are unsigned: one would wrap around). */
  PROCORD_ASSERT(p->stats.busy + p->stats.idle <= p->stats.workers);
  pthread_mutex_unlock(&p->lock);
  w->state = state;
  if (state != POOL_WORKER_IDLE && w->idle_timer) event_del(w->idle_timer);
}

static size_t live_workers(procord_pool_t *p) {
  pthread_mutex_lock(&p->lock);
  size_t live = p->stats.workers;
  pthread_mutex_unlock(&p->lock);
  return live;
}

/* Tasks submitted and not yet handed to a worker (stats.queued): counted
   when submitted, or put back in the queue; no longer once a worker has
   them, or they finish unqueued. Returns the count before. */
static size_t count_queued(procord_pool_t *p, int delta, int retried) {
  pthread_mutex_lock(&p->lock);
  size_t before = p->stats.queued;
  PROCORD_ASSERT(delta >= 0 || before > 0);
  p->stats.queued += (size_t)delta;
  if (retried) p->stats.tasks_retried++;
  pthread_mutex_unlock(&p->lock);
  return before;
}

/* ---- The queue (loop thread). ---- */

static void queue_task(procord_pool_t *p, pool_task_t *t, int at_front) {
  PROCORD_ASSERT(t->place == POOL_TASK_ARRIVING || t->place == POOL_TASK_OUT);
  PROCORD_ASSERT(!t->finished);
  t->place = POOL_TASK_QUEUED;
  t->worker = NULL;
  if (at_front) procord_list_push_front(&p->queue, &t->node);
  else procord_list_push_back(&p->queue, &t->node);
}

/* Back to the front of the queue, counted again: a retry, or a task sent
   ahead that its worker never started. */
static void requeue_task(procord_pool_t *p, pool_task_t *t, int retried) {
  count_queued(p, 1, retried);
  queue_task(p, t, 1);
}

static void unqueue_task(procord_pool_t *p, pool_task_t *t) {
  PROCORD_ASSERT(t->place == POOL_TASK_QUEUED);
  procord_list_remove(&t->node);
  t->place = POOL_TASK_OUT;
  size_t before = count_queued(p, -1, 0);
  if (before >= p->options.max_queue_length && p->options.on_room) p->options.on_room(p, p->options.context);
}

static pool_task_t *first_queued(procord_pool_t *p) {
  procord_list_t *first = procord_list_first(&p->queue);
  return first ? PROCORD_LIST_ENTRY(first, pool_task_t, node) : NULL;
}

static pool_task_t *dequeue_first_task(procord_pool_t *p) {
  pool_task_t *t = first_queued(p);
  unqueue_task(p, t);
  return t;
}

/* Reports the task's outcome. Its entry may be gone after this (with the
   delegation's last reference), unless a list sent ahead holds it. */
static void finish_task(procord_pool_t *p, pool_task_t *t) {
  PROCORD_ASSERT(!t->finished); /* once */
  PROCORD_ASSERT(t->place == POOL_TASK_OUT || t->place == POOL_TASK_SENT_AHEAD);
  t->finished = 1;
  pthread_mutex_lock(&p->lock);
  p->stats.tasks_finished++;
  pthread_mutex_unlock(&p->lock);
  procord_delegation_finish(t->delegation);
}

/* ---- Sources. ---- */

/* The next source in turn that is not resting after a failure; if all are,
   the one that rests least (a task is better failed fast than kept). */
static size_t choose_source(procord_pool_t *p, int *all_down) {
  long long now = procord_monotonic_ms();
  size_t count = p->options.source_count, best = p->next_source % count;
  for (size_t i = 0; i < count; i++) {
    size_t s = (p->next_source + i) % count;
    if (p->sources[s].down_until_ms <= now) {
      p->next_source = s + 1;
      *all_down = 0;
      return s;
    }
    if (p->sources[s].down_until_ms < p->sources[best].down_until_ms) best = s;
  }
  *all_down = 1;
  p->next_source = best + 1;
  return best;
}

static void source_failed(procord_pool_t *p, size_t s, const procord_link_end_t *start_failure) {
  pool_source_t *source = &p->sources[s];
  source->start_failed = start_failure != NULL;
  if (start_failure) source->start_failure = *start_failure;
  source->backoff_ms = source->backoff_ms ? source->backoff_ms * 2 : FIRST_BACKOFF_MS;
  if (source->backoff_ms > LAST_BACKOFF_MS) source->backoff_ms = LAST_BACKOFF_MS;
  source->down_until_ms = procord_monotonic_ms() + source->backoff_ms;
}

/* ---- Holding the pool's size after a start failed for lack of resources. ---- */

/* Descriptors, processes, memory: this program's (or the system's) limits,
   which every source meets alike; not the fault of the program or server. */
static int lacks_resources(int error) {
  return error == -EMFILE || error == -ENFILE || error == -EAGAIN || error == -ENOMEM || error == -ENOBUFS;
}

/* The most workers the pool may have now: max_workers, or those it had
   when a start failed for lack of resources, until the hold ends. */
static size_t worker_limit(procord_pool_t *p) {
  size_t limit = (size_t)p->options.max_workers;
  pthread_mutex_lock(&p->lock);
  if (p->held_until_ms > procord_monotonic_ms() && p->held_at < limit) limit = p->held_at;
  pthread_mutex_unlock(&p->lock);
  return limit;
}

static void set_hold(procord_pool_t *p, size_t held_at, long long until_ms) {
  pthread_mutex_lock(&p->lock);
  p->held_at = held_at;
  p->held_until_ms = until_ms;
  pthread_mutex_unlock(&p->lock);
}

/*
 * A start failed for lack of resources: retrying at once would fail alike,
 * and failing the tasks that wait would be wrong while workers can serve
 * them. The pool grows no further than the workers it has for a while
 * (from 250 ms, doubling up to 10 s, as a source rests), then tries again.
 * Holding at none, it fails tasks at once with `failure` (pump).
 */
static void hold_size(procord_pool_t *p, size_t live, const procord_link_end_t *failure) {
  p->hold_failure = *failure;
  p->hold_backoff_ms = p->hold_backoff_ms ? p->hold_backoff_ms * 2 : FIRST_BACKOFF_MS;
  if (p->hold_backoff_ms > LAST_BACKOFF_MS) p->hold_backoff_ms = LAST_BACKOFF_MS;
  set_hold(p, live, procord_monotonic_ms() + p->hold_backoff_ms);
  pthread_mutex_lock(&p->lock);
  p->stats.starts_limited++;
  pthread_mutex_unlock(&p->lock);
  /* Without the timer, the hold ends at the next task or worker event. */
  if (!p->hold_timer) return;
  procord_timer_arm(p->hold_timer, p->hold_backoff_ms);
}

/* A worker ended and gave back what it held: a start may succeed again. */
static void end_hold(procord_pool_t *p) { set_hold(p, 0, 0); }

/* ---- Workers. ---- */

static void pump(procord_pool_t *p);
static void on_worker_ready(procord_link_t *link, void *context);
static void on_worker_frame(procord_link_t *link, const procord_frame_t *frame, int error, void *context);
static void on_worker_ended(procord_link_t *link, void *context);

static void arm_idle_timer(pool_worker_t *w);

static pool_worker_t *worker_of(procord_list_t *node) {
  return node ? PROCORD_LIST_ENTRY(node, pool_worker_t, node) : NULL;
}

static pool_worker_t *first_worker(procord_pool_t *p) { return worker_of(procord_list_first(&p->workers)); }

/* The worker after `w` in the pool's list, or NULL. */
static pool_worker_t *next_worker(procord_pool_t *p, pool_worker_t *w) {
  return worker_of(procord_list_next(&p->workers, &w->node));
}

/* The source served: it rests no more. */
static void source_served(procord_pool_t *p, size_t s) {
  p->sources[s].backoff_ms = 0;
  p->sources[s].down_until_ms = 0;
  p->sources[s].start_failed = 0;
}

static void retire_worker(pool_worker_t *w) {
  if (w->state == POOL_WORKER_CLOSING) return;
  w->stopped_by_pool = 1;
  set_worker_state(w, POOL_WORKER_CLOSING);
  procord_link_close(w->link);
}

/* Kills a worker (its process group; SIGKILL also closes its stream). */
static void kill_worker(pool_worker_t *w, int signal) {
  w->stopped_by_pool = 1;
  set_worker_state(w, POOL_WORKER_CLOSING);
  procord_link_kill(w->link, signal, signal == SIGKILL);
}

/* Makes `t` the task that worker `w` runs. */
static void bind_task(pool_worker_t *w, pool_task_t *t) {
  PROCORD_ASSERT(!w->task && t->place == POOL_TASK_OUT && !t->finished);
  t->place = POOL_TASK_RUNNING;
  t->worker = w;
  w->task = t;
  procord_delegation_runs_on(t->delegation, w->link->pid);
}

/* The worker no longer runs its task (answered, or the worker ended). */
static pool_task_t *unbind_task(pool_worker_t *w) {
  pool_task_t *t = w->task;
  PROCORD_ASSERT(t->place == POOL_TASK_RUNNING && t->worker == w);
  w->task = NULL;
  t->place = POOL_TASK_OUT;
  t->worker = NULL;
  return t;
}

static void on_idle_timeout(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  pool_worker_t *w = context;
  if (w->state != POOL_WORKER_IDLE) return;
  if (live_workers(w->pool) > (size_t)w->pool->options.min_workers) retire_worker(w);
  else arm_idle_timer(w); /* needed now; perhaps not later */
}

static void arm_idle_timer(pool_worker_t *w) {
  int limit_ms = w->pool->options.idle_timeout_ms;
  if (limit_ms <= 0) return;
  procord_timer_arm(w->idle_timer, limit_ms);
}

/* Idle, and last in the list: the most recently used worker is found first. */
static void become_idle(pool_worker_t *w) {
  procord_pool_t *p = w->pool;
  procord_list_remove(&w->node);
  procord_list_push_back(&p->workers, &w->node);
  set_worker_state(w, POOL_WORKER_IDLE);
  arm_idle_timer(w);
}

/*
 * Starts a worker from source `s`. Returns it (STARTING for a server,
 * IDLE for a local worker, which is ready at once), or NULL with `*failure`
 * filled when it could not even start (a spawn error).
 */
static pool_worker_t *start_worker_from_source(procord_pool_t *p, size_t s, procord_link_end_t *failure) {
  const procord_pool_source_t *source = &p->sources[s].spec;
  pool_worker_t *w = procord_allocate_zeroed(1, sizeof *w);
  procord_link_options_t options = {
      .worker = &source->worker,
      .remote_host = source->remote_host,
      .remote_port = source->remote_port,
      .connect_timeout_ms = p->options.connect_timeout_ms,
      .security = source->security,
      .max_message_size = p->options.max_message_size,
      .exit_grace_ms = p->options.exit_grace_ms,
      .events = {on_worker_ready, on_worker_frame, on_worker_ended},
      .context = w,
  };
  int error = w ? 0 : -ENOMEM;
  if (w) w->idle_timer = evtimer_new(procord_loop_base(p->loop), on_idle_timeout, w);
  if (!error && !w->idle_timer) error = -ENOMEM;
  if (!error) w->link = procord_link_new(p->loop, &options);
  if (!error && !w->link) error = -ENOMEM;
  if (!error) error = procord_link_start(w->link);
  if (error) {
    /* The link may not have been made, or ended at once (a spawn error). */
    memset(failure, 0, sizeof *failure);
    failure->error = error;
    failure->call = "setup";
    failure->exit_code = -1;
    if (w && w->link) *failure = w->link->end;
    /* Rest the source, or hold the pool, so that nothing retries in a tight loop. */
    if (lacks_resources(failure->error)) hold_size(p, live_workers(p), failure);
    else source_failed(p, s, failure);
    if (w) {
      procord_link_free(w->link);
      if (w->idle_timer) event_free(w->idle_timer);
      procord_free(w);
    }
    return NULL;
  }
  w->pool = p;
  w->source = s;
  w->state = POOL_WORKER_NEW; /* counted from here on */
  procord_list_init(&w->ahead);
  procord_list_push_back(&p->workers, &w->node);
  pthread_mutex_lock(&p->lock);
  p->stats.workers_started++;
  pthread_mutex_unlock(&p->lock);
  p->hold_backoff_ms = 0; /* resources were there: the next hold starts short */
  if (procord_link_ready(w->link)) {
    w->was_ready = 1;
    set_worker_state(w, POOL_WORKER_IDLE);
  } else {
    set_worker_state(w, POOL_WORKER_STARTING);
  }
  return w;
}

/* Sends the worker's task now; if that fails, the worker is retired (the
   task ends with its end). */
static void send_task(pool_worker_t *w) {
  int error = procord_delegation_send(w->task->delegation, w->link);
  if (error) {
    procord_link_fail(w->link, error, "setup");
    retire_worker(w);
  }
}

/* Hands a task to a worker: sent now, or once a server connection is ready. */
static void assign_task(pool_worker_t *w, pool_task_t *t) {
  bind_task(w, t);
  int ready = w->state == POOL_WORKER_IDLE;
  set_worker_state(w, POOL_WORKER_BUSY);
  if (ready) send_task(w);
}

/* Finishes a task that never reached a worker, with why. */
static void fail_task(procord_pool_t *p, pool_task_t *t, const procord_link_end_t *failure) {
  procord_delegation_take_end(t->delegation, failure);
  finish_task(p, t);
}

/* A task that could not get a worker at all: retried, or finished. */
static void task_without_worker(procord_pool_t *p, pool_task_t *t, const procord_link_end_t *failure) {
  int all_down = 0;
  if (!p->closing && t->retries < p->options.max_retries) choose_source(p, &all_down);
  /* Every source rests after a failure: trying again now would fail alike. */
  if (!p->closing && t->retries < p->options.max_retries && !all_down) {
    t->retries++;
    requeue_task(p, t, 1);
    return;
  }
  fail_task(p, t, failure);
}

static pool_worker_t *find_free(procord_pool_t *p) {
  pool_worker_t *starting = NULL;
  /* The most recently used idle worker first (last in the list): the
     others may then idle out. */
  for (procord_list_t *n = p->workers.prev; n != &p->workers; n = n->prev) {
    pool_worker_t *w = PROCORD_LIST_ENTRY(n, pool_worker_t, node);
    /* An idle worker whose stream has just ended (its end is on its way) gets no task. */
    if (w->state == POOL_WORKER_IDLE && procord_link_ready(w->link)) return w;
    if (w->state == POOL_WORKER_STARTING && !w->task && !starting) starting = w;
  }
  return starting;
}

static void stop_if_done(procord_pool_t *p);
static void replenish(procord_pool_t *p);

/* For send_ahead: a busy worker that has shown it serves task after task
   (it has said `0R`), with room in its list of tasks sent ahead, and that
   will not be retired for its count before it gets to them. */
static int may_send_ahead(procord_pool_t *p, const pool_worker_t *w) {
  if (w->state != POOL_WORKER_BUSY && w->state != POOL_WORKER_DRAINING) return 0;
  if (w->retire_due || !w->said_reusable || w->ahead_count >= p->options.send_ahead || !procord_link_ready(w->link)) return 0;
  return p->options.max_tasks_per_worker <= 0 ||
         w->tasks_done + 1 + w->ahead_count < p->options.max_tasks_per_worker;
}

static pool_worker_t *find_busy_for_more(procord_pool_t *p) {
  pool_worker_t *best = NULL;
  for (pool_worker_t *w = first_worker(p); w; w = next_worker(p, w)) {
    /* Refilled once half empty: several tasks per write rather than one. */
    if (!may_send_ahead(p, w) || w->ahead_count > p->options.send_ahead / 2) continue;
    if (!best || w->ahead_count < best->ahead_count) best = w; /* the shortest line */
  }
  return best;
}

/* Sends a task to a busy worker, which starts it after those before it. */
static void send_ahead(pool_worker_t *w, pool_task_t *t) {
  PROCORD_ASSERT(t->place == POOL_TASK_OUT && !t->finished);
  procord_delegation_retain(t->delegation); /* the list's */
  t->place = POOL_TASK_SENT_AHEAD;
  t->worker = w;
  procord_list_push_back(&w->ahead, &t->node);
  w->ahead_count++;
  int error = procord_delegation_send(t->delegation, w->link);
  if (error) {
    procord_link_fail(w->link, error, "setup");
    retire_worker(w);
  }
}

/* Takes a task sent ahead off its worker's list, the first or (`last`) the
   last one (the caller gets the list's reference to its delegation). */
static pool_task_t *take_ahead(pool_worker_t *w, int last) {
  PROCORD_ASSERT(w->ahead_count > 0 && !procord_list_is_empty(&w->ahead));
  procord_list_t *node = last ? procord_list_last(&w->ahead) : procord_list_first(&w->ahead);
  pool_task_t *t = PROCORD_LIST_ENTRY(node, pool_task_t, node);
  PROCORD_ASSERT(t->place == POOL_TASK_SENT_AHEAD && t->worker == w);
  procord_list_remove(&t->node);
  w->ahead_count--;
  t->place = POOL_TASK_OUT;
  t->worker = NULL;
  return t;
}

/*
 * The worker said `0R`: it now runs the first task sent ahead. If that one
 * has finished already (killed, or past its deadline, while it waited), the
 * worker is killed rather than left to run it for nobody, with no bound: the
 * tasks behind it go back to the queue (on_worker_ended), never started.
 */
static void start_task_sent_ahead(pool_worker_t *w) {
  pool_task_t *t = take_ahead(w, 0);
  int dropped = t->finished;
  /* The list's reference; the pool's own remains until it finishes. */
  procord_delegation_release(t->delegation);
  if (dropped) {
    kill_worker(w, SIGKILL);
    return;
  }
  bind_task(w, t);
  set_worker_state(w, POOL_WORKER_BUSY);
}

/* Hands queued tasks to free workers, starting workers up to the maximum. */
static void pump(procord_pool_t *p) {
  while (!procord_list_is_empty(&p->queue)) {
    pool_worker_t *w = find_free(p);
    if (!w) {
      size_t limit = worker_limit(p);
      if (limit == 0 && procord_list_is_empty(&p->workers)) {
        /* Held at no worker, and none to wait for (not even one ending,
           whose end would give resources back): failed now with the cause,
           not kept waiting for a start that would fail alike. No retry
           either, for the same reason. */
        fail_task(p, dequeue_first_task(p), &p->hold_failure);
        continue;
      }
      if (live_workers(p) >= limit) {
        /* Only an idempotent task may go ahead: in a race with a stop of its
           worker, one may run although it is reported as never started. */
        int eligible = p->options.send_ahead > 0 && !p->closing && first_queued(p)->idempotent;
        pool_worker_t *ahead = eligible ? find_busy_for_more(p) : NULL;
        if (!ahead) break;
        /* Its list filled up at once, in one write (and, often, one read
           for the worker). */
        procord_link_t *link = ahead->link;
        procord_link_cork(link, 1);
        while (first_queued(p) && first_queued(p)->idempotent && may_send_ahead(p, ahead))
          send_ahead(ahead, dequeue_first_task(p));
        procord_link_cork(link, 0);
        continue;
      }
      int all_down = 0;
      size_t s = choose_source(p, &all_down);
      if (all_down && p->sources[s].start_failed) {
        /* Resting after a failed start: the task gets that failure at once,
           rather than another doomed start (a missing program, a refused
           connection). */
        task_without_worker(p, dequeue_first_task(p), &p->sources[s].start_failure);
        continue;
      }
      procord_link_end_t failure;
      w = start_worker_from_source(p, s, &failure);
      if (!w) {
        /* For lack of resources, the pool is held now: the task waits for a
           worker it has, or (it has none) fails at the top of the loop. */
        if (!lacks_resources(failure.error)) task_without_worker(p, dequeue_first_task(p), &failure);
        continue;
      }
    }
    assign_task(w, dequeue_first_task(p));
  }
  if (p->closing) {
    /* Nothing more will come: idle workers may go. */
    for (pool_worker_t *w = first_worker(p), *next; w; w = next) {
      next = next_worker(p, w);
      if (procord_list_is_empty(&p->queue) &&
          (w->state == POOL_WORKER_IDLE || (w->state == POOL_WORKER_STARTING && !w->task)))
        retire_worker(w);
    }
    stop_if_done(p);
  } else {
    replenish(p);
  }
}

static void on_replenish(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  pump(context);
}

/* Keeps min_workers started; after failures, tries again once a source rests no more. */
static void replenish(procord_pool_t *p) {
  while (live_workers(p) < (size_t)p->options.min_workers) {
    if (live_workers(p) >= worker_limit(p)) return; /* held: the hold's timer comes back */
    int all_down = 0;
    procord_link_end_t failure;
    long long now = procord_monotonic_ms();
    long long soonest = -1;
    for (size_t i = 0; i < p->options.source_count; i++)
      if (soonest < 0 || p->sources[i].down_until_ms < soonest) soonest = p->sources[i].down_until_ms;
    if (soonest > now) {
      if (!evtimer_pending(p->replenish_timer, NULL)) procord_timer_arm(p->replenish_timer, (int)(soonest - now));
      return;
    }
    size_t s = choose_source(p, &all_down);
    pool_worker_t *w = start_worker_from_source(p, s, &failure);
    if (!w) continue; /* that source now rests; the loop tries the next or waits */
    if (w->state == POOL_WORKER_IDLE) become_idle(w);
  }
}

/* ---- Link events. ---- */

static void on_worker_ready(procord_link_t *link, void *context) {
  (void)link;
  pool_worker_t *w = context;
  procord_pool_t *p = w->pool;
  w->was_ready = 1;
  if (w->state == POOL_WORKER_BUSY && w->task) {
    send_task(w);
    return;
  }
  if (w->state == POOL_WORKER_STARTING) {
    become_idle(w);
    pump(p);
  }
}

static int should_retire(pool_worker_t *w) {
  procord_pool_t *p = w->pool;
  if (p->closing && procord_list_is_empty(&p->queue)) return 1;
  if (p->options.max_tasks_per_worker > 0 && w->tasks_done >= p->options.max_tasks_per_worker) return 1;
  return p->options.max_resident_bytes > 0 &&
         procord_link_resident_bytes(w->link) > p->options.max_resident_bytes;
}

/* The task has its outcome from the worker's answer: report it now. */
static void task_answered(pool_worker_t *w) {
  pool_task_t *t = unbind_task(w);
  w->tasks_done++;
  source_served(w->pool, w->source);
  finish_task(w->pool, t);
}

static void on_worker_frame(procord_link_t *link, const procord_frame_t *frame, int error, void *context) {
  pool_worker_t *w = context;
  if (w->state == POOL_WORKER_BUSY && w->task) {
    switch (procord_delegation_frame(w->task->delegation, link, frame, error)) {
    case PROCORD_FRAME_CONTINUES: return;
    case PROCORD_FRAME_ANSWERS:
      task_answered(w);
      /* A worker with tasks sent ahead runs them first (one may have
         started already): it is retired once they are done. */
      if (should_retire(w)) w->retire_due = 1;
      if (w->retire_due && procord_list_is_empty(&w->ahead)) {
        retire_worker(w);
        pump(w->pool); /* a replacement, if tasks wait */
      } else {
        /* `0R` comes next from a reusable worker (then it takes the next
           task), the end from an original one: no other worker is needed. */
        set_worker_state(w, POOL_WORKER_DRAINING);
        procord_link_start_grace(link);
      }
      return;
    case PROCORD_FRAME_BREAKS:
      if (procord_delegation_answered(w->task->delegation)) task_answered(w); /* `E0`: the outcome is set */
      retire_worker(w); /* a broken task ends with its worker's end */
      return;
    }
  }
  if (w->state == POOL_WORKER_DRAINING && !error && frame->kind == PROCORD_FRAME_REUSABLE) {
    procord_link_cancel_grace(link);
    w->said_reusable = 1;
    if (!procord_list_is_empty(&w->ahead)) start_task_sent_ahead(w);
    else become_idle(w);
    pump(w->pool);
    return;
  }
  if (w->state != POOL_WORKER_CLOSING) {
    procord_link_fail(link, error ? error : PROCORD_EUNEXPECTED, error ? "parse" : "receive");
    retire_worker(w);
  }
}

/* The tasks sent ahead of an ended worker never started (it had not
   finished the one before them): back to the front of the queue, in their
   order, no retry counted (the last first, so that the first ends up
   first); or finished, if they were to be killed. */
static void return_tasks_sent_ahead(procord_pool_t *p, pool_worker_t *w) {
  while (!procord_list_is_empty(&w->ahead)) {
    pool_task_t *t = take_ahead(w, 1);
    procord_delegation_t *d = t->delegation;
    if (!t->finished) {
      procord_delegation_take_back(d);
      if (procord_delegation_kill_requested(d) || p->immediate) {
        procord_delegation_end_as_killed(d);
        finish_task(p, t);
      } else {
        requeue_task(p, t, 0);
      }
    }
    procord_delegation_release(d); /* the list's reference */
  }
}

static void on_worker_ended(procord_link_t *link, void *context) {
  pool_worker_t *w = context;
  procord_pool_t *p = w->pool;
  /* The source rests if its worker could not be reached, or went away by
     itself before serving anything (a program that exits at once, a server
     that closes at once), not when a task took it down or the pool stopped it. */
  if (!w->was_ready && !w->stopped_by_pool) source_failed(p, w->source, &link->end);
  else if (w->tasks_done == 0 && !w->task && !w->stopped_by_pool) source_failed(p, w->source, NULL);
  set_worker_state(w, POOL_WORKER_CLOSING);
  procord_list_remove(&w->node);
  end_hold(p); /* its descriptors and process are given back */
  /* First, so that the running task, if it runs again, goes before them. */
  return_tasks_sent_ahead(p, w);
  if (w->task) {
    pool_task_t *t = unbind_task(w);
    procord_delegation_t *d = t->delegation;
    procord_delegation_take_end(d, &link->end);
    int stopped = procord_delegation_kill_requested(d) || procord_delegation_timed_out(d);
    int may_retry = t->idempotent || !procord_delegation_is_delivered(d);
    if (!stopped && !procord_delegation_answered(d) && !p->immediate && may_retry &&
        t->retries < p->options.max_retries) {
      /* Run it again on another worker, ahead of the tasks that came later. */
      t->retries++;
      procord_delegation_prepare_retry(d);
      requeue_task(p, t, 1);
    } else {
      finish_task(p, t);
    }
  }
  procord_link_free(link);
  event_free(w->idle_timer);
  procord_free(w);
  pump(p);
}

/* ---- Shutdown. ---- */

static void stop_if_done(procord_pool_t *p) {
  if (!p->closing || p->stopped || !procord_list_is_empty(&p->queue) || !procord_list_is_empty(&p->workers)) return;
  p->stopped = 1;
  if (p->replenish_timer) event_free(p->replenish_timer);
  p->replenish_timer = NULL;
  if (p->hold_timer) event_free(p->hold_timer);
  p->hold_timer = NULL;
  pthread_mutex_lock(procord_loop_done_lock(p->loop));
  pthread_mutex_lock(&p->lock);
  /* Every worker is gone: none counted any more. */
  PROCORD_ASSERT(p->stats.workers == 0 && p->stats.idle == 0 && p->stats.busy == 0);
  p->stats.stopped = 1;
  pthread_mutex_unlock(&p->lock);
  pthread_cond_broadcast(procord_loop_done_cond(p->loop));
  pthread_mutex_unlock(procord_loop_done_lock(p->loop));
  if (p->options.on_stopped) p->options.on_stopped(p, p->options.context);
  procord_loop_remove_work(p->loop, &p->work);
  pool_unref(p); /* the loop's reference */
}

static void shut_down(procord_pool_t *p, int immediate) {
  if (p->closing && (p->immediate || !immediate)) return;
  p->closing = 1;
  p->immediate = immediate;
  pthread_mutex_lock(&p->lock);
  p->refusing = 1;
  pthread_mutex_unlock(&p->lock);
  if (immediate) {
    while (!procord_list_is_empty(&p->queue)) {
      pool_task_t *t = dequeue_first_task(p);
      procord_delegation_end_as_killed(t->delegation);
      finish_task(p, t);
    }
    for (pool_worker_t *w = first_worker(p), *next; w; w = next) {
      next = next_worker(p, w);
      if (w->task) {
        procord_delegation_end_as_killed(w->task->delegation);
        kill_worker(w, SIGKILL);
      } else {
        retire_worker(w);
      }
    }
  }
  pump(p);
}

/* The loop is freed with the pool still running: it shuts down at once. */
static void shut_down_on_abort(procord_loop_work_t *work) { shut_down((procord_pool_t *)work, 1); }

static void shut_down_on_loop(void *argument) {
  procord_pool_t *p = argument;
  pthread_mutex_lock(&p->lock);
  int immediate = p->shutdown_immediate; /* the strongest request so far */
  p->shutdown_queued = 0;
  pthread_mutex_unlock(&p->lock);
  shut_down(p, immediate);
  pool_unref(p);
}

void procord_pool_shutdown(procord_pool_t *p, int immediate) {
  pthread_mutex_lock(&p->lock);
  p->refusing = 1;
  p->shutdown_requested = 1;
  if (immediate) p->shutdown_immediate = 1;
  /* One call in the queue at a time: one queued already reads this request
     when it runs. */
  int queue = !p->shutdown_queued;
  p->shutdown_queued = 1;
  pthread_mutex_unlock(&p->lock);
  if (!queue) return;
  __atomic_add_fetch(&p->references, 1, __ATOMIC_RELAXED);
  procord_loop_queue(p->loop, &p->shutdown_call, shut_down_on_loop, p);
}

void procord_pool_release(procord_pool_t *p) {
  if (!p) return;
  pthread_mutex_lock(&p->lock);
  int requested = p->shutdown_requested;
  pthread_mutex_unlock(&p->lock);
  if (!requested) procord_pool_shutdown(p, 1);
  pool_unref(p);
}

/* ---- Tasks from other threads. ---- */

/*
 * The delegation's `stop` hook, on the loop's thread: a queued task
 * finishes at once; a running one has its worker sent `signal`, and
 * finishes once that worker has ended. The delegation's kill_requested or
 * timed_out says how it ends.
 */
static void stop_pooled_task(void *context, int signal) {
  pool_task_t *t = context;
  procord_pool_t *p = t->pool;
  switch (t->place) {
  case POOL_TASK_QUEUED:
    unqueue_task(p, t);
    finish_task(p, t);
    pump(p);
    return;
  case POOL_TASK_SENT_AHEAD:
    /* Sent ahead and not started: it ends now. It cannot be taken back from
       its worker, which is killed when it gets to it (start_task_sent_ahead). */
    if (!t->finished) finish_task(p, t);
    return;
  case POOL_TASK_RUNNING:
    kill_worker(t->worker, signal);
    pump(p);
    return;
  case POOL_TASK_ARRIVING: /* not yet on the loop */
  case POOL_TASK_OUT:      /* finished */
    return;
  }
}

/* The delegation's `released` hook: its entry goes with it, and its hold on the pool. */
static void release_pooled_task(void *context) {
  pool_task_t *t = context;
  procord_pool_t *p = t->pool;
  /* In no list: each held a reference (the queue and a running task the finishing one). */
  PROCORD_ASSERT(t->place == POOL_TASK_OUT || t->place == POOL_TASK_ARRIVING);
  procord_free(t);
  pool_unref(p);
}

static const procord_delegation_owner_t pooled_task_owner = {stop_pooled_task, release_pooled_task};

/* A task submitted, on the loop's thread now: queued, or finished at once. */
static void queue_task_on_loop(void *argument) {
  pool_task_t *t = argument;
  procord_pool_t *p = t->pool;
  procord_delegation_t *d = t->delegation;
  PROCORD_ASSERT(t->place == POOL_TASK_ARRIVING);
  if (p->immediate || p->stopped) {
    /* Shut down between the submission and now: a graceful shutdown still
       serves it (the pool stops only once its queue is empty). */
    count_queued(p, -1, 0);
    t->place = POOL_TASK_OUT;
    procord_delegation_end_as_killed(d);
    finish_task(p, t);
    return;
  }
  if (procord_delegation_kill_requested(d)) {
    count_queued(p, -1, 0);
    t->place = POOL_TASK_OUT;
    finish_task(p, t);
    return;
  }
  if (procord_delegation_arm_deadline(d) != 0) {
    count_queued(p, -1, 0);
    t->place = POOL_TASK_OUT;
    procord_link_end_t none = {.error = -ENOMEM, .call = "setup", .exit_code = -1};
    fail_task(p, t, &none);
    return;
  }
  queue_task(p, t, 0);
  pump(p);
}

int procord_pool_delegate(procord_pool_t *p, const procord_delegation_options_t *given,
                          procord_delegation_t **result) {
  procord_delegation_options_t copy;
  const procord_delegation_options_t *options = given ? &copy : NULL;
  if (!p || !given || procord_delegation_options_copy(&copy, given) != 0 || !options->task_name ||
      !result) {
    procord_delegation_refuse_input(options);
    return PROCORD_EINVAL;
  }
  pthread_mutex_lock(&p->lock);
  int error = p->refusing ? PROCORD_ECLOSED : p->stats.queued >= p->options.max_queue_length ? PROCORD_EFULL : 0;
  if (!error) {
    p->stats.queued++;
    p->stats.tasks_submitted++;
  }
  pthread_mutex_unlock(&p->lock);
  if (error) {
    procord_delegation_refuse_input(options);
    return error;
  }
  fflush(stdout); /* a local worker shares our stdout: what we printed comes first */
  pool_task_t *t = procord_allocate_zeroed(1, sizeof *t);
  procord_delegation_t *d = t ? procord_delegation_create(p->loop, options, &pooled_task_owner, t) : NULL;
  if (d) {
    t->pool = p;
    t->delegation = d;
    t->place = POOL_TASK_ARRIVING;
    t->idempotent = options->idempotent;
    __atomic_add_fetch(&p->references, 1, __ATOMIC_RELAXED); /* the task's, until released */
    error = procord_loop_call(p->loop, queue_task_on_loop, t);
    if (error) procord_delegation_discard(d);
  } else {
    procord_free(t);
    procord_delegation_refuse_input(options);
    error = -ENOMEM;
  }
  if (error) {
    pthread_mutex_lock(&p->lock);
    p->stats.queued--;
    p->stats.tasks_submitted--;
    pthread_mutex_unlock(&p->lock);
    return error;
  }
  *result = d;
  return 0;
}

/* ---- Making, waiting, looking. ---- */

static void start_pool_on_loop(void *argument) {
  procord_pool_t *p = argument;
  procord_loop_add_work(p->loop, &p->work);
  p->replenish_timer = evtimer_new(procord_loop_base(p->loop), on_replenish, p);
  if (!p->replenish_timer) {
    /* Without it the pool cannot keep workers warm: serve on demand only. */
    p->options.min_workers = 0;
  }
  p->hold_timer = evtimer_new(procord_loop_base(p->loop), on_replenish, p);
  pump(p);
}

void procord_pool_source_init(procord_pool_source_t *source) {
  memset(source, 0, sizeof *source);
  source->size = sizeof *source;
  procord_spawn_options_init(&source->worker);
}

void procord_pool_options_init(procord_pool_options_t *options) {
  memset(options, 0, sizeof *options);
  options->size = sizeof *options;
}

/* The caller's sources, read by their size (options_private.h): the first
   one's is the array's stride. Returns 0 with `count` copies (shallow: they
   point into the caller's memory) in `*copies` (the caller frees the
   array), PROCORD_EINVAL, or -ENOMEM. */
static int read_sources(const procord_pool_source_t *sources, size_t count, procord_pool_source_t **copies) {
  size_t stride = procord_options_size(sources, PROCORD_FIRST_SIZE_POOL_SOURCE);
  procord_pool_source_t *read = procord_allocate_zeroed(count, sizeof *read);
  if (!read) return -ENOMEM;
  int error = 0;
  for (size_t i = 0; i < count && !error; i++) {
    const unsigned char *given = (const unsigned char *)sources + i * stride;
    if (procord_options_size(given, PROCORD_FIRST_SIZE_POOL_SOURCE) != stride) error = PROCORD_EINVAL;
    if (!error) error = PROCORD_OPTIONS_COPY(read[i], given, PROCORD_FIRST_SIZE_POOL_SOURCE);
    if (!error) error = procord_spawn_options_nested(&read[i].worker);
    if (!error && !read[i].remote_host && !read[i].worker.program) error = PROCORD_EINVAL;
  }
  if (error) procord_free(read);
  else *copies = read;
  return error;
}

int procord_pool_new(procord_loop_t *loop, const procord_pool_options_t *given,
                     procord_pool_t **result) {
  procord_pool_options_t options;
  if (!loop || !given || !result || PROCORD_OPTIONS_COPY(options, given, PROCORD_FIRST_SIZE_POOL_OPTIONS) != 0 ||
      !options.sources || options.source_count == 0 || options.min_workers < 0 || options.max_workers < 0 ||
      options.max_retries < 0)
    return PROCORD_EINVAL;
  procord_pool_source_t *sources = NULL;
  int error = read_sources(options.sources, options.source_count, &sources);
  if (error) return error;
  procord_pool_t *p = procord_allocate_zeroed(1, sizeof *p);
  if (!p) {
    procord_free(sources);
    return -ENOMEM;
  }
  p->loop = loop;
  p->options = options;
  if (p->options.max_workers == 0) p->options.max_workers = (int)options.source_count;
  if (p->options.min_workers > p->options.max_workers) {
    procord_free(sources);
    procord_free(p);
    return PROCORD_EINVAL;
  }
  if (p->options.max_queue_length == 0) p->options.max_queue_length = DEFAULT_MAX_QUEUE_LENGTH;
  p->work.abort = shut_down_on_abort;
  p->references = 2; /* the caller's and the loop's */
  procord_list_init(&p->workers);
  procord_list_init(&p->queue);
  pthread_mutex_init(&p->lock, NULL);
  p->sources = procord_allocate_zeroed(options.source_count, sizeof *p->sources);
  size_t copied = 0;
  error = p->sources ? 0 : -ENOMEM;
  while (!error && copied < options.source_count) {
    error = copy_source(&p->sources[copied].spec, &sources[copied]);
    if (!error) copied++;
  }
  procord_free(sources);
  p->options.sources = NULL; /* the copies are in p->sources */
  if (!error) error = procord_loop_call(loop, start_pool_on_loop, p);
  if (error) {
    for (size_t i = 0; i < copied; i++) free_source(&p->sources[i].spec);
    procord_free(p->sources);
    pthread_mutex_destroy(&p->lock);
    procord_free(p);
    return error;
  }
  *result = p;
  return 0;
}

/* With the done lock held (stop_if_done sets `stopped` under it too). */
static int has_stopped(void *argument) {
  procord_pool_t *p = argument;
  pthread_mutex_lock(&p->lock);
  int stopped = p->stats.stopped;
  pthread_mutex_unlock(&p->lock);
  return stopped;
}

int procord_pool_wait(procord_pool_t *p, int timeout_ms) {
  return procord_loop_wait_until(p->loop, has_stopped, p, timeout_ms);
}

void procord_pool_stats(procord_pool_t *p, procord_pool_stats_t *stats) {
  size_t limit = worker_limit(p);
  pthread_mutex_lock(&p->lock);
  *stats = p->stats;
  pthread_mutex_unlock(&p->lock);
  stats->max_workers_now = limit;
}
