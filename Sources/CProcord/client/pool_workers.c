/*
 * A pool's workers (pool.c), on the loop's thread: started from a source,
 * counted by state, idle in order of use, lent a task, sent tasks ahead,
 * retired or killed. What a worker's events mean for the pool is pool.c's.
 */
#define _GNU_SOURCE
#include "client/client_private.h"
#include "base/base_private.h"
#include "procord/error.h"

#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <string.h>

/* ---- States and counts. ---- */

static int counts_as_live(pool_worker_state_t state) {
  return state != POOL_WORKER_NEW && state != POOL_WORKER_CLOSING;
}

static void count_state(procord_pool_t *p, pool_worker_state_t state, int delta) {
  if (counts_as_live(state)) p->stats.workers += (size_t)delta;
  if (state == POOL_WORKER_IDLE) p->stats.idle += (size_t)delta;
  if (state == POOL_WORKER_BUSY || state == POOL_WORKER_DRAINING) p->stats.busy += (size_t)delta;
}

void procord_pool_set_worker_state(pool_worker_t *w, pool_worker_state_t state) {
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

size_t procord_pool_live_workers(procord_pool_t *p) {
  pthread_mutex_lock(&p->lock);
  size_t live = p->stats.workers;
  pthread_mutex_unlock(&p->lock);
  return live;
}

/* ---- The list of workers, the most recently idle last. ---- */

static pool_worker_t *worker_of(procord_list_t *node) {
  return node ? PROCORD_LIST_ENTRY(node, pool_worker_t, node) : NULL;
}

pool_worker_t *procord_pool_first_worker(procord_pool_t *p) {
  return worker_of(procord_list_first(&p->workers));
}

/* The worker after `w` in the pool's list, or NULL. */
pool_worker_t *procord_pool_next_worker(procord_pool_t *p, pool_worker_t *w) {
  return worker_of(procord_list_next(&p->workers, &w->node));
}

void procord_pool_retire_worker(pool_worker_t *w) {
  if (w->state == POOL_WORKER_CLOSING) return;
  w->stopped_by_pool = 1;
  procord_pool_set_worker_state(w, POOL_WORKER_CLOSING);
  procord_link_close(w->link);
}

/* Kills a worker (its process group; SIGKILL also closes its stream). */
void procord_pool_kill_worker(pool_worker_t *w, int signal) {
  w->stopped_by_pool = 1;
  procord_pool_set_worker_state(w, POOL_WORKER_CLOSING);
  procord_link_kill(w->link, signal, signal == SIGKILL);
}

/* ---- A worker's life: its task, idle, started. ---- */

/* Makes `t` the task that worker `w` runs. */
static void bind_task(pool_worker_t *w, pool_task_t *t) {
  PROCORD_ASSERT(!w->task && t->place == POOL_TASK_OUT && !t->finished);
  t->place = POOL_TASK_RUNNING;
  t->worker = w;
  w->task = t;
  procord_delegation_runs_on(t->delegation, w->link->pid);
}

/* The worker no longer runs its task (answered, or the worker ended). */
pool_task_t *procord_pool_unbind_task(pool_worker_t *w) {
  pool_task_t *t = w->task;
  PROCORD_ASSERT(t->place == POOL_TASK_RUNNING && t->worker == w);
  w->task = NULL;
  t->place = POOL_TASK_OUT;
  t->worker = NULL;
  return t;
}

static void arm_idle_timer(pool_worker_t *w);

static void on_idle_timeout(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  pool_worker_t *w = context;
  if (w->state != POOL_WORKER_IDLE) return;
  if (procord_pool_live_workers(w->pool) > (size_t)w->pool->options.min_workers)
    procord_pool_retire_worker(w);
  else
    arm_idle_timer(w); /* needed now; perhaps not later */
}

static void arm_idle_timer(pool_worker_t *w) {
  int limit_ms = w->pool->options.idle_timeout_ms;
  if (limit_ms <= 0) return;
  procord_timer_arm(w->idle_timer, limit_ms);
}

/* Idle, and last in the list: the most recently used worker is found first. */
void procord_pool_become_idle(pool_worker_t *w) {
  procord_pool_t *p = w->pool;
  procord_list_remove(&w->node);
  procord_list_push_back(&p->workers, &w->node);
  procord_pool_set_worker_state(w, POOL_WORKER_IDLE);
  arm_idle_timer(w);
}

/*
 * Starts a worker from source `s`. Returns it (STARTING for a server,
 * IDLE for a local worker, which is ready at once), or NULL with `*failure`
 * filled when it could not even start (a spawn error).
 */
pool_worker_t *procord_pool_start_worker(procord_pool_t *p, size_t s, procord_link_end_t *failure) {
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
      .events = p->worker_events,
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
    if (procord_pool_lacks_resources(failure->error))
      procord_pool_hold_size(p, procord_pool_live_workers(p), failure);
    else
      procord_pool_source_failed(p, s, failure);
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
    procord_pool_set_worker_state(w, POOL_WORKER_IDLE);
  } else {
    procord_pool_set_worker_state(w, POOL_WORKER_STARTING);
  }
  return w;
}

/* Sends the worker's task now; if that fails, the worker is retired (the
   task ends with its end). */
void procord_pool_send_task(pool_worker_t *w) {
  int error = procord_delegation_send(w->task->delegation, w->link);
  if (error) {
    procord_link_fail(w->link, error, PROCORD_STAGE_SETUP);
    procord_pool_retire_worker(w);
  }
}

/* Hands a task to a worker: sent now, or once a server connection is ready. */
void procord_pool_assign_task(pool_worker_t *w, pool_task_t *t) {
  bind_task(w, t);
  int ready = w->state == POOL_WORKER_IDLE;
  procord_pool_set_worker_state(w, POOL_WORKER_BUSY);
  if (ready) procord_pool_send_task(w);
}

pool_worker_t *procord_pool_find_free_worker(procord_pool_t *p) {
  pool_worker_t *starting = NULL;
  /* The most recently used idle worker first (last in the list): the
     others may then idle out. */
  procord_list_t *n;
  PROCORD_LIST_FOREACH_REVERSE(n, &p->workers) {
    pool_worker_t *w = PROCORD_LIST_ENTRY(n, pool_worker_t, node);
    /* An idle worker whose stream has just ended (its end is on its way) gets no task. */
    if (w->state == POOL_WORKER_IDLE && procord_link_ready(w->link)) return w;
    if (w->state == POOL_WORKER_STARTING && !w->task && !starting) starting = w;
  }
  return starting;
}

/* ---- Tasks sent ahead. ---- */

/* For send_ahead: a busy worker that has shown it serves task after task
   (it has said `0R`), with room in its list of tasks sent ahead, and that
   will not be retired for its count before it gets to them. */
int procord_pool_may_send_ahead(procord_pool_t *p, const pool_worker_t *w) {
  if (w->state != POOL_WORKER_BUSY && w->state != POOL_WORKER_DRAINING) return 0;
  if (w->retire_due || !w->said_reusable || w->ahead_count >= p->options.send_ahead ||
      !procord_link_ready(w->link))
    return 0;
  return p->options.max_tasks_per_worker <= 0 ||
         w->tasks_done + 1 + w->ahead_count < p->options.max_tasks_per_worker;
}

pool_worker_t *procord_pool_find_busy_for_more(procord_pool_t *p) {
  pool_worker_t *best = NULL;
  for (pool_worker_t *w = procord_pool_first_worker(p); w; w = procord_pool_next_worker(p, w)) {
    /* Refilled once half empty: several tasks per write rather than one. */
    if (!procord_pool_may_send_ahead(p, w) || w->ahead_count > p->options.send_ahead / 2) continue;
    if (!best || w->ahead_count < best->ahead_count) best = w; /* the shortest line */
  }
  return best;
}

/* Sends a task to a busy worker, which starts it after those before it. */
void procord_pool_send_ahead(pool_worker_t *w, pool_task_t *t) {
  PROCORD_ASSERT(t->place == POOL_TASK_OUT && !t->finished);
  procord_delegation_retain(t->delegation); /* the list's */
  t->place = POOL_TASK_SENT_AHEAD;
  t->worker = w;
  procord_list_push_back(&w->ahead, &t->node);
  w->ahead_count++;
  int error = procord_delegation_send(t->delegation, w->link);
  if (error) {
    procord_link_fail(w->link, error, PROCORD_STAGE_SETUP);
    procord_pool_retire_worker(w);
  }
}

/* Takes a task sent ahead off its worker's list, the first or (`last`) the
   last one (the caller gets the list's reference to its delegation). */
pool_task_t *procord_pool_take_ahead(pool_worker_t *w, int last) {
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
void procord_pool_start_task_sent_ahead(pool_worker_t *w) {
  pool_task_t *t = procord_pool_take_ahead(w, 0);
  int dropped = t->finished;
  /* The list's reference; the pool's own remains until it finishes. */
  procord_delegation_release(t->delegation);
  if (dropped) {
    procord_pool_kill_worker(w, SIGKILL);
    return;
  }
  bind_task(w, t);
  procord_pool_set_worker_state(w, POOL_WORKER_BUSY);
}
