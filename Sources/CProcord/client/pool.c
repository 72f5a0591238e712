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
#include <time.h>

#define DEFAULT_MAX_QUEUE_LENGTH 65536
#define FIRST_BACKOFF_MS 250
#define LAST_BACKOFF_MS 10000

typedef enum worker_state {
  WORKER_STARTING, /* a server connection in progress */
  WORKER_IDLE,     /* ready, no task */
  WORKER_BUSY,     /* running a task (sent, or to be sent once ready) */
  WORKER_DRAINING, /* answered: waiting for `0R` (or the end of an original worker) */
  WORKER_CLOSING,  /* retired or killed: waiting for the link to end */
} worker_state_t;

typedef struct pool_worker_s {
  procord_pool_t *pool;
  struct pool_worker_s *previous, *next;
  procord_link_t *link;
  size_t source;
  worker_state_t state;
  int was_ready;
  int stopped_by_pool;       /* retired or killed by the pool: not the source's fault */
  procord_delegation_t *task;
  /* Tasks sent ahead, in order, linked by queue_next: they wait in the
     worker behind `task`. The list holds a reference to each. */
  procord_delegation_t *ahead_head, *ahead_tail;
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
  pool_worker_t workers;    /* sentinel of the list of workers */
  procord_delegation_t *queue_head, *queue_tail;
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
  size_t waiting;           /* submitted and not yet handed to a worker */
  size_t held_at;           /* the most workers while held (written on the loop thread) */
  long long held_until_ms;  /* held until then; 0: not held */
  procord_pool_stats_t stats;
};

static long long now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

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
  if (__atomic_sub_fetch(&p->references, 1, __ATOMIC_ACQ_REL) != 0) return;
  for (size_t i = 0; i < p->options.source_count; i++) free_source(&p->sources[i].spec);
  procord_free(p->sources);
  pthread_mutex_destroy(&p->lock);
  procord_free(p);
}

void procord_pool_task_released(procord_pool_t *p) { pool_unref(p); }

static int counts_as_live(worker_state_t state) { return state != WORKER_CLOSING; }

static void count_state(procord_pool_t *p, worker_state_t state, int delta) {
  if (counts_as_live(state)) p->stats.workers += (size_t)delta;
  if (state == WORKER_IDLE) p->stats.idle += (size_t)delta;
  if (state == WORKER_BUSY || state == WORKER_DRAINING) p->stats.busy += (size_t)delta;
}

static void set_state(pool_worker_t *w, worker_state_t state) {
  procord_pool_t *p = w->pool;
  pthread_mutex_lock(&p->lock);
  count_state(p, w->state, -1);
  count_state(p, state, 1);
  pthread_mutex_unlock(&p->lock);
  w->state = state;
  if (state != WORKER_IDLE && w->idle_timer) event_del(w->idle_timer);
}

static size_t live_workers(procord_pool_t *p) {
  pthread_mutex_lock(&p->lock);
  size_t live = p->stats.workers;
  pthread_mutex_unlock(&p->lock);
  return live;
}

/* ---- The queue (loop thread). ---- */

static void enqueue(procord_pool_t *p, procord_delegation_t *d, int at_front) {
  d->queued = 1;
  if (at_front) {
    d->queue_next = p->queue_head;
    p->queue_head = d;
    if (!p->queue_tail) p->queue_tail = d;
  } else {
    d->queue_next = NULL;
    if (p->queue_tail) p->queue_tail->queue_next = d;
    else p->queue_head = d;
    p->queue_tail = d;
  }
}

static void unqueue(procord_pool_t *p, procord_delegation_t *d) {
  procord_delegation_t **at = &p->queue_head, *previous = NULL;
  while (*at && *at != d) {
    previous = *at;
    at = &(*at)->queue_next;
  }
  if (!*at) return;
  *at = d->queue_next;
  if (p->queue_tail == d) p->queue_tail = previous;
  d->queue_next = NULL;
  d->queued = 0;
  pthread_mutex_lock(&p->lock);
  int was_full = p->waiting >= p->options.max_queue_length;
  p->waiting--;
  p->stats.queued = p->waiting;
  pthread_mutex_unlock(&p->lock);
  if (was_full && p->options.on_room) p->options.on_room(p, p->options.context);
}

static void finish_task(procord_pool_t *p, procord_delegation_t *d) {
  pthread_mutex_lock(&p->lock);
  p->stats.tasks_finished++;
  pthread_mutex_unlock(&p->lock);
  procord_delegation_finish(d);
}

/* ---- Sources. ---- */

/* The next source in turn that is not resting after a failure; if all are,
   the one that rests least (a task is better failed fast than kept). */
static size_t choose_source(procord_pool_t *p, int *all_down) {
  long long now = now_ms();
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
  source->down_until_ms = now_ms() + source->backoff_ms;
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
  if (p->held_until_ms > now_ms() && p->held_at < limit) limit = p->held_at;
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
  set_hold(p, live, now_ms() + p->hold_backoff_ms);
  pthread_mutex_lock(&p->lock);
  p->stats.starts_limited++;
  pthread_mutex_unlock(&p->lock);
  /* Without the timer, the hold ends at the next task or worker event. */
  if (!p->hold_timer) return;
  struct timeval later = {p->hold_backoff_ms / 1000, (p->hold_backoff_ms % 1000) * 1000};
  evtimer_add(p->hold_timer, &later);
}

/* A worker ended and gave back what it held: a start may succeed again. */
static void end_hold(procord_pool_t *p) { set_hold(p, 0, 0); }

/* ---- Workers. ---- */

static void pump(procord_pool_t *p);
static void on_ready(procord_link_t *link, void *context);
static void on_frame(procord_link_t *link, const procord_frame_t *frame, int error, void *context);
static void on_ended(procord_link_t *link, void *context);

static void arm_idle_timer(pool_worker_t *w);

/* The source served: it rests no more. */
static void source_served(procord_pool_t *p, size_t s) {
  p->sources[s].backoff_ms = 0;
  p->sources[s].down_until_ms = 0;
  p->sources[s].start_failed = 0;
}

static void retire(pool_worker_t *w) {
  if (w->state == WORKER_CLOSING) return;
  w->stopped_by_pool = 1;
  set_state(w, WORKER_CLOSING);
  procord_link_close(w->link);
}

/* Kills a worker (its process group; SIGKILL also closes its stream). */
static void kill_worker(pool_worker_t *w, int signal) {
  w->stopped_by_pool = 1;
  set_state(w, WORKER_CLOSING);
  procord_link_kill(w->link, signal, signal == SIGKILL);
}

/* Makes `d` the task that worker `w` runs. */
static void bind_task(pool_worker_t *w, procord_delegation_t *d) {
  d->link = w->link;
  w->task = d;
  __atomic_store_n(&d->pid, w->link->pid, __ATOMIC_RELEASE);
  d->outcome.worker_pid = w->link->pid;
}

static void on_idle_timeout(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  pool_worker_t *w = context;
  if (w->state != WORKER_IDLE) return;
  if (live_workers(w->pool) > (size_t)w->pool->options.min_workers) retire(w);
  else arm_idle_timer(w); /* needed now; perhaps not later */
}

static void arm_idle_timer(pool_worker_t *w) {
  int limit_ms = w->pool->options.idle_timeout_ms;
  if (limit_ms <= 0) return;
  struct timeval limit = {limit_ms / 1000, (limit_ms % 1000) * 1000};
  evtimer_add(w->idle_timer, &limit);
}

/* Idle, and last in the list: the most recently used worker is found first. */
static void become_idle(pool_worker_t *w) {
  procord_pool_t *p = w->pool;
  w->previous->next = w->next;
  w->next->previous = w->previous;
  w->next = &p->workers;
  w->previous = p->workers.previous;
  p->workers.previous->next = w;
  p->workers.previous = w;
  set_state(w, WORKER_IDLE);
  arm_idle_timer(w);
}

/*
 * Starts a worker from source `s`. Returns it (STARTING for a server,
 * IDLE for a local worker, which is ready at once), or NULL with `*failure`
 * filled when it could not even start (a spawn error).
 */
static pool_worker_t *start_worker(procord_pool_t *p, size_t s, procord_link_end_t *failure) {
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
      .events = {on_ready, on_frame, on_ended},
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
    failure->call = procord_stage_call(PROCORD_STAGE_SETUP);
    failure->stage = PROCORD_STAGE_SETUP;
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
  w->state = WORKER_CLOSING; /* counted from here on */
  w->next = &p->workers;
  w->previous = p->workers.previous;
  p->workers.previous->next = w;
  p->workers.previous = w;
  pthread_mutex_lock(&p->lock);
  p->stats.workers_started++;
  pthread_mutex_unlock(&p->lock);
  p->hold_backoff_ms = 0; /* resources were there: the next hold starts short */
  if (procord_link_ready(w->link)) {
    w->was_ready = 1;
    set_state(w, WORKER_IDLE);
  } else {
    set_state(w, WORKER_STARTING);
  }
  return w;
}

/* Hands a task to a worker: sent now, or once a server connection is ready. */
static void assign(pool_worker_t *w, procord_delegation_t *d) {
  bind_task(w, d);
  int ready = w->state == WORKER_IDLE;
  set_state(w, WORKER_BUSY);
  if (!ready) return;
  int error = procord_delegation_send(d, w->link);
  if (error) {
    procord_link_fail(w->link, error, PROCORD_STAGE_SETUP);
    retire(w);
  }
}

/* Finishes a task that never reached a worker, with why. */
static void fail_task(procord_pool_t *p, procord_delegation_t *d, const procord_link_end_t *failure) {
  procord_link_t none = {.end = *failure};
  procord_delegation_take_end(d, &none);
  finish_task(p, d);
}

/* A task that could not get a worker at all: retried, or finished. */
static void task_without_worker(procord_pool_t *p, procord_delegation_t *d,
                                const procord_link_end_t *failure) {
  int all_down = 0;
  if (!p->closing && d->retries < p->options.max_retries) choose_source(p, &all_down);
  /* Every source rests after a failure: trying again now would fail alike. */
  if (!p->closing && d->retries < p->options.max_retries && !all_down) {
    d->retries++;
    pthread_mutex_lock(&p->lock);
    p->stats.tasks_retried++;
    p->waiting++;
    p->stats.queued = p->waiting;
    pthread_mutex_unlock(&p->lock);
    enqueue(p, d, 1);
    return;
  }
  fail_task(p, d, failure);
}

static pool_worker_t *find_free(procord_pool_t *p) {
  pool_worker_t *starting = NULL;
  /* The most recently used idle worker first (last in the list): the
     others may then idle out. */
  for (pool_worker_t *w = p->workers.previous; w != &p->workers; w = w->previous) {
    /* An idle worker whose stream has just ended (its end is on its way) gets no task. */
    if (w->state == WORKER_IDLE && procord_link_ready(w->link)) return w;
    if (w->state == WORKER_STARTING && !w->task && !starting) starting = w;
  }
  return starting;
}

static void stop_if_done(procord_pool_t *p);
static void replenish(procord_pool_t *p);

/* For send_ahead: a busy worker that has shown it serves task after task
   (it has said `0R`), with room in its list of tasks sent ahead, and that
   will not be retired for its count before it gets to them. */
static int may_send_ahead(procord_pool_t *p, const pool_worker_t *w) {
  if (w->state != WORKER_BUSY && w->state != WORKER_DRAINING) return 0;
  if (w->retire_due || !w->said_reusable || w->ahead_count >= p->options.send_ahead || !procord_link_ready(w->link)) return 0;
  return p->options.max_tasks_per_worker <= 0 ||
         w->tasks_done + 1 + w->ahead_count < p->options.max_tasks_per_worker;
}

static pool_worker_t *find_busy_for_more(procord_pool_t *p) {
  pool_worker_t *best = NULL;
  for (pool_worker_t *w = p->workers.next; w != &p->workers; w = w->next) {
    /* Refilled once half empty: several tasks per write rather than one. */
    if (!may_send_ahead(p, w) || w->ahead_count > p->options.send_ahead / 2) continue;
    if (!best || w->ahead_count < best->ahead_count) best = w; /* the shortest line */
  }
  return best;
}

/* Sends a task to a busy worker, which starts it after those before it. */
static void send_ahead(pool_worker_t *w, procord_delegation_t *d) {
  __atomic_add_fetch(&d->references, 1, __ATOMIC_RELAXED); /* the list's */
  d->sent_ahead = 1;
  d->queue_next = NULL;
  if (w->ahead_tail) w->ahead_tail->queue_next = d;
  else w->ahead_head = d;
  w->ahead_tail = d;
  w->ahead_count++;
  int error = procord_delegation_send(d, w->link);
  if (error) {
    procord_link_fail(w->link, error, PROCORD_STAGE_SETUP);
    retire(w);
  }
}

/* Takes the first task sent ahead off a worker's list (the caller gets the
   list's reference). */
static procord_delegation_t *take_ahead(pool_worker_t *w) {
  procord_delegation_t *d = w->ahead_head;
  w->ahead_head = d->queue_next;
  if (!w->ahead_head) w->ahead_tail = NULL;
  w->ahead_count--;
  d->queue_next = NULL;
  d->sent_ahead = 0;
  return d;
}

/*
 * The worker said `0R`: it now runs the first task sent ahead. If that one
 * has finished already (killed, or past its deadline, while it waited), the
 * worker is killed rather than left to run it for nobody, with no bound: the
 * tasks behind it go back to the queue (on_ended), never started.
 */
static void start_task_sent_ahead(pool_worker_t *w) {
  procord_delegation_t *d = take_ahead(w);
  int dropped = d->dropped;
  procord_delegation_release(d); /* the list's reference; the pool's own remains until it finishes */
  if (dropped) {
    kill_worker(w, SIGKILL);
    return;
  }
  bind_task(w, d);
  set_state(w, WORKER_BUSY);
}

static procord_delegation_t *dequeue(procord_pool_t *p) {
  procord_delegation_t *d = p->queue_head;
  unqueue(p, d);
  return d;
}

/* Hands queued tasks to free workers, starting workers up to the maximum. */
static void pump(procord_pool_t *p) {
  while (p->queue_head) {
    pool_worker_t *w = find_free(p);
    if (!w) {
      size_t limit = worker_limit(p);
      if (limit == 0 && p->workers.next == &p->workers) {
        /* Held at no worker, and none to wait for (not even one ending,
           whose end would give resources back): failed now with the cause,
           not kept waiting for a start that would fail alike. No retry
           either, for the same reason. */
        fail_task(p, dequeue(p), &p->hold_failure);
        continue;
      }
      if (live_workers(p) >= limit) {
        /* Only an idempotent task may go ahead: in a race with a stop of its
           worker, one may run although it is reported as never started. */
        int eligible = p->options.send_ahead > 0 && !p->closing && p->queue_head->idempotent;
        pool_worker_t *ahead = eligible ? find_busy_for_more(p) : NULL;
        if (!ahead) break;
        /* Its list filled up at once, in one write (and, often, one read
           for the worker). */
        procord_link_t *link = ahead->link;
        procord_link_cork(link, 1);
        while (p->queue_head && p->queue_head->idempotent && may_send_ahead(p, ahead))
          send_ahead(ahead, dequeue(p));
        procord_link_cork(link, 0);
        continue;
      }
      int all_down = 0;
      size_t s = choose_source(p, &all_down);
      if (all_down && p->sources[s].start_failed) {
        /* Resting after a failed start: the task gets that failure at once,
           rather than another doomed start (a missing program, a refused
           connection). */
        task_without_worker(p, dequeue(p), &p->sources[s].start_failure);
        continue;
      }
      procord_link_end_t failure;
      w = start_worker(p, s, &failure);
      if (!w) {
        /* For lack of resources, the pool is held now: the task waits for a
           worker it has, or (it has none) fails at the top of the loop. */
        if (!lacks_resources(failure.error)) task_without_worker(p, dequeue(p), &failure);
        continue;
      }
    }
    assign(w, dequeue(p));
  }
  if (p->closing) {
    /* Nothing more will come: idle workers may go. */
    for (pool_worker_t *w = p->workers.next, *next; w != &p->workers; w = next) {
      next = w->next;
      if (!p->queue_head && (w->state == WORKER_IDLE || (w->state == WORKER_STARTING && !w->task)))
        retire(w);
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
    long long now = now_ms();
    long long soonest = -1;
    for (size_t i = 0; i < p->options.source_count; i++)
      if (soonest < 0 || p->sources[i].down_until_ms < soonest) soonest = p->sources[i].down_until_ms;
    if (soonest > now) {
      long long wait = soonest - now;
      struct timeval later = {(time_t)(wait / 1000), (suseconds_t)((wait % 1000) * 1000)};
      if (!evtimer_pending(p->replenish_timer, NULL)) evtimer_add(p->replenish_timer, &later);
      return;
    }
    size_t s = choose_source(p, &all_down);
    pool_worker_t *w = start_worker(p, s, &failure);
    if (!w) continue; /* that source now rests; the loop tries the next or waits */
    if (w->state == WORKER_IDLE) become_idle(w);
  }
}

/* ---- Link events. ---- */

static void on_ready(procord_link_t *link, void *context) {
  (void)link;
  pool_worker_t *w = context;
  procord_pool_t *p = w->pool;
  w->was_ready = 1;
  if (w->state == WORKER_BUSY && w->task) {
    int error = procord_delegation_send(w->task, w->link);
    if (error) {
      procord_link_fail(w->link, error, PROCORD_STAGE_SETUP);
      retire(w);
    }
    return;
  }
  if (w->state == WORKER_STARTING) {
    become_idle(w);
    pump(p);
  }
}

static int should_retire(pool_worker_t *w) {
  procord_pool_t *p = w->pool;
  if (p->closing && !p->queue_head) return 1;
  if (p->options.max_tasks_per_worker > 0 && w->tasks_done >= p->options.max_tasks_per_worker) return 1;
  return p->options.max_resident_bytes > 0 &&
         procord_link_resident_bytes(w->link) > p->options.max_resident_bytes;
}

/* The task has its outcome from the worker's answer: report it now. */
static void task_answered(pool_worker_t *w) {
  procord_delegation_t *d = w->task;
  w->task = NULL;
  d->link = NULL;
  w->tasks_done++;
  source_served(w->pool, w->source);
  finish_task(w->pool, d);
}

static void on_frame(procord_link_t *link, const procord_frame_t *frame, int error, void *context) {
  pool_worker_t *w = context;
  if (w->state == WORKER_BUSY && w->task) {
    switch (procord_delegation_frame(w->task, link, frame, error)) {
    case PROCORD_FRAME_CONTINUES: return;
    case PROCORD_FRAME_ANSWERS:
      task_answered(w);
      /* A worker with tasks sent ahead runs them first (one may have
         started already): it is retired once they are done. */
      if (should_retire(w)) w->retire_due = 1;
      if (w->retire_due && !w->ahead_head) {
        retire(w);
        pump(w->pool); /* a replacement, if tasks wait */
      } else {
        /* `0R` comes next from a reusable worker (then it takes the next
           task), the end from an original one: no other worker is needed. */
        set_state(w, WORKER_DRAINING);
        procord_link_start_grace(link);
      }
      return;
    case PROCORD_FRAME_BREAKS:
      if (w->task->answered) task_answered(w); /* `E0`: the outcome is set */
      retire(w); /* a broken task ends with its worker's end */
      return;
    }
  }
  if (w->state == WORKER_DRAINING && !error && frame->kind == PROCORD_FRAME_REUSABLE) {
    procord_link_cancel_grace(link);
    w->said_reusable = 1;
    if (w->ahead_head) start_task_sent_ahead(w);
    else become_idle(w);
    pump(w->pool);
    return;
  }
  if (w->state != WORKER_CLOSING) {
    procord_link_fail(link, error ? error : PROCORD_EUNEXPECTED,
                      error ? PROCORD_STAGE_PARSE : PROCORD_STAGE_RECEIVE);
    retire(w);
  }
}

static void on_ended(procord_link_t *link, void *context) {
  pool_worker_t *w = context;
  procord_pool_t *p = w->pool;
  /* The source rests if its worker could not be reached, or went away by
     itself before serving anything (a program that exits at once, a server
     that closes at once), not when a task took it down or the pool stopped it. */
  if (!w->was_ready && !w->stopped_by_pool) source_failed(p, w->source, &link->end);
  else if (w->tasks_done == 0 && !w->task && !w->stopped_by_pool) source_failed(p, w->source, NULL);
  set_state(w, WORKER_CLOSING);
  w->previous->next = w->next;
  w->next->previous = w->previous;
  end_hold(p); /* its descriptors and process are given back */
  /* Tasks sent ahead never started (the worker had not finished the one
     before them): back to the front of the queue, in their order, no
     retry counted; first, so that the running task, if it runs again,
     goes before them. */
  procord_delegation_t *returned = NULL;
  while (w->ahead_head) {
    procord_delegation_t *a = take_ahead(w);
    a->queue_next = returned;
    returned = a;
  }
  while (returned) {
    procord_delegation_t *a = returned;
    returned = a->queue_next;
    a->queue_next = NULL;
    if (!a->dropped) {
      __atomic_store_n(&a->delivered, 0, __ATOMIC_RELEASE);
      a->outcome.attempts--; /* it was sent, but never taken up */
      if (__atomic_load_n(&a->kill_requested, __ATOMIC_ACQUIRE) || p->immediate) {
        __atomic_store_n(&a->kill_requested, 1, __ATOMIC_RELEASE);
        finish_task(p, a);
      } else {
        pthread_mutex_lock(&p->lock);
        p->waiting++;
        p->stats.queued = p->waiting;
        pthread_mutex_unlock(&p->lock);
        enqueue(p, a, 1);
      }
    }
    procord_delegation_release(a); /* the list's reference */
  }
  procord_delegation_t *d = w->task;
  if (d) {
    d->link = NULL;
    procord_delegation_take_end(d, link);
    int stopped = __atomic_load_n(&d->kill_requested, __ATOMIC_ACQUIRE) || d->timed_out;
    int may_retry = d->idempotent || !d->delivered;
    if (!stopped && !d->answered && !p->immediate && may_retry && d->retries < p->options.max_retries) {
      /* Run it again on another worker, ahead of the tasks that came later. */
      d->retries++;
      procord_outcome_t fresh = {.exit_code = -1, .worker_pid = -1, .attempts = d->outcome.attempts};
      d->outcome = fresh;
      __atomic_store_n(&d->delivered, 0, __ATOMIC_RELEASE);
      pthread_mutex_lock(&p->lock);
      p->stats.tasks_retried++;
      p->waiting++;
      p->stats.queued = p->waiting;
      pthread_mutex_unlock(&p->lock);
      __atomic_store_n(&d->pid, -1, __ATOMIC_RELEASE);
      enqueue(p, d, 1);
    } else {
      finish_task(p, d);
    }
  }
  procord_link_free(link);
  event_free(w->idle_timer);
  procord_free(w);
  pump(p);
}

/* ---- Shutdown. ---- */

static void stop_if_done(procord_pool_t *p) {
  if (!p->closing || p->stopped || p->queue_head || p->workers.next != &p->workers) return;
  p->stopped = 1;
  if (p->replenish_timer) event_free(p->replenish_timer);
  p->replenish_timer = NULL;
  if (p->hold_timer) event_free(p->hold_timer);
  p->hold_timer = NULL;
  pthread_mutex_lock(procord_loop_done_lock(p->loop));
  pthread_mutex_lock(&p->lock);
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
    while (p->queue_head) {
      procord_delegation_t *d = dequeue(p);
      __atomic_store_n(&d->kill_requested, 1, __ATOMIC_RELEASE);
      finish_task(p, d);
    }
    for (pool_worker_t *w = p->workers.next, *next; w != &p->workers; w = next) {
      next = w->next;
      if (w->task) {
        __atomic_store_n(&w->task->kill_requested, 1, __ATOMIC_RELEASE);
        kill_worker(w, SIGKILL);
      } else {
        retire(w);
      }
    }
  }
  pump(p);
}

static void abort_work(procord_loop_work_t *work) { shut_down((procord_pool_t *)work, 1); }

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

void procord_pool_stop_task(procord_pool_t *p, procord_delegation_t *d, int signal) {
  if (d->queued) {
    unqueue(p, d);
    finish_task(p, d);
    pump(p);
    return;
  }
  if (d->sent_ahead) {
    /* Sent ahead and not started: it ends now. It cannot be taken back from
       its worker, which is killed when it gets to it (start_task_sent_ahead). */
    if (!d->dropped) {
      d->dropped = 1;
      finish_task(p, d);
    }
    return;
  }
  if (!d->link) return; /* finished, or not yet on the loop */
  pool_worker_t *w = d->link->context;
  kill_worker(w, signal);
  pump(p);
}

static void enqueue_on_loop(void *argument) {
  procord_delegation_t *d = argument;
  procord_pool_t *p = d->pool;
  if (p->immediate || p->stopped) {
    /* Shut down between the submission and now: a graceful shutdown still
       serves it (the pool stops only once its queue is empty). */
    pthread_mutex_lock(&p->lock);
    p->waiting--;
    p->stats.queued = p->waiting;
    pthread_mutex_unlock(&p->lock);
    __atomic_store_n(&d->kill_requested, 1, __ATOMIC_RELEASE);
    finish_task(p, d);
    return;
  }
  if (__atomic_load_n(&d->kill_requested, __ATOMIC_ACQUIRE)) {
    pthread_mutex_lock(&p->lock);
    p->waiting--;
    p->stats.queued = p->waiting;
    pthread_mutex_unlock(&p->lock);
    finish_task(p, d);
    return;
  }
  if (procord_delegation_arm_deadline(d) != 0) {
    pthread_mutex_lock(&p->lock);
    p->waiting--;
    p->stats.queued = p->waiting;
    pthread_mutex_unlock(&p->lock);
    procord_link_t none = {.end = {.exit_code = -1}};
    procord_link_fail(&none, -ENOMEM, PROCORD_STAGE_SETUP);
    procord_delegation_take_end(d, &none);
    finish_task(p, d);
    return;
  }
  enqueue(p, d, 0);
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
  int error = p->refusing ? PROCORD_ECLOSED : p->waiting >= p->options.max_queue_length ? PROCORD_EFULL : 0;
  if (!error) {
    p->waiting++;
    p->stats.queued = p->waiting;
    p->stats.tasks_submitted++;
  }
  pthread_mutex_unlock(&p->lock);
  if (error) {
    procord_delegation_refuse_input(options);
    return error;
  }
  fflush(stdout); /* a local worker shares our stdout: what we printed comes first */
  procord_delegation_t *d = procord_delegation_create(p->loop, options);
  if (d) {
    d->pool = p;
    __atomic_add_fetch(&p->references, 1, __ATOMIC_RELAXED);
    error = procord_loop_call(p->loop, enqueue_on_loop, d);
    if (error) {
      d->references = 1;
      procord_delegation_release(d);
    }
  } else {
    procord_delegation_refuse_input(options);
    error = -ENOMEM;
  }
  if (error) {
    pthread_mutex_lock(&p->lock);
    p->waiting--;
    p->stats.queued = p->waiting;
    p->stats.tasks_submitted--;
    pthread_mutex_unlock(&p->lock);
    return error;
  }
  *result = d;
  return 0;
}

/* ---- Making, waiting, looking. ---- */

static void start_on_loop(void *argument) {
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
  p->work.abort = abort_work;
  p->references = 2; /* the caller's and the loop's */
  p->workers.next = p->workers.previous = &p->workers;
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
  if (!error) error = procord_loop_call(loop, start_on_loop, p);
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
