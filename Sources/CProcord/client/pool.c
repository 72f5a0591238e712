/*
 * A pool of reusable workers (procord/pool.h): one queue of tasks
 * (pool_queue.c), workers lent to them in turn over links (pool_workers.c),
 * started from sources in turn (pool_sources.c), reused on `0R`, retired
 * and replaced on the loop's thread. Here: handing tasks out, what a
 * worker's events mean, shutting down, and the calls of other threads.
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

/* ---- References. ---- */

/* Frees the pool, the first `sources_copied` of its sources copied. */
static void free_pool(procord_pool_t *p, size_t sources_copied) {
  for (size_t i = 0; i < sources_copied; i++) procord_pool_free_source(&p->sources[i].spec);
  procord_free(p->sources);
  pthread_mutex_destroy(&p->lock);
  procord_free(p);
}

static void pool_unref(procord_pool_t *p) {
  int left = __atomic_sub_fetch(&p->references, 1, __ATOMIC_ACQ_REL);
  PROCORD_ASSERT(left >= 0);
  if (left == 0) free_pool(p, p->options.source_count);
}

/* ---- Handing tasks out. ---- */

static void pump(procord_pool_t *p);
static void on_worker_ready(procord_link_t *link, void *context);
static void on_worker_frame(procord_link_t *link, const procord_frame_t *frame, int error,
                            void *context);
static void on_worker_ended(procord_link_t *link, void *context);

/* A task that could not get a worker at all: retried, or finished. */
static void task_without_worker(procord_pool_t *p, pool_task_t *t,
                                const procord_link_end_t *failure) {
  int all_down = 0;
  if (!p->closing && t->retries < p->options.max_retries) procord_pool_choose_source(p, &all_down);
  /* Every source rests after a failure: trying again now would fail alike. */
  if (!p->closing && t->retries < p->options.max_retries && !all_down) {
    t->retries++;
    procord_pool_requeue_task(p, t, 1);
    return;
  }
  procord_pool_fail_task(p, t, failure);
}

static void stop_if_done(procord_pool_t *p);
static void replenish(procord_pool_t *p);

/* Hands queued tasks to free workers, starting workers up to the maximum. */
static void pump(procord_pool_t *p) {
  while (!procord_list_is_empty(&p->queue)) {
    pool_worker_t *w = procord_pool_find_free_worker(p);
    if (!w) {
      size_t limit = procord_pool_worker_limit(p);
      if (limit == 0 && procord_list_is_empty(&p->workers)) {
        /* Held at no worker, and none to wait for (not even one ending,
           whose end would give resources back): failed now with the cause,
           not kept waiting for a start that would fail alike. No retry
           either, for the same reason. */
        procord_pool_fail_task(p, procord_pool_dequeue_first(p), &p->hold_failure);
        continue;
      }
      if (procord_pool_live_workers(p) >= limit) {
        /* Only an idempotent task may go ahead: in a race with a stop of its
           worker, one may run although it is reported as never started. */
        int eligible =
            p->options.send_ahead > 0 && !p->closing && procord_pool_first_queued(p)->idempotent;
        pool_worker_t *ahead = eligible ? procord_pool_find_busy_for_more(p) : NULL;
        if (!ahead) break;
        /* Its list filled up at once, in one write (and, often, one read
           for the worker). */
        procord_link_t *link = ahead->link;
        procord_link_cork(link, 1);
        while (procord_pool_first_queued(p) && procord_pool_first_queued(p)->idempotent &&
               procord_pool_may_send_ahead(p, ahead))
          procord_pool_send_ahead(ahead, procord_pool_dequeue_first(p));
        procord_link_cork(link, 0);
        continue;
      }
      int all_down = 0;
      size_t s = procord_pool_choose_source(p, &all_down);
      if (all_down && p->sources[s].start_failed) {
        /* Resting after a failed start: the task gets that failure at once,
           rather than another doomed start (a missing program, a refused
           connection). */
        task_without_worker(p, procord_pool_dequeue_first(p), &p->sources[s].start_failure);
        continue;
      }
      procord_link_end_t failure;
      w = procord_pool_start_worker(p, s, &failure);
      if (!w) {
        /* For lack of resources, the pool is held now: the task waits for a
           worker it has, or (it has none) fails at the top of the loop. */
        if (!procord_pool_lacks_resources(failure.error))
          task_without_worker(p, procord_pool_dequeue_first(p), &failure);
        continue;
      }
    }
    procord_pool_assign_task(w, procord_pool_dequeue_first(p));
  }
  if (p->closing) {
    /* Nothing more will come: idle workers may go. */
    for (pool_worker_t *w = procord_pool_first_worker(p), *next; w; w = next) {
      next = procord_pool_next_worker(p, w);
      if (procord_list_is_empty(&p->queue) &&
          (w->state == POOL_WORKER_IDLE || (w->state == POOL_WORKER_STARTING && !w->task)))
        procord_pool_retire_worker(w);
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
  while (procord_pool_live_workers(p) < (size_t)p->options.min_workers) {
    if (procord_pool_live_workers(p) >= procord_pool_worker_limit(p))
      return; /* held: the hold's timer comes back */
    int all_down = 0;
    procord_link_end_t failure;
    long long now = procord_monotonic_ms();
    long long soonest = -1;
    for (size_t i = 0; i < p->options.source_count; i++)
      if (soonest < 0 || p->sources[i].down_until_ms < soonest)
        soonest = p->sources[i].down_until_ms;
    if (soonest > now) {
      if (!evtimer_pending(p->replenish_timer, NULL))
        procord_timer_arm(p->replenish_timer, (int)(soonest - now));
      return;
    }
    size_t s = procord_pool_choose_source(p, &all_down);
    pool_worker_t *w = procord_pool_start_worker(p, s, &failure);
    if (!w) continue; /* that source now rests; the loop tries the next or waits */
    if (w->state == POOL_WORKER_IDLE) procord_pool_become_idle(w);
  }
}

/* ---- Link events. ---- */

static void on_worker_ready(procord_link_t *link, void *context) {
  (void)link;
  pool_worker_t *w = context;
  procord_pool_t *p = w->pool;
  w->was_ready = 1;
  if (w->state == POOL_WORKER_BUSY && w->task) {
    procord_pool_send_task(w);
    return;
  }
  if (w->state == POOL_WORKER_STARTING) {
    procord_pool_become_idle(w);
    pump(p);
  }
}

static int should_retire(pool_worker_t *w) {
  procord_pool_t *p = w->pool;
  if (p->closing && procord_list_is_empty(&p->queue)) return 1;
  if (p->options.max_tasks_per_worker > 0 && w->tasks_done >= p->options.max_tasks_per_worker)
    return 1;
  return p->options.max_resident_bytes > 0 &&
         procord_link_resident_bytes(w->link) > p->options.max_resident_bytes;
}

/* The task has its outcome from the worker's answer: report it now. */
static void task_answered(pool_worker_t *w) {
  pool_task_t *t = procord_pool_unbind_task(w);
  w->tasks_done++;
  procord_pool_source_served(w->pool, w->source);
  procord_pool_finish_task(w->pool, t);
}

static void on_worker_frame(procord_link_t *link, const procord_frame_t *frame, int error,
                            void *context) {
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
        procord_pool_retire_worker(w);
        pump(w->pool); /* a replacement, if tasks wait */
      } else {
        /* `0R` comes next from a reusable worker (then it takes the next
           task), the end from an original one: no other worker is needed. */
        procord_pool_set_worker_state(w, POOL_WORKER_DRAINING);
        procord_link_start_grace(link);
      }
      return;
    case PROCORD_FRAME_BREAKS:
      if (procord_delegation_answered(w->task->delegation))
        task_answered(w);            /* `E0`: the outcome is set */
      procord_pool_retire_worker(w); /* a broken task ends with its worker's end */
      return;
    }
  }
  if (w->state == POOL_WORKER_DRAINING && !error && frame->kind == PROCORD_FRAME_REUSABLE) {
    procord_link_cancel_grace(link);
    w->said_reusable = 1;
    if (!procord_list_is_empty(&w->ahead)) procord_pool_start_task_sent_ahead(w);
    else
      procord_pool_become_idle(w);
    pump(w->pool);
    return;
  }
  if (w->state != POOL_WORKER_CLOSING) {
    procord_link_fail(link, error ? error : PROCORD_EUNEXPECTED,
                      error ? PROCORD_STAGE_PARSE : PROCORD_STAGE_RECEIVE);
    procord_pool_retire_worker(w);
  }
}

/* The tasks sent ahead of an ended worker never started (it had not
   finished the one before them): back to the front of the queue, in their
   order, no retry counted (the last first, so that the first ends up
   first); or finished, if they were to be killed. */
static void return_tasks_sent_ahead(procord_pool_t *p, pool_worker_t *w) {
  while (!procord_list_is_empty(&w->ahead)) {
    pool_task_t *t = procord_pool_take_ahead(w, 1);
    procord_delegation_t *d = t->delegation;
    if (!t->finished) {
      procord_delegation_take_back(d);
      if (procord_delegation_kill_requested(d) || p->immediate) {
        procord_delegation_end_as_killed(d);
        procord_pool_finish_task(p, t);
      } else {
        procord_pool_requeue_task(p, t, 0);
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
  if (!w->was_ready && !w->stopped_by_pool) procord_pool_source_failed(p, w->source, &link->end);
  else if (w->tasks_done == 0 && !w->task && !w->stopped_by_pool)
    procord_pool_source_failed(p, w->source, NULL);
  procord_pool_set_worker_state(w, POOL_WORKER_CLOSING);
  procord_list_remove(&w->node);
  procord_pool_end_hold(p); /* its descriptors and process are given back */
  /* First, so that the running task, if it runs again, goes before them. */
  return_tasks_sent_ahead(p, w);
  if (w->task) {
    pool_task_t *t = procord_pool_unbind_task(w);
    procord_delegation_t *d = t->delegation;
    procord_delegation_take_end(d, &link->end);
    int stopped = procord_delegation_kill_requested(d) || procord_delegation_timed_out(d);
    int may_retry = t->idempotent || !procord_delegation_is_delivered(d);
    if (!stopped && !procord_delegation_answered(d) && !p->immediate && may_retry &&
        t->retries < p->options.max_retries) {
      /* Run it again on another worker, ahead of the tasks that came later. */
      t->retries++;
      procord_delegation_prepare_retry(d);
      procord_pool_requeue_task(p, t, 1);
    } else {
      procord_pool_finish_task(p, t);
    }
  }
  procord_link_free(link);
  event_free(w->idle_timer);
  procord_free(w);
  pump(p);
}

/* ---- Shutdown. ---- */

static void stop_if_done(procord_pool_t *p) {
  if (!p->closing || p->stopped || !procord_list_is_empty(&p->queue) ||
      !procord_list_is_empty(&p->workers))
    return;
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
      pool_task_t *t = procord_pool_dequeue_first(p);
      procord_delegation_end_as_killed(t->delegation);
      procord_pool_finish_task(p, t);
    }
    for (pool_worker_t *w = procord_pool_first_worker(p), *next; w; w = next) {
      next = procord_pool_next_worker(p, w);
      if (w->task) {
        procord_delegation_end_as_killed(w->task->delegation);
        procord_pool_kill_worker(w, SIGKILL);
      } else {
        procord_pool_retire_worker(w);
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
    procord_pool_unqueue_task(p, t);
    procord_pool_finish_task(p, t);
    pump(p);
    return;
  case POOL_TASK_SENT_AHEAD:
    /* Sent ahead and not started: it ends now. It cannot be taken back from
       its worker, which is killed when it gets to it (start_task_sent_ahead). */
    if (!t->finished) procord_pool_finish_task(p, t);
    return;
  case POOL_TASK_RUNNING:
    procord_pool_kill_worker(t->worker, signal);
    pump(p);
    return;
  case POOL_TASK_ARRIVING: /* not yet on the loop */
  case POOL_TASK_OUT: /* finished */ return;
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
    procord_pool_count_queued(p, -1, 0);
    t->place = POOL_TASK_OUT;
    procord_delegation_end_as_killed(d);
    procord_pool_finish_task(p, t);
    return;
  }
  if (procord_delegation_kill_requested(d)) {
    procord_pool_count_queued(p, -1, 0);
    t->place = POOL_TASK_OUT;
    procord_pool_finish_task(p, t);
    return;
  }
  if (procord_delegation_arm_deadline(d) != 0) {
    procord_pool_count_queued(p, -1, 0);
    t->place = POOL_TASK_OUT;
    procord_link_end_t none = {.error = -ENOMEM,
                               .call = procord_stage_call(PROCORD_STAGE_SETUP),
                               .stage = PROCORD_STAGE_SETUP,
                               .exit_code = -1};
    procord_pool_fail_task(p, t, &none);
    return;
  }
  procord_pool_queue_task(p, t, 0);
  pump(p);
}

int procord_pool_delegate(procord_pool_t *p, const procord_delegation_options_t *given,
                          procord_delegation_t **result) {
  procord_delegation_options_t copy;
  const procord_delegation_options_t *options = &copy;
  if (procord_delegation_options_accept(&copy, given, p && result) != 0) return PROCORD_EINVAL;
  pthread_mutex_lock(&p->lock);
  int error = p->refusing                                      ? PROCORD_ECLOSED
              : p->stats.queued >= p->options.max_queue_length ? PROCORD_EFULL
                                                               : 0;
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
  procord_delegation_t *d =
      t ? procord_delegation_create(p->loop, options, &pooled_task_owner, t) : NULL;
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
  procord_options_clear(source, sizeof *source);
  procord_spawn_options_init(&source->worker);
}

void procord_pool_options_init(procord_pool_options_t *options) {
  procord_options_clear(options, sizeof *options);
}

int procord_pool_new(procord_loop_t *loop, const procord_pool_options_t *given,
                     procord_pool_t **result) {
  procord_pool_options_t options;
  if (!loop || !given || !result ||
      PROCORD_OPTIONS_COPY(options, given, PROCORD_FIRST_SIZE_POOL_OPTIONS) != 0 ||
      !options.sources || options.source_count == 0 || options.min_workers < 0 ||
      options.max_workers < 0 || options.max_retries < 0)
    return PROCORD_EINVAL;
  procord_pool_source_t *sources = NULL;
  int error = procord_pool_read_sources(options.sources, options.source_count, &sources);
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
  p->worker_events = (procord_link_events_t){on_worker_ready, on_worker_frame, on_worker_ended};
  p->references = 2; /* the caller's and the loop's */
  procord_list_init(&p->workers);
  procord_list_init(&p->queue);
  pthread_mutex_init(&p->lock, NULL);
  p->sources = procord_allocate_zeroed(options.source_count, sizeof *p->sources);
  size_t copied = 0;
  error = p->sources ? 0 : -ENOMEM;
  while (!error && copied < options.source_count) {
    error = procord_pool_copy_source(&p->sources[copied].spec, &sources[copied]);
    if (!error) copied++;
  }
  procord_free(sources);
  p->options.sources = NULL; /* the copies are in p->sources */
  if (!error) error = procord_loop_call(loop, start_pool_on_loop, p);
  if (error) {
    free_pool(p, copied);
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
  size_t limit = procord_pool_worker_limit(p);
  pthread_mutex_lock(&p->lock);
  *stats = p->stats;
  pthread_mutex_unlock(&p->lock);
  stats->max_workers_now = limit;
}
