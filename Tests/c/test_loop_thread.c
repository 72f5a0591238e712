#define _GNU_SOURCE
/*
 * What may be called on the loop's thread (procord/delegation.h, pool.h): a
 * wait there would wait forever, since nothing can finish while the loop's
 * thread waits; it is refused (-EDEADLK) instead of dead-locking, and a
 * wait with a time of 0 counts at once.
 *
 * This program is its own worker (the `sleep` task).
 */
#include "check.h"
#include <errno.h>
#include "fixtures.h"
#include "procord/delegation.h"
#include "procord/loop.h"
#include "procord/worker.h"

static procord_loop_t *loop;
static char self_path[4096];

static const procord_worker_task_t worker_tasks[] = {
    {"sleep", fixture_task_sleep, NULL},
};

typedef struct waited_in_callback_s {
  procord_delegation_t *other; /* still running when the first finishes */
  int refused;                 /* what procord_delegation_wait said in on_done, with no limit */
  int finished_seen;           /* and with a time of 0 */
  int returned;
} waited_in_callback_t;

/* on_done of the quick task: waits, without a time limit, for the slow one. */
static void wait_for_the_other(procord_delegation_t *delegation, const procord_outcome_t *outcome,
                               void *context) {
  (void)delegation;
  (void)outcome;
  waited_in_callback_t *waited = context;
  waited->refused = procord_delegation_wait(loop, &waited->other, 1, 1, -1);
  waited->finished_seen = procord_delegation_wait(loop, &waited->other, 1, 1, 0);
  waited->returned = 1;
}

static procord_delegation_t *start_sleep(const char *milliseconds, procord_done_cb on_done,
                                         void *context) {
  const char *arguments[] = {self_path, "--procord-worker", "--procord-socket-fd", "3", NULL};
  procord_delegation_options_t options = {
      .task_name = "sleep",
      .input = milliseconds,
      .input_length = strlen(milliseconds),
      .worker = {.program = self_path, .arguments = arguments, .channel = PROCORD_CHANNEL_SOCKET},
      .on_done = on_done,
      .context = context,
  };
  procord_delegation_t *d = NULL;
  return procord_delegate(loop, &options, &d) == 0 ? d : NULL;
}

static void a_wait_in_a_callback_is_refused_instead_of_waiting_forever(void) {
  BEGIN();
  waited_in_callback_t waited = {0};
  waited.other = start_sleep("60000", NULL, NULL);
  CHECK(waited.other != NULL);
  procord_delegation_t *quick = start_sleep("1", wait_for_the_other, &waited);
  CHECK(quick != NULL);
  CHECK_EQ_INT(procord_delegation_wait(loop, &quick, 1, 1, 20000), 1);
  CHECK(waited.returned);
  CHECK_EQ_INT(waited.refused, -EDEADLK);
  CHECK_EQ_INT(waited.finished_seen, 0);
  procord_delegation_kill(waited.other);
  CHECK_EQ_INT(procord_delegation_wait(loop, &waited.other, 1, 1, 20000), 1);
  procord_delegation_release(quick);
  procord_delegation_release(waited.other);
  CHECK_NOTHING_LEFT();
}

int main(int argc, char **argv) {
  loop = fixture_start(argc, argv, worker_tasks, sizeof worker_tasks / sizeof *worker_tasks,
                       self_path, sizeof self_path);
  if (!loop) return 1;
  RUN(a_wait_in_a_callback_is_refused_instead_of_waiting_forever);
  procord_loop_free(loop);
  return CHECK_SUMMARY();
}
