/*
 * Private to the C core: a local worker's stderr, read through a pipe
 * instead of inherited (one-off delegations, see procord/delegation.h).
 * What the worker writes there goes on at once to this program's stderr
 * (descriptor 2), and its last PROCORD_STDERR_TAIL_MAX bytes are kept: the
 * evidence of a worker that ends without answering (a crash leaves the
 * Swift runtime's `Fatal error:` line there).
 *
 * Descriptor 2 is shared with the whole program, so it is never made
 * non-blocking: each write goes only as far as poll(2) says it can without
 * blocking; what must wait is kept (up to 64 KiB) and written when
 * descriptor 2 can take it, and beyond that the worker's output is dropped,
 * with a note once it can be written again. The loop never blocks on a
 * stuck stderr, and the tail keeps everything all the same.
 */
#ifndef PROCORD_WORKER_STDERR_H
#define PROCORD_WORKER_STDERR_H

#include <stddef.h>
#include <sys/types.h>

#include "procord/loop.h"

typedef struct procord_worker_stderr_s procord_worker_stderr_t;

/*
 * Makes the pipe (our end close-on-exec and non-blocking) and its events,
 * not yet watched. `*child_fd` is the other end, close-on-exec, to give the
 * worker as its stderr (procord_spawn_options_t.stderr_fd); the caller
 * closes it once the worker has been started. Returns 0, the -errno of
 * pipe2 (-EMFILE...), or -ENOMEM; nothing is left open on failure.
 */
int procord_worker_stderr_new(procord_loop_t *loop, procord_worker_stderr_t **pipe, int *child_fd);

/* The worker's pid, for the note about dropped output. */
void procord_worker_stderr_set_pid(procord_worker_stderr_t *pipe, pid_t pid);

/* Starts reading, on the loop's thread. Returns 0 or -ENOMEM. */
int procord_worker_stderr_start(procord_worker_stderr_t *pipe);

/*
 * Reads what is in the pipe now, without waiting (after the worker's reap,
 * that is everything it wrote). Returns 1 once the end of the pipe has been
 * read (no writer is left), 0 otherwise. On the loop's thread.
 */
int procord_worker_stderr_drain(procord_worker_stderr_t *pipe);

/*
 * Calls `on_end(context)` once, on a loop turn of its own: when the end of
 * the pipe has been read, or `limit_ms` from now, whichever comes first
 * (something the worker started may hold the pipe open). On the loop's
 * thread. Returns 0 or -ENOMEM (then on_end is never called).
 */
int procord_worker_stderr_await_end(procord_worker_stderr_t *pipe, int limit_ms,
                                    void (*on_end)(void *context), void *context);

/*
 * A copy of the tail, NUL-terminated, its length in `*length` (the NUL not
 * counted): at most PROCORD_STDERR_TAIL_MAX bytes, see procord_outcome_t.
 * NULL with `*length` 0 when the worker wrote nothing (or out of memory).
 * The caller frees it.
 */
char *procord_worker_stderr_tail(const procord_worker_stderr_t *pipe, size_t *length);

/*
 * Closes the pipe and frees it (NULL: nothing). Output still waiting for
 * this program's stderr is tried once more, without blocking, then dropped
 * with a note. On the loop's thread once started; any thread before.
 */
void procord_worker_stderr_free(procord_worker_stderr_t *pipe);

#endif
