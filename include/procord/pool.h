/*
 * procord/pool.h: a pool of reusable workers.
 *
 * A pool keeps worker processes (started from local programs) and
 * connections to worker servers alive between tasks, so that a task costs a
 * round trip instead of a process start. A worker that sends `0R` after its
 * answer (docs/PROTOCOL.md) gets the next task on the same connection; one
 * that does not (an original worker) is used once and replaced.
 *
 * Tasks wait in one queue, in submission order, for a free worker. The pool
 * starts workers ahead of time (min_workers), grows on demand up to
 * max_workers, stops workers idle beyond idle_timeout_ms above the minimum,
 * retires a worker after max_tasks_per_worker tasks or once its resident
 * memory passes max_resident_bytes, and replaces a worker that dies: the
 * task it was running ends as DISCONNECTED naming the cause (its exit code
 * or signal), or runs again on another worker if it is idempotent.
 *
 * A start that fails for the program or server itself (a missing program,
 * a refused connection) rests its source (see `sources`) and fails the task
 * or, with max_retries, hands it to another source. One
 * that fails for lack of resources (EMFILE, ENFILE, EAGAIN: this program at
 * its descriptor or process limit; ENOMEM, ENOBUFS) is no source's fault:
 * the pool then holds at the workers it has, growing no further for a
 * while (from 250 ms, doubling up to 10 s; back to 250 ms once a start
 * succeeds, and the hold ends early when a worker ends, giving back what it
 * held), and queued tasks wait for those workers. A pool with no worker at
 * all (not even one still exiting) has nothing to wait for: while it holds,
 * a task that needs a worker fails at once with that start's cause (say
 * posix_spawn's -EMFILE), never retried, since any start would fail alike.
 *
 * A pooled task is a procord_delegation_t like any other: status, waiting,
 * killing (which kills its worker; the pool replaces it) and releasing work
 * alike. procord_delegation_pid gives the worker the task runs on (-1 while
 * it waits); once the task has finished, that worker may be running others:
 * signal the task with procord_delegation_kill, never by its pid. Everything runs on the pool's
 * loop; the functions here are thread-safe unless they say otherwise.
 */
#ifndef PROCORD_POOL_H
#define PROCORD_POOL_H

#include <stddef.h>

#include "procord/delegation.h"
#include "procord/loop.h"
#include "procord/spawn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct procord_pool_s procord_pool_t;

/* Where a pool's workers come from: a local program, or a worker server. */
typedef struct procord_pool_source_s {
  /* The size of this struct as the calling program was built with: set by
     procord_pool_source_init; 0 means the layout of this first release.
     Sources come as an array, read with the first one's size as its
     stride: every source of an array has the same size. A size larger than
     this library's struct, with a byte beyond it that is not 0, is refused
     with PROCORD_EINVAL. `worker` has a size of its own. */
  size_t size;
  /* A local worker (remote_host NULL): how to start it. To be reused it
     must speak this project's socket mode (PROCORD_CHANNEL_SOCKET, with
     `--procord-socket-fd 3` in its arguments); a worker in the original
     stdio mode answers once and is replaced. */
  procord_spawn_options_t worker;
  /* A worker server instead: its host name or address (copied) and port.
     Each of the pool's connections to it holds one of its worker processes. */
  const char *remote_host;
  int remote_port;
  /* For a server, optional: how to secure its connections (a client's
     procord/security.h; the pool takes a reference). */
  procord_security_t *security;
} procord_pool_source_t;

typedef struct procord_pool_options_s {
  /* The size of this struct as the calling program was built with: set by
     procord_pool_options_init; 0 means the layout of this first release.
     A size larger than this library's struct, with a byte beyond it that is
     not 0 (a program built against a newer Procord than it runs with), is
     refused with PROCORD_EINVAL. */
  size_t size;
  /* At least one. Workers are started from them in turn; a server that
     cannot be reached is skipped for a while (from 250 ms, doubling up to
     10 s) while others can serve. Copied. */
  const procord_pool_source_t *sources;
  size_t source_count;
  int min_workers; /* kept started, even when idle; 0 by default */
  /* At most this many workers serve at once; 0: the number of sources. (A
     retired or killed worker may still be exiting, for up to exit_grace_ms,
     while its replacement starts.) Fewer for a while after a start failed
     for lack of resources (see the top of this file). */
  int max_workers;
  /* A worker above min_workers that has been idle this long is stopped.
     0: never. */
  int idle_timeout_ms;
  /* A worker is retired after this many tasks (like Python's
     max_tasks_per_child); 0: no limit. */
  int max_tasks_per_worker;
  /* A local worker whose resident memory is above this after a task is
     retired (read from /proc after each task); 0: no limit. */
  size_t max_resident_bytes;
  /* Tasks waiting for a worker at most; procord_pool_delegate returns
     PROCORD_EFULL beyond. 0: 65536. */
  size_t max_queue_length;
  /* How many more workers a task may be handed to after its worker went
     away: idempotent tasks after any disconnection, others only when the
     task never reached the worker (it could not be started or reached). */
  int max_retries;
  /* Per worker, as in procord_delegation_options_t (a task's deadline_ms
     bounds a worker that stays silent): */
  int connect_timeout_ms;  /* servers: resolving and connecting; 0: no limit */
  size_t max_message_size; /* of frames from workers; 0: the default */
  int exit_grace_ms;       /* 0: 2000 ms */
  /* Called once on the loop's thread when the pool has stopped (after a
     shutdown, every worker reaped); may be NULL. */
  void (*on_stopped)(procord_pool_t *pool, void *context);
  /* Called on the loop's thread when a full queue gets room again (a task
     left it for a worker, or ended); may be NULL. For a submitter that
     waits instead of taking PROCORD_EFULL. */
  void (*on_room)(procord_pool_t *pool, void *context);
  void *context; /* for on_stopped and on_room */
  /* Send ahead: when every worker is busy and no more may start, a busy
     worker that has shown it serves task after task (it has said `0R`)
     may be sent up to this many more idempotent tasks while it runs one
     (its list is filled up again, in one write, once at most half full).
     It then goes from task to task without waiting for this program: for
     many short tasks, far more tasks per second. Only tasks marked
     idempotent go ahead (the queue's head decides; order is kept): if the
     pool stops a worker just as it finishes a task, the one after may have
     started unseen, and is run again elsewhere. A task sent ahead waits for
     its worker even if another becomes free; killing it (or its deadline
     passing) before it starts finishes it at once, as KILLED or TIMED_OUT,
     and its worker is killed when it gets to it. If the worker goes away
     first, the tasks sent ahead are queued again (no retry is counted). A
     worker due for retirement (max_resident_bytes) takes no more and is
     retired once those it has are done. 0: off. */
  int send_ahead;
} procord_pool_options_t;

/*
 * Sets every field of `source` to its default (a local worker, `worker` as
 * procord_spawn_options_init sets it) and `size` to this struct's size.
 * Call it first, then set the fields you need: a field added in a later
 * version then gets its default even in a program built before it.
 */
void procord_pool_source_init(procord_pool_source_t *source);

/*
 * Sets every field of `options` to its default (0, NULL: see each field)
 * and `size` to this struct's size. Call it first, then set the fields you
 * need: a field added in a later version then gets its default even in a
 * program built before it.
 */
void procord_pool_options_init(procord_pool_options_t *options);

/* A snapshot of a pool. */
typedef struct procord_pool_stats_s {
  size_t workers;                     /* started and not retired: starting, idle or busy */
  size_t idle;                        /* ready and waiting for a task */
  size_t busy;                        /* running a task (or finishing one) */
  size_t queued;                      /* tasks waiting for a worker */
  unsigned long long workers_started; /* since the pool was made, replacements included */
  unsigned long long tasks_submitted;
  unsigned long long tasks_finished;
  unsigned long long tasks_retried;
  int stopped; /* shut down, and every worker gone */
  /* Added last, so that the fields before keep their places (the struct
     grew: a program built with an older header must be built again). */
  unsigned long long starts_limited; /* starts that failed for lack of resources */
  /* The most workers the pool may have now: max_workers, or, while it holds
     after a start failed for lack of resources, those it had then (0: it
     has none, and fails tasks that need one). */
  size_t max_workers_now;
} procord_pool_stats_t;

/*
 * Makes a pool on `loop` (which must be running, or run later) and starts
 * min_workers. Stores it in `*pool`; the caller holds one reference, dropped
 * with procord_pool_release. Returns 0, PROCORD_EINVAL for options that
 * cannot work (no source, min_workers above max_workers, a `size` refused:
 * the options', a source's or its worker's), or -ENOMEM.
 */
int procord_pool_new(procord_loop_t *loop, const procord_pool_options_t *options,
                     procord_pool_t **pool);

/*
 * Queues a task for the pool's next free worker. `options` is read as by
 * procord_delegate, except that `worker`, `remote_host`, `remote_port`,
 * `connect_timeout_ms`, `idle_timeout_ms`, `max_message_size` and
 * `exit_grace_ms` come from the pool. Stores the delegation in
 * `*delegation` (the caller holds one reference). Returns 0, PROCORD_EFULL
 * when max_queue_length tasks are waiting already, PROCORD_ECLOSED after
 * procord_pool_shutdown, PROCORD_EINVAL (no task_name, or a `size`
 * refused, as by procord_delegate) or -ENOMEM.
 */
int procord_pool_delegate(procord_pool_t *pool, const procord_delegation_options_t *options,
                          procord_delegation_t **delegation);

/*
 * Stops the pool. New tasks are refused from now on (PROCORD_ECLOSED).
 * Graceful (`immediate` 0): queued and running tasks finish first, then
 * the workers are closed. Immediate: queued tasks end as KILLED, running
 * workers are killed (their tasks end as KILLED) and idle ones closed. Either
 * way every worker is reaped before the pool counts as stopped. Returns at
 * once; procord_pool_wait waits for the end.
 */
void procord_pool_shutdown(procord_pool_t *pool, int immediate);

/*
 * Waits until the pool has stopped (after procord_pool_shutdown), or
 * `timeout_ms` passed (negative: no limit). Returns 1 if stopped, 0 if the
 * time ran out. On the loop's thread (a callback, or a hosted loop's
 * thread: procord/loop.h), where the pool could never stop while it
 * waited, a time other than 0 is refused: -EDEADLK (use on_stopped).
 */
int procord_pool_wait(procord_pool_t *pool, int timeout_ms);

/* Fills `*stats` with the pool's state now. */
void procord_pool_stats(procord_pool_t *pool, procord_pool_stats_t *stats);

/*
 * Drops the caller's reference. A pool that was not shut down is shut down
 * immediately first, so that no worker outlives it; its memory goes once it
 * has stopped and its last task has been released.
 */
void procord_pool_release(procord_pool_t *pool);

#ifdef __cplusplus
}
#endif

#endif
