/*
 * procord/task.h: a task described once for both sides, with its
 * serializers, like the original library's Procord_task.make.
 *
 * A procord_task_t names the task and says how its input, output and error
 * travel as bytes, and what the worker runs. The main program delegates
 * values (procord_delegate_task, procord_pool_delegate_task) and reads the
 * answer back as values (procord_task_result); the worker serves the same
 * description (procord_task_worker). Name and serializers cannot disagree
 * between the sides, since both come from the one description.
 *
 * Values are opaque pointers. A deserializer or the run function makes a
 * new value, which its receiver owns and frees with the task's free_value.
 */
#ifndef PROCORD_TASK_H
#define PROCORD_TASK_H

#include <stddef.h>

#include "procord/delegation.h"
#include "procord/pool.h"
#include "procord/worker.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Writes `value` as bytes: stores a malloc'd buffer in `*bytes` (the caller
 * frees it with free(), libc's whatever allocator procord_set_allocator gave
 * the core; NULL is fine for 0 bytes) and its length in `*length`. Returns 0
 * or a negative error code (PROCORD_EBADVALUE for a value that cannot be
 * written; a positive number is taken as that too).
 */
typedef int (*procord_serialize_fn)(const void *value, unsigned char **bytes, size_t *length,
                                    void *context);

/*
 * Reads `length` bytes into a new value stored in `*value` (the caller owns
 * it and frees it with free_value). Returns 0, or a negative error code for
 * bytes that are not a valid value (PROCORD_EBADVALUE; a positive number is
 * taken as that too).
 */
typedef int (*procord_deserialize_fn)(const unsigned char *bytes, size_t length, void **value,
                                      void *context);

/* What a task's run function did, and what a finished task answered. */
typedef enum procord_task_answer {
  PROCORD_TASK_RETURNED = 0, /* the value is the output */
  PROCORD_TASK_RAISED = 1,   /* the value is an error, sent with write_error (an `X` frame) */
} procord_task_answer_t;

/*
 * The task itself, in the worker: reads `input` and stores a new value in
 * `*result` (the worker frees it with free_value after sending it). Returns
 * PROCORD_TASK_RETURNED or PROCORD_TASK_RAISED, or a negative error code for
 * a failure with no value (sent as `U` with the code's description; any
 * other return value is sent as `U` too). In a worker server started with
 * --procord-dont-fork, tasks run one at a time in the server process.
 */
typedef int (*procord_task_run_fn)(const void *input, void **result, void *context);

typedef struct procord_task_s {
  const char *name;
  procord_serialize_fn write_input;   /* main program */
  procord_deserialize_fn read_input;  /* worker */
  procord_serialize_fn write_output;  /* worker */
  procord_deserialize_fn read_output; /* main program */
  /* The error's serializers; both NULL: a raised error travels as `U`
     (an unknown exception) with the text "the task raised an error". */
  procord_serialize_fn write_error;
  procord_deserialize_fn read_error;
  void (*free_value)(void *value, void *context); /* NULL: free(), libc's */
  procord_task_run_fn run;                        /* worker; NULL in a main program only */
  void *context;                                  /* passed to every function above */
} procord_task_t;

/*
 * Serializes `input` with the task's write_input and delegates it as
 * procord_delegate does: `options` gives the worker and everything else
 * (its task_name, input and input_length are ignored). Returns what
 * procord_delegate returns, or write_input's error (nothing is started
 * then). The caller owns the delegation stored in `*delegation`.
 */
int procord_delegate_task(procord_loop_t *loop, const procord_task_t *task, const void *input,
                          const procord_delegation_options_t *options,
                          procord_delegation_t **delegation);

/* The same through a pool: returns what procord_pool_delegate returns, or
   write_input's error. `options` may be NULL. */
int procord_pool_delegate_task(procord_pool_t *pool, const procord_task_t *task, const void *input,
                               const procord_delegation_options_t *options,
                               procord_delegation_t **delegation);

/*
 * Reads a finished delegation's answer as a value: for a VALUE outcome,
 * read_output's value, and returns PROCORD_TASK_RETURNED; for an EXCEPTION
 * outcome read with read_error, the error value, and returns
 * PROCORD_TASK_RAISED. The caller owns the value stored in `*value` and frees
 * it with the task's free_value (procord_task_free_value). Returns -EAGAIN
 * for a delegation not finished yet, PROCORD_ENOVALUE for an outcome with
 * no value (see procord_delegation_outcome for why), or the deserializer's
 * error.
 */
int procord_task_result(const procord_task_t *task, procord_delegation_t *delegation, void **value);

/* Frees a value of the task (its free_value, or free()). NULL is fine. */
void procord_task_free_value(const procord_task_t *task, void *value);

/*
 * Returns what a worker serves for `task` (which must outlive the worker):
 * an entry for the tasks array of procord_worker_main and friends.
 */
procord_worker_task_t procord_task_worker(const procord_task_t *task);

#ifdef __cplusplus
}
#endif

#endif
