#define _GNU_SOURCE
/*
 * The C test harness (check.h, check_runner.h) tested on itself: tests that
 * hang, leave a child or a descriptor behind, fail a CHECK with a worker
 * still running, or crash, between tests that pass. check_self_test.py runs this
 * program and checks that each failure is reported under its own name,
 * within its limit, and that every test after it still runs, cleanly.
 *
 * Its tests exist only for that script: without PROCORD_CHECK_SELF_TEST=1
 * the program runs nothing.
 */
#include "check.h"
#include "fixtures.h"
#include "procord/delegation.h"
#include "procord/loop.h"

#include <fcntl.h>
#include <spawn.h>

static procord_loop_t *loop;

/* A one-off delegation to a shell that sleeps for `seconds` (its pid is said
   on stderr for the script), or NULL. */
static procord_delegation_t *delegate_sleep(const char *seconds) {
  const char *arguments[] = {"sh", "-c", "exec sleep \"$0\"", seconds, NULL};
  procord_delegation_options_t options = {
      .task_name = "sleep",
      .input = "1",
      .input_length = 1,
      .worker = {.program = "/bin/sh", .arguments = arguments, .stderr_fd = -1},
  };
  procord_delegation_t *d = NULL;
  if (procord_delegate(loop, &options, &d) != 0) return NULL;
  long long until = now_ms() + 5000;
  while (procord_delegation_pid(d) <= 0 && now_ms() < until) usleep(1000);
  fprintf(stderr, "    started child %d\n", (int)procord_delegation_pid(d));
  return d;
}

static void passes_before_the_others(void) { CHECK(no_child_left()); }

/* Stuck in a wait on the main thread while the loop's thread runs on. */
static void hangs_waiting_for_a_delegation_that_never_ends(void) {
  procord_delegation_t *d = delegate_sleep("1000");
  CHECK(d);
  procord_delegation_wait(loop, &d, 1, 1, -1);
}

static void passes_after_the_hang(void) { CHECK(no_child_left()); }

static void hangs_past_its_own_shorter_limit(void) {
  for (;;) pause();
}

static void leaves_a_child_behind(void) {
  char *arguments[] = {"sleep", "1000", NULL};
  pid_t pid;
  CHECK_EQ_INT(posix_spawnp(&pid, "sleep", NULL, NULL, arguments, environ), 0);
  fprintf(stderr, "    started child %d\n", (int)pid);
}

static void passes_after_the_child(void) { CHECK(no_child_left()); }

static void leaves_a_descriptor_open(void) { CHECK(open("/dev/null", O_RDONLY | O_CLOEXEC) >= 0); }

static void fails_a_check_with_a_delegation_running(void) {
  procord_delegation_t *d = delegate_sleep("1000");
  CHECK(d);
  CHECK(procord_delegation_is_finished(d)); /* fails: the clean-up below is never reached */
  procord_delegation_release(d);
}

static void crashes(void) {
  volatile int *nowhere = NULL;
  *nowhere = 1;
}

static void passes_after_the_crash(void) { CHECK(no_child_left()); }

static void passes_last_with_nothing_left_from_the_others(void) {
  BEGIN();
  procord_delegation_t *d = delegate_sleep("0");
  CHECK(d);
  procord_delegation_wait(loop, &d, 1, 1, 10000);
  const procord_outcome_t *o = procord_delegation_outcome(d);
  int ended = o != NULL;
  procord_delegation_release(d);
  CHECK(ended);
  CHECK_NOTHING_LEFT();
}

int main(void) {
  const char *enabled = getenv("PROCORD_CHECK_SELF_TEST");
  if (!enabled || strcmp(enabled, "1") != 0) {
    fprintf(stderr, "the harness's self-test: run by Tests/c/check_self_test.py\n");
    return 2;
  }
  if (procord_loop_new(&loop) != 0 || procord_loop_start_thread(loop) != 0) {
    fprintf(stderr, "cannot start the loop\n");
    return 1;
  }
  if (getenv("PROCORD_CHECK_SELF_TEST_CRASH_AFTER")) {
    /* A crash in main's clean-up, after the last test passed. */
    RUN(passes_before_the_others);
    abort();
  }
  RUN(passes_before_the_others);
  RUN(hangs_waiting_for_a_delegation_that_never_ends);
  RUN(passes_after_the_hang);
  RUN_WITHIN(hangs_past_its_own_shorter_limit, 1);
  RUN(leaves_a_child_behind);
  RUN(passes_after_the_child);
  RUN(leaves_a_descriptor_open);
  RUN(fails_a_check_with_a_delegation_running);
  RUN(crashes);
  RUN(passes_after_the_crash);
  RUN(passes_last_with_nothing_left_from_the_others);
  procord_loop_free(loop);
  return CHECK_SUMMARY();
}
