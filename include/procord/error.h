/*
 * procord/error.h: error codes of the Procord C API.
 *
 * Every function that can fail returns 0 on success or a negative error code,
 * libuv style: either a negated errno value (-ENOENT, -EMFILE, ...) from the
 * system call that failed, or one of the PROCORD_E* codes below, which are
 * outside the errno range. There is no global error state.
 */
#ifndef PROCORD_ERROR_H
#define PROCORD_ERROR_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Procord's own error codes. Values -4000..-4099 never collide with -errno. */
enum procord_error_code {
  /* Protocol errors, one per `E` frame code of PROTOCOL.md (code = -4000 - N). */
  PROCORD_ETASK_NOT_SUPPORTED = -4000,  /* E0: the worker has no task of that name */
  PROCORD_EUNEXPECTED = -4001,          /* E1: a frame arrived where it may not */
  PROCORD_EILL_FORMED = -4002,          /* E2: a frame broke the grammar */
  PROCORD_ETOO_LONG = -4003,            /* E3: a SIZE above the maximum message size */
  PROCORD_EDISCONNECTED = -4004,        /* E4: the peer went away */
  PROCORD_EINVALID_DESTINATION = -4005, /* E5: a print to a destination that is not valid */
  /* Errors that have no frame code. */
  PROCORD_ETIMEOUT = -4020, /* a bounded wait ran out */
  PROCORD_EINVAL = -4021,   /* an argument or option is invalid */
  PROCORD_ECLOSED = -4022,  /* the object was closed or has finished */
  PROCORD_ERESOLVE = -4023, /* a host name could not be resolved */
  PROCORD_EFULL = -4024,    /* a bounded queue is full */
  PROCORD_ETLS = -4025,     /* TLS failed: the handshake, a certificate, a record */
  PROCORD_EAUTH = -4026,    /* shared-secret authentication failed */
  /* A worker would be more delegations deep than PROCORD_MAX_DELEGATION_DEPTH
     (environment variable; 16 by default): recursion that does not stop. */
  PROCORD_ENESTED = -4027,
  /* A process started as a worker delegated before serving: its program
     does not call its worker entry point (procord_worker_main,
     Worker.runIfRequested) first, and would start copies of itself without end. */
  PROCORD_ENOTSERVING = -4028,
  /* procord_task_result: the outcome has no value to read (it is not a
     VALUE, nor an EXCEPTION the task has a read_error for). */
  PROCORD_ENOVALUE = -4029,
  /* A task's serializer or deserializer (procord/task.h) failed: a value
     that could not be written as bytes, or bytes that are not a valid value.
     What Procord returns when one fails without a negative code of its own
     (it returned a positive number), and a code for them to return. */
  PROCORD_EBADVALUE = -4030,
};

/* An enum that a later version may give more values: Swift imports it as an
   enum whose switch must handle an unknown value (`@unknown default`). */
#if defined(__has_attribute)
#if __has_attribute(enum_extensibility)
#define PROCORD_OPEN_ENUM __attribute__((enum_extensibility(open)))
#endif
#endif
#ifndef PROCORD_OPEN_ENUM
#define PROCORD_OPEN_ENUM
#endif

/*
 * Where a failure happened: the step of a delegation (or of a connection)
 * that failed, as a program switches on it (procord_outcome_t.stage). The
 * error code says what went wrong there; `call` (a static string, kept for
 * the programs that read it) names the system call or step, given here for
 * each stage. Values are fixed; a later version may add some: treat a value
 * you do not know as a failure whose error code tells the rest.
 */
typedef enum PROCORD_OPEN_ENUM procord_stage {
  /* No failure (an answer), or none with a stage: the owner closed the
     connection, or procord_delegation_kill ended the task (KILLED). */
  PROCORD_STAGE_NONE = 0,
  /* Starting a local worker: posix_spawn failed (call "posix_spawn", a
     negated errno: -ENOENT for a missing program), or Procord refused to
     start it (call "spawn", PROCORD_ENOTSERVING or PROCORD_ENESTED, and
     `detail` says why and what to do). */
  PROCORD_STAGE_SPAWN = 1,
  /* Looking up a worker server's name (call "getaddrinfo"):
     PROCORD_ERESOLVE with the resolver's reason in `detail`, -ENOMEM, or
     PROCORD_ECLOSED when the loop was freed during the lookup. */
  PROCORD_STAGE_RESOLVE = 2,
  /* Connecting to a worker server (call "connect"): a negated errno
     (-ECONNREFUSED...), or PROCORD_ETIMEOUT when connect_timeout_ms ran out
     while resolving or connecting. */
  PROCORD_STAGE_CONNECT = 3,
  /* TLS with the server: the handshake, its certificate, a record (call
     "tls", PROCORD_ETLS, `detail` says why). */
  PROCORD_STAGE_TLS = 4,
  /* Proving the shared secret (call "authenticate"): PROCORD_EAUTH with
     `detail` saying why, or -ENOMEM. */
  PROCORD_STAGE_AUTHENTICATE = 5,
  /* TLS and authentication as one step (call "handshake"): PROCORD_ETIMEOUT
     when connect_timeout_ms ran out during them, or the error that kept
     them from starting. */
  PROCORD_STAGE_HANDSHAKE = 6,
  /* Reading from the worker (call "read"): PROCORD_EDISCONNECTED when it
     closed its stream without answering (exit_code and signal say how it
     ended), or a negated errno (-ECONNRESET...). */
  PROCORD_STAGE_READ = 7,
  /* Writing to the worker (call "write"): a negated errno (-EPIPE...). */
  PROCORD_STAGE_WRITE = 8,
  /* A frame from the worker broke the grammar or the maximum message size
     (call "parse"): PROCORD_EILL_FORMED or PROCORD_ETOO_LONG. */
  PROCORD_STAGE_PARSE = 9,
  /* A well-formed frame from the worker that may not come there (call
     "receive"): PROCORD_EUNEXPECTED. */
  PROCORD_STAGE_RECEIVE = 10,
  /* The peer said why: the worker sent an `E` frame, whose protocol error
     code is the error (call "peer"). */
  PROCORD_STAGE_PEER = 11,
  /* The server stayed silent longer than idle_timeout_ms (call "idle",
     PROCORD_ETIMEOUT). */
  PROCORD_STAGE_IDLE = 12,
  /* The task ran past deadline_ms (outcome TIMED_OUT, call "deadline",
     PROCORD_ETIMEOUT). */
  PROCORD_STAGE_DEADLINE = 13,
  /* Closing nicely ran out of time (connections only: call "close",
     PROCORD_ETIMEOUT). */
  PROCORD_STAGE_CLOSE = 14,
  /* Learning how the worker ended (call "waitpid"): -ECHILD when another
     part of the program reaped it first, so that it is unknown. */
  PROCORD_STAGE_REAP = 15,
  /* Setting up in this process, before or around the worker (call "setup"):
     -ENOMEM, or another error of the loop. */
  PROCORD_STAGE_SETUP = 16,
} procord_stage_t;

/*
 * Returns an English description of `code` ("No such file or directory",
 * "message too long"). Never NULL; the string is static and must not be freed.
 */
const char *procord_strerror(int code);

/*
 * Returns the symbolic name of `code` ("ENOENT", "PROCORD_ETOO_LONG"), or
 * "UNKNOWN" for a code it does not know. Static, never NULL.
 */
const char *procord_err_name(int code);

/*
 * Maps a protocol error code (PROCORD_ETASK_NOT_SUPPORTED..
 * PROCORD_EINVALID_DESTINATION) to the digit of its `E` frame ('0'..'5'), or
 * returns 0 for any other code.
 */
char procord_error_to_frame_digit(int code);

/*
 * Reads the body of an `E` frame: when it is exactly one digit '0'..'5',
 * stores its error code (PROCORD_ETASK_NOT_SUPPORTED..
 * PROCORD_EINVALID_DESTINATION) in `*code` and returns 0; otherwise returns
 * PROCORD_EILL_FORMED and leaves `*code` alone. (The two outcomes are kept
 * apart because the body "2" does mean "ill-formed message".)
 */
int procord_error_from_frame_body(const unsigned char *body, size_t length, int *code);

/*
 * Returns the name of a signal without its "SIG" prefix ("SEGV"), or NULL
 * for an unknown number. Static (never freed); thread-safe.
 */
const char *procord_signal_name(int signal);

/* Returns the English description of a signal ("Segmentation fault"), or
   NULL. Static (never freed); thread-safe. */
const char *procord_signal_description(int signal);

#ifdef __cplusplus
}
#endif

#endif
