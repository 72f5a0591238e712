/*
 * Private to the C core: what a pool needs of a delegation. A delegation is
 * the task's side (name, input, outcome, deadline, kill); the worker it runs
 * on is a link (worker_link.h), its own for a one-off delegation, lent by a
 * pool for a pooled one.
 */
#ifndef PROCORD_DELEGATION_PRIVATE_H
#define PROCORD_DELEGATION_PRIVATE_H

#include "loop_private.h"
#include "procord/delegation.h"
#include "worker_link.h"
#include "worker_stderr.h"

struct procord_pool_s;
struct event;

/* The serialized input, shared by every attempt and the frames in flight. */
typedef struct procord_shared_input_s {
  procord_body_owner_t owner; /* how the frames in flight release it */
  int references;             /* atomic */
  size_t length;
  const unsigned char *data;  /* `bytes`, or the caller's own (borrowed) */
  void (*borrowed_release)(void *context); /* for borrowed input: gives it back */
  void *borrowed_context;
  unsigned char bytes[];
} procord_shared_input_t;

struct procord_delegation_s {
  procord_loop_work_t work; /* first: the loop hands this pointer back (one-off only) */
  procord_loop_t *loop;
  int references;           /* atomic */
  int kill_requested;       /* atomic: 0, or the signal asked for (SIGKILL, SIGTERM) */
  int stop_queued;          /* atomic: stop_call is in the loop's queue */
  procord_queued_call_t stop_call; /* its own: a kill or cancel needs no memory */
  char *task_name;
  procord_shared_input_t *input;
  int deadline_ms;
  int idempotent;
  procord_done_cb on_done;
  procord_print_cb on_print;
  int capture_output;
  void *context;

  procord_link_t *link;     /* the worker it runs on, or NULL */
  pid_t pid;                /* atomic: the worker's pid, or -1 */
  int spawn_failed;         /* one-off: its worker could not be started */
  struct event *deadline_timer;
  int timed_out;
  int answered;             /* a terminal frame set the outcome */
  procord_outcome_t outcome;
  void *body;
  /* One-off, the worker's stderr not redirected: its pipe, until the finish. */
  procord_worker_stderr_t *worker_stderr;
  int outcome_ready;        /* atomic: the outcome is final (set before on_done) */
  int finished;             /* guarded by the loop's done lock: on_done has returned */

  /* Pooled tasks: */
  struct procord_pool_s *pool;
  procord_delegation_t *queue_next;
  int queued;
  int sent_ahead;           /* in a busy worker's list of tasks sent ahead */
  int dropped;              /* finished while sent ahead: its worker is killed when it gets to it */
  int delivered;            /* its frames went to a ready worker */
  int retries;
};

/* What a frame from the worker means for the task. */
typedef enum procord_frame_effect {
  PROCORD_FRAME_CONTINUES, /* printed; the answer is still to come */
  PROCORD_FRAME_ANSWERS,   /* a terminal frame: the outcome is set */
  PROCORD_FRAME_BREAKS,    /* the task cannot go on: close the link (the
                              outcome is set if it was `E0`) */
} procord_frame_effect_t;

/* Makes a delegation with no worker yet: the caller's reference and the
   finishing one. NULL when out of memory. Any thread. */
procord_delegation_t *procord_delegation_create(procord_loop_t *loop,
                                                const procord_delegation_options_t *options);

/* A call that fails before a delegation holds its input gives a borrowed
   input back at once (see input_release in procord/delegation.h). */
void procord_delegation_refuse_input(const procord_delegation_options_t *options);

/* Copies a caller's options into `*copy` by their size, and their worker's
   by its own (options_private.h). Returns 0, or PROCORD_EINVAL for a size
   refused (`*copy` then holds what could be copied: enough to refuse the
   input). */
int procord_delegation_options_copy(procord_delegation_options_t *copy,
                                    const procord_delegation_options_t *given);

/* Starts the deadline timer, if any. On the loop's thread. */
int procord_delegation_arm_deadline(procord_delegation_t *delegation);

/* Sends the task (`T`, then `V`) on a ready link. */
int procord_delegation_send(procord_delegation_t *delegation, procord_link_t *link);

/* Handles one frame of the task's answer (see procord_frame_cb). */
procord_frame_effect_t procord_delegation_frame(procord_delegation_t *delegation,
                                                procord_link_t *link,
                                                const procord_frame_t *frame, int error);

/* Fills in the outcome from how its worker ended, if it did not answer. */
void procord_delegation_take_end(procord_delegation_t *delegation, const procord_link_t *link);

/* Reports the outcome (KILLED or TIMED_OUT if asked for) and drops the
   finishing reference. On the loop's thread. */
void procord_delegation_finish(procord_delegation_t *delegation);

#endif
