#define _GNU_SOURCE
/*
 * Tasks described once for both sides (procord/task.h), as a C user writes
 * them: a `divide` task whose input is a pair of numbers (written "A/B"),
 * whose output is a number and whose error is a text. This program is both
 * the main program and, started with --procord-worker, the worker.
 *
 * Every test ends by checking that no child process is left, no descriptor
 * is left open, and every value made was freed.
 */
#include "check.h"
#include "fixtures.h"
#include "procord/procord.h"

#include <stdlib.h>
#include <unistd.h>

static procord_loop_t *loop;
static char self_path[4096];
static const char *socket_arguments[] = {NULL, "--procord-worker", "--procord-socket-fd", "3",
                                         NULL};
static int live_values; /* made by a deserializer or the task, not yet freed */

typedef struct pair_s {
  long long dividend, divisor;
} pair_t;

/* ---- The task's serializers and body ---- */

static int write_text(const char *text, unsigned char **bytes, size_t *length) {
  *length = strlen(text);
  *bytes = malloc(*length + 1);
  if (!*bytes) return -ENOMEM;
  memcpy(*bytes, text, *length);
  return 0;
}

static int write_pair(const void *value, unsigned char **bytes, size_t *length, void *context) {
  (void)context;
  const pair_t *pair = value;
  if (pair->divisor == 999) return PROCORD_EBADVALUE; /* a value this serializer refuses */
  if (pair->divisor == 998) return 1;                 /* refused with no code: EBADVALUE too */
  char text[48];
  snprintf(text, sizeof text, "%lld/%lld", pair->dividend, pair->divisor);
  return write_text(text, bytes, length);
}

static int read_pair(const unsigned char *bytes, size_t length, void **value, void *context) {
  (void)context;
  char text[48];
  if (length >= sizeof text) return PROCORD_EBADVALUE;
  memcpy(text, bytes, length);
  text[length] = 0;
  pair_t *pair = malloc(sizeof *pair);
  if (!pair) return -ENOMEM;
  if (sscanf(text, "%lld/%lld", &pair->dividend, &pair->divisor) != 2) {
    free(pair);
    return PROCORD_EBADVALUE;
  }
  live_values++;
  *value = pair;
  return 0;
}

static int write_number(const void *value, unsigned char **bytes, size_t *length, void *context) {
  (void)context;
  char text[24];
  snprintf(text, sizeof text, "%lld", *(const long long *)value);
  return write_text(text, bytes, length);
}

static int read_number(const unsigned char *bytes, size_t length, void **value, void *context) {
  (void)context;
  char text[24];
  if (length == 0 || length >= sizeof text) return PROCORD_EBADVALUE;
  memcpy(text, bytes, length);
  text[length] = 0;
  long long *number = malloc(sizeof *number);
  if (!number) return -ENOMEM;
  *number = strtoll(text, NULL, 10);
  live_values++;
  *value = number;
  return 0;
}

static int write_error_text(const void *value, unsigned char **bytes, size_t *length,
                            void *context) {
  (void)context;
  return write_text(value, bytes, length);
}

static int read_error_text(const unsigned char *bytes, size_t length, void **value, void *context) {
  (void)context;
  char *text = malloc(length + 1);
  if (!text) return -ENOMEM;
  memcpy(text, bytes, length);
  text[length] = 0;
  live_values++;
  *value = text;
  return 0;
}

static void free_value(void *value, void *context) {
  (void)context;
  live_values--;
  free(value);
}

static int divide(const void *input, void **result, void *context) {
  (void)context;
  const pair_t *pair = input;
  if (pair->divisor == 0) {
    *result = strdup("division by zero");
    live_values++;
    return PROCORD_TASK_RAISED;
  }
  if (pair->divisor == 7) return -ENOTSUP; /* a failure with no value */
  if (pair->divisor == 500) usleep(300 * 1000);
  long long *quotient = malloc(sizeof *quotient);
  *quotient = pair->dividend / pair->divisor;
  live_values++;
  *result = quotient;
  return PROCORD_TASK_RETURNED;
}

static const procord_task_t divide_task = {
    .name = "divide",
    .write_input = write_pair,
    .read_input = read_pair,
    .write_output = write_number,
    .read_output = read_number,
    .write_error = write_error_text,
    .read_error = read_error_text,
    .free_value = free_value,
    .run = divide,
};

/* The same task without error serializers: a raised error travels as `U`. */
static const procord_task_t divide_without_errors = {
    .name = "divide-without-errors",
    .write_input = write_pair,
    .read_input = read_pair,
    .write_output = write_number,
    .read_output = read_number,
    .free_value = free_value,
    .run = divide,
};

/* ---- Helpers ---- */

static procord_delegation_options_t self_options(void) {
  procord_delegation_options_t options;
  procord_delegation_options_init(&options);
  options.worker.program = self_path;
  options.worker.arguments = socket_arguments;
  options.worker.channel = PROCORD_CHANNEL_SOCKET;
  options.worker.stderr_fd = -1;
  return options;
}

static procord_delegation_t *divide_by(const procord_task_t *task, long long a, long long b) {
  pair_t pair = {a, b};
  procord_delegation_options_t options = self_options();
  procord_delegation_t *delegation = NULL;
  return procord_delegate_task(loop, task, &pair, &options, &delegation) == 0 ? delegation : NULL;
}

#define END_TEST()                                                                                 \
  do {                                                                                             \
    CHECK_NOTHING_LEFT();                                                                          \
    CHECK_EQ_INT(live_values, 0);                                                                  \
  } while (0)

/* ---- Tests ---- */

static void output_comes_back_as_a_value(void) {
  BEGIN();
  procord_delegation_t *d = divide_by(&divide_task, 84, 2);
  CHECK(d);
  procord_delegation_wait(loop, &d, 1, 1, 10000);
  void *value = NULL;
  int result = procord_task_result(&divide_task, d, &value);
  long long quotient = value ? *(long long *)value : -1;
  procord_task_free_value(&divide_task, value);
  procord_delegation_release(d);
  CHECK_EQ_INT(result, PROCORD_TASK_RETURNED);
  CHECK_EQ_INT(quotient, 42);
  END_TEST();
}

static void raised_error_comes_back_as_an_error_value(void) {
  BEGIN();
  procord_delegation_t *d = divide_by(&divide_task, 1, 0);
  CHECK(d);
  procord_delegation_wait(loop, &d, 1, 1, 10000);
  void *value = NULL;
  int result = procord_task_result(&divide_task, d, &value);
  int right = value && strcmp(value, "division by zero") == 0;
  procord_task_free_value(&divide_task, value);
  procord_delegation_release(d);
  CHECK_EQ_INT(result, PROCORD_TASK_RAISED);
  CHECK(right);
  END_TEST();
}

static void raised_error_without_serializers_is_an_unknown_exception(void) {
  BEGIN();
  procord_delegation_t *d = divide_by(&divide_without_errors, 1, 0);
  CHECK(d);
  procord_delegation_wait(loop, &d, 1, 1, 10000);
  const procord_outcome_t *outcome = procord_delegation_outcome(d);
  CHECK(outcome);
  int kind = outcome->kind;
  int text = outcome->length == strlen("the task raised an error") &&
             memcmp(outcome->body, "the task raised an error", outcome->length) == 0;
  void *value = NULL;
  int result = procord_task_result(&divide_without_errors, d, &value);
  procord_delegation_release(d);
  CHECK_EQ_INT(kind, PROCORD_OUTCOME_UNKNOWN_EXCEPTION);
  CHECK(text);
  CHECK_EQ_INT(result, PROCORD_ENOVALUE);
  CHECK(value == NULL);
  END_TEST();
}

static void failure_without_a_value_is_an_unknown_exception_naming_the_error(void) {
  BEGIN();
  procord_delegation_t *d = divide_by(&divide_task, 1, 7);
  CHECK(d);
  procord_delegation_wait(loop, &d, 1, 1, 10000);
  const procord_outcome_t *outcome = procord_delegation_outcome(d);
  CHECK(outcome);
  const char *expected = procord_strerror(-ENOTSUP);
  int right = outcome->kind == PROCORD_OUTCOME_UNKNOWN_EXCEPTION &&
              outcome->length == strlen(expected) &&
              memcmp(outcome->body, expected, outcome->length) == 0;
  procord_delegation_release(d);
  CHECK(right);
  END_TEST();
}

static void input_the_worker_cannot_read_is_an_unknown_exception(void) {
  BEGIN();
  procord_delegation_options_t options = self_options();
  options.task_name = "divide";
  options.input = "not a pair";
  options.input_length = strlen("not a pair");
  procord_delegation_t *d = NULL;
  CHECK_EQ_INT(procord_delegate(loop, &options, &d), 0);
  procord_delegation_wait(loop, &d, 1, 1, 10000);
  const procord_outcome_t *outcome = procord_delegation_outcome(d);
  CHECK(outcome);
  const char *expected = "the task's input could not be read";
  int right = outcome->kind == PROCORD_OUTCOME_UNKNOWN_EXCEPTION &&
              outcome->length == strlen(expected) &&
              memcmp(outcome->body, expected, outcome->length) == 0;
  procord_delegation_release(d);
  CHECK(right);
  END_TEST();
}

static void input_the_serializer_refuses_starts_nothing(void) {
  BEGIN();
  pair_t pair = {1, 999};
  procord_delegation_options_t options = self_options();
  procord_delegation_t *d = NULL;
  CHECK_EQ_INT(procord_delegate_task(loop, &divide_task, &pair, &options, &d), PROCORD_EBADVALUE);
  CHECK(d == NULL);
  END_TEST();
}

/* A serializer that fails with a positive number, not an error code: the
   call returns PROCORD_EBADVALUE (a value that would not serialize), not a
   code that means something else. */
static void input_the_serializer_refuses_without_a_code_is_ebadvalue(void) {
  BEGIN();
  pair_t pair = {1, 998};
  procord_delegation_options_t options = self_options();
  procord_delegation_t *d = NULL;
  CHECK_EQ_INT(procord_delegate_task(loop, &divide_task, &pair, &options, &d), PROCORD_EBADVALUE);
  CHECK(d == NULL);
  END_TEST();
}

static void result_before_the_end_is_eagain(void) {
  BEGIN();
  procord_delegation_t *d = divide_by(&divide_task, 10, 500); /* the task takes 300 ms */
  CHECK(d);
  void *value = NULL;
  int early = procord_task_result(&divide_task, d, &value);
  procord_delegation_wait(loop, &d, 1, 1, 10000);
  int late = procord_task_result(&divide_task, d, &value);
  procord_task_free_value(&divide_task, value);
  procord_delegation_release(d);
  CHECK_EQ_INT(early, -EAGAIN);
  CHECK_EQ_INT(late, PROCORD_TASK_RETURNED);
  END_TEST();
}

static void described_task_runs_through_a_pool(void) {
  BEGIN();
  procord_pool_source_t source = {.worker = self_options().worker};
  procord_pool_options_t pool_options = {.sources = &source, .source_count = 1, .max_workers = 2};
  procord_pool_t *pool = NULL;
  CHECK_EQ_INT(procord_pool_new(loop, &pool_options, &pool), 0);
  enum { COUNT = 20 };
  procord_delegation_t *tasks[COUNT];
  for (int i = 0; i < COUNT; i++) {
    pair_t pair = {10 * i, 5};
    CHECK_EQ_INT(procord_pool_delegate_task(pool, &divide_task, &pair, NULL, &tasks[i]), 0);
  }
  procord_delegation_wait(loop, tasks, COUNT, 1, 10000);
  int right = 0;
  for (int i = 0; i < COUNT; i++) {
    void *value = NULL;
    right += procord_task_result(&divide_task, tasks[i], &value) == PROCORD_TASK_RETURNED &&
             value && *(long long *)value == 2 * i;
    procord_task_free_value(&divide_task, value);
    procord_delegation_release(tasks[i]);
  }
  procord_pool_stats_t stats;
  procord_pool_stats(pool, &stats);
  procord_pool_shutdown(pool, 0);
  procord_pool_wait(pool, -1);
  procord_pool_release(pool);
  CHECK_EQ_INT(right, COUNT);
  CHECK_EQ_INT(stats.tasks_finished, COUNT);                       /* through the pool, */
  CHECK(stats.workers_started >= 1 && stats.workers_started <= 2); /* its workers reused */
  END_TEST();
}

/* The worker half, run here: every value it makes is freed. */
static int worker_half_answers(const char *input, unsigned char kind, const char *body) {
  procord_worker_task_t served_task = procord_task_worker(&divide_task);
  procord_reply_t reply = {0};
  served_task.run(served_task.context, (const unsigned char *)input, strlen(input), &reply);
  int right = reply.kind == kind && reply.length == strlen(body) &&
              memcmp(reply.body, body, reply.length) == 0;
  free(reply.body);
  return right;
}

static void worker_half_frees_every_value_it_makes(void) {
  CHECK(worker_half_answers("84/2", PROCORD_FRAME_VALUE, "42"));
  CHECK(worker_half_answers("1/0", PROCORD_FRAME_EXCEPTION, "division by zero"));
  CHECK(worker_half_answers("1/7", PROCORD_FRAME_UNKNOWN_EXCEPTION, procord_strerror(-ENOTSUP)));
  CHECK(worker_half_answers("garbage", PROCORD_FRAME_UNKNOWN_EXCEPTION,
                            "the task's input could not be read"));
  CHECK_EQ_INT(live_values, 0);
}

static int unreadable(const unsigned char *bytes, size_t length, void **value, void *context) {
  (void)bytes;
  (void)length;
  (void)value;
  (void)context;
  return -EPROTO; /* an error of the reader's own */
}

static int unreadable_without_a_code(const unsigned char *bytes, size_t length, void **value,
                                     void *context) {
  (void)bytes;
  (void)length;
  (void)value;
  (void)context;
  return 1;
}

static void output_the_main_program_cannot_read_is_the_readers_error(void) {
  BEGIN();
  procord_delegation_t *d = divide_by(&divide_task, 9, 3);
  CHECK(d);
  procord_delegation_wait(loop, &d, 1, 1, 10000);
  procord_task_t reader = divide_task;
  reader.read_output = unreadable;
  void *value = (void *)1;
  int result = procord_task_result(&reader, d, &value);
  procord_delegation_release(d);
  CHECK_EQ_INT(result, -EPROTO);
  CHECK(value == NULL);
  END_TEST();
}

/* A reader that fails with a positive number: PROCORD_EBADVALUE (bytes that
   are not a valid value), not a protocol error. */
static void output_the_reader_refuses_without_a_code_is_ebadvalue(void) {
  BEGIN();
  procord_delegation_t *d = divide_by(&divide_task, 9, 3);
  CHECK(d);
  procord_delegation_wait(loop, &d, 1, 1, 10000);
  procord_task_t reader = divide_task;
  reader.read_output = unreadable_without_a_code;
  void *value = (void *)1;
  int result = procord_task_result(&reader, d, &value);
  procord_delegation_release(d);
  CHECK_EQ_INT(result, PROCORD_EBADVALUE);
  CHECK(value == NULL);
  END_TEST();
}

static const procord_task_t *const served[] = {&divide_task, &divide_without_errors};

int main(int argc, char **argv) {
  procord_worker_task_t tasks[2];
  for (int i = 0; i < 2; i++) tasks[i] = procord_task_worker(served[i]);
  loop = fixture_start(argc, argv, tasks, 2, self_path, sizeof self_path);
  if (!loop) return 1;
  socket_arguments[0] = self_path;

  RUN(output_comes_back_as_a_value);
  RUN(raised_error_comes_back_as_an_error_value);
  RUN(raised_error_without_serializers_is_an_unknown_exception);
  RUN(failure_without_a_value_is_an_unknown_exception_naming_the_error);
  RUN(input_the_worker_cannot_read_is_an_unknown_exception);
  RUN(input_the_serializer_refuses_starts_nothing);
  RUN(input_the_serializer_refuses_without_a_code_is_ebadvalue);
  RUN(result_before_the_end_is_eagain);
  RUN(described_task_runs_through_a_pool);
  RUN(worker_half_frees_every_value_it_makes);
  RUN(output_the_main_program_cannot_read_is_the_readers_error);
  RUN(output_the_reader_refuses_without_a_code_is_ebadvalue);

  procord_loop_free(loop);
  return CHECK_SUMMARY();
}
