#define _GNU_SOURCE
/*
 * Chains of delegations (PROCORD_LINEAGE, set by procord_spawn): a program
 * started as a worker that delegates before serving is refused at once
 * instead of starting copies of itself without end, and recursion stops at
 * PROCORD_MAX_DELEGATION_DEPTH with an error that says so.
 *
 * Also: a worker started through /proc/self/exe goes by its program's name,
 * and PROCORD_SELF_EXECUTABLE can name another program to start instead.
 *
 * This program is its own worker (the `nest` task) and, with the argument
 * `delegate-before-serving`, the program that forgot its worker entry point.
 */
#include "check.h"
#include "fixtures.h"
#include "procord/delegation.h"
#include "procord/error.h"
#include "procord/loop.h"
#include "procord/worker.h"

#include <fcntl.h>
#include <poll.h>

static procord_loop_t *loop;
static char self_path[4096];

/* How deep this process is, from its environment. */
static int own_depth(void) {
  const char *lineage = getenv("PROCORD_LINEAGE");
  return lineage ? atoi(lineage) : 0;
}

/* Delegates `task` with `input` to this program started with `arguments`
   (NULL: the worker options), waits, and returns the outcome's copy. */
static procord_outcome_t delegate_to_self_as(const char *task, const char *input,
                                             const char *const *arguments, int stderr_fd,
                                             int main_program, char *body, size_t size);

static procord_outcome_t delegate_to_self(const char *task, const char *input,
                                          const char *const *arguments, int stderr_fd, char *body,
                                          size_t size) {
  return delegate_to_self_as(task, input, arguments, stderr_fd, 0, body, size);
}

/* The same, the child started as a program of its own when `main_program`. */
static procord_outcome_t delegate_to_self_as(const char *task, const char *input,
                                             const char *const *arguments, int stderr_fd,
                                             int main_program, char *body, size_t size) {
  const char *worker_arguments[] = {self_path, "--procord-worker", "--procord-socket-fd", "3",
                                    NULL};
  procord_delegation_options_t options = {
      .task_name = task,
      .input = input,
      .input_length = strlen(input),
      .worker = {.program = self_path,
                 .arguments = arguments ? arguments : worker_arguments,
                 .channel = PROCORD_CHANNEL_SOCKET,
                 .stderr_fd = stderr_fd,
                 .main_program = main_program},
  };
  procord_outcome_t copy = {.kind = PROCORD_OUTCOME_DISCONNECTED, .exit_code = -1};
  body[0] = 0;
  procord_delegation_t *d = NULL;
  if (procord_delegate(loop, &options, &d) != 0) return copy;
  if (procord_delegation_wait(loop, &d, 1, 1, 20000) == 1) {
    copy = *procord_delegation_outcome(d);
    size_t length = copy.length < size - 1 ? copy.length : size - 1;
    if (length) memcpy(body, copy.body, length);
    body[length] = 0;
    copy.body = NULL;
  } else {
    procord_delegation_kill(d);
    procord_delegation_wait(loop, &d, 1, 1, -1);
  }
  procord_delegation_release(d);
  return copy;
}

/* ---- The worker side ---- */

/* `nest N`: delegates `nest N-1` to a new worker; at 0 answers where it is. */
static void task_nest(void *context, const unsigned char *input, size_t length,
                      procord_reply_t *reply) {
  (void)context;
  long long levels = fixture_input_number(input, length);
  char text[1024];
  if (levels <= 0) {
    snprintf(text, sizeof text, "bottom at depth %d", own_depth());
    fixture_reply_text(reply, PROCORD_FRAME_VALUE, text);
    return;
  }
  /* A worker has no loop of its own, nor its path, until its task delegates. */
  if (!self_path[0] && readlink("/proc/self/exe", self_path, sizeof self_path - 1) <= 0)
    self_path[0] = 0;
  if (!loop && (procord_loop_new(&loop) != 0 || procord_loop_start_thread(loop) != 0)) {
    fixture_reply_text(reply, PROCORD_FRAME_EXCEPTION, "cannot start a loop");
    return;
  }
  char next[32], body[1024];
  snprintf(next, sizeof next, "%lld", levels - 1);
  procord_outcome_t o = delegate_to_self("nest", next, NULL, -1, body, sizeof body);
  if (o.kind == PROCORD_OUTCOME_VALUE) {
    fixture_reply_text(reply, PROCORD_FRAME_VALUE, body);
  } else if (o.kind == PROCORD_OUTCOME_EXCEPTION) {
    fixture_reply_text(reply, PROCORD_FRAME_EXCEPTION, body); /* from deeper down, as it is */
  } else {
    snprintf(text, sizeof text, "%s at depth %d: %s", procord_err_name(o.error), own_depth(),
             o.detail ? o.detail : "");
    fixture_reply_text(reply, PROCORD_FRAME_EXCEPTION, text);
  }
}

/* `comm`: this process's name, as ps and pgrep see it. */
static void task_comm(void *context, const unsigned char *input, size_t length,
                      procord_reply_t *reply) {
  (void)context, (void)input, (void)length;
  char name[64] = "?";
  FILE *file = fopen("/proc/self/comm", "re");
  if (file && fgets(name, sizeof name, file)) name[strcspn(name, "\n")] = 0;
  if (file) fclose(file);
  fixture_reply_text(reply, PROCORD_FRAME_VALUE, name);
}

static const procord_worker_task_t worker_tasks[] = {
    {"nest", task_nest, NULL}, {"double", fixture_task_double, NULL}, {"comm", task_comm, NULL}};

/*
 * A program that forgot its worker entry point: it delegates to itself,
 * started the same way, as its main does. Says on stderr what became of its
 * delegation; exits 3 when it was refused. The generation count only keeps a
 * broken build's cascade short (it stops at the third).
 */
static int delegate_before_serving(void) {
  const char *generation = getenv("PROCORD_TEST_GENERATION");
  int n = generation ? atoi(generation) : 0;
  if (n >= 3) {
    fprintf(stderr, "generation %d: stopped by the test's own bound\n", n);
    return 9;
  }
  char next[16];
  snprintf(next, sizeof next, "%d", n + 1);
  setenv("PROCORD_TEST_GENERATION", next, 1);
  const char *arguments[] = {self_path, "delegate-before-serving", NULL};
  char body[256];
  procord_outcome_t o = delegate_to_self("double", "4", arguments, -1, body, sizeof body);
  int refused = o.kind == PROCORD_OUTCOME_DISCONNECTED && o.error == PROCORD_ENOTSERVING;
  fprintf(stderr, "%s %s: %s\n", refused ? "refused" : "delegated", procord_err_name(o.error),
          o.detail ? o.detail : "(no detail)");
  return refused ? 3 : 4;
}

/* ---- Tests ---- */

/*
 * Its own delegation is refused (no second generation), and its main program
 * hears why from it, as a `U` answer, rather than an end without one.
 */
static void program_started_as_a_worker_that_delegates_before_serving_is_refused_at_once(void) {
  BEGIN();
  int err[2];
  CHECK_EQ_INT(pipe2(err, O_CLOEXEC), 0);
  const char *arguments[] = {self_path, "delegate-before-serving", NULL};
  char body[2048], said[2048] = "";
  procord_outcome_t o = delegate_to_self("double", "4", arguments, err[1], body, sizeof body);
  close(err[1]);
  ssize_t n = read(err[0], said, sizeof said - 1);
  said[n > 0 ? n : 0] = 0;
  close(err[0]);
  if (!strstr(said, "refused")) fprintf(stderr, "    the worker said: %s", said);
  CHECK_EQ_INT(o.kind, PROCORD_OUTCOME_UNKNOWN_EXCEPTION);
  CHECK(
      strstr(body, "worker (pid ") &&
      strstr(body, "): this process was started as a Procord worker and delegates before serving"));
  CHECK(strstr(body, "Worker.runIfRequested(tasks:)") && strstr(body, "procord_worker_main"));
  CHECK_EQ_INT(o.exit_code, 3); /* it saw its delegation refused */
  CHECK(strstr(said, "refused PROCORD_ENOTSERVING: this process was started as a Procord worker"));
  CHECK_NOTHING_LEFT();
}

/* Started as a program of its own (main_program), it may delegate at once;
   the worker it starts (this same program, which forgot to serve) may not. */
static void program_started_as_a_main_program_may_delegate_at_once(void) {
  BEGIN();
  int err[2];
  CHECK_EQ_INT(pipe2(err, O_CLOEXEC), 0);
  const char *arguments[] = {self_path, "delegate-before-serving", NULL};
  char body[256], said[4096] = "";
  procord_outcome_t o = delegate_to_self_as("double", "4", arguments, err[1], 1, body, sizeof body);
  close(err[1]);
  ssize_t n = read(err[0], said, sizeof said - 1);
  said[n > 0 ? n : 0] = 0;
  close(err[0]);
  const char *refused = strstr(said, "refused PROCORD_ENOTSERVING");
  CHECK_EQ_INT(o.exit_code, 4); /* its delegation went ahead */
  CHECK(refused);               /* its worker's was refused */
  CHECK(!strstr(refused + 1, "refused"));
  CHECK_NOTHING_LEFT();
}

/* A worker started through a shell that does not exec it has the shell as
   its parent: it dies with the shell, not at once for want of its main
   program, and serves. */
static int serves_behind_a_shell(procord_protocol_channel_t channel) {
  const char *socket_script = "\"$0\" --procord-worker --procord-socket-fd 3; true";
  const char *stdio_script = "\"$0\" --procord-worker; true";
  const char *arguments[] = {"sh", "-c",
                             channel == PROCORD_CHANNEL_SOCKET ? socket_script : stdio_script,
                             self_path, NULL};
  procord_delegation_options_t options = {
      .task_name = "double",
      .input = "21",
      .input_length = 2,
      .worker = {.program = "/bin/sh", .arguments = arguments, .channel = channel},
  };
  procord_delegation_t *d = NULL;
  if (procord_delegate(loop, &options, &d) != 0) return 0;
  int answered = 0;
  if (procord_delegation_wait(loop, &d, 1, 1, 10000) == 1) {
    const procord_outcome_t *o = procord_delegation_outcome(d);
    answered = o->kind == PROCORD_OUTCOME_VALUE && o->length == 2 && memcmp(o->body, "42", 2) == 0;
    if (!answered) fprintf(stderr, "    kind %d, %s\n", o->kind, procord_err_name(o->error));
  }
  procord_delegation_release(d);
  return answered;
}

static void stdio_worker_behind_a_shell_that_does_not_exec_it_serves(void) {
  BEGIN();
  CHECK(serves_behind_a_shell(PROCORD_CHANNEL_STDIO));
  CHECK_NOTHING_LEFT();
}

static void socket_worker_behind_a_shell_that_does_not_exec_it_serves(void) {
  BEGIN();
  CHECK(serves_behind_a_shell(PROCORD_CHANNEL_SOCKET));
  CHECK_NOTHING_LEFT();
}

/* Started through /proc/self/exe, a worker still goes by its program's name. */
static void worker_started_through_proc_self_exe_is_named_for_its_program(void) {
  BEGIN();
  const char *arguments[] = {"/opt/somewhere/named-worker", "--procord-worker",
                             "--procord-socket-fd", "3", NULL};
  procord_delegation_options_t options = {
      .task_name = "comm",
      .input = "",
      .worker = {.program = "/proc/self/exe",
                 .arguments = arguments,
                 .channel = PROCORD_CHANNEL_SOCKET},
  };
  procord_delegation_t *d = NULL;
  CHECK_EQ_INT(procord_delegate(loop, &options, &d), 0);
  char name[64] = "";
  if (procord_delegation_wait(loop, &d, 1, 1, 10000) == 1) {
    const procord_outcome_t *o = procord_delegation_outcome(d);
    if (o->kind == PROCORD_OUTCOME_VALUE && o->length < sizeof name)
      memcpy(name, o->body, o->length);
  }
  procord_delegation_release(d);
  CHECK(strcmp(name, "named-worker") == 0);
  CHECK_NOTHING_LEFT();
}

/* Under valgrind /proc/self/exe is valgrind: PROCORD_SELF_EXECUTABLE names
   the program to start instead. Started as this program's worker, with the
   `comm` task, through /proc/self/exe and the override (if not NULL). */
static procord_outcome_t start_self_with_override(const char *override) {
  if (override) setenv("PROCORD_SELF_EXECUTABLE", override, 1);
  const char *arguments[] = {"worker", "--procord-worker", "--procord-socket-fd", "3", NULL};
  procord_delegation_options_t options = {
      .task_name = "comm",
      .input = "",
      .worker = {.program = "/proc/self/exe",
                 .arguments = arguments,
                 .channel = PROCORD_CHANNEL_SOCKET},
  };
  procord_outcome_t copy = {.kind = PROCORD_OUTCOME_KILLED, .exit_code = -1};
  procord_delegation_t *d = NULL;
  if (procord_delegate(loop, &options, &d) == 0 &&
      procord_delegation_wait(loop, &d, 1, 1, 10000) == 1)
    copy = *procord_delegation_outcome(d);
  copy.body = NULL;
  if (d) procord_delegation_release(d);
  unsetenv("PROCORD_SELF_EXECUTABLE");
  return copy;
}

static void self_executable_override_names_the_program_started_for_proc_self_exe(void) {
  BEGIN();
  /* A shell refuses --procord-worker: it ran, not this program. */
  procord_outcome_t o = start_self_with_override("/bin/sh");
  CHECK_EQ_INT(o.kind, PROCORD_OUTCOME_DISCONNECTED);
  CHECK(o.exit_code > 0);
  /* Empty is unset: /proc/self/exe, this program, which serves `comm`. */
  o = start_self_with_override("");
  CHECK_EQ_INT(o.kind, PROCORD_OUTCOME_VALUE);
  CHECK_NOTHING_LEFT();
}

static void recursion_within_the_maximum_depth_reaches_the_bottom(void) {
  BEGIN();
  setenv("PROCORD_MAX_DELEGATION_DEPTH", "3", 1);
  char body[1024];
  procord_outcome_t o = delegate_to_self("nest", "2", NULL, -1, body, sizeof body);
  unsetenv("PROCORD_MAX_DELEGATION_DEPTH");
  CHECK_EQ_INT(o.kind, PROCORD_OUTCOME_VALUE);
  CHECK(strcmp(body, "bottom at depth 3") == 0);
  CHECK_NOTHING_LEFT();
}

/*
 * Delegates `nest levels` under PROCORD_MAX_DELEGATION_DEPTH=`maximum`
 * (NULL: unset) and checks it was refused at `depth`. Few enough levels that
 * a build without the bound ends too (at the bottom, which fails the check).
 */
static int refused_at_depth(const char *levels, const char *maximum, int depth) {
  if (maximum) setenv("PROCORD_MAX_DELEGATION_DEPTH", maximum, 1);
  char body[1024], expected[64];
  procord_outcome_t o = delegate_to_self("nest", levels, NULL, -1, body, sizeof body);
  unsetenv("PROCORD_MAX_DELEGATION_DEPTH");
  snprintf(expected, sizeof expected, "PROCORD_ENESTED at depth %d: ", depth);
  const char *found = strstr(body, expected);
  int refused =
      o.kind == PROCORD_OUTCOME_EXCEPTION && found &&
      strstr(found, "the worker would be more delegations deep than PROCORD_MAX_DELEGATION_DEPTH");
  if (!refused) fprintf(stderr, "    kind %d, the answer: %s\n", o.kind, body);
  return refused;
}

static void recursion_past_the_maximum_depth_stops_with_enested(void) {
  BEGIN();
  CHECK(refused_at_depth("8", "3", 3));
  CHECK_NOTHING_LEFT();
}

/* 16 deep by default; a maximum that is not a positive number keeps it. */
static void recursion_stops_at_the_default_depth_of_16(void) {
  BEGIN();
  CHECK(refused_at_depth("20", "0", 16));
  CHECK_NOTHING_LEFT();
}

int main(int argc, char **argv) {
  loop = fixture_start(argc, argv, worker_tasks, sizeof worker_tasks / sizeof *worker_tasks,
                       self_path, sizeof self_path);
  if (!loop) return 1;
  if (argc == 2 && strcmp(argv[1], "delegate-before-serving") == 0)
    return delegate_before_serving();
  RUN(program_started_as_a_worker_that_delegates_before_serving_is_refused_at_once);
  RUN(program_started_as_a_main_program_may_delegate_at_once);
  RUN(stdio_worker_behind_a_shell_that_does_not_exec_it_serves);
  RUN(socket_worker_behind_a_shell_that_does_not_exec_it_serves);
  RUN(worker_started_through_proc_self_exe_is_named_for_its_program);
  RUN(self_executable_override_names_the_program_started_for_proc_self_exe);
  RUN(recursion_within_the_maximum_depth_reaches_the_bottom);
  RUN(recursion_past_the_maximum_depth_stops_with_enested);
  RUN(recursion_stops_at_the_default_depth_of_16);
  procord_loop_free(loop);
  return CHECK_SUMMARY();
}
