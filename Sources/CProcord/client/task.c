/*
 * Tasks described once for both sides (procord/task.h): the serializers
 * around procord_delegate and procord_worker_serve.
 */
#include "procord/task.h"
#include "client/client_private.h"
#include "procord/error.h"
#include "procord/frame.h"
#include "base/base_private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void procord_task_free_value(const procord_task_t *task, void *value) {
  if (!value) return;
  if (task->free_value) task->free_value(value, task->context);
  else
    free(value);
}

/* Serializes the input, then lets `submit` delegate it with the bytes. */
static int delegate_with(const procord_task_t *task, const void *input,
                         const procord_delegation_options_t *given,
                         int (*submit)(void *target, const procord_delegation_options_t *options,
                                       procord_delegation_t **delegation),
                         void *target, procord_delegation_t **delegation) {
  if (!task || !task->name || !task->write_input || !delegation) return PROCORD_EINVAL;
  procord_delegation_options_t options;
  if (given) {
    if (procord_delegation_options_copy(&options, given) != 0) return PROCORD_EINVAL;
  } else {
    procord_delegation_options_init(&options);
  }
  unsigned char *bytes = NULL;
  size_t length = 0;
  int error = task->write_input(input, &bytes, &length, task->context);
  if (error) {
    free(bytes); /* whatever it allocated before failing */
    return error < 0 ? error : PROCORD_EBADVALUE;
  }
  options.task_name = task->name;
  options.input = bytes;
  options.input_length = length;
  /* Lent, not copied: the delegation frees them (also when submit fails). */
  options.input_release = free;
  options.input_context = bytes;
  return submit(target, &options, delegation);
}

static int submit_one_off(void *loop, const procord_delegation_options_t *options,
                          procord_delegation_t **delegation) {
  return procord_delegate(loop, options, delegation);
}

static int submit_pooled(void *pool, const procord_delegation_options_t *options,
                         procord_delegation_t **delegation) {
  return procord_pool_delegate(pool, options, delegation);
}

int procord_delegate_task(procord_loop_t *loop, const procord_task_t *task, const void *input,
                          const procord_delegation_options_t *options,
                          procord_delegation_t **delegation) {
  if (!loop || !options) return PROCORD_EINVAL;
  return delegate_with(task, input, options, submit_one_off, loop, delegation);
}

int procord_pool_delegate_task(procord_pool_t *pool, const procord_task_t *task, const void *input,
                               const procord_delegation_options_t *options,
                               procord_delegation_t **delegation) {
  if (!pool) return PROCORD_EINVAL;
  return delegate_with(task, input, options, submit_pooled, pool, delegation);
}

int procord_task_result(const procord_task_t *task, procord_delegation_t *delegation,
                        void **value) {
  if (!task || !delegation || !value) return PROCORD_EINVAL;
  *value = NULL;
  const procord_outcome_t *outcome = procord_delegation_outcome(delegation);
  if (!outcome) return -EAGAIN;
  procord_deserialize_fn read = NULL;
  int result = 0;
  if (outcome->kind == PROCORD_OUTCOME_VALUE) {
    read = task->read_output;
    result = PROCORD_TASK_RETURNED;
  } else if (outcome->kind == PROCORD_OUTCOME_EXCEPTION && task->read_error) {
    read = task->read_error;
    result = PROCORD_TASK_RAISED;
  }
  if (!read) return PROCORD_ENOVALUE;
  int error = read(outcome->body, outcome->length, value, task->context);
  if (error) {
    *value = NULL;
    return error < 0 ? error : PROCORD_EBADVALUE;
  }
  return result;
}

/* A reply of `kind` with `text` as its body (the core's, so released to the
   core's allocator, not to free()); an empty `U` if out of memory. */
static void reply_text(procord_reply_t *reply, unsigned char kind, const char *text) {
  size_t length = strlen(text);
  reply->body = procord_allocate(length);
  reply->kind = reply->body ? kind : PROCORD_FRAME_UNKNOWN_EXCEPTION;
  reply->length = reply->body ? length : 0;
  reply->release = reply->body ? procord_free : NULL;
  reply->release_context = reply->body;
  if (reply->body) memcpy(reply->body, text, length);
}

/* The worker side: read the input, run, write the output or the error. */
static void run_described_task(void *context, const unsigned char *input, size_t length,
                               procord_reply_t *reply) {
  const procord_task_t *task = context;
  void *value = NULL, *result = NULL;
  if (!task->read_input || !task->run ||
      task->read_input(input, length, &value, task->context) != 0) {
    reply_text(reply, PROCORD_FRAME_UNKNOWN_EXCEPTION, "the task's input could not be read");
    return;
  }
  int ran = task->run(value, &result, task->context);
  procord_task_free_value(task, value);
  if (ran != PROCORD_TASK_RETURNED && ran != PROCORD_TASK_RAISED) {
    procord_task_free_value(task, result);
    reply_text(reply, PROCORD_FRAME_UNKNOWN_EXCEPTION,
               ran < 0 ? procord_strerror(ran)
                       : "the task's run function returned an unknown answer");
    return;
  }
  procord_serialize_fn write = ran == PROCORD_TASK_RAISED ? task->write_error : task->write_output;
  unsigned char *bytes = NULL;
  size_t written = 0;
  if (!write) {
    reply_text(reply, PROCORD_FRAME_UNKNOWN_EXCEPTION, "the task raised an error");
  } else if (write(result, &bytes, &written, task->context) != 0) {
    free(bytes);
    reply_text(reply, PROCORD_FRAME_UNKNOWN_EXCEPTION,
               ran == PROCORD_TASK_RAISED ? "the task's error could not be written"
                                          : "the task's output could not be written");
  } else {
    reply->kind = ran == PROCORD_TASK_RAISED ? PROCORD_FRAME_EXCEPTION : PROCORD_FRAME_VALUE;
    reply->body = bytes;
    reply->length = written;
  }
  procord_task_free_value(task, result);
}

procord_worker_task_t procord_task_worker(const procord_task_t *task) {
  procord_worker_task_t served = {task->name, run_described_task, (void *)task};
  return served;
}
