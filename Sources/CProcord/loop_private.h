/* Private to the C core: what connections and delegations need of a loop. */
#ifndef PROCORD_LOOP_PRIVATE_H
#define PROCORD_LOOP_PRIVATE_H

#include <pthread.h>

#include "procord/loop.h"

struct event;
struct event_base;

/* Adds `timer` to fire in `milliseconds` (re-arming it if pending). */
void procord_timer_arm(struct event *timer, int milliseconds);

/* The loop's libevent base; use it on the loop's thread only. */
struct event_base *procord_loop_base(procord_loop_t *loop);

/*
 * The name resolver kept on a loop (its owner creates it on first use, on
 * the loop's thread); `free_resolver` is called by procord_loop_free,
 * before the base is freed. NULL until set.
 */
void *procord_loop_resolver(procord_loop_t *loop);
void procord_loop_set_resolver(procord_loop_t *loop, void *resolver, void (*free_resolver)(void *));

/*
 * The lock and condition that guard "finished" flags of the loop's
 * delegations, so that other threads can wait on them.
 */
pthread_mutex_t *procord_loop_done_lock(procord_loop_t *loop);
pthread_cond_t *procord_loop_done_cond(procord_loop_t *loop);

/*
 * Waits on the done condition until `holds(argument)`, called with the done
 * lock held, returns true, or `timeout_ms` milliseconds have passed
 * (negative: no limit). Returns the last answer of `holds`; on the loop's
 * own thread, where nothing could change meanwhile, a wait with a time
 * other than 0 is refused: -EDEADLK. Whatever
 * `holds` looks at must change under the done lock, followed by a
 * broadcast of the done condition.
 */
int procord_loop_wait_until(procord_loop_t *loop, int (*holds)(void *argument), void *argument,
                            int timeout_ms);

/*
 * Work in progress on a loop (a delegation, later a server): procord_loop_free
 * calls each item's abort function on the loop's thread, then keeps running
 * until every item has been removed. Add and remove on the loop's thread.
 */
typedef struct procord_loop_work_s {
  void (*abort)(struct procord_loop_work_s *work);
  struct procord_loop_work_s *previous, *next;
} procord_loop_work_t;

/*
 * An event that fires once the child behind `pidfd` has exited: the pidfd
 * becoming readable, or, where pidfd_open is missing (Linux before 5.3), a
 * look every 100 ms. Persistent: the callback reaps and frees it. NULL when
 * out of memory.
 */
struct event *procord_loop_watch_child(procord_loop_t *loop, int pidfd,
                                       void (*callback)(int, short, void *), void *argument);

/*
 * A call queued on a loop without allocating (procord_loop_call allocates
 * one for each of its calls): the node lives in what queues it (a pool, a
 * waiting caller's stack), zeroed at first, and is not queued again nor
 * freed before its function has started. Then it may be: the loop reads
 * nothing of it after.
 */
typedef struct procord_queued_call_s {
  procord_loop_fn fn;
  void *argument;
  struct procord_queued_call_s *next;
  int allocated; /* procord_loop_call's own: freed once run */
} procord_queued_call_t;

/* Queues fn(argument) to run on the loop's thread, in `call`. Cannot fail. */
void procord_loop_queue(procord_loop_t *loop, procord_queued_call_t *call, procord_loop_fn fn,
                        void *argument);

/*
 * Runs `fn(argument)` on the loop's thread and waits for it to return; runs
 * it at once on the calling thread when that is the loop's, or when the
 * loop is not running anywhere (it would never come). Cannot fail: the
 * queued call is on the caller's stack.
 */
void procord_loop_call_and_wait(procord_loop_t *loop, procord_loop_fn fn, void *argument);

/* A polled loop's backend (loop_backend.c). */
struct event_config;
/* Asks libevent for its epoll backend, the only one that nests. */
void procord_backend_configure(struct event_config *config);
/* Opens the descriptor a host polls: an epoll instance holding the base's
   (the one that watches `marker_fd`). 0, PROCORD_EINVAL (not epoll) or -errno. */
int procord_backend_open(struct event_base *base, int marker_fd, int *backend_fd);
/* Milliseconds until the base's next timer (0: something is due or
   active already; -1: no timer). */
int procord_backend_timeout(struct event_base *base);

void procord_loop_add_work(procord_loop_t *loop, procord_loop_work_t *work);
void procord_loop_remove_work(procord_loop_t *loop, procord_loop_work_t *work);

#endif
