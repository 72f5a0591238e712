#define _GNU_SOURCE
/*
 * Delegation from C (procord/delegation.h) on a loop running on its own
 * thread. Most workers are fakes: `sh -c` scripts that read the request
 * (`4Tfact1V5`, 9 bytes) with `head -c 9` and then print a canned answer, so
 * each one behaves the same on every run. A few use this very program as a
 * real worker (started with --procord-worker, see main).
 *
 * Every test ends by checking that no child process is left and that the
 * number of open descriptors is back to what it was.
 */
#include "check.h"
#include "fixtures.h"
#include "procord/delegation.h"
#include "procord/error.h"
#include "procord/frame.h"
#include "procord/loop.h"
#include "procord/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <semaphore.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static procord_loop_t *loop;
static char self_path[4096]; /* this program, to start as a real worker */

/* ---- Helpers ---- */

typedef struct {
  const char *script; /* for `sh -c`; or NULL with program/arguments */
  const char *program;
  const char *const *arguments;
  procord_protocol_channel_t channel;
  const char *task_name; /* "fact" when NULL */
  const char *input;     /* "5" when NULL */
  size_t max_message_size;
  int exit_grace_ms;
  procord_done_cb on_done;
  void *context;
  int set_stderr; /* non-zero: the worker's stderr is stderr_fd, not inherited */
  int stderr_fd;
} fake_t;

static int start(const fake_t *fake, procord_delegation_t **delegation) {
  const char *sh[] = {"sh", "-c", fake->script, NULL};
  const char *input = fake->input ? fake->input : "5";
  procord_delegation_options_t options = {
      .task_name = fake->task_name ? fake->task_name : "fact",
      .input = input,
      .input_length = strlen(input),
      .worker = {.program = fake->script ? "/bin/sh" : fake->program,
                 .arguments = fake->script ? sh : fake->arguments,
                 .channel = fake->channel,
                 .stderr_fd = fake->set_stderr ? fake->stderr_fd : -1},
      .max_message_size = fake->max_message_size,
      .exit_grace_ms = fake->exit_grace_ms,
      .on_done = fake->on_done,
      .context = fake->context,
  };
  return procord_delegate(loop, &options, delegation);
}

/* The outcome of a finished delegation, with a copy of its body. */
typedef struct {
  procord_outcome_t outcome;
  char body[256];
  size_t length;
  int finished;
} result_t;

static result_t result_of(procord_delegation_t *delegation) {
  result_t result;
  memset(&result, 0, sizeof result);
  const procord_outcome_t *outcome = procord_delegation_outcome(delegation);
  if (!outcome) return result;
  result.finished = 1;
  result.outcome = *outcome;
  result.length = outcome->length < sizeof result.body ? outcome->length : sizeof result.body;
  if (result.length) memcpy(result.body, outcome->body, result.length);
  result.outcome.body = NULL; /* owned by the delegation, released below */
  return result;
}

/* Delegates, waits for the end without a limit, and returns the outcome. */
static result_t run(const fake_t *fake) {
  procord_delegation_t *delegation = NULL;
  result_t result;
  memset(&result, 0, sizeof result);
  if (start(fake, &delegation) != 0) return result;
  procord_delegation_wait(loop, &delegation, 1, 1, -1);
  result = result_of(delegation);
  procord_delegation_release(delegation);
  return result;
}

static result_t run_script(const char *script) {
  fake_t fake = {.script = script};
  return run(&fake);
}

/* The outcome of a delegation that has finished, then the reference released. */
static result_t release_with_result(procord_delegation_t *delegation) {
  result_t result = result_of(delegation);
  procord_delegation_release(delegation);
  return result;
}

/* Ends a delegation still running (kill, wait for the end) and releases it. */
static void kill_and_release(procord_delegation_t *delegation) {
  procord_delegation_kill(delegation);
  procord_delegation_wait(loop, &delegation, 1, 1, -1);
  procord_delegation_release(delegation);
}

/* (clang-format would read `call && strcmp` as a declaration.) */
/* clang-format off */
/* The worker was disconnected: `error` from the call named `call`. */
#define CHECK_DISCONNECTED(r, expected_error, expected_call)                                      \
  do {                                                                                            \
    CHECK_EQ_INT((r).outcome.kind, PROCORD_OUTCOME_DISCONNECTED);                                 \
    CHECK_EQ_INT((r).outcome.error, (expected_error));                                            \
    CHECK((r).outcome.call && strcmp((r).outcome.call, (expected_call)) == 0);                    \
  } while (0)
/* clang-format on */

/* A fake that reads the request and answers with `answer`, ends with a disconnection. */
static void check_answer_disconnects(const char *answer, int error, const char *call) {
  BEGIN();
  char script[128];
  snprintf(script, sizeof script, "head -c 9 >/dev/null; printf %s", answer);
  result_t r = run_script(script);
  CHECK_DISCONNECTED(r, error, call);
  CHECK_NOTHING_LEFT();
}

/* ---- Answers ---- */

static void value_answer_is_a_value_outcome(void) {
  BEGIN();
  result_t r = run_script("head -c 9 >/dev/null; printf 3V120");
  CHECK(r.finished);
  CHECK_EQ_INT(r.outcome.kind, PROCORD_OUTCOME_VALUE);
  CHECK_BYTES(r.body, r.length, "120");
  CHECK_EQ_INT(r.outcome.exit_code, 0);
  CHECK_EQ_INT(r.outcome.signal, 0);
  CHECK_EQ_INT(r.outcome.reusable, 0);
  CHECK_EQ_INT(r.outcome.killed_after_grace, 0);
  CHECK_NOTHING_LEFT();
}

static void value_answer_in_socket_mode_is_a_value_outcome(void) {
  BEGIN();
  fake_t fake = {.script = "head -c 9 <&3 >/dev/null; printf 3V120 >&3",
                 .channel = PROCORD_CHANNEL_SOCKET};
  result_t r = run(&fake);
  CHECK_EQ_INT(r.outcome.kind, PROCORD_OUTCOME_VALUE);
  CHECK_BYTES(r.body, r.length, "120");
  CHECK_EQ_INT(r.outcome.exit_code, 0);
  CHECK_NOTHING_LEFT();
}

static void worker_receives_the_task_name_and_input(void) {
  BEGIN();
  /* The fake answers with the very bytes it read. */
  result_t r = run_script("request=$(head -c 9); printf %dV%s ${#request} \"$request\"");
  CHECK_EQ_INT(r.outcome.kind, PROCORD_OUTCOME_VALUE);
  CHECK_BYTES(r.body, r.length, "4Tfact1V5");
  CHECK_NOTHING_LEFT();
}

static void empty_value_answer_is_a_value_outcome(void) {
  BEGIN();
  result_t r = run_script("head -c 9 >/dev/null; printf 0V");
  CHECK_EQ_INT(r.outcome.kind, PROCORD_OUTCOME_VALUE);
  CHECK_EQ_INT(r.length, 0);
  CHECK_NOTHING_LEFT();
}

static void exception_answer_is_an_exception_outcome(void) {
  BEGIN();
  result_t r = run_script("head -c 9 >/dev/null; printf 3Xerr");
  CHECK_EQ_INT(r.outcome.kind, PROCORD_OUTCOME_EXCEPTION);
  CHECK_BYTES(r.body, r.length, "err");
  CHECK_NOTHING_LEFT();
}

static void unknown_exception_answer_is_an_unknown_exception_outcome(void) {
  BEGIN();
  result_t r = run_script("head -c 9 >/dev/null; printf '11Uit went bad'");
  CHECK_EQ_INT(r.outcome.kind, PROCORD_OUTCOME_UNKNOWN_EXCEPTION);
  CHECK_BYTES(r.body, r.length, "it went bad");
  CHECK_NOTHING_LEFT();
}

static void e0_answer_is_no_worker(void) {
  BEGIN();
  result_t r = run_script("head -c 9 >/dev/null; printf 1E0");
  CHECK_EQ_INT(r.outcome.kind, PROCORD_OUTCOME_NO_WORKER);
  CHECK_EQ_INT(r.outcome.exit_code, 0);
  CHECK_NOTHING_LEFT();
}

static void print_and_flush_before_the_answer_are_not_the_outcome(void) {
  BEGIN();
  /* Destination 7 is not registered: its text is dropped, not printed. */
  result_t r = run_script("head -c 9 >/dev/null; printf 5P7text1F73V120");
  CHECK_EQ_INT(r.outcome.kind, PROCORD_OUTCOME_VALUE);
  CHECK_BYTES(r.body, r.length, "120");
  CHECK_NOTHING_LEFT();
}

static void answer_followed_by_0r_is_reusable(void) {
  BEGIN();
  result_t r = run_script("head -c 9 >/dev/null; printf 3V1200R");
  CHECK_EQ_INT(r.outcome.kind, PROCORD_OUTCOME_VALUE);
  CHECK_BYTES(r.body, r.length, "120");
  CHECK_EQ_INT(r.outcome.reusable, 1);
  CHECK_NOTHING_LEFT();
}

/* ---- Protocol errors from the worker ---- */

static void ill_formed_e_body_is_disconnected_with_a_parse_error(void) {
  check_answer_disconnects("1E9", PROCORD_EILL_FORMED, "parse");
}

static void two_digit_e_body_is_disconnected_with_a_parse_error(void) {
  check_answer_disconnects("2E00", PROCORD_EILL_FORMED, "parse");
}

static void truncated_frame_is_disconnected_on_read(void) {
  /* `2E9` announces two bytes and sends one before the end of the stream. */
  check_answer_disconnects("2E9", PROCORD_EDISCONNECTED, "read");
}

static void answer_that_does_not_start_with_a_digit_is_a_parse_error(void) {
  check_answer_disconnects("hello", PROCORD_EILL_FORMED, "parse");
}

static void e_frame_other_than_e0_is_disconnected_with_a_peer_error(void) {
  check_answer_disconnects("1E3", PROCORD_ETOO_LONG, "peer");
}

static void e2_frame_is_disconnected_with_a_peer_error(void) {
  check_answer_disconnects("1E2", PROCORD_EILL_FORMED, "peer");
}

static void peer_error_wins_over_the_exit_code(void) {
  BEGIN();
  result_t r = run_script("head -c 9 >/dev/null; printf 1E1; exit 3");
  CHECK_DISCONNECTED(r, PROCORD_EUNEXPECTED, "peer");
  CHECK_EQ_INT(r.outcome.exit_code, 3);
  CHECK_NOTHING_LEFT();
}

static void frame_of_an_unexpected_kind_is_disconnected_with_a_receive_error(void) {
  check_answer_disconnects("1Tx", PROCORD_EUNEXPECTED, "receive");
}

static void answer_above_the_maximum_is_disconnected_as_too_long(void) {
  BEGIN();
  fake_t fake = {.script = "head -c 9 >/dev/null; printf 11V12345678901", .max_message_size = 10};
  result_t r = run(&fake);
  CHECK_DISCONNECTED(r, PROCORD_ETOO_LONG, "parse");
  CHECK_NOTHING_LEFT();
}

/* ---- How the worker ended ---- */

static void worker_that_exits_without_answering_is_disconnected_with_its_exit_code(void) {
  BEGIN();
  result_t r = run_script("head -c 9 >/dev/null; exit 3");
  CHECK_DISCONNECTED(r, PROCORD_EDISCONNECTED, "read");
  CHECK_EQ_INT(r.outcome.exit_code, 3);
  CHECK_EQ_INT(r.outcome.signal, 0);
  CHECK_NOTHING_LEFT();
}

static void worker_killed_by_a_signal_is_disconnected_with_the_signal(void) {
  BEGIN();
  result_t r = run_script("head -c 9 >/dev/null; kill -SEGV $$");
  CHECK_EQ_INT(r.outcome.kind, PROCORD_OUTCOME_DISCONNECTED);
  CHECK_EQ_INT(r.outcome.error, PROCORD_EDISCONNECTED);
  CHECK_EQ_INT(r.outcome.signal, SIGSEGV);
  CHECK_EQ_INT(r.outcome.exit_code, -1);
  CHECK_EQ_INT(r.outcome.killed_after_grace, 0);
  CHECK_NOTHING_LEFT();
}

/* Holds the loop's thread in a call until the test lets it go. */
static void hold_the_loop(void *argument) {
  struct timespec limit;
  clock_gettime(CLOCK_REALTIME, &limit);
  limit.tv_sec += 10;
  sem_timedwait(argument, &limit);
}

/*
 * A host program that reaps children itself (a SIGCHLD handler calling
 * waitpid(-1)) can take a worker's status before the library: the worker
 * aborted, yet nothing may read as a clean exit. The loop is held while the
 * worker dies and is reaped here, so the host always wins that race.
 */
static void worker_reaped_by_the_host_program_is_never_a_clean_exit(void) {
  BEGIN();
  fake_t fake = {.script = "exec sleep 30"};
  procord_delegation_t *delegation = NULL;
  CHECK_EQ_INT(start(&fake, &delegation), 0);
  pid_t worker = procord_delegation_pid(delegation);
  CHECK(worker > 0);
  sem_t release;
  sem_init(&release, 0, 0);
  CHECK_EQ_INT(procord_loop_call(loop, hold_the_loop, &release), 0);
  kill(worker, SIGABRT);
  int status = 0;
  pid_t reaped = waitpid(worker, &status, 0);
  sem_post(&release);
  result_t result = {0};
  if (procord_delegation_wait(loop, &delegation, 1, 1, 10000) == 1) result = result_of(delegation);
  else
    kill_and_release(delegation), delegation = NULL;
  if (delegation) procord_delegation_release(delegation);
  sem_destroy(&release);
  CHECK_EQ_INT(reaped, worker);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
  CHECK(result.finished);
  CHECK_EQ_INT(result.outcome.kind, PROCORD_OUTCOME_DISCONNECTED);
  CHECK_EQ_INT(result.outcome.error, -ECHILD);
  CHECK(result.outcome.call && strcmp(result.outcome.call, "waitpid") == 0);
  CHECK(result.outcome.detail &&
        strstr(result.outcome.detail, "reaped by another part of this program"));
  CHECK_EQ_INT(result.outcome.exit_code, -1); /* not 0: the status is unknown */
  CHECK_EQ_INT(result.outcome.signal, 0);
  CHECK_NOTHING_LEFT();
}

static void missing_program_is_disconnected_with_enoent_from_posix_spawn(void) {
  BEGIN();
  const char *arguments[] = {"procord-no-such-worker", NULL};
  fake_t fake = {.program = "/nonexistent/procord-no-such-worker", .arguments = arguments};
  procord_delegation_t *delegation = NULL;
  CHECK_EQ_INT(start(&fake, &delegation), 0);
  CHECK_EQ_INT(procord_delegation_pid(delegation), -1);
  CHECK_EQ_INT(procord_delegation_wait(loop, &delegation, 1, 1, -1), 1);
  result_t r = release_with_result(delegation);
  CHECK_DISCONNECTED(r, -ENOENT, "posix_spawn");
  CHECK_EQ_INT(r.outcome.exit_code, -1);
  CHECK_EQ_INT(r.outcome.signal, 0);
  CHECK_NOTHING_LEFT();
}

static void worker_that_lingers_after_closing_its_stream_is_killed_after_the_grace(void) {
  BEGIN();
  fake_t fake = {.script = "head -c 9 >/dev/null; printf 3V120; exec >&-; exec sleep 10",
                 .exit_grace_ms = 100};
  long long started = now_ms();
  result_t r = run(&fake);
  CHECK(now_ms() - started < 3000);
  CHECK_EQ_INT(r.outcome.kind, PROCORD_OUTCOME_VALUE);
  CHECK_BYTES(r.body, r.length, "120");
  CHECK_EQ_INT(r.outcome.killed_after_grace, 1);
  CHECK_EQ_INT(r.outcome.signal, SIGKILL);
  CHECK_NOTHING_LEFT();
}

static void worker_that_answers_and_keeps_its_stream_open_is_killed_after_the_grace(void) {
  BEGIN();
  fake_t fake = {.script = "head -c 9 >/dev/null; printf 3V120; exec sleep 10",
                 .exit_grace_ms = 100};
  procord_delegation_t *delegation = NULL;
  CHECK_EQ_INT(start(&fake, &delegation), 0);
  int finished = procord_delegation_wait(loop, &delegation, 1, 1, 3000);
  if (!finished) { /* clean up before reporting */
    procord_delegation_kill(delegation);
    procord_delegation_wait(loop, &delegation, 1, 1, -1);
  }
  result_t r = release_with_result(delegation);
  CHECK_EQ_INT(finished, 1);
  CHECK_EQ_INT(r.outcome.kind, PROCORD_OUTCOME_VALUE);
  CHECK_BYTES(r.body, r.length, "120");
  CHECK_EQ_INT(r.outcome.killed_after_grace, 1);
  CHECK_NOTHING_LEFT();
}

/* ---- Killing ---- */

static const char *const sleep_arguments[] = {"sleep", "10", NULL};

static void kill_gives_killed_quickly(void) {
  BEGIN();
  fake_t fake = {.program = "sleep", .arguments = sleep_arguments};
  procord_delegation_t *delegation = NULL;
  CHECK_EQ_INT(start(&fake, &delegation), 0);
  CHECK(procord_delegation_pid(delegation) > 0);
  long long started = now_ms();
  CHECK_EQ_INT(procord_delegation_kill(delegation), 0);
  CHECK_EQ_INT(procord_delegation_wait(loop, &delegation, 1, 1, 5000), 1);
  CHECK(now_ms() - started < 2000);
  result_t r = release_with_result(delegation);
  CHECK_EQ_INT(r.outcome.kind, PROCORD_OUTCOME_KILLED);
  CHECK_EQ_INT(r.outcome.signal, SIGKILL);
  CHECK_EQ_INT(r.length, 0);
  CHECK_NOTHING_LEFT();
}

static void kill_reaches_what_the_worker_started(void) {
  BEGIN();
  /* The shell starts `sleep` as a child of its own and waits for it. */
  fake_t fake = {.script = "head -c 9 >/dev/null; sleep 10; exit 0"};
  procord_delegation_t *delegation = NULL;
  CHECK_EQ_INT(start(&fake, &delegation), 0);
  CHECK_EQ_INT(procord_delegation_kill(delegation), 0);
  CHECK_EQ_INT(procord_delegation_wait(loop, &delegation, 1, 1, 5000), 1);
  result_t r = release_with_result(delegation);
  CHECK_EQ_INT(r.outcome.kind, PROCORD_OUTCOME_KILLED);
  CHECK_NOTHING_LEFT();
}

static void kill_after_the_end_is_eclosed(void) {
  BEGIN();
  fake_t fake = {.script = "head -c 9 >/dev/null; printf 3V120"};
  procord_delegation_t *delegation = NULL;
  CHECK_EQ_INT(start(&fake, &delegation), 0);
  CHECK_EQ_INT(procord_delegation_wait(loop, &delegation, 1, 1, -1), 1);
  CHECK_EQ_INT(procord_delegation_kill(delegation), PROCORD_ECLOSED);
  result_t r = release_with_result(delegation);
  CHECK_EQ_INT(r.outcome.kind, PROCORD_OUTCOME_VALUE);
  CHECK_NOTHING_LEFT();
}

static void kill_of_a_missing_program_leaves_it_disconnected_or_killed(void) {
  BEGIN();
  fake_t fake = {.program = "/nonexistent/procord-no-such-worker"};
  procord_delegation_t *delegation = NULL;
  CHECK_EQ_INT(start(&fake, &delegation), 0);
  int killed = procord_delegation_kill(delegation);
  CHECK(killed == 0 || killed == PROCORD_ECLOSED);
  CHECK_EQ_INT(procord_delegation_wait(loop, &delegation, 1, 1, -1), 1);
  result_t r = release_with_result(delegation);
  CHECK(r.outcome.kind == PROCORD_OUTCOME_KILLED || r.outcome.kind == PROCORD_OUTCOME_DISCONNECTED);
  CHECK_NOTHING_LEFT();
}

/* ---- Waiting ---- */

static void wait_with_a_timeout_returns_0_while_the_worker_runs(void) {
  BEGIN();
  fake_t fake = {.program = "sleep", .arguments = sleep_arguments};
  procord_delegation_t *delegation = NULL;
  CHECK_EQ_INT(start(&fake, &delegation), 0);
  long long started = now_ms();
  int finished = procord_delegation_wait(loop, &delegation, 1, 1, 50);
  long long waited = now_ms() - started;
  int finished_any = procord_delegation_wait(loop, &delegation, 1, 0, 50);
  int is_finished = procord_delegation_is_finished(delegation);
  const procord_outcome_t *outcome = procord_delegation_outcome(delegation);
  kill_and_release(delegation);
  CHECK_EQ_INT(finished, 0);
  CHECK_EQ_INT(finished_any, 0);
  CHECK(waited >= 45);
  CHECK(waited < 1000);
  CHECK_EQ_INT(is_finished, 0);
  CHECK(outcome == NULL);
  CHECK_NOTHING_LEFT();
}

static void wait_with_a_zero_timeout_does_not_block(void) {
  BEGIN();
  fake_t fake = {.program = "sleep", .arguments = sleep_arguments};
  procord_delegation_t *delegation = NULL;
  CHECK_EQ_INT(start(&fake, &delegation), 0);
  long long started = now_ms();
  int finished = procord_delegation_wait(loop, &delegation, 1, 1, 0);
  long long waited = now_ms() - started;
  kill_and_release(delegation);
  CHECK_EQ_INT(finished, 0);
  CHECK(waited < 500);
  CHECK_NOTHING_LEFT();
}

static void wait_for_any_returns_when_one_has_finished(void) {
  BEGIN();
  fake_t slow = {.program = "sleep", .arguments = sleep_arguments};
  fake_t quick = {.script = "head -c 9 >/dev/null; printf 3V120"};
  procord_delegation_t *delegations[2] = {NULL, NULL};
  CHECK_EQ_INT(start(&slow, &delegations[0]), 0);
  CHECK_EQ_INT(start(&quick, &delegations[1]), 0);
  int any = procord_delegation_wait(loop, delegations, 2, 0, -1);
  int slow_finished = procord_delegation_is_finished(delegations[0]);
  int quick_finished = procord_delegation_is_finished(delegations[1]);
  int all_in_time = procord_delegation_wait(loop, delegations, 2, 1, 50);
  procord_delegation_kill(delegations[0]);
  int all = procord_delegation_wait(loop, delegations, 2, 1, -1);
  result_t r0 = release_with_result(delegations[0]);
  result_t r1 = release_with_result(delegations[1]);
  CHECK_EQ_INT(any, 1);
  CHECK_EQ_INT(slow_finished, 0);
  CHECK_EQ_INT(quick_finished, 1);
  CHECK_EQ_INT(all_in_time, 1);
  CHECK_EQ_INT(all, 2);
  CHECK_EQ_INT(r0.outcome.kind, PROCORD_OUTCOME_KILLED);
  CHECK_EQ_INT(r1.outcome.kind, PROCORD_OUTCOME_VALUE);
  CHECK_NOTHING_LEFT();
}

static void wait_for_all_returns_when_every_one_has_finished(void) {
  BEGIN();
  enum { COUNT = 4 };
  procord_delegation_t *delegations[COUNT];
  fake_t fakes[COUNT] = {
      {.script = "head -c 9 >/dev/null; printf 1V1"},
      {.script = "head -c 9 >/dev/null; printf 1V2"},
      {.script = "head -c 9 >/dev/null; exit 4"},
      {.script = "head -c 9 >/dev/null; printf 1E0"},
  };
  for (int i = 0; i < COUNT; i++) CHECK_EQ_INT(start(&fakes[i], &delegations[i]), 0);
  int all = procord_delegation_wait(loop, delegations, COUNT, 1, -1);
  result_t r[COUNT];
  for (int i = 0; i < COUNT; i++) r[i] = release_with_result(delegations[i]);
  CHECK_EQ_INT(all, COUNT);
  CHECK_EQ_INT(r[0].outcome.kind, PROCORD_OUTCOME_VALUE);
  CHECK_BYTES(r[0].body, r[0].length, "1");
  CHECK_EQ_INT(r[1].outcome.kind, PROCORD_OUTCOME_VALUE);
  CHECK_BYTES(r[1].body, r[1].length, "2");
  CHECK_EQ_INT(r[2].outcome.kind, PROCORD_OUTCOME_DISCONNECTED);
  CHECK_EQ_INT(r[2].outcome.exit_code, 4);
  CHECK_EQ_INT(r[3].outcome.kind, PROCORD_OUTCOME_NO_WORKER);
  CHECK_NOTHING_LEFT();
}

static void wait_for_none_returns_0_at_once(void) {
  CHECK_EQ_INT(procord_delegation_wait(loop, NULL, 0, 0, -1), 0);
  CHECK_EQ_INT(procord_delegation_wait(loop, NULL, 0, 1, -1), 0);
}

/* ---- on_done ---- */

typedef struct {
  int calls;
  int on_loop_thread;
  int finished_during_call;
  procord_outcome_kind_t kind;
  char body[16];
  size_t length;
  void *context_seen;
} done_t;

static void record_done(procord_delegation_t *delegation, const procord_outcome_t *outcome,
                        void *context) {
  done_t *done = context;
  done->calls++;
  done->on_loop_thread = procord_loop_is_current_thread(loop);
  done->finished_during_call = procord_delegation_is_finished(delegation);
  done->kind = outcome->kind;
  done->length = outcome->length < sizeof done->body ? outcome->length : sizeof done->body;
  if (done->length) memcpy(done->body, outcome->body, done->length);
  done->context_seen = context;
}

static void on_done_runs_once_on_the_loop_thread_with_the_outcome(void) {
  BEGIN();
  done_t done = {0};
  fake_t fake = {
      .script = "head -c 9 >/dev/null; printf 3V120", .on_done = record_done, .context = &done};
  procord_delegation_t *delegation = NULL;
  CHECK_EQ_INT(start(&fake, &delegation), 0);
  CHECK_EQ_INT(procord_delegation_wait(loop, &delegation, 1, 1, -1), 1);
  procord_delegation_release(delegation);
  CHECK_EQ_INT(done.calls, 1);
  CHECK_EQ_INT(done.on_loop_thread, 1);
  CHECK_EQ_INT(done.finished_during_call, 0);
  CHECK(done.context_seen == &done);
  CHECK_EQ_INT(done.kind, PROCORD_OUTCOME_VALUE);
  CHECK_BYTES(done.body, done.length, "120");
  CHECK_NOTHING_LEFT();
}

/* What on_done sees of procord_delegation_outcome, and what a thread it wakes sees. */
typedef struct {
  const procord_outcome_t *during_call;
  const procord_outcome_t *given;
  procord_delegation_t *delegation;
  sem_t woken, read; /* on_done woke the test's thread; that thread has read the outcome */
} outcome_seen_t;

static void wake_a_thread(procord_delegation_t *delegation, const procord_outcome_t *outcome,
                          void *context) {
  outcome_seen_t *seen = context;
  seen->delegation = delegation;
  seen->given = outcome;
  seen->during_call = procord_delegation_outcome(delegation);
  sem_post(&seen->woken);
  /* The woken thread reads the outcome while this call has not returned. */
  struct timespec limit;
  clock_gettime(CLOCK_REALTIME, &limit);
  limit.tv_sec += 10;
  sem_timedwait(&seen->read, &limit);
}

static void outcome_is_readable_from_the_moment_on_done_is_called(void) {
  BEGIN();
  outcome_seen_t seen = {0};
  CHECK_EQ_INT(sem_init(&seen.woken, 0, 0), 0);
  CHECK_EQ_INT(sem_init(&seen.read, 0, 0), 0);
  fake_t fake = {
      .script = "head -c 9 >/dev/null; printf 3V120", .on_done = wake_a_thread, .context = &seen};
  procord_delegation_t *delegation = NULL;
  CHECK_EQ_INT(start(&fake, &delegation), 0);
  struct timespec limit;
  clock_gettime(CLOCK_REALTIME, &limit);
  limit.tv_sec += 10;
  int woken = sem_timedwait(&seen.woken, &limit) == 0;
  const procord_outcome_t *from_another_thread =
      woken ? procord_delegation_outcome(delegation) : NULL;
  int finished_meanwhile = procord_delegation_is_finished(delegation);
  int kind = from_another_thread ? (int)from_another_thread->kind : -1;
  sem_post(&seen.read);
  CHECK_EQ_INT(procord_delegation_wait(loop, &delegation, 1, 1, -1), 1);
  procord_delegation_release(delegation);
  sem_destroy(&seen.woken);
  sem_destroy(&seen.read);
  CHECK(woken);
  CHECK(seen.during_call == seen.given); /* on the loop's thread, during on_done */
  CHECK(from_another_thread == seen.given);
  CHECK_EQ_INT(kind, PROCORD_OUTCOME_VALUE);
  CHECK_EQ_INT(finished_meanwhile, 0); /* "finished" still means on_done has returned */
  CHECK_NOTHING_LEFT();
}

static void on_done_runs_for_a_missing_program(void) {
  BEGIN();
  done_t done = {0};
  fake_t fake = {
      .program = "/nonexistent/procord-no-such-worker", .on_done = record_done, .context = &done};
  procord_delegation_t *delegation = NULL;
  CHECK_EQ_INT(start(&fake, &delegation), 0);
  CHECK_EQ_INT(procord_delegation_wait(loop, &delegation, 1, 1, -1), 1);
  procord_delegation_release(delegation);
  CHECK_EQ_INT(done.calls, 1);
  CHECK_EQ_INT(done.on_loop_thread, 1);
  CHECK_EQ_INT(done.kind, PROCORD_OUTCOME_DISCONNECTED);
  CHECK_NOTHING_LEFT();
}

typedef struct {
  done_t done;
  sem_t posted;
} done_signal_t;

static void record_done_and_post(procord_delegation_t *delegation, const procord_outcome_t *outcome,
                                 void *context) {
  done_signal_t *signal = context;
  record_done(delegation, outcome, &signal->done);
  sem_post(&signal->posted);
}

static void delegation_released_before_the_end_still_finishes(void) {
  BEGIN();
  done_signal_t signal = {0};
  sem_init(&signal.posted, 0, 0);
  fake_t fake = {.script = "head -c 9 >/dev/null; printf 3V120",
                 .on_done = record_done_and_post,
                 .context = &signal};
  procord_delegation_t *delegation = NULL;
  CHECK_EQ_INT(start(&fake, &delegation), 0);
  procord_delegation_release(delegation); /* the loop holds its own reference */
  while (sem_wait(&signal.posted) < 0 && errno == EINTR) {
  }
  sem_destroy(&signal.posted);
  CHECK_EQ_INT(signal.done.calls, 1);
  CHECK_EQ_INT(signal.done.kind, PROCORD_OUTCOME_VALUE);
  CHECK_BYTES(signal.done.body, signal.done.length, "120");
  /* The worker is reaped and its descriptors closed before on_done runs. */
  CHECK_NOTHING_LEFT();
}

/* ---- Invalid calls ---- */

static void delegate_without_a_task_name_is_einval(void) {
  BEGIN();
  procord_delegation_options_t options = {.worker = {.program = "/bin/true", .stderr_fd = -1}};
  procord_delegation_t *delegation = NULL;
  CHECK_EQ_INT(procord_delegate(loop, &options, &delegation), PROCORD_EINVAL);
  CHECK(delegation == NULL);
  CHECK_NOTHING_LEFT();
}

/* ---- This program as a real worker ---- */

static void real_worker_in_stdio_mode_answers_and_exits(void) {
  BEGIN();
  const char *arguments[] = {self_path, "--procord-worker", NULL};
  fake_t fake = {
      .program = self_path, .arguments = arguments, .task_name = "double", .input = "21"};
  result_t r = run(&fake);
  CHECK_EQ_INT(r.outcome.kind, PROCORD_OUTCOME_VALUE);
  CHECK_BYTES(r.body, r.length, "42");
  CHECK_EQ_INT(r.outcome.reusable, 0);
  CHECK_EQ_INT(r.outcome.exit_code, 0);
  CHECK_NOTHING_LEFT();
}

static void real_worker_in_socket_mode_is_reusable_and_exits(void) {
  BEGIN();
  const char *arguments[] = {self_path, "--procord-worker", "--procord-socket-fd", "3", NULL};
  fake_t fake = {.program = self_path,
                 .arguments = arguments,
                 .channel = PROCORD_CHANNEL_SOCKET,
                 .task_name = "double",
                 .input = "-8"};
  result_t r = run(&fake);
  CHECK_EQ_INT(r.outcome.kind, PROCORD_OUTCOME_VALUE);
  CHECK_BYTES(r.body, r.length, "-16");
  CHECK_EQ_INT(r.outcome.reusable, 1);
  CHECK_EQ_INT(r.outcome.exit_code, 0);
  CHECK_NOTHING_LEFT();
}

static void real_worker_without_the_task_is_no_worker(void) {
  BEGIN();
  const char *arguments[] = {self_path, "--procord-worker", NULL};
  fake_t fake = {.program = self_path, .arguments = arguments, .task_name = "nope"};
  result_t r = run(&fake);
  CHECK_EQ_INT(r.outcome.kind, PROCORD_OUTCOME_NO_WORKER);
  CHECK_NOTHING_LEFT();
}

/* ---- Freeing the loop ---- */

static const char *const sh_reading_then_sleeping[] = {"sh", "-c", "head -c 9 >/dev/null; sleep 10",
                                                       NULL};

/* Delegates to `program` on `own` (not the shared loop); on_done records into `done`. */
static int delegate_on(procord_loop_t *own, const char *program, const char *const *arguments,
                       done_t *done, procord_delegation_t **delegation) {
  procord_delegation_options_t options = {
      .task_name = "fact",
      .input = "5",
      .input_length = 1,
      .worker = {.program = program, .arguments = arguments, .stderr_fd = -1},
      .on_done = record_done,
      .context = done,
  };
  return procord_delegate(own, &options, delegation);
}

/* Frees `own`, then releases the delegation made on it; returns how long the free took. */
static long long free_loop_then_release(procord_loop_t *own, procord_delegation_t *delegation) {
  long long started = now_ms();
  procord_loop_free(own);
  long long took = now_ms() - started;
  /* Only the reference is safe to touch now: the loop is gone. */
  procord_delegation_release(delegation);
  return took;
}

/* The delegation on a freed loop was killed, on_done told so once, and quickly. */
#define CHECK_KILLED_BY_THE_FREE(took, done)                                                       \
  do {                                                                                             \
    CHECK((took) < 2000);                                                                          \
    CHECK_EQ_INT((done).calls, 1);                                                                 \
    CHECK_EQ_INT((done).kind, PROCORD_OUTCOME_KILLED);                                             \
  } while (0)

static void loop_free_kills_running_delegations(void) {
  BEGIN();
  procord_loop_t *own = NULL;
  CHECK_EQ_INT(procord_loop_new(&own), 0);
  CHECK_EQ_INT(procord_loop_start_thread(own), 0);
  done_t done = {0};
  procord_delegation_t *delegation = NULL;
  CHECK_EQ_INT(delegate_on(own, "sleep", sleep_arguments, &done, &delegation), 0);
  long long took = free_loop_then_release(own, delegation);
  CHECK_KILLED_BY_THE_FREE(took, done);
  CHECK_NOTHING_LEFT();
}

typedef struct {
  procord_loop_t *loop;
  sem_t stopped;
} stop_t;

/* Runs on the loop's thread after the calls queued before it: stops the loop there. */
static void stop_on_the_loop(void *argument) {
  stop_t *stop = argument;
  procord_loop_stop(stop->loop);
  sem_post(&stop->stopped);
}

static void loop_free_after_a_stop_kills_and_reaps_running_delegations(void) {
  BEGIN();
  procord_loop_t *own = NULL;
  CHECK_EQ_INT(procord_loop_new(&own), 0);
  CHECK_EQ_INT(procord_loop_start_thread(own), 0);
  done_t done = {0};
  procord_delegation_t *delegation = NULL;
  CHECK_EQ_INT(delegate_on(own, "/bin/sh", sh_reading_then_sleeping, &done, &delegation), 0);
  /* Queued after the delegation's start: the loop stops with the worker running. */
  stop_t stop = {.loop = own};
  sem_init(&stop.stopped, 0, 0);
  CHECK_EQ_INT(procord_loop_call(own, stop_on_the_loop, &stop), 0);
  while (sem_wait(&stop.stopped) < 0 && errno == EINTR) {
  }
  sem_destroy(&stop.stopped);
  /* The free joins the stopped thread, then finishes the work here. */
  long long took = free_loop_then_release(own, delegation);
  CHECK_KILLED_BY_THE_FREE(took, done);
  CHECK_NOTHING_LEFT();
}

static void loop_free_of_a_loop_never_run_finishes_its_queued_delegation(void) {
  BEGIN();
  procord_loop_t *own = NULL;
  CHECK_EQ_INT(procord_loop_new(&own), 0);
  done_t done = {0};
  procord_delegation_t *delegation = NULL;
  CHECK_EQ_INT(delegate_on(own, "/bin/sh", sh_reading_then_sleeping, &done, &delegation), 0);
  CHECK(procord_delegation_pid(delegation) > 0); /* started, its start queued on the loop */
  long long took = free_loop_then_release(own, delegation);
  CHECK_KILLED_BY_THE_FREE(took, done);
  CHECK_NOTHING_LEFT();
}

/* ---- What a worker gets and leaves ---- */

/* A pipe end that is open here without close-on-exec, as an inherited one would be. */
static int open_without_close_on_exec(int *other) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) return -1;
  int leaked = dup(p[1]);
  close(p[1]);
  if (leaked >= 0) fcntl(leaked, F_SETFD, 0);
  *other = p[0];
  return leaked;
}

static void descriptor_without_close_on_exec_does_not_reach_a_stdio_worker(void) {
  BEGIN();
  int other;
  int leaked = open_without_close_on_exec(&other);
  CHECK(leaked > 2);
  CHECK_EQ_INT(fcntl(leaked, F_GETFD) & FD_CLOEXEC, 0);
  /* The answer is "1" for the worker's own stdout, then whether it has `leaked`. */
  char script[256];
  snprintf(script, sizeof script,
           "head -c 9 >/dev/null; a=0; b=0; test -e /proc/self/fd/1 && a=1; "
           "test -e /proc/self/fd/%d && b=1; printf 2V$a$b",
           leaked);
  result_t r = run_script(script);
  close(leaked);
  close(other);
  CHECK_EQ_INT(r.outcome.kind, PROCORD_OUTCOME_VALUE);
  CHECK_BYTES(r.body, r.length, "10");
  CHECK_NOTHING_LEFT();
}

static void descriptor_without_close_on_exec_does_not_reach_a_socket_worker(void) {
  BEGIN();
  int other;
  int leaked = open_without_close_on_exec(&other);
  CHECK(leaked > PROCORD_WORKER_SOCKET_FD);
  char script[256];
  snprintf(script, sizeof script,
           "head -c 9 <&3 >/dev/null; a=0; b=0; test -e /proc/self/fd/3 && a=1; "
           "test -e /proc/self/fd/%d && b=1; printf 2V$a$b >&3",
           leaked);
  fake_t fake = {.script = script, .channel = PROCORD_CHANNEL_SOCKET};
  result_t r = run(&fake);
  close(leaked);
  close(other);
  CHECK_EQ_INT(r.outcome.kind, PROCORD_OUTCOME_VALUE);
  CHECK_BYTES(r.body, r.length, "10");
  CHECK_NOTHING_LEFT();
}

/* Reads until the end of the stream, waiting at most 5 s for each part. */
static size_t read_to_end_within_5s(int fd, char *into, size_t capacity) {
  size_t got = 0;
  struct pollfd p = {.fd = fd, .events = POLLIN};
  while (got < capacity && poll(&p, 1, 5000) == 1) {
    ssize_t n = read(fd, into + got, capacity - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += (size_t)n;
  }
  return got;
}

static void stderr_on_descriptor_1_does_not_overwrite_the_protocol(void) {
  BEGIN();
  /* Our descriptor 1 becomes a pipe for the test, so the noise can be checked. */
  fflush(stdout);
  int saved = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
  CHECK(saved >= 0);
  int p[2];
  CHECK(pipe2(p, O_CLOEXEC) == 0);
  dup2(p[1], STDOUT_FILENO);
  close(p[1]);
  fake_t fake = {.script = "head -c 9 >/dev/null; printf noise >&2; printf 3V120",
                 .set_stderr = 1,
                 .stderr_fd = STDOUT_FILENO};
  result_t r = run(&fake);
  dup2(saved, STDOUT_FILENO); /* the last writer of the pipe is gone */
  close(saved);
  char noise[64];
  size_t length = read_to_end_within_5s(p[0], noise, sizeof noise);
  close(p[0]);
  CHECK_EQ_INT(r.outcome.kind, PROCORD_OUTCOME_VALUE);
  CHECK_BYTES(r.body, r.length, "120");
  CHECK_BYTES(noise, length, "noise");
  CHECK_NOTHING_LEFT();
}

/*
 * Waits up to `timeout_ms` for a child of ours to exit and reaps it; returns
 * 1 with its status, 0 if it is still running after the time (then it is
 * killed and reaped, so that nothing is left), or -1.
 */
static int reap_within(pid_t pid, int timeout_ms, int *status) {
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  int exited;
  if (pidfd >= 0) {
    struct pollfd p = {.fd = pidfd, .events = POLLIN};
    int r;
    while ((r = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR) {
    }
    close(pidfd);
    exited = r == 1;
  } else {
    long long deadline = now_ms() + timeout_ms;
    siginfo_t info;
    for (;;) {
      memset(&info, 0, sizeof info);
      if (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) < 0) return -1;
      if ((exited = info.si_pid == pid) || now_ms() >= deadline) break;
      struct timespec tick = {0, 10 * 1000000L};
      nanosleep(&tick, NULL);
    }
  }
  if (!exited) kill(pid, SIGKILL);
  while (waitpid(pid, status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return exited;
}

static void what_a_task_left_in_the_workers_group_is_killed_at_the_reap(void) {
  BEGIN();
  /* Orphans become our children meanwhile, so the one left here can be awaited. */
  CHECK_EQ_INT(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
  /* The shell answers with the pid of a `sleep` it leaves behind, and exits. */
  result_t r = run_script("head -c 9 >/dev/null; sleep 30 </dev/null >/dev/null 2>&1 & "
                          "pid=$!; printf %dV%s ${#pid} $pid");
  pid_t left = 0;
  if (r.outcome.kind == PROCORD_OUTCOME_VALUE && r.length > 0 && r.length < 16) {
    char text[16] = {0};
    memcpy(text, r.body, r.length);
    left = (pid_t)strtol(text, NULL, 10);
  }
  int status = 0;
  int exited = left > 0 ? reap_within(left, 5000, &status) : -1;
  prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
  CHECK_EQ_INT(r.outcome.kind, PROCORD_OUTCOME_VALUE);
  CHECK_EQ_INT(r.outcome.exit_code, 0);
  CHECK(left > 0);
  CHECK_EQ_INT(exited, 1);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  CHECK_NOTHING_LEFT();
}

/* ---- The worker side of this program ---- */

static const procord_worker_task_t worker_tasks[] = {{"double", fixture_task_double, NULL}};

int main(int argc, char **argv) {
  loop = fixture_start(argc, argv, worker_tasks, 1, self_path, sizeof self_path);
  if (!loop) return 1;

  RUN(value_answer_is_a_value_outcome);
  RUN(value_answer_in_socket_mode_is_a_value_outcome);
  RUN(worker_receives_the_task_name_and_input);
  RUN(empty_value_answer_is_a_value_outcome);
  RUN(exception_answer_is_an_exception_outcome);
  RUN(unknown_exception_answer_is_an_unknown_exception_outcome);
  RUN(e0_answer_is_no_worker);
  RUN(print_and_flush_before_the_answer_are_not_the_outcome);
  RUN(answer_followed_by_0r_is_reusable);

  RUN(ill_formed_e_body_is_disconnected_with_a_parse_error);
  RUN(two_digit_e_body_is_disconnected_with_a_parse_error);
  RUN(truncated_frame_is_disconnected_on_read);
  RUN(answer_that_does_not_start_with_a_digit_is_a_parse_error);
  RUN(e_frame_other_than_e0_is_disconnected_with_a_peer_error);
  RUN(e2_frame_is_disconnected_with_a_peer_error);
  RUN(peer_error_wins_over_the_exit_code);
  RUN(frame_of_an_unexpected_kind_is_disconnected_with_a_receive_error);
  RUN(answer_above_the_maximum_is_disconnected_as_too_long);

  RUN(worker_that_exits_without_answering_is_disconnected_with_its_exit_code);
  RUN(worker_killed_by_a_signal_is_disconnected_with_the_signal);
  RUN(missing_program_is_disconnected_with_enoent_from_posix_spawn);
  RUN(worker_reaped_by_the_host_program_is_never_a_clean_exit);
  RUN(worker_that_lingers_after_closing_its_stream_is_killed_after_the_grace);
  RUN(worker_that_answers_and_keeps_its_stream_open_is_killed_after_the_grace);

  RUN(kill_gives_killed_quickly);
  RUN(kill_reaches_what_the_worker_started);
  RUN(kill_after_the_end_is_eclosed);
  RUN(kill_of_a_missing_program_leaves_it_disconnected_or_killed);

  RUN(wait_with_a_timeout_returns_0_while_the_worker_runs);
  RUN(wait_with_a_zero_timeout_does_not_block);
  RUN(wait_for_any_returns_when_one_has_finished);
  RUN(wait_for_all_returns_when_every_one_has_finished);
  RUN(wait_for_none_returns_0_at_once);

  RUN(on_done_runs_once_on_the_loop_thread_with_the_outcome);
  RUN(outcome_is_readable_from_the_moment_on_done_is_called);
  RUN(on_done_runs_for_a_missing_program);
  RUN(delegation_released_before_the_end_still_finishes);

  RUN(delegate_without_a_task_name_is_einval);

  RUN(real_worker_in_stdio_mode_answers_and_exits);
  RUN(real_worker_in_socket_mode_is_reusable_and_exits);
  RUN(real_worker_without_the_task_is_no_worker);

  RUN(loop_free_kills_running_delegations);
  RUN(loop_free_after_a_stop_kills_and_reaps_running_delegations);
  RUN(loop_free_of_a_loop_never_run_finishes_its_queued_delegation);

  RUN(descriptor_without_close_on_exec_does_not_reach_a_stdio_worker);
  RUN(descriptor_without_close_on_exec_does_not_reach_a_socket_worker);
  RUN(stderr_on_descriptor_1_does_not_overwrite_the_protocol);
  RUN(what_a_task_left_in_the_workers_group_is_killed_at_the_reap);

  procord_loop_free(loop);
  return CHECK_SUMMARY();
}
