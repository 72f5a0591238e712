/*
 * procord/delegation.h: one task delegated to one worker.
 *
 * procord_delegate starts a worker (or connects to a worker server; a pool,
 * procord/pool.h, lends one of its workers instead), sends it the task name (`T`) and the
 * serialized input (`V`), and follows the worker's answer on a loop: `P`/`F`
 * frames are printed as they come, then exactly one terminal frame (`V`, `X`,
 * `U` or `E`) or the end of the stream decides the outcome, mapped as in
 * docs/PROTOCOL.md. The outcome of a one-off delegation is reported only
 * once the worker has exited and been reaped, so a finished delegation never
 * leaves a process behind; a pooled task's answer is reported at once (its
 * worker goes on to the next task), and a pooled task that ends without an
 * answer is reported once its worker has been reaped.
 *
 * A one-off local worker whose stderr would be this program's (worker.stderr_fd
 * 0 or -1, and not capture_output in socket mode, where the worker may send
 * it as frames) gets a pipe as its stderr instead. What it writes there is
 * written on at once to this program's descriptor 2, and its last
 * PROCORD_STDERR_TAIL_MAX bytes are kept: a worker that ends without
 * answering leaves them in the outcome (stderr_tail), where a Swift worker
 * that crashed on a runtime error said why (`Fatal error: ...`). The loop
 * never blocks on this program's stderr: what it cannot take at once waits,
 * up to 64 KiB per worker, and more is dropped, with a note once it can be
 * written again. Such an outcome is reported once the end of the pipe has
 * been read, or 100 ms after the reap at the latest (something the worker
 * started may still hold the pipe: what it writes there later is lost, and
 * fails with EPIPE or SIGPIPE). An answered delegation never waits for the
 * pipe: what is in it at the reap is written on, and the rest is lost the
 * same way. stderr_fd 2 gives the worker this program's stderr itself (no
 * pipe, no tail). Pooled and remote workers have no tail.
 */
#ifndef PROCORD_DELEGATION_H
#define PROCORD_DELEGATION_H

#include <stddef.h>
#include <sys/types.h>

#include "procord/error.h"
#include "procord/loop.h"
#include "procord/security.h"
#include "procord/spawn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct procord_delegation_s procord_delegation_t;

/* The most of a worker's stderr an outcome keeps (procord_outcome_t.stderr_tail). */
#define PROCORD_STDERR_TAIL_MAX 4096

typedef enum procord_outcome_kind {
  PROCORD_OUTCOME_VALUE,             /* `V`: body is the serialized output */
  PROCORD_OUTCOME_EXCEPTION,         /* `X`: body is the serialized error */
  PROCORD_OUTCOME_UNKNOWN_EXCEPTION, /* `U`: body is a readable text */
  PROCORD_OUTCOME_NO_WORKER,         /* `E0`: the worker does not have the task */
  PROCORD_OUTCOME_DISCONNECTED,      /* no terminal frame: see stage, error, exit_code, signal */
  PROCORD_OUTCOME_KILLED,            /* procord_delegation_kill (or procord_loop_free, or an
                                        immediate pool shutdown) ended it; error, call and
                                        stage are 0 */
  PROCORD_OUTCOME_TIMED_OUT,         /* deadline_ms passed first: the worker was killed (SIGTERM,
                                        then SIGKILL after the grace); error PROCORD_ETIMEOUT,
                                        stage PROCORD_STAGE_DEADLINE, call "deadline" */
} procord_outcome_kind_t;

typedef struct procord_outcome_s {
  procord_outcome_kind_t kind;
  const unsigned char *body; /* V, X, U: owned by the delegation */
  size_t length;
  /*
   * DISCONNECTED: why. A negated errno with `call` naming the failed call
   * ("posix_spawn", "read", "write", ...); PROCORD_EDISCONNECTED with call
   * "read" when the worker closed the stream without answering; a protocol
   * error code with call "parse" for an ill-formed or too long frame from the
   * worker, "peer" for an `E` frame it sent, or "receive" for a frame that was
   * not expected there. `stage` (at the end of this struct) says the same
   * as an enum to switch on: procord/error.h lists each stage with its call
   * and errors.
   */
  int error;
  const char *call;
  int exit_code; /* how the worker ended: its exit code, or -1 */
  int signal;    /* the signal that killed it, or 0 */
  /* The worker neither exited nor closed its stream within the grace period
     after answering or hanging up, so Procord killed it: `signal` is then
     Procord's SIGKILL, not something that happened to the worker. */
  int killed_after_grace;
  const char *detail; /* more about the error, static (a resolver's message), or NULL */
  int reusable;       /* the worker sent `0R` after its terminal frame (one-off delegations) */
  int attempts;       /* how many workers the task was handed to (a pool retries: more than 1;
                         a task sent ahead that came back unstarted does not count) */
  pid_t worker_pid;   /* the last worker's pid, or -1 (remote, or none started) */
  /*
   * DISCONNECTED, a one-off local worker with a pipe as its stderr (see the
   * top of this file): the end of what it wrote there, NUL-terminated (it
   * may hold NUL bytes of its own: stderr_tail_length counts the bytes, the
   * NUL not included), at most PROCORD_STDERR_TAIL_MAX bytes. It starts
   * with a whole line when more was written; a line with the Swift
   * runtime's "Fatal error: " (up to 512 bytes of it) that has scrolled out
   * of it, behind a long backtrace, is put first, followed by a line
   * "[...]". NULL and 0 when the worker wrote nothing there, and for every
   * other outcome. Owned by the delegation, like body.
   */
  const char *stderr_tail;
  size_t stderr_tail_length;
  /* Where it failed (procord/error.h), set with `call`: PROCORD_STAGE_READ
     for a worker that closed its stream without answering, _SPAWN for one
     that could not start, _DEADLINE for TIMED_OUT...; PROCORD_STAGE_NONE
     for an answer and for KILLED. An outcome built by a program rather than
     by Procord may have `call` without it: procord_outcome_stage reads both. */
  procord_stage_t stage;
} procord_outcome_t;

/*
 * Called on the loop's thread for each `P` frame (`text` of `length` bytes)
 * and `F` frame (`text` NULL) to a custom destination, and to `O`/`E` too
 * when capture_output is set. Must return quickly: the loop waits for it.
 * The text is valid during the call only.
 */
typedef void (*procord_print_cb)(procord_delegation_t *delegation, unsigned char destination,
                                 const unsigned char *text, size_t length, void *context);

/*
 * Called on the loop's thread, once, when the outcome is final (the worker
 * reaped, or the task ended without one). `outcome` is the one that
 * procord_delegation_outcome returns, from any thread, from this moment on;
 * procord_delegation_is_finished and procord_delegation_wait count the
 * delegation as finished once this call has returned.
 */
typedef void (*procord_done_cb)(procord_delegation_t *delegation, const procord_outcome_t *outcome,
                                void *context);

typedef struct procord_delegation_options_s {
  /* The size of this struct as the calling program was built with: set by
     procord_delegation_options_init; 0 means the layout of this first
     release. A size larger than this library's struct, with a byte beyond
     it that is not 0 (a program built against a newer Procord than it runs
     with), is refused with PROCORD_EINVAL. `worker` has a size of its own. */
  size_t size;
  const char *task_name; /* required */
  const void *input;     /* the serialized input, copied (unless input_release, below) */
  size_t input_length;
  procord_spawn_options_t worker; /* how to start the worker (unless remote_host) */
  /* A worker server to delegate to instead of starting a worker: its host
     name or IPv4/IPv6 literal (copied; NULL: start `worker`) and port. The
     name is resolved without blocking the loop (see procord/connect.h);
     killing a remote delegation (or its deadline) resets its connection
     (SO_LINGER 0, so that a server whose worker is busy, with more tasks
     unread behind, sees it at once), and the server kills the task. Errors: DISCONNECTED with call
     "getaddrinfo" (error PROCORD_ERESOLVE, detail says why) or "connect" (-ECONNREFUSED,
     PROCORD_ETIMEOUT...). */
  const char *remote_host;
  int remote_port;
  int connect_timeout_ms; /* remote: for resolving and connecting; 0: no limit */
  /* How long the worker may stay silent (nothing received) before the
     delegation ends as DISCONNECTED with PROCORD_ETIMEOUT, call "idle".
     0: no limit (the original's behaviour). */
  int idle_timeout_ms;
  size_t max_message_size; /* of frames from the worker; 0: the default */
  /* After the worker has closed its stream (or answered), how long it may
     take to exit before it is killed; 0: 2000 ms. */
  int exit_grace_ms;
  /* How long the task may take, counted from this call (time waiting in a
     pool's queue included), before it ends as TIMED_OUT: its worker gets
     SIGTERM (its whole process group), then SIGKILL once exit_grace_ms has
     passed; a remote task's connection is closed. 0: no limit. */
  int deadline_ms;
  /* Pools only: the task may run again, on another worker, if its worker
     goes away before answering (see procord_pool_options_t.max_retries).
     A task that never reached a worker is retried even without this. */
  int idempotent;
  procord_done_cb on_done; /* may be NULL */
  /* Custom destinations (and `O`/`E` with capture_output); NULL: their text
     is dropped. Without capture_output, `O` and `E` text is written to this
     program's stdout and stderr as it arrives. */
  procord_print_cb on_print;
  int capture_output;
  void *context;
  /* Optional, for large inputs: when set, the input is not copied but
     borrowed. It must then stay valid and unchanged until the library calls
     input_release(input_context), exactly once, from any thread, when it no
     longer needs it: after the task has ended, or at once when the call
     fails (whatever it returns). */
  void (*input_release)(void *input_context);
  void *input_context;
  /* Remote only, optional: how to secure the connection to the server
     (procord/security.h, a client's; a reference is taken). Errors: DISCONNECTED with
     PROCORD_ETLS, call "tls", or PROCORD_EAUTH, call "authenticate", and
     `detail` saying why; PROCORD_ETIMEOUT with call "handshake" when
     connect_timeout_ms ran out during it. */
  procord_security_t *security;
} procord_delegation_options_t;

/*
 * Sets every field of `options` to its default (0, NULL: see each field;
 * `worker` as procord_spawn_options_init sets it) and `size` to this
 * struct's size. Call it first, then set the fields you need: a field added
 * in a later version then gets its default even in a program built before
 * it.
 */
void procord_delegation_options_init(procord_delegation_options_t *options);

/*
 * Starts a worker and delegates a task to it. Thread-safe: the worker is
 * started on the loop's thread (the thread a worker's parent-death signal
 * follows; the call waits for it, so the pid is known on return, or on the
 * calling thread when that is the loop's or the loop is not running), the
 * rest happens on the loop's thread. Do not call it while another thread
 * stops the loop (procord_loop_stop): the start would wait for the loop to
 * run again. Always stores a delegation in `*delegation`
 * unless it returns -ENOMEM or PROCORD_EINVAL (no task_name, or a `size`
 * refused, the options' or their worker's; see
 * procord_delegation_options_t): when the worker cannot be
 * started, the delegation finishes as DISCONNECTED with the error of
 * posix_spawn (on_done still runs, on the loop's thread). The caller holds
 * one reference and drops it with procord_delegation_release.
 */
int procord_delegate(procord_loop_t *loop, const procord_delegation_options_t *options,
                     procord_delegation_t **delegation);

/* Returns the worker's pid, or -1 if it could not be started (or, for a
   pooled task, while it waits for a worker or runs on a server; see
   procord/pool.h before signalling it). Thread-safe. */
pid_t procord_delegation_pid(const procord_delegation_t *delegation);

/* Returns non-zero once the task went to a worker (it may be running
   there, local or remote); 0 while a pooled task waits in the pool's
   queue, or after it came back unstarted to be run again. Thread-safe. */
int procord_delegation_is_delivered(const procord_delegation_t *delegation);

/*
 * Kills the worker (SIGKILL to its process group) unless the delegation has
 * finished (even if the worker has answered and is exiting: the outcome is
 * then KILLED); it finishes as KILLED once the worker is reaped, unless the
 * worker could not be started at all. Thread-safe; allocates nothing, so
 * it works out of memory too. Returns 0, or PROCORD_ECLOSED if it had
 * already finished or its worker could not be started (nothing to kill: it
 * ends as DISCONNECTED with the spawn error).
 */
int procord_delegation_kill(procord_delegation_t *delegation);

/*
 * Cancels the task: like procord_delegation_kill (the outcome is KILLED, and
 * the same values are returned), but the worker's process group gets SIGTERM
 * first and SIGKILL only once its exit grace period (exit_grace_ms) has
 * passed, so that the task can see it is cancelled and clean up. A remote
 * task's connection is reset at once, as procord_delegation_kill does. A
 * later procord_delegation_kill still kills at once. Thread-safe; allocates
 * nothing. Returns 0 (also when a stop was already asked for), or
 * PROCORD_ECLOSED if it had already finished or its worker could not be
 * started.
 */
int procord_delegation_cancel(procord_delegation_t *delegation);

/* Returns true once on_done has returned. Thread-safe. */
int procord_delegation_is_finished(procord_delegation_t *delegation);

/*
 * Returns the outcome once it is final (from the moment on_done is called,
 * before it returns), NULL before. It belongs to the delegation, does not
 * change, and is valid until the last reference is released. Thread-safe,
 * while the loop exists: after procord_loop_free, only
 * procord_delegation_release may be called (read the outcome in on_done or
 * before freeing the loop).
 */
const procord_outcome_t *procord_delegation_outcome(procord_delegation_t *delegation);

/*
 * Waits until at least one (`all` 0) or every (`all` non-zero) delegation of
 * `delegations` has finished, or `timeout_ms` milliseconds have passed
 * (negative: no limit). All must belong to `loop`. Returns how many have
 * finished when it returns: fewer than asked for means the time ran out.
 * On the loop's own thread (a callback such as on_done, or a hosted loop's
 * thread: procord/loop.h), where nothing could finish while it waited, a
 * time other than 0 is refused with -EDEADLK (0 counts at once): use
 * on_done there. Thread-safe.
 */
int procord_delegation_wait(procord_loop_t *loop, procord_delegation_t *const *delegations,
                            size_t count, int all, int timeout_ms);

/*
 * Writes `outcome` as English into `buffer`: the sentence the Swift
 * overlay's ProcordError gives for the same failure, with its context first
 * (`task "fibo" (worker pid 123, /usr/bin/app): the worker crashed: killed
 * by signal SIGSEGV (Segmentation fault)`). `task_name` and `destination`
 * (the worker program, or a server's `host:port`) may be NULL; the pid is
 * the outcome's worker_pid. A refused connection, a program that could not
 * be started, a deadline, an unknown task, a protocol error each get their
 * own sentence, naming the errno or signal, and what to check. When the
 * outcome has a stderr tail, a line follows with the Swift runtime's
 * `Fatal error:` line from it, or else the tail itself. A VALUE says that
 * the task answered; an EXCEPTION or UNKNOWN_EXCEPTION gives its body as
 * text.
 *
 * snprintf-style: writes at most `size` bytes, NUL included, and always
 * ends them with a NUL when `size` > 0 (`buffer` may be NULL when `size` is
 * 0). Returns the length of the whole text, NUL not included: the text was
 * cut short when that is `size` or more. Thread-safe; allocates nothing.
 */
size_t procord_outcome_describe(const procord_outcome_t *outcome, const char *task_name,
                                const char *destination, char *buffer, size_t size);

/*
 * Returns the stage at which `outcome` failed: its `stage`, or, when that
 * is PROCORD_STAGE_NONE and `call` is set (an outcome a program built
 * itself, or one from before the field), the stage that `call` names
 * ("posix_spawn" and "spawn": PROCORD_STAGE_SPAWN, "getaddrinfo":
 * _RESOLVE, "connect" and "socket": _CONNECT, "waitpid": _REAP, and each
 * other stage's own call, as procord/error.h lists them); PROCORD_STAGE_NONE
 * for a call it does not know. Thread-safe; allocates nothing.
 */
procord_stage_t procord_outcome_stage(const procord_outcome_t *outcome);

/* Drops the caller's reference. Thread-safe. */
void procord_delegation_release(procord_delegation_t *delegation);

#ifdef __cplusplus
}
#endif

#endif
