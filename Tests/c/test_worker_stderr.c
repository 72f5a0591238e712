#define _GNU_SOURCE
/*
 * A one-off local worker's stderr (procord/delegation.h): passed on to ours
 * at once, and its end kept in the outcome of a worker that ends without
 * answering. The workers are `sh -c` scripts that read the request
 * (`4Tfact1V5`, 9 bytes) with `head -c 9`, write to their stderr, and then
 * answer, exit or crash.
 *
 * Our own descriptor 2 becomes a pipe during a test when what reaches it is
 * checked (or when there is much of it); it is put back before any CHECK.
 */
#include "check.h"
#include "fixtures.h"
#include "procord/delegation.h"
#include "procord/loop.h"
#include "procord/worker.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>

static procord_loop_t *loop;
static char self_path[4096];

/* ---- Helpers ---- */

/* What a finished delegation left: its outcome, with copies of its tail. */
typedef struct {
  procord_outcome_kind_t kind;
  int signal, exit_code;
  int has_tail;       /* stderr_tail was not NULL */
  size_t tail_length; /* stderr_tail_length */
  char tail[PROCORD_STDERR_TAIL_MAX + 1];
  char body[64];
  long long took_ms; /* from the start to the end of the wait */
} result_t;

/* Points our descriptor 2 at a new pipe; returns its read end, and our
   stderr's copy in `*saved` (for stderr_back). */
static int stderr_to_pipe(int *saved) {
  fflush(stderr);
  int p[2];
  *saved = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
  if (*saved < 0 || pipe2(p, O_CLOEXEC) != 0) return -1;
  dup2(p[1], STDERR_FILENO);
  close(p[1]);
  return p[0];
}

static void stderr_back(int saved) {
  dup2(saved, STDERR_FILENO);
  close(saved);
}

/* Delegates `script`, waits up to `timeout_ms` (negative: no limit) for
   the end, then kills it if it has not ended (its outcome is then KILLED);
   when `saved_stderr` is not -1, puts our stderr back first (stderr_back). */
static result_t run_script_within(const char *script, int timeout_ms, int saved_stderr) {
  result_t result;
  memset(&result, 0, sizeof result);
  result.kind = -1;
  const char *sh[] = {"sh", "-c", script, NULL};
  procord_delegation_options_t options = {
      .task_name = "fact",
      .input = "5",
      .input_length = 1,
      .worker = {.program = "/bin/sh", .arguments = sh, .stderr_fd = -1},
  };
  long long start = now_ms();
  procord_delegation_t *delegation = NULL;
  if (procord_delegate(loop, &options, &delegation) != 0) {
    if (saved_stderr != -1) stderr_back(saved_stderr);
    return result;
  }
  int finished = procord_delegation_wait(loop, &delegation, 1, 1, timeout_ms);
  result.took_ms = now_ms() - start;
  if (saved_stderr != -1) stderr_back(saved_stderr);
  if (!finished) {
    procord_delegation_kill(delegation);
    procord_delegation_wait(loop, &delegation, 1, 1, -1);
  }
  const procord_outcome_t *outcome = procord_delegation_outcome(delegation);
  if (outcome) {
    result.kind = outcome->kind;
    result.signal = outcome->signal;
    result.exit_code = outcome->exit_code;
    result.has_tail = outcome->stderr_tail != NULL;
    result.tail_length = outcome->stderr_tail_length;
    if (outcome->stderr_tail && outcome->stderr_tail_length <= PROCORD_STDERR_TAIL_MAX)
      memcpy(result.tail, outcome->stderr_tail, outcome->stderr_tail_length + 1); /* its NUL too */
    if (outcome->body && outcome->length < sizeof result.body)
      memcpy(result.body, outcome->body, outcome->length);
  }
  procord_delegation_release(delegation);
  return result;
}

static result_t run_script(const char *script) { return run_script_within(script, -1, -1); }

/* Reads `fd` until `text` has arrived (or the end, or 5 s); what it read in
   `into` (NUL-terminated). True when `text` came. */
static int read_until(int fd, const char *text, char *into, size_t capacity) {
  size_t got = 0;
  into[0] = 0;
  long long deadline = now_ms() + 5000;
  while (!strstr(into, text) && got + 1 < capacity) {
    long long left = deadline - now_ms();
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (left <= 0 || poll(&p, 1, (int)left) <= 0) break;
    ssize_t n = read(fd, into + got, capacity - 1 - got);
    if (n <= 0) break;
    got += (size_t)n;
    into[got] = 0;
  }
  return strstr(into, text) != NULL;
}

/* Reads `fd` to its end (its last writer gone); how much it read. */
static size_t read_to_end(int fd, char *into, size_t capacity) {
  size_t got = 0;
  ssize_t n;
  while (got + 1 < capacity && (n = read(fd, into + got, capacity - 1 - got)) != 0) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    got += (size_t)n;
  }
  into[got] = 0;
  return got;
}

/* The number after `word ` in `text`, or 0. */
static pid_t number_after(const char *text, const char *word) {
  const char *at = strstr(text, word);
  return at ? (pid_t)strtol(at + strlen(word), NULL, 10) : 0;
}

/* Kills a process that a worker left (ours: we are a subreaper) and reaps it. */
static void end_left_process(pid_t pid) {
  if (pid <= 0) return;
  kill(pid, SIGKILL);
  while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
  }
}

/* ---- The tail in the outcome ---- */

static void crash_leaves_what_the_worker_wrote_to_stderr_in_the_outcome(void) {
  BEGIN();
  result_t r =
      run_script("head -c 9 >/dev/null; echo 'about to fail' >&2; "
                 "echo 'x.swift:3: Fatal error: Unexpectedly found nil' >&2; kill -SEGV $$");
  CHECK_EQ_INT(r.kind, PROCORD_OUTCOME_DISCONNECTED);
  CHECK_EQ_INT(r.signal, SIGSEGV);
  CHECK(r.has_tail);
  CHECK_BYTES(r.tail, r.tail_length,
              "about to fail\nx.swift:3: Fatal error: Unexpectedly found nil\n");
  CHECK_EQ_INT(r.tail[r.tail_length], 0);
  CHECK_NOTHING_LEFT();
}

static void exit_without_answer_leaves_the_tail_too(void) {
  BEGIN();
  result_t r = run_script("head -c 9 >/dev/null; printf 'cannot go on' >&2; exit 3");
  CHECK_EQ_INT(r.kind, PROCORD_OUTCOME_DISCONNECTED);
  CHECK_EQ_INT(r.exit_code, 3);
  CHECK_BYTES(r.tail, r.tail_length, "cannot go on");
  CHECK_NOTHING_LEFT();
}

/* A worker given --procord-socket-fd 3 but started with the stdio channel
   (the default, easy to leave) says why it cannot serve, in the tail. */
static void socket_arguments_on_the_stdio_channel_are_named_in_the_tail(void) {
  BEGIN();
  const char *arguments[] = {self_path, "--procord-worker", "--procord-socket-fd", "3", NULL};
  procord_delegation_options_t options;
  procord_delegation_options_init(&options);
  options.task_name = "fact";
  options.input = "5";
  options.input_length = 1;
  options.worker.program = self_path;
  options.worker.arguments = arguments; /* channel left at PROCORD_CHANNEL_STDIO */
  procord_delegation_t *delegation = NULL;
  CHECK_EQ_INT(procord_delegate(loop, &options, &delegation), 0);
  CHECK_EQ_INT(procord_delegation_wait(loop, &delegation, 1, 1, 20000), 1);
  const procord_outcome_t *outcome = procord_delegation_outcome(delegation);
  int exit_code = outcome->exit_code;
  char tail[PROCORD_STDERR_TAIL_MAX + 1] = "";
  if (outcome->stderr_tail) snprintf(tail, sizeof tail, "%s", outcome->stderr_tail);
  procord_delegation_release(delegation);
  CHECK_EQ_INT(exit_code, 1);
  CHECK_CONTAINS(tail, "--procord-socket-fd 3: descriptor 3 is not a socket");
  CHECK_CONTAINS(tail, "PROCORD_CHANNEL_SOCKET");
  CHECK_NOTHING_LEFT();
}

static void worker_silent_on_stderr_leaves_no_tail(void) {
  BEGIN();
  result_t r = run_script("head -c 9 >/dev/null; kill -SEGV $$");
  CHECK_EQ_INT(r.kind, PROCORD_OUTCOME_DISCONNECTED);
  CHECK_EQ_INT(r.signal, SIGSEGV);
  CHECK(!r.has_tail);
  CHECK_EQ_INT(r.tail_length, 0);
  CHECK_NOTHING_LEFT();
}

static void tail_is_the_last_4_kib_from_a_line_start_and_all_of_it_is_passed_on(void) {
  BEGIN();
  static char passed[65536];
  int saved, from = stderr_to_pipe(&saved);
  CHECK(from >= 0);
  /* 3000 lines, 29 KB: more than the tail, less than our pipe holds. */
  result_t r = run_script("head -c 9 >/dev/null; i=1; while [ $i -le 3000 ]; do echo \"line $i\"; "
                          "i=$((i+1)); done >&2; exit 4");
  stderr_back(saved); /* the last writer of the pipe is gone */
  size_t length = read_to_end(from, passed, sizeof passed);
  close(from);
  CHECK_EQ_INT(r.kind, PROCORD_OUTCOME_DISCONNECTED);
  CHECK_EQ_INT(r.exit_code, 4);
  CHECK(r.tail_length <= PROCORD_STDERR_TAIL_MAX);
  CHECK(r.tail_length > PROCORD_STDERR_TAIL_MAX - 16); /* cut at a line start, not much less */
  CHECK(strncmp(r.tail, "line ", 5) == 0);
  CHECK(length > r.tail_length);
  CHECK(memcmp(passed + length - r.tail_length, r.tail, r.tail_length) == 0);
  CHECK(strncmp(passed, "line 1\nline 2\n", 14) == 0);
  CHECK(strstr(passed, "\nline 2999\nline 3000\n") ==
        passed + length - strlen("\nline 2999\nline 3000\n"));
  CHECK_NOTHING_LEFT();
}

static void fatal_error_line_that_scrolled_out_comes_first_in_the_tail(void) {
  BEGIN();
  int saved, from = stderr_to_pipe(&saved);
  CHECK(from >= 0);
  /* The runtime's message, then a backtrace longer than the tail. */
  result_t r =
      run_script("head -c 9 >/dev/null; echo 'x.swift:3: Fatal error: boom' >&2; i=1; "
                 "while [ $i -le 1000 ]; do echo \"frame $i\"; i=$((i+1)); done >&2; kill -ILL $$");
  stderr_back(saved);
  static char passed[65536];
  read_to_end(from, passed, sizeof passed);
  close(from);
  CHECK_EQ_INT(r.kind, PROCORD_OUTCOME_DISCONNECTED);
  CHECK_EQ_INT(r.signal, SIGILL);
  CHECK(r.tail_length <= PROCORD_STDERR_TAIL_MAX);
  CHECK(strncmp(r.tail, "x.swift:3: Fatal error: boom\n[...]\nframe ", 41) == 0);
  const char *last = "\nframe 999\nframe 1000\n";
  CHECK(r.tail_length > strlen(last));
  CHECK(strcmp(r.tail + r.tail_length - strlen(last), last) == 0);
  CHECK_NOTHING_LEFT();
}

/* ---- Waiting for the pipe's end ---- */

/* Starts a process that holds the worker's stderr for 30 s from a session
   of its own (the reap's kill of the worker's group misses it), and sets
   `pid` to it once it is there. Orphaned, it becomes our child (the tests
   make this program a subreaper), to be ended here. */
#define HOLDER "pid=$(setsid sh -c 'sleep 30 </dev/null >/dev/null & echo $!')"

static void crash_waits_for_the_pipe_end_only_a_little(void) {
  BEGIN();
  CHECK_EQ_INT(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
  result_t r =
      run_script("head -c 9 >/dev/null; " HOLDER "; echo \"holder $pid\" >&2; kill -SEGV $$");
  end_left_process(number_after(r.tail, "holder "));
  prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
  CHECK_EQ_INT(r.kind, PROCORD_OUTCOME_DISCONNECTED);
  CHECK_EQ_INT(r.signal, SIGSEGV);
  CHECK(number_after(r.tail, "holder ") > 0);
  CHECK(r.took_ms >= 100); /* it did wait for the end of the pipe */
  CHECK(r.took_ms < 5000);
  CHECK_NOTHING_LEFT();
}

/* The quickest of 5 runs of `script`, which answers with a pid it leaves
   (or 0), ended at once. */
static long long quickest_answer_ms(const char *script, int *all_values) {
  long long quickest = -1;
  *all_values = 1;
  for (int i = 0; i < 5; i++) {
    result_t r = run_script(script);
    end_left_process((pid_t)strtol(r.body, NULL, 10));
    if (r.kind != PROCORD_OUTCOME_VALUE || r.has_tail || r.tail_length) *all_values = 0;
    if (quickest < 0 || r.took_ms < quickest) quickest = r.took_ms;
  }
  return quickest;
}

static void answered_delegation_neither_has_a_tail_nor_waits_for_the_pipe_end(void) {
  BEGIN();
  CHECK_EQ_INT(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
  int saved, from = stderr_to_pipe(&saved);
  int plain_values = 0, held_values = 0;
  long long plain =
      quickest_answer_ms("head -c 9 >/dev/null; echo noise >&2; printf 1V0", &plain_values);
  /* The same, but something it leaves holds the pipe open. */
  long long held = quickest_answer_ms(
      "head -c 9 >/dev/null; echo noise >&2; " HOLDER "; printf %dV%s ${#pid} $pid", &held_values);
  stderr_back(saved);
  prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
  char passed[256];
  size_t length = from >= 0 ? read_to_end(from, passed, sizeof passed) : 0;
  if (from >= 0) close(from);
  CHECK(from >= 0);
  CHECK(plain_values && held_values);
  /* Waiting for the pipe's end would add 100 ms to every run. */
  CHECK(held < plain + 60);
  CHECK_BYTES(passed, length,
              "noise\nnoise\nnoise\nnoise\nnoise\nnoise\nnoise\nnoise\nnoise\nnoise\n");
  CHECK_NOTHING_LEFT();
}

/* ---- Passing on ---- */

static void stderr_is_passed_on_while_the_worker_runs(void) {
  BEGIN();
  int saved, from = stderr_to_pipe(&saved);
  const char *sh[] = {"sh", "-c", "echo early >&2; exec sleep 30", NULL};
  procord_delegation_options_t options = {
      .task_name = "fact",
      .worker = {.program = "/bin/sh", .arguments = sh, .stderr_fd = -1},
  };
  procord_delegation_t *delegation = NULL;
  int error = procord_delegate(loop, &options, &delegation);
  char passed[256];
  int came = error == 0 && from >= 0 && read_until(from, "early\n", passed, sizeof passed);
  if (!error) {
    procord_delegation_kill(delegation);
    procord_delegation_wait(loop, &delegation, 1, 1, -1);
    procord_delegation_release(delegation);
  }
  stderr_back(saved);
  if (from >= 0) close(from);
  CHECK_EQ_INT(error, 0);
  CHECK(came);
  CHECK_NOTHING_LEFT();
}

static void stderr_set_to_descriptor_2_is_not_piped(void) {
  BEGIN();
  const char *sh[] = {"sh", "-c", "head -c 9 >/dev/null; echo 'said directly' >&2; kill -SEGV $$",
                      NULL};
  int saved, from = stderr_to_pipe(&saved);
  procord_delegation_options_t options = {
      .task_name = "fact",
      .input = "5",
      .input_length = 1,
      .worker = {.program = "/bin/sh", .arguments = sh, .stderr_fd = STDERR_FILENO},
  };
  procord_delegation_t *delegation = NULL;
  int error = procord_delegate(loop, &options, &delegation);
  const procord_outcome_t *outcome = NULL;
  if (!error) {
    procord_delegation_wait(loop, &delegation, 1, 1, -1);
    outcome = procord_delegation_outcome(delegation);
  }
  stderr_back(saved);
  char passed[256];
  size_t length = from >= 0 ? read_to_end(from, passed, sizeof passed) : 0;
  if (from >= 0) close(from);
  int kind = outcome ? (int)outcome->kind : -1;
  int has_tail = outcome && outcome->stderr_tail;
  if (!error) procord_delegation_release(delegation);
  CHECK_EQ_INT(error, 0);
  CHECK_EQ_INT(kind, PROCORD_OUTCOME_DISCONNECTED);
  CHECK(!has_tail);
  CHECK_BYTES(passed, length, "said directly\n");
  CHECK_NOTHING_LEFT();
}

static void stuck_stderr_of_ours_does_not_stop_the_delegation(void) {
  BEGIN();
  int saved, from = stderr_to_pipe(&saved);
  CHECK(from >= 0);
  /* Our stderr is a pipe that is full and that nobody reads. */
  int size = fcntl(STDERR_FILENO, F_SETPIPE_SZ, 4096);
  static char filler[1 << 16];
  memset(filler, 'f', sizeof filler);
  ssize_t filled =
      size > 0 && (size_t)size <= sizeof filler ? write(STDERR_FILENO, filler, (size_t)size) : -1;
  /* 200 KB, far more than what waits for our stderr. A worker writing to
     our stderr itself would block: the wait is bounded, and our stderr put
     back before anything (the harness too) writes there. */
  result_t r =
      run_script_within("head -c 9 >/dev/null; i=1; while [ $i -le 20000 ]; do echo \"line $i\"; "
                        "i=$((i+1)); done >&2; kill -SEGV $$",
                        10000, saved);
  static char passed[1 << 17];
  size_t length = read_to_end(from, passed, sizeof passed);
  close(from);
  CHECK(size > 0);
  CHECK_EQ_INT(filled, size);
  CHECK_EQ_INT(r.kind, PROCORD_OUTCOME_DISCONNECTED);
  CHECK_EQ_INT(r.signal, SIGSEGV);
  const char *last = "\nline 19999\nline 20000\n";
  CHECK(r.tail_length > strlen(last));
  CHECK(strcmp(r.tail + r.tail_length - strlen(last), last) == 0);
  CHECK_EQ_INT(length, size); /* what was there: the rest was dropped */
  CHECK_NOTHING_LEFT();
}

/* ---- The worker side of this program (unused: the workers are scripts) ---- */

static const procord_worker_task_t worker_tasks[] = {{"double", fixture_task_double, NULL}};

int main(int argc, char **argv) {
  loop = fixture_start(argc, argv, worker_tasks, 1, self_path, sizeof self_path);
  if (!loop) return 1;

  RUN(crash_leaves_what_the_worker_wrote_to_stderr_in_the_outcome);
  RUN(exit_without_answer_leaves_the_tail_too);
  RUN(socket_arguments_on_the_stdio_channel_are_named_in_the_tail);
  RUN(worker_silent_on_stderr_leaves_no_tail);
  RUN(tail_is_the_last_4_kib_from_a_line_start_and_all_of_it_is_passed_on);
  RUN(fatal_error_line_that_scrolled_out_comes_first_in_the_tail);

  RUN(crash_waits_for_the_pipe_end_only_a_little);
  RUN(answered_delegation_neither_has_a_tail_nor_waits_for_the_pipe_end);

  RUN(stderr_is_passed_on_while_the_worker_runs);
  RUN(stderr_set_to_descriptor_2_is_not_piped);
  RUN(stuck_stderr_of_ours_does_not_stop_the_delegation);

  procord_loop_free(loop);
  return CHECK_SUMMARY();
}
