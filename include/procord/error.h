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
  PROCORD_ETASK_NOT_SUPPORTED = -4000, /* E0: the worker has no task of that name */
  PROCORD_EUNEXPECTED = -4001,         /* E1: a frame arrived where it may not */
  PROCORD_EILL_FORMED = -4002,         /* E2: a frame broke the grammar */
  PROCORD_ETOO_LONG = -4003,           /* E3: a SIZE above the maximum message size */
  PROCORD_EDISCONNECTED = -4004,       /* E4: the peer went away */
  PROCORD_EINVALID_DESTINATION = -4005,/* E5: a print to a destination that is not valid */
  /* Errors that have no frame code. */
  PROCORD_ETIMEOUT = -4020,            /* a bounded wait ran out */
  PROCORD_EINVAL = -4021,              /* an argument or option is invalid */
  PROCORD_ECLOSED = -4022,             /* the object was closed or has finished */
  PROCORD_ERESOLVE = -4023,            /* a host name could not be resolved */
  PROCORD_EFULL = -4024,               /* a bounded queue is full */
  PROCORD_ETLS = -4025,                /* TLS failed: the handshake, a certificate, a record */
  PROCORD_EAUTH = -4026,               /* shared-secret authentication failed */
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
