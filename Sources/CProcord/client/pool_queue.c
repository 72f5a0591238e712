/*
 * A pool's queue of tasks (pool.c), on the loop's thread: its entries in
 * order, their count (stats.queued, which other threads read), and their
 * finish.
 */
#define _GNU_SOURCE
#include "client/client_private.h"
#include "base/base_private.h"
#include "procord/error.h"

/* Tasks submitted and not yet handed to a worker (stats.queued): counted
   when submitted, or put back in the queue; no longer once a worker has
   them, or they finish unqueued. Returns the count before. */
size_t procord_pool_count_queued(procord_pool_t *p, int delta, int retried) {
  pthread_mutex_lock(&p->lock);
  size_t before = p->stats.queued;
  PROCORD_ASSERT(delta >= 0 || before > 0);
  p->stats.queued += (size_t)delta;
  if (retried) p->stats.tasks_retried++;
  pthread_mutex_unlock(&p->lock);
  return before;
}

void procord_pool_queue_task(procord_pool_t *p, pool_task_t *t, int at_front) {
  PROCORD_ASSERT(t->place == POOL_TASK_ARRIVING || t->place == POOL_TASK_OUT);
  PROCORD_ASSERT(!t->finished);
  t->place = POOL_TASK_QUEUED;
  t->worker = NULL;
  if (at_front) procord_list_push_front(&p->queue, &t->node);
  else
    procord_list_push_back(&p->queue, &t->node);
}

/* Back to the front of the queue, counted again: a retry, or a task sent
   ahead that its worker never started. */
void procord_pool_requeue_task(procord_pool_t *p, pool_task_t *t, int retried) {
  procord_pool_count_queued(p, 1, retried);
  procord_pool_queue_task(p, t, 1);
}

void procord_pool_unqueue_task(procord_pool_t *p, pool_task_t *t) {
  PROCORD_ASSERT(t->place == POOL_TASK_QUEUED);
  procord_list_remove(&t->node);
  t->place = POOL_TASK_OUT;
  size_t before = procord_pool_count_queued(p, -1, 0);
  if (before >= p->options.max_queue_length && p->options.on_room)
    p->options.on_room(p, p->options.context);
}

pool_task_t *procord_pool_first_queued(procord_pool_t *p) {
  procord_list_t *first = procord_list_first(&p->queue);
  return first ? PROCORD_LIST_ENTRY(first, pool_task_t, node) : NULL;
}

pool_task_t *procord_pool_dequeue_first(procord_pool_t *p) {
  pool_task_t *t = procord_pool_first_queued(p);
  procord_pool_unqueue_task(p, t);
  return t;
}

/* Reports the task's outcome. Its entry may be gone after this (with the
   delegation's last reference), unless a list sent ahead holds it. */
void procord_pool_finish_task(procord_pool_t *p, pool_task_t *t) {
  PROCORD_ASSERT(!t->finished); /* once */
  PROCORD_ASSERT(t->place == POOL_TASK_OUT || t->place == POOL_TASK_SENT_AHEAD);
  t->finished = 1;
  pthread_mutex_lock(&p->lock);
  p->stats.tasks_finished++;
  pthread_mutex_unlock(&p->lock);
  procord_delegation_finish(t->delegation);
}

/* Finishes a task that never reached a worker, with why. */
void procord_pool_fail_task(procord_pool_t *p, pool_task_t *t, const procord_link_end_t *failure) {
  procord_delegation_take_end(t->delegation, failure);
  procord_pool_finish_task(p, t);
}
