/*
 * procord/loop.h: the readiness loop that drives connections and delegations.
 *
 * A loop is driven one of three ways; every function of the core works
 * with each:
 *
 * - Its own thread or yours (procord_loop_new): the loop wraps a libevent
 *   event_base of its own, run by procord_loop_run on the calling thread
 *   or by procord_loop_start_thread on a thread of the loop's.
 * - On your libevent base (procord_loop_new_on_base): the core adds its
 *   events to a struct event_base your program runs (event_base_dispatch
 *   and friends), on the thread that created the loop. The library starts
 *   no thread.
 * - From any other loop (procord_loop_new_polled: epoll, poll, select,
 *   GLib, libuv's uv_poll): your loop watches one descriptor,
 *   procord_loop_backend_fd, for readability, waits at most
 *   procord_loop_backend_timeout milliseconds, and then calls
 *   procord_loop_run_nowait, which does what is due and returns at once.
 *   The library starts no thread.
 *
 * In the last two ("hosted") modes the thread that created the loop is the
 * loop's thread: call the core from it; other threads may call every
 * thread-safe function, which then runs on that thread at its next turn,
 * so the host's loop must be running for them to return. Since a write to
 * a closed pipe or socket raises SIGPIPE in the writing thread, creating
 * a hosted loop blocks SIGPIPE on the calling thread (unless the process
 * ignores it): such a write then fails with EPIPE, which the core handles,
 * and so will your own writes on that thread. Children Procord starts get
 * an empty signal mask; a child you start from that thread inherits the
 * blocked SIGPIPE unless you reset its mask (posix_spawnattr_setsigmask).
 *
 * Other threads talk to a loop through procord_loop_call, which queues a
 * function and wakes the loop; nothing polls, so an idle loop uses no CPU.
 *
 * Callbacks (on_done, on_print, a connection's, a listener's, a server's
 * log) run on the loop's thread unless their comment says otherwise, one
 * at a time, and the loop waits for each: return quickly, and hand long
 * work to another thread. From a callback, any function of the core may be
 * called, with two rules: a wait (procord_delegation_wait, procord_pool_wait)
 * with a time other than 0 is refused there with -EDEADLK, since nothing
 * could finish while the loop's thread waited (a time of 0 counts what has
 * finished); and the loop must not be freed (procord_loop_free) from its
 * own callbacks. On a hosted loop's thread, every wait is such a wait: use
 * the callbacks (on_done, on_stopped) instead, or a time of 0.
 */
#ifndef PROCORD_LOOP_H
#define PROCORD_LOOP_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct procord_loop_s procord_loop_t;
struct event_base;

/* A function queued with procord_loop_call; runs on the loop's thread. */
typedef void (*procord_loop_fn)(void *argument);

/*
 * Creates a loop and stores it in `*loop`. The caller owns it and frees it
 * with procord_loop_free. Returns 0 or a negative error code.
 */
int procord_loop_new(procord_loop_t **loop);

/*
 * Creates a loop that adds its events to `base`, a libevent base the caller
 * runs on the calling thread (which becomes the loop's thread, see above),
 * and stores it in `*loop`. The library starts no thread for it and never
 * stops or frees the base; the base must outlive the loop. Blocks SIGPIPE
 * on the calling thread (see above). Returns 0, PROCORD_EINVAL (`base`
 * NULL) or a negative error code.
 */
int procord_loop_new_on_base(struct event_base *base, procord_loop_t **loop);

/*
 * Creates a loop for a host's own poll loop, driven through
 * procord_loop_backend_fd, procord_loop_backend_timeout and
 * procord_loop_run_nowait from the calling thread (which becomes the
 * loop's thread), and stores it in `*loop`. The library starts no thread.
 * Blocks SIGPIPE on the calling thread (see above). Returns 0, or a
 * negative error code: PROCORD_EINVAL if libevent cannot use epoll here
 * (EVENT_NOEPOLL set), -ENOENT without /proc.
 *
 *   int fd = procord_loop_backend_fd(loop);
 *   for (;;) {
 *     struct pollfd watched = {fd, POLLIN, 0};  // and the host's own
 *     poll(&watched, 1, procord_loop_backend_timeout(loop));
 *     procord_loop_run_nowait(loop);
 *   }
 */
int procord_loop_new_polled(procord_loop_t **loop);

/*
 * Returns the descriptor a polled loop's host watches for readability (POLLIN,
 * EPOLLIN; level-triggered: readable until procord_loop_run_nowait has
 * done what is ready). Owned by the loop; the same for its whole life.
 * PROCORD_EINVAL for a loop that is not polled.
 */
int procord_loop_backend_fd(const procord_loop_t *loop);

/*
 * How long a polled loop's host may wait, in milliseconds, before calling
 * procord_loop_run_nowait even if the descriptor stays quiet: the next
 * timer (a deadline, a connect timeout, a kill's grace) is due then.
 * Returns those milliseconds; 0: something is due now; -1: no timer (wait
 * for the descriptor only). Ask
 * again before each wait: any call into the core may add a timer.
 * PROCORD_EINVAL for a loop that is not polled.
 */
int procord_loop_backend_timeout(procord_loop_t *loop);

/*
 * Does what is due on a polled loop (ready descriptors, expired timers,
 * queued calls, with their callbacks) and returns without waiting. On the
 * loop's thread only (-EPERM elsewhere). Returns 0, or PROCORD_EINVAL for a
 * loop that is not polled.
 */
int procord_loop_run_nowait(procord_loop_t *loop);

/*
 * Runs the loop on the calling thread until procord_loop_stop is called.
 * SIGPIPE is blocked on this thread meanwhile (and a pending one discarded
 * afterwards), so a broken pipe is a disconnection and never kills the
 * program, without changing the process's disposition. Returns 0, or a
 * negative error code if the loop could not run; PROCORD_EINVAL for a
 * hosted loop, which its host runs.
 */
int procord_loop_run(procord_loop_t *loop);

/*
 * Runs the loop on a new thread of its own (joined by procord_loop_free).
 * Returns 0 or a negative error code; PROCORD_EINVAL if it has one already,
 * or for a hosted loop.
 */
int procord_loop_start_thread(procord_loop_t *loop);

/*
 * Queues `fn(argument)` to run on the loop's thread, in the order of the
 * calls, and wakes the loop. Thread-safe; may be called from the loop's own
 * thread (the function then runs on a later turn, never inside this call).
 * Returns 0, or -ENOMEM.
 */
int procord_loop_call(procord_loop_t *loop, procord_loop_fn fn, void *argument);

/* Asks the loop to return from procord_loop_run. Thread-safe. No effect
   on a hosted loop: its host stops its own loop. */
void procord_loop_stop(procord_loop_t *loop);

/* Returns true when called on the thread that is running the loop (for a
   hosted loop: the thread that created it). */
int procord_loop_is_current_thread(const procord_loop_t *loop);

/*
 * Stops the loop if it runs on a thread of its own, joins that thread and
 * frees the loop. Delegations, pools and servers still running on it are
 * killed and their workers reaped first (their on_done runs), on the
 * calling thread if the loop was stopped or never run. Must not be called
 * from the loop's callbacks. A hosted loop is freed from its thread,
 * outside the host's dispatch of the base (before it runs or after it
 * returns); on a host's base, the base is run (with its other events) until
 * the killed workers are reaped, which takes milliseconds. (Called from a
 * callback of the host's base, which libevent cannot run from there, it
 * says so in the process's log, procord/log.h, and stops the loop's work
 * without freeing the loop: call it again once the dispatch has returned.)
 * The host's base
 * itself is left to the host.
 */
void procord_loop_free(procord_loop_t *loop);

#ifdef __cplusplus
}
#endif

#endif
