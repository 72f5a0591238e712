/*
 * procord/loop.h: the readiness loop that drives connections and delegations.
 *
 * A loop wraps one libevent event_base. It runs on one thread at a time:
 * either the caller's (procord_loop_run) or a thread of its own
 * (procord_loop_start_thread). Other threads talk to it only through
 * procord_loop_call, which queues a function and wakes the loop; nothing
 * polls, so an idle loop uses no CPU.
 *
 * Callbacks (on_done, on_print, a connection's, a listener's, a server's
 * log) run on the loop's thread unless their comment says otherwise, one
 * at a time, and the loop waits for each: return quickly, and hand long
 * work to another thread. From a callback, any function of the core may be
 * called, with two rules: a wait (procord_delegation_wait,
 * procord_pool_wait) does not wait there, since nothing could finish
 * meanwhile, and answers at once as with a timeout of 0; and the loop must
 * not be freed (procord_loop_free) from its own thread.
 */
#ifndef PROCORD_LOOP_H
#define PROCORD_LOOP_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct procord_loop_s procord_loop_t;

/* A function queued with procord_loop_call; runs on the loop's thread. */
typedef void (*procord_loop_fn)(void *argument);

/*
 * Creates a loop and stores it in `*loop`. The caller owns it and frees it
 * with procord_loop_free. Returns 0 or a negative error code.
 */
int procord_loop_new(procord_loop_t **loop);

/*
 * Runs the loop on the calling thread until procord_loop_stop is called.
 * SIGPIPE is blocked on this thread meanwhile (and a pending one discarded
 * afterwards), so a broken pipe is a disconnection and never kills the
 * program, without changing the process's disposition. Returns 0, or a
 * negative error code if the loop could not run.
 */
int procord_loop_run(procord_loop_t *loop);

/*
 * Runs the loop on a new thread of its own (joined by procord_loop_free).
 * Returns 0 or a negative error code.
 */
int procord_loop_start_thread(procord_loop_t *loop);

/*
 * Queues `fn(argument)` to run on the loop's thread, in the order of the
 * calls, and wakes the loop. Thread-safe; may be called from the loop's own
 * thread (the function then runs on a later turn, never inside this call).
 * Returns 0, or -ENOMEM.
 */
int procord_loop_call(procord_loop_t *loop, procord_loop_fn fn, void *argument);

/* Asks the loop to return from procord_loop_run. Thread-safe. */
void procord_loop_stop(procord_loop_t *loop);

/* Returns true when called on the thread that is running the loop. */
int procord_loop_is_current_thread(const procord_loop_t *loop);

/*
 * Stops the loop if it runs on a thread of its own, joins that thread and
 * frees the loop. Delegations still running on it are killed and reaped
 * first (their on_done runs), on the calling thread if the loop was stopped
 * or never run. Must not be called from the loop's thread.
 */
void procord_loop_free(procord_loop_t *loop);

#ifdef __cplusplus
}
#endif

#endif
