#define _GNU_SOURCE
/*
 * procord_outcome_describe (procord/delegation.h): the sentence for each way
 * a task ends, read from real delegations (a worker that crashes, a program
 * that does not exist, a refused connection, a deadline) and from outcomes
 * made by hand; and the snprintf contract of its buffer.
 */
#include "check.h"
#include "fixtures.h"
#include "procord/delegation.h"
#include "procord/error.h"
#include "procord/loop.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>

static procord_loop_t *loop;
static char self_path[4096];

/* Delegates task "fact" per `options` (program or remote filled in), waits,
   and describes the outcome into `text`. */
static const procord_outcome_t *run_and_describe(procord_delegation_options_t *options,
                                                 const char *destination,
                                                 procord_delegation_t **delegation, char *text,
                                                 size_t size) {
  options->task_name = "fact";
  options->input = "5";
  options->input_length = 1;
  options->worker.stderr_fd = options->worker.stderr_fd ? options->worker.stderr_fd : -1;
  if (procord_delegate(loop, options, delegation) != 0) return NULL;
  procord_delegation_wait(loop, delegation, 1, 1, -1);
  const procord_outcome_t *outcome = procord_delegation_outcome(*delegation);
  if (outcome) procord_outcome_describe(outcome, "fact", destination, text, size);
  return outcome;
}

/* A `sh -c` worker that reads the request (9 bytes) and then runs `script`. */
static const procord_outcome_t *run_script(const char *script, int deadline_ms,
                                           procord_delegation_t **delegation, char *text,
                                           size_t size) {
  const char *sh[] = {"sh", "-c", script, NULL};
  procord_delegation_options_t options = {.worker = {.program = "/bin/sh", .arguments = sh},
                                          .deadline_ms = deadline_ms,
                                          .exit_grace_ms = 100};
  return run_and_describe(&options, "/bin/sh", delegation, text, size);
}

static void crash_names_the_signal(void) {
  BEGIN();
  procord_delegation_t *delegation = NULL;
  char text[512], expected[512];
  const procord_outcome_t *outcome =
      run_script("head -c 9 >/dev/null; kill -SEGV $$", 0, &delegation, text, sizeof text);
  CHECK(outcome);
  snprintf(expected, sizeof expected,
           "task \"fact\" (worker pid %d, /bin/sh): the worker crashed: killed by signal SIGSEGV "
           "(Segmentation fault)",
           (int)outcome->worker_pid);
  procord_delegation_release(delegation);
  CHECK(strcmp(text, expected) == 0 || (fprintf(stderr, "    got: %s\n", text), 0));
  CHECK_NOTHING_LEFT();
}

static void crash_gives_the_fatal_error_line_of_the_stderr_tail(void) {
  BEGIN();
  procord_delegation_t *delegation = NULL;
  char text[1024];
  const procord_outcome_t *outcome = run_script(
      "head -c 9 >/dev/null; echo 'app/main.swift:3: Fatal error: boom' >&2; echo 'backtrace' >&2; kill -TRAP $$",
      0, &delegation, text, sizeof text);
  CHECK(outcome);
  procord_delegation_release(delegation);
  CHECK_CONTAINS(text, "the worker crashed: killed by signal SIGTRAP");
  CHECK_CONTAINS(text, "\nthe worker's last words: app/main.swift:3: Fatal error: boom");
  CHECK(!strstr(text, "backtrace"));
  CHECK_NOTHING_LEFT();
}

static void missing_program_names_the_errno_and_the_program(void) {
  BEGIN();
  const char *arguments[] = {"procord-no-such-worker", NULL};
  procord_delegation_options_t options = {
      .worker = {.program = "/nonexistent/procord-no-such-worker", .arguments = arguments}};
  procord_delegation_t *delegation = NULL;
  char text[512];
  const procord_outcome_t *outcome = run_and_describe(
      &options, "/nonexistent/procord-no-such-worker", &delegation, text, sizeof text);
  CHECK(outcome);
  procord_delegation_release(delegation);
  CHECK_CONTAINS(
      text, "task \"fact\" (/nonexistent/procord-no-such-worker): could not start "
            "/nonexistent/procord-no-such-worker: ENOENT (No such file or directory); check the "
            "path, and that it is an executable this user may run");
  CHECK_NOTHING_LEFT();
}

static void refused_connection_names_host_and_port(void) {
  BEGIN();
  /* A port bound but not listening: connecting to it is refused. */
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t length = sizeof address;
  CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&address, sizeof address) == 0 &&
        getsockname(fd, (struct sockaddr *)&address, &length) == 0);
  int port = ntohs(address.sin_port);
  char destination[64], text[512], expected[512];
  snprintf(destination, sizeof destination, "127.0.0.1:%d", port);
  procord_delegation_options_t options = {.remote_host = "127.0.0.1", .remote_port = port};
  procord_delegation_t *delegation = NULL;
  const procord_outcome_t *outcome =
      run_and_describe(&options, destination, &delegation, text, sizeof text);
  procord_delegation_release(delegation);
  close(fd);
  CHECK(outcome);
  snprintf(
      expected, sizeof expected,
      "task \"fact\" (%s): could not connect to %s: ECONNREFUSED (Connection refused); check that a "
      "Procord server listens there (--procord-server) and that this machine can reach it",
      destination, destination);
  CHECK(strcmp(text, expected) == 0 || (fprintf(stderr, "    got: %s\n", text), 0));
  CHECK_NOTHING_LEFT();
}

static void deadline_says_the_worker_was_stopped(void) {
  BEGIN();
  procord_delegation_t *delegation = NULL;
  char text[512];
  const procord_outcome_t *outcome =
      run_script("head -c 9 >/dev/null; sleep 10", 100, &delegation, text, sizeof text);
  CHECK(outcome);
  CHECK_EQ_INT(outcome->kind, PROCORD_OUTCOME_TIMED_OUT);
  procord_delegation_release(delegation);
  CHECK_CONTAINS(text, "): the task ran past its deadline and its worker was stopped");
  CHECK_NOTHING_LEFT();
}

/* ---- Outcomes made by hand ---- */

static void describe(const procord_outcome_t *outcome, const char *task, const char *destination,
                     char *text, size_t size) {
  procord_outcome_describe(outcome, task, destination, text, size);
}

static void unknown_task_names_it(void) {
  procord_outcome_t outcome = {
      .kind = PROCORD_OUTCOME_NO_WORKER, .worker_pid = 42, .exit_code = -1};
  char text[512];
  describe(&outcome, "fibo", "/usr/bin/app", text, sizeof text);
  CHECK_CONTAINS(
      text,
      "task \"fibo\" (worker pid 42, /usr/bin/app): the worker serves no task named \"fibo\"");
}

static void exception_gives_the_body_as_text(void) {
  procord_outcome_t outcome = {.kind = PROCORD_OUTCOME_EXCEPTION,
                               .body = (const unsigned char *)"too big!",
                               .length = 3,
                               .worker_pid = -1};
  char text[128];
  describe(&outcome, "fibo", NULL, text, sizeof text);
  CHECK(strcmp(text, "task \"fibo\": the task raised an error: too") == 0);
}

static void worker_that_never_served_speaks_for_itself(void) {
  const char *words =
      "this process was started as a Procord worker but its main returned without serving";
  procord_outcome_t outcome = {.kind = PROCORD_OUTCOME_UNKNOWN_EXCEPTION,
                               .body = (const unsigned char *)words,
                               .length = strlen(words),
                               .worker_pid = -1};
  char text[256];
  describe(&outcome, NULL, NULL, text, sizeof text);
  CHECK(strcmp(text, words) == 0);
}

static void value_says_the_task_answered(void) {
  procord_outcome_t outcome = {.kind = PROCORD_OUTCOME_VALUE,
                               .body = (const unsigned char *)"89",
                               .length = 2,
                               .worker_pid = -1};
  char text[128];
  describe(&outcome, NULL, NULL, text, sizeof text);
  CHECK(strcmp(text, "the task answered (2 bytes)") == 0);
  outcome.length = 1;
  describe(&outcome, NULL, NULL, text, sizeof text);
  CHECK(strcmp(text, "the task answered (1 byte)") == 0);
}

static void protocol_error_reported_by_the_worker(void) {
  procord_outcome_t outcome = {.kind = PROCORD_OUTCOME_DISCONNECTED,
                               .error = PROCORD_ETOO_LONG,
                               .call = "peer",
                               .exit_code = 0,
                               .worker_pid = -1};
  char text[256];
  describe(&outcome, NULL, NULL, text, sizeof text);
  CHECK(
      strcmp(
          text,
          "worker disconnected: the worker reported a protocol error: message too long (is the worker "
          "a Procord worker of a compatible version?)") == 0);
}

static void exit_without_answer_gives_the_code(void) {
  procord_outcome_t outcome = {.kind = PROCORD_OUTCOME_DISCONNECTED,
                               .error = PROCORD_EDISCONNECTED,
                               .call = "read",
                               .exit_code = 3,
                               .worker_pid = 7};
  char text[256];
  describe(&outcome, "t", NULL, text, sizeof text);
  CHECK(strcmp(
            text,
            "task \"t\" (worker pid 7): worker disconnected: the worker exited with code 3 without "
            "answering") == 0);
}

static void stderr_tail_without_a_fatal_error_is_given_whole(void) {
  const char tail[] = "one\ntwo\n";
  procord_outcome_t outcome = {.kind = PROCORD_OUTCOME_DISCONNECTED,
                               .error = PROCORD_EDISCONNECTED,
                               .call = "read",
                               .exit_code = -1,
                               .signal = SIGABRT,
                               .worker_pid = -1,
                               .stderr_tail = tail,
                               .stderr_tail_length = sizeof tail - 1};
  char text[256];
  describe(&outcome, NULL, NULL, text, sizeof text);
  CHECK_CONTAINS(text,
                 "killed by signal SIGABRT (Aborted)\nthe end of the worker's stderr:\none\ntwo\n");
}

/* ---- The buffer ---- */

static void small_buffer_is_cut_and_terminated_and_the_full_length_returned(void) {
  procord_outcome_t outcome = {.kind = PROCORD_OUTCOME_DISCONNECTED,
                               .error = PROCORD_EDISCONNECTED,
                               .call = "read",
                               .exit_code = -1,
                               .signal = SIGSEGV,
                               .worker_pid = 123};
  char full[512];
  size_t length = procord_outcome_describe(&outcome, "fibo", "/usr/bin/app", full, sizeof full);
  CHECK_EQ_INT(length, strlen(full));
  CHECK(
      strcmp(
          full,
          "task \"fibo\" (worker pid 123, /usr/bin/app): the worker crashed: killed by signal SIGSEGV "
          "(Segmentation fault)") == 0);
  char small[11];
  memset(small, 'x', sizeof small);
  CHECK_EQ_INT(procord_outcome_describe(&outcome, "fibo", "/usr/bin/app", small, 10), length);
  CHECK(memcmp(small, "task \"fib\0", 10) == 0);
  CHECK_EQ_INT(small[9], 0);
  CHECK_EQ_INT(small[10], 'x'); /* nothing written past `size` */
  for (size_t size = 1; size < length + 2; size++) {
    char cut[512];
    memset(cut, 'x', sizeof cut);
    CHECK_EQ_INT(procord_outcome_describe(&outcome, "fibo", "/usr/bin/app", cut, size), length);
    size_t kept = size - 1 < length ? size - 1 : length;
    CHECK_EQ_INT(strlen(cut), kept);
    CHECK(memcmp(cut, full, kept) == 0);
    CHECK_EQ_INT(cut[size], 'x');
  }
}

static void long_detail_is_cut_like_the_rest(void) {
  char detail[1000];
  memset(detail, 'd', sizeof detail - 1);
  detail[sizeof detail - 1] = 0;
  procord_outcome_t outcome = {.kind = PROCORD_OUTCOME_DISCONNECTED,
                               .error = PROCORD_ETLS,
                               .call = "tls",
                               .detail = detail,
                               .exit_code = -1,
                               .worker_pid = -1};
  char full[2048], cut[100];
  size_t length = procord_outcome_describe(&outcome, NULL, NULL, full, sizeof full);
  CHECK_EQ_INT(length, strlen(full));
  CHECK_EQ_INT(procord_outcome_describe(&outcome, NULL, NULL, cut, sizeof cut), length);
  CHECK_EQ_INT(strlen(cut), sizeof cut - 1);
  CHECK(memcmp(cut, full, sizeof cut - 1) == 0);
}

static void size_zero_writes_nothing_and_returns_the_length(void) {
  procord_outcome_t outcome = {.kind = PROCORD_OUTCOME_KILLED, .worker_pid = -1};
  char untouched = 'x';
  CHECK_EQ_INT(procord_outcome_describe(&outcome, NULL, NULL, &untouched, 0),
               strlen("killed by this program"));
  CHECK_EQ_INT(untouched, 'x');
  CHECK_EQ_INT(procord_outcome_describe(&outcome, NULL, NULL, NULL, 0),
               strlen("killed by this program"));
}

int main(int argc, char **argv) {
  loop = fixture_start(argc, argv, NULL, 0, self_path, sizeof self_path);
  if (!loop) return 1;

  RUN(crash_names_the_signal);
  RUN(crash_gives_the_fatal_error_line_of_the_stderr_tail);
  RUN(missing_program_names_the_errno_and_the_program);
  RUN(refused_connection_names_host_and_port);
  RUN(deadline_says_the_worker_was_stopped);

  RUN(unknown_task_names_it);
  RUN(exception_gives_the_body_as_text);
  RUN(worker_that_never_served_speaks_for_itself);
  RUN(value_says_the_task_answered);
  RUN(protocol_error_reported_by_the_worker);
  RUN(exit_without_answer_gives_the_code);
  RUN(stderr_tail_without_a_fatal_error_is_given_whole);

  RUN(small_buffer_is_cut_and_terminated_and_the_full_length_returned);
  RUN(long_detail_is_cut_like_the_rest);
  RUN(size_zero_writes_nothing_and_returns_the_length);

  procord_loop_free(loop);
  return CHECK_SUMMARY();
}
