#define _GNU_SOURCE
/*
 * A program's own allocator for the C core (procord/memory.h).
 *
 * main sets a counting allocator before anything else (the worker side of
 * this program included): every block it gives carries a mark in front, so
 * that a block of the core given to free(), or one of libc's given to the
 * allocator, ends in a crash instead of passing unseen. The tests count the
 * blocks still held after a delegation's whole life and check that the
 * setting is refused once the core has allocated.
 *
 * Started with PROCORD_TEST_FAIL_AT=N in its environment, this program is
 * instead one run of the fault injection (see failing_run): its allocator
 * fails the Nth allocation, and the run says whether everything still ended
 * as it should. Started as a worker with PROCORD_TEST_WORKER_FAIL_AT=N, the
 * worker's allocator fails its Nth allocation.
 */
#include "check.h"
#include "fixtures.h"
#include "io/io_private.h" /* procord_loop_queue: a call that allocates nothing */

#include <sys/eventfd.h>
#include "procord/procord.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define FAIL_AT_VARIABLE "PROCORD_TEST_FAIL_AT"
#define WORKER_FAIL_AT_VARIABLE "PROCORD_TEST_WORKER_FAIL_AT"

extern char **environ;

static procord_loop_t *loop;
static char self_path[4096];

/* ---- The counting allocator ---- */

/* Every block starts with this, one alignment unit long. */
#define MARK 0x70726f636f7264ULL
typedef union {
  unsigned long long mark;
  max_align_t alignment;
} header_t;

typedef struct {
  long live;          /* blocks given and not yet back */
  long allocations;   /* calls to allocate and reallocate */
  long reallocations; /* calls to reallocate */
  long zero_sizes;    /* calls that asked for 0 bytes (the header says never) */
  long fail_at;       /* the allocation (1 is the first) that fails; 0: none */
} counts_t;

static counts_t counts;

static long count_of(const long *counter) { return __atomic_load_n(counter, __ATOMIC_SEQ_CST); }
static long add(long *counter, long n) { return __atomic_add_fetch(counter, n, __ATOMIC_SEQ_CST); }

/* One more allocation; false when it is the one to fail. */
static int may_allocate(counts_t *c, size_t size) {
  if (size == 0) add(&c->zero_sizes, 1);
  return add(&c->allocations, 1) != __atomic_load_n(&c->fail_at, __ATOMIC_SEQ_CST);
}

static header_t *header_of(void *pointer) {
  header_t *header = (header_t *)pointer - 1;
  if (header->mark != MARK) abort(); /* not one of ours: a boundary crossed the wrong way */
  return header;
}

static void *count_allocate(size_t size, void *context) {
  counts_t *c = context;
  if (!may_allocate(c, size)) return NULL;
  header_t *header = malloc(sizeof *header + size);
  if (!header) return NULL;
  header->mark = MARK;
  add(&c->live, 1);
  return header + 1;
}

static void *count_reallocate(void *pointer, size_t size, void *context) {
  counts_t *c = context;
  add(&c->reallocations, 1);
  header_t *header = header_of(pointer);
  if (!may_allocate(c, size)) return NULL;
  header_t *moved = realloc(header, sizeof *header + size);
  return moved ? moved + 1 : NULL;
}

static void count_free(void *pointer, void *context) {
  counts_t *c = context;
  header_t *header = header_of(pointer);
  header->mark = 0;
  add(&c->live, -1);
  free(header);
}

static procord_allocator_t counting_allocator(counts_t *c) {
  procord_allocator_t allocator;
  procord_allocator_init(&allocator);
  allocator.allocate = count_allocate;
  allocator.reallocate = count_reallocate;
  allocator.free = count_free;
  allocator.context = c;
  return allocator;
}

/* What procord_set_allocator answered at the start of main. */
static int set_incomplete_first, set_at_start;

/* ---- One delegation's whole life, and a pool's ---- */

static const char *const stdio_worker[] = {self_path, "--procord-worker", NULL};
static const char *const socket_worker[] = {self_path, "--procord-worker", "--procord-socket-fd",
                                            "3", NULL};

static procord_delegation_options_t doubling_of(const char *input) {
  procord_delegation_options_t options;
  procord_delegation_options_init(&options);
  options.task_name = "double";
  options.input = input;
  options.input_length = strlen(input);
  options.worker.program = self_path;
  options.worker.arguments = stdio_worker;
  return options;
}

/* How one step of the life ended. */
typedef enum {
  STEP_DONE,
  STEP_ENOMEM,         /* a call returned -ENOMEM */
  STEP_ENOMEM_OUTCOME, /* the delegation's outcome said -ENOMEM */
  STEP_WRONG,
} step_t;

static const char *step_name(step_t step) {
  static const char *const names[] = {"done", "ENOMEM", "outcome-ENOMEM", "WRONG"};
  return names[step];
}

/* A call's result: 0 done, -ENOMEM a refusal out of memory, anything else wrong. */
static step_t step_of(int error) {
  return error == 0 ? STEP_DONE : error == -ENOMEM ? STEP_ENOMEM : STEP_WRONG;
}

/* A finished delegation: `expected` (an outcome kind), or one out of memory. */
static step_t outcome_step(procord_loop_t *on, procord_delegation_t *d,
                           procord_outcome_kind_t expected) {
  if (procord_delegation_wait(on, &d, 1, 1, 20000) != 1) return STEP_WRONG;
  const procord_outcome_t *o = procord_delegation_outcome(d);
  if (o->kind == expected && expected != PROCORD_OUTCOME_VALUE) return STEP_DONE;
  if (o->kind == expected)
    return o->length == 2 && memcmp(o->body, "42", 2) == 0 ? STEP_DONE : STEP_WRONG;
  if (o->error == -ENOMEM) return STEP_ENOMEM_OUTCOME;
  fprintf(stderr, "    outcome %d, error %d (%s), call %s\n", (int)o->kind, o->error,
          procord_strerror(o->error), o->call ? o->call : "-");
  return STEP_WRONG;
}

/* A one-off delegation of `double` 21, to its end. */
static step_t delegate_once(procord_loop_t *on) {
  procord_delegation_options_t options = doubling_of("21");
  procord_delegation_t *d = NULL;
  step_t step = step_of(procord_delegate(on, &options, &d));
  if (step == STEP_DONE) step = outcome_step(on, d, PROCORD_OUTCOME_VALUE);
  procord_delegation_release(d);
  return step;
}

/* A long task, killed as soon as it is started. */
static step_t delegate_and_kill(procord_loop_t *on) {
  procord_delegation_options_t options = doubling_of("10000"); /* ms */
  options.task_name = "sleep";
  procord_delegation_t *d = NULL;
  step_t step = step_of(procord_delegate(on, &options, &d));
  /* PROCORD_ECLOSED: its worker could not be started (out of memory, then). */
  int killed = step == STEP_DONE ? procord_delegation_kill(d) : 0;
  if (killed != 0 && killed != PROCORD_ECLOSED) step = STEP_WRONG;
  if (step == STEP_DONE) step = outcome_step(on, d, PROCORD_OUTCOME_KILLED);
  procord_delegation_release(d);
  return step;
}

/* Numbers as decimal text, for a task described once (procord/task.h). */
static int write_number(const void *value, unsigned char **bytes, size_t *length, void *context) {
  (void)context;
  char text[32];
  *length = (size_t)snprintf(text, sizeof text, "%ld", *(const long *)value);
  if (!(*bytes = malloc(*length))) return -ENOMEM; /* libc's: the core frees it with free() */
  memcpy(*bytes, text, *length);
  return 0;
}

static int read_number(const unsigned char *bytes, size_t length, void **value, void *context) {
  (void)context;
  long *number = malloc(sizeof *number); /* freed with free(): the task has no free_value */
  if (!number) return -ENOMEM;
  *number = (long)fixture_input_number(bytes, length);
  *value = number;
  return 0;
}

/* `double` described once: 21 in, 42 out, as values. */
static step_t delegate_described_task(procord_loop_t *on) {
  procord_task_t task = {.name = "double", .write_input = write_number, .read_output = read_number};
  procord_delegation_options_t options = doubling_of("");
  long input = 21;
  procord_delegation_t *d = NULL;
  step_t step = step_of(procord_delegate_task(on, &task, &input, &options, &d));
  if (step == STEP_DONE) step = outcome_step(on, d, PROCORD_OUTCOME_VALUE);
  void *output = NULL;
  if (step == STEP_DONE &&
      (procord_task_result(&task, d, &output) != PROCORD_TASK_RETURNED || *(long *)output != 42))
    step = STEP_WRONG;
  procord_task_free_value(&task, output);
  procord_delegation_release(d);
  return step;
}

/* A pool of one worker in socket mode (it serves task after task). */
static step_t pool_new(procord_loop_t *on, procord_pool_t **pool) {
  procord_pool_source_t source;
  procord_pool_source_init(&source);
  source.worker.program = self_path;
  source.worker.arguments = socket_worker;
  source.worker.channel = PROCORD_CHANNEL_SOCKET;
  procord_pool_options_t options;
  procord_pool_options_init(&options);
  options.sources = &source;
  options.source_count = 1;
  options.max_workers = 1;
  *pool = NULL;
  return step_of(procord_pool_new(on, &options, pool));
}

/* Shuts `pool` down, waits for its end and releases it. */
static step_t pool_end(procord_pool_t *pool, int immediate, step_t step) {
  procord_pool_shutdown(pool, immediate);
  if (procord_pool_wait(pool, 20000) != 1) step = STEP_WRONG;
  procord_pool_release(pool);
  return step;
}

/* Two tasks of `double` through a pool (the second waits in its queue), then
   a graceful shutdown. */
static step_t delegate_through_a_pool(procord_loop_t *on) {
  procord_pool_t *pool = NULL;
  step_t step = pool_new(on, &pool);
  if (step != STEP_DONE) return step;
  procord_delegation_options_t task = doubling_of("21");
  procord_delegation_t *d[2] = {NULL, NULL};
  for (int i = 0; i < 2 && step == STEP_DONE; i++)
    step = step_of(procord_pool_delegate(pool, &task, &d[i]));
  for (int i = 0; i < 2; i++) {
    if (d[i] && step == STEP_DONE) step = outcome_step(on, d[i], PROCORD_OUTCOME_VALUE);
    procord_delegation_release(d[i]);
  }
  return pool_end(pool, 0, step);
}

/* A long task in a pool, ended by the pool's immediate shutdown. */
static step_t shut_a_pool_down_under_a_task(procord_loop_t *on) {
  procord_pool_t *pool = NULL;
  step_t step = pool_new(on, &pool);
  if (step != STEP_DONE) return step;
  procord_delegation_options_t task = doubling_of("10000"); /* ms */
  task.task_name = "sleep";
  procord_delegation_t *d = NULL;
  step = step_of(procord_pool_delegate(pool, &task, &d));
  procord_pool_shutdown(pool, 1);
  if (step == STEP_DONE) step = outcome_step(on, d, PROCORD_OUTCOME_KILLED);
  procord_delegation_release(d);
  return pool_end(pool, 1, step);
}

/*
 * A worker server started on the loop (its workers this program, handed
 * each connection), a delegation of the same loop to it over TCP, then the
 * server stopped and freed. Its failures are the server's own, which a
 * client sees as a connection closed or an `E` answer: any outcome but a
 * crash of the worker is fine then, as long as everything ends.
 */
static step_t delegate_to_a_server_of_the_loop(procord_loop_t *on) {
  static const char *const handoff_worker[] = {self_path, "--procord-worker",
                                               "--procord-handoff-fd", "3", NULL};
  procord_server_options_t options;
  procord_server_options_init(&options);
  options.hostname = "127.0.0.1";
  options.max_simultaneous_tasks = 1;
  options.worker.program = self_path;
  options.worker.arguments = handoff_worker;
  procord_server_t *server = NULL;
  step_t step = step_of(procord_server_start(on, &options, &server));
  if (step != STEP_DONE) return step;
  int port = 0;
  procord_server_address(server, NULL, 0, &port);
  procord_delegation_options_t task = doubling_of("21");
  task.worker.program = NULL;
  task.remote_host = "127.0.0.1";
  task.remote_port = port;
  procord_delegation_t *d = NULL;
  step = step_of(procord_delegate(on, &task, &d));
  if (step == STEP_DONE && procord_delegation_wait(on, &d, 1, 1, 20000) == 1) {
    const procord_outcome_t *o = procord_delegation_outcome(d);
    if (o->kind != PROCORD_OUTCOME_VALUE && o->signal == 0)
      step = STEP_ENOMEM_OUTCOME; /* the server's failure, said to its client its own way */
  }
  if (step == STEP_DONE) step = outcome_step(on, d, PROCORD_OUTCOME_VALUE);
  procord_delegation_release(d);
  if (procord_server_stop(server, PROCORD_SERVER_STOP_GRACEFUL) != 0 ||
      procord_server_wait(server, 20000) != 1)
    step = STEP_WRONG;
  procord_server_free(server);
  return step;
}

/* The steps of a life, in order, on a loop running on its thread. */
static step_t (*const steps[])(procord_loop_t *on) = {
    delegate_once,
    delegate_and_kill,
    delegate_described_task,
    delegate_through_a_pool,
    shut_a_pool_down_under_a_task,
    delegate_to_a_server_of_the_loop,
};
enum { STEP_COUNT = sizeof steps / sizeof steps[0] };

/* ---- The fault injection's side: one run, in a process of its own ---- */

/*
 * Sets an allocator that fails its `fail_at`th allocation, then lives the
 * steps above: a loop made and run on its thread, each step, the loop's
 * free. Prints the allocations made, then how the loop and each step ended
 * (done, ENOMEM, outcome-ENOMEM or WRONG), and returns 0 when none is WRONG
 * and nothing is left: no block, no child.
 */
static int failing_run(long fail_at) {
  unsetenv(FAIL_AT_VARIABLE); /* the workers it starts allocate as usual */
  counts.fail_at = fail_at;
  procord_allocator_t allocator = counting_allocator(&counts);
  if (procord_set_allocator(&allocator) != 0) return 2;
  ssize_t n = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
  if (n <= 0) return 2;
  self_path[n] = 0;
  step_t made = step_of(procord_loop_new(&loop)), ended[STEP_COUNT];
  for (int i = 0; i < STEP_COUNT; i++) ended[i] = STEP_DONE;
  if (made == STEP_DONE) {
    made = step_of(procord_loop_start_thread(loop));
    for (int i = 0; i < STEP_COUNT && made == STEP_DONE; i++) ended[i] = steps[i](loop);
    procord_loop_free(loop);
  }
  int wrong = made == STEP_WRONG;
  printf("%ld %s", count_of(&counts.allocations), step_name(made));
  for (int i = 0; i < STEP_COUNT; i++) {
    printf(" %s", step_name(ended[i]));
    if (ended[i] == STEP_WRONG) wrong = 1;
  }
  printf("\n");
  fflush(stdout);
  if (count_of(&counts.live) != 0) fprintf(stderr, "    %ld blocks left\n", count_of(&counts.live));
  if (!no_child_left()) fprintf(stderr, "    a child is left\n");
  return !wrong && count_of(&counts.live) == 0 && no_child_left() ? 0 : 1;
}

/* A run of this program failing at `fail_at` (0: none), started. */
typedef struct {
  long fail_at;
  pid_t pid;
  int out; /* its stdout */
} run_t;

static int run_start(run_t *run, long fail_at) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return -1;
  char variable[64];
  snprintf(variable, sizeof variable, FAIL_AT_VARIABLE "=%ld", fail_at);
  size_t count = 0;
  while (environ[count]) count++;
  char **environment = calloc(count + 2, sizeof *environment);
  if (!environment) return -1;
  memcpy(environment, environ, count * sizeof *environment);
  environment[count] = variable;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  char *const arguments[] = {self_path, NULL};
  int error = posix_spawn(&run->pid, self_path, &actions, NULL, arguments, environment);
  posix_spawn_file_actions_destroy(&actions);
  free(environment);
  close(out[1]);
  run->fail_at = fail_at;
  run->out = out[0];
  if (error) close(out[0]);
  return error ? -1 : 0;
}

/* Waits for a run (20 s at most: then it is killed); its line in `line`,
   and whether it ended well. */
static int run_finish(run_t *run, char *line, size_t size) {
  int exited = process_exits_within(run->pid, 20000);
  if (!exited) kill(run->pid, SIGKILL);
  int status = 0;
  waitpid(run->pid, &status, 0);
  ssize_t n = read(run->out, line, size - 1);
  close(run->out);
  line[n > 0 ? n : 0] = 0;
  if (n > 0 && line[n - 1] == '\n') line[n - 1] = 0;
  int ok = exited && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  if (!ok)
    fprintf(stderr, "    failing allocation %ld: %s, \"%s\"\n", run->fail_at,
            !exited               ? "hung (killed)"
            : WIFSIGNALED(status) ? strsignal(WTERMSIG(status))
                                  : "wrong or left something",
            line);
  return ok;
}

/* A one-off `double` 21 to a worker that fails its `fail_at`th allocation,
   in socket mode or not, started. */
static procord_delegation_t *delegate_to_a_failing_worker(long fail_at, int socket_mode) {
  static char variables[2][64];
  static const char *environment[2][256];
  char *variable = variables[socket_mode];
  const char **names = environment[socket_mode];
  snprintf(variable, sizeof variables[0], WORKER_FAIL_AT_VARIABLE "=%ld", fail_at);
  size_t count = 0;
  for (; environ[count] && count < 254; count++) names[count] = environ[count];
  names[count++] = variable;
  names[count] = NULL;
  procord_delegation_options_t options = doubling_of("21");
  options.worker.environment = names;
  if (socket_mode) {
    options.worker.arguments = socket_worker;
    options.worker.channel = PROCORD_CHANNEL_SOCKET;
  }
  procord_delegation_t *d = NULL;
  return procord_delegate(loop, &options, &d) == 0 ? d : NULL;
}

/* ---- Tests ---- */

static void the_allocator_set_first_thing_was_accepted(void) {
  CHECK_EQ_INT(set_incomplete_first, PROCORD_EINVAL);
  CHECK_EQ_INT(set_at_start, 0);
  CHECK(count_of(&counts.allocations) > 0); /* the loop of fixture_start, at least */
}

/* Everything a delegation, a pool and a loop took is back at the end. */
static void every_block_of_a_delegation_a_pool_and_a_loop_goes_back(void) {
  BEGIN();
  long live = count_of(&counts.live), allocations = count_of(&counts.allocations);
  procord_loop_t *own = NULL;
  CHECK_EQ_INT(procord_loop_new(&own), 0);
  CHECK_EQ_INT(procord_loop_start_thread(own), 0);
  step_t ended[STEP_COUNT];
  for (int i = 0; i < STEP_COUNT; i++) ended[i] = steps[i](own);
  procord_loop_free(own);
  for (int i = 0; i < STEP_COUNT; i++) CHECK_EQ_INT(ended[i], STEP_DONE);
  CHECK(count_of(&counts.allocations) > allocations + 10);
  CHECK_EQ_INT(count_of(&counts.live), live);
  CHECK_EQ_INT(count_of(&counts.zero_sizes), 0);
  CHECK_NOTHING_LEFT();
}

/* Waits until the loop's thread has run everything queued to it before:
   a release from this thread is then carried out. The call's node is on
   this stack, so that waiting allocates nothing the counts would see. */
static void signal_turn(void *argument) {
  uint64_t one = 1;
  ssize_t ignored = write(*(int *)argument, &one, sizeof one);
  (void)ignored;
}

static int loop_turn_done(void) {
  int fd = eventfd(0, EFD_CLOEXEC);
  if (fd < 0) return 0;
  procord_queued_call_t call = {0}; /* not `allocated`: the loop leaves it alone after the call */
  procord_loop_queue(loop, &call, signal_turn, &fd);
  struct pollfd p = {.fd = fd, .events = POLLIN};
  int n;
  while ((n = poll(&p, 1, 10000)) < 0 && errno == EINTR) {
  }
  close(fd);
  return n == 1;
}

/* Twelve workers at once outgrow the list of children (room for 8 at first),
   which grows with reallocate, and is given back once they are reaped. */
static void growing_the_list_of_children_reallocates_through_the_allocator(void) {
  BEGIN();
  long live = count_of(&counts.live), reallocations = count_of(&counts.reallocations);
  enum { COUNT = 12 };
  procord_delegation_t *d[COUNT] = {0};
  procord_delegation_options_t options = doubling_of("300"); /* ms: all alive at once */
  options.task_name = "sleep";
  for (int i = 0; i < COUNT; i++) CHECK_EQ_INT(procord_delegate(loop, &options, &d[i]), 0);
  CHECK_EQ_INT(procord_delegation_wait(loop, d, COUNT, COUNT, 20000), COUNT);
  pid_t pids[COUNT];
  for (int i = 0; i < COUNT; i++) {
    CHECK_EQ_INT(procord_delegation_outcome(d[i])->kind, PROCORD_OUTCOME_VALUE);
    pids[i] = procord_delegation_pid(d[i]);
    procord_delegation_release(d[i]);
  }
  CHECK(count_of(&counts.reallocations) > reallocations);
  /* What is given back is given back on the loop's thread: the releases
     (queued to it), and the list once it has reaped the last child, on the
     child's exit after its answer. So: the exits, then the loop's turns
     until it has seen them (at most one each). */
  for (int i = 0; i < COUNT; i++) CHECK(process_exits_within(pids[i], 10000));
  for (int turn = 0; turn <= COUNT && count_of(&counts.live) != live; turn++)
    CHECK(loop_turn_done());
  CHECK_EQ_INT(count_of(&counts.live), live);
  CHECK_NOTHING_LEFT();
}

/* A body taken from a parser is the allocator's, and procord_free gives it back. */
static void a_body_handed_over_goes_back_with_procord_free(void) {
  long live = count_of(&counts.live);
  procord_frame_parser_t *parser = NULL;
  CHECK_EQ_INT(procord_frame_parser_new(0, &parser), 0);
  procord_frame_t frame;
  size_t consumed = 0;
  CHECK_EQ_INT(procord_frame_parser_feed(parser, "3Vabc", 5, &consumed, &frame), 1);
  void *body = procord_frame_parser_take_body(parser);
  CHECK(body != NULL);
  procord_frame_parser_free(parser);
  CHECK_EQ_INT(count_of(&counts.live), live + 1);
  header_of(body); /* the mark of ours: it came from the allocator */
  procord_free(body);
  procord_free(NULL);
  CHECK_EQ_INT(count_of(&counts.live), live);
}

/* A described task's own `U` answer comes from the allocator and goes back
   through the reply's release, not free(). */
static void a_described_tasks_own_answer_is_released_to_the_allocator(void) {
  procord_task_t task = {.name = "unreadable"}; /* no read_input: every input is unreadable */
  procord_worker_task_t served = procord_task_worker(&task);
  long live = count_of(&counts.live);
  procord_reply_t reply = {0};
  served.run(served.context, (const unsigned char *)"x", 1, &reply);
  CHECK_EQ_INT(reply.kind, PROCORD_FRAME_UNKNOWN_EXCEPTION);
  CHECK(reply.release != NULL);
  CHECK_EQ_INT(count_of(&counts.live), live + 1);
  header_of(reply.body);
  reply.release(reply.release_context);
  CHECK_EQ_INT(count_of(&counts.live), live);
}

/* Once the core has allocated, another allocator (or none) is refused, and
   the first one goes on serving. */
static void setting_the_allocator_after_the_core_allocated_is_ebusy(void) {
  counts_t other_counts = {0};
  procord_allocator_t other = counting_allocator(&other_counts);
  CHECK_EQ_INT(procord_set_allocator(&other), -EBUSY);
  CHECK_EQ_INT(procord_set_allocator(NULL), -EBUSY);
  long allocations = count_of(&counts.allocations);
  procord_frame_parser_t *parser = NULL;
  CHECK_EQ_INT(procord_frame_parser_new(0, &parser), 0);
  procord_frame_parser_free(parser);
  CHECK_EQ_INT(count_of(&counts.allocations), allocations + 1);
  CHECK_EQ_INT(count_of(&other_counts.allocations), 0);
}

/* An allocator without one of its functions, or of a size from a newer
   Procord with a field set, is refused as invalid (before -EBUSY). */
static void an_incomplete_allocator_is_einval(void) {
  procord_allocator_t allocator = counting_allocator(&counts);
  allocator.allocate = NULL;
  CHECK_EQ_INT(procord_set_allocator(&allocator), PROCORD_EINVAL);
  allocator = counting_allocator(&counts);
  allocator.reallocate = NULL;
  CHECK_EQ_INT(procord_set_allocator(&allocator), PROCORD_EINVAL);
  allocator = counting_allocator(&counts);
  allocator.free = NULL;
  CHECK_EQ_INT(procord_set_allocator(&allocator), PROCORD_EINVAL);
  allocator = counting_allocator(&counts);
  allocator.size = 1;
  CHECK_EQ_INT(procord_set_allocator(&allocator), PROCORD_EINVAL);
  struct {
    procord_allocator_t known;
    void *newer; /* a field this library does not know, set */
  } newer = {counting_allocator(&counts), &counts};
  newer.known.size = sizeof newer;
  CHECK_EQ_INT(procord_set_allocator(&newer.known), PROCORD_EINVAL);
}

/*
 * Each allocation of a delegation's life fails in turn, in a run of its own
 * (the allocator is set once per process): a loop on its thread, a one-off
 * delegation, a pooled one, the loop's free. Every run ends with each step
 * done or refused out of memory (a call's -ENOMEM, or an outcome's), no
 * crash, no hang, no block left (nor, under ASan, a leak), no child left.
 */
static void every_failed_allocation_of_a_delegations_life_is_enomem_and_leaves_nothing(void) {
  BEGIN();
  run_t first;
  char line[256];
  CHECK_EQ_INT(run_start(&first, 0), 0);
  CHECK(run_finish(&first, line, sizeof line));
  long total = 0;
  CHECK(sscanf(line, "%ld", &total) == 1);
  CHECK(total > 20);
  /* A few more than the first run took: the count varies a little with timing. */
  long last = total + total / 4;
  enum { AT_ONCE = 4 };
  int failed = 0, outcomes_out_of_memory = 0;
  for (long at = 1; at <= last; at += AT_ONCE) {
    run_t runs[AT_ONCE];
    int started = 0;
    for (; started < AT_ONCE && at + started <= last; started++)
      CHECK_EQ_INT(run_start(&runs[started], at + started), 0);
    for (int i = 0; i < started; i++) {
      if (!run_finish(&runs[i], line, sizeof line)) failed++;
      if (strstr(line, "outcome-ENOMEM")) outcomes_out_of_memory++;
    }
  }
  CHECK_EQ_INT(failed, 0);
  /* Failures on the loop's thread were reached, not only refused calls. */
  CHECK(outcomes_out_of_memory > 0);
  CHECK_NOTHING_LEFT();
}

/*
 * The worker's side: each allocation of a worker's life (its arguments read,
 * its session, the frames it reads, its answer) fails in turn, in a worker
 * of its own, in the original mode and in socket mode. The task answers 42,
 * or the worker says it could not (an `U` or `E` answer), or it exits: never
 * a crash (under ASan, a leak ends it with SIGABRT, a crash too).
 */
static void every_failed_allocation_of_a_worker_ends_in_an_answer_or_an_exit(void) {
  BEGIN();
  enum { LAST = 16, TAIL = 4 }; /* a worker allocates 4 or 5 times */
  int answered_in_the_tail = 0;
  for (long at = 1; at <= LAST; at++) {
    procord_delegation_t *d[2];
    for (int mode = 0; mode < 2; mode++) d[mode] = delegate_to_a_failing_worker(at, mode);
    CHECK(d[0] && d[1]);
    CHECK_EQ_INT(procord_delegation_wait(loop, d, 2, 2, 20000), 2);
    for (int mode = 0; mode < 2; mode++) {
      const procord_outcome_t *o = procord_delegation_outcome(d[mode]);
      int value =
          o->kind == PROCORD_OUTCOME_VALUE && o->length == 2 && memcmp(o->body, "42", 2) == 0;
      int said = o->kind == PROCORD_OUTCOME_UNKNOWN_EXCEPTION ||
                 o->kind == PROCORD_OUTCOME_NO_WORKER || o->kind == PROCORD_OUTCOME_DISCONNECTED;
      if (!value && (!said || o->signal != 0))
        fprintf(stderr,
                "    worker failing allocation %ld (%s mode): outcome %d, signal %d, exit %d\n", at,
                mode ? "socket" : "stdio", (int)o->kind, o->signal, o->exit_code);
      CHECK(value || (said && o->signal == 0));
      if (at > LAST - TAIL && value) answered_in_the_tail++;
      procord_delegation_release(d[mode]);
    }
  }
  /* The range goes past a worker's last allocation: the last runs answer. */
  CHECK_EQ_INT(answered_in_the_tail, 2 * TAIL);
  CHECK_NOTHING_LEFT();
}

static const procord_worker_task_t worker_tasks[] = {{"double", fixture_task_double, NULL},
                                                     {"sleep", fixture_task_sleep, NULL}};

int main(int argc, char **argv) {
  const char *fail_at = getenv(FAIL_AT_VARIABLE);
  if (fail_at) return failing_run(atol(fail_at));
  /* First thing: nothing of the core may have allocated before. */
  const char *worker_fail_at = getenv(WORKER_FAIL_AT_VARIABLE);
  if (worker_fail_at) counts.fail_at = atol(worker_fail_at);
  procord_allocator_t incomplete = counting_allocator(&counts);
  incomplete.free = NULL;
  set_incomplete_first = procord_set_allocator(&incomplete);
  procord_allocator_t allocator = counting_allocator(&counts);
  set_at_start = procord_set_allocator(&allocator);
  loop = fixture_start(argc, argv, worker_tasks, 2, self_path, sizeof self_path);
  if (!loop) return 1;

  RUN(the_allocator_set_first_thing_was_accepted);
  RUN(every_block_of_a_delegation_a_pool_and_a_loop_goes_back);
  RUN(growing_the_list_of_children_reallocates_through_the_allocator);
  RUN(a_body_handed_over_goes_back_with_procord_free);
  RUN(a_described_tasks_own_answer_is_released_to_the_allocator);
  RUN(setting_the_allocator_after_the_core_allocated_is_ebusy);
  RUN(an_incomplete_allocator_is_einval);
  RUN_WITHIN(every_failed_allocation_of_a_delegations_life_is_enomem_and_leaves_nothing, 120);
  RUN_WITHIN(every_failed_allocation_of_a_worker_ends_in_an_answer_or_an_exit, 120);

  procord_loop_free(loop);
  return CHECK_SUMMARY();
}
