/* Private to the C core: what a pooled delegation asks of its pool (pool.c). */
#ifndef PROCORD_POOL_PRIVATE_H
#define PROCORD_POOL_PRIVATE_H

#include "procord/pool.h"

/*
 * Ends a pooled task early, on the loop's thread: a queued task finishes at
 * once; a running one has its worker sent `signal` (SIGKILL also closes its
 * stream), and finishes once that worker has ended. The task's
 * kill_requested or timed_out flag says how it ends.
 */
void procord_pool_stop_task(procord_pool_t *pool, procord_delegation_t *task, int signal);

/* A pooled task's last reference is gone: it no longer holds the pool. */
void procord_pool_task_released(procord_pool_t *pool);

#endif
