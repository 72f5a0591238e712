#define _GNU_SOURCE
/*
 * Pools (procord/pool.h) and task control (deadlines, limits, working
 * directory) from C, on a loop running on its own thread. The workers are
 * this very program, started with --procord-worker --procord-socket-fd 3
 * (reusable) or --procord-worker alone (the original stdio mode, used once),
 * serving the tasks at the end of the file.
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
#include "procord/pool.h"
#include "procord/worker.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ADDRESS_SANITIZER 1
#endif
#endif

static procord_loop_t *loop;
static char self_path[4096];
static const char *socket_arguments[] = {NULL, "--procord-worker", "--procord-socket-fd", "3",
                                         NULL};
static const char *stdio_arguments[] = {NULL, "--procord-worker", NULL};

/* ---- Helpers ---- */

static procord_pool_source_t local_source(int socket_mode) {
  procord_pool_source_t source = {
      .worker = {.program = self_path,
                 .arguments = socket_mode ? socket_arguments : stdio_arguments,
                 .channel = socket_mode ? PROCORD_CHANNEL_SOCKET : PROCORD_CHANNEL_STDIO,
                 .stderr_fd = -1},
  };
  return source;
}

static procord_pool_t *make_pool(procord_pool_options_t options, procord_pool_source_t source) {
  options.sources = &source;
  options.source_count = 1;
  procord_pool_t *pool = NULL;
  if (procord_pool_new(loop, &options, &pool) != 0) return NULL;
  return pool;
}

static procord_delegation_t *submit(procord_pool_t *pool, const char *task, const char *input,
                                    int deadline_ms, int idempotent) {
  procord_delegation_options_t options = {
      .task_name = task,
      .input = input,
      .input_length = strlen(input),
      .deadline_ms = deadline_ms,
      .idempotent = idempotent,
  };
  procord_delegation_t *d = NULL;
  return procord_pool_delegate(pool, &options, &d) == 0 ? d : NULL;
}

static const procord_outcome_t *finish(procord_delegation_t *d) {
  procord_delegation_wait(loop, &d, 1, 1, 20000);
  return procord_delegation_outcome(d);
}

static int outcome_is_value(const procord_outcome_t *o, const char *expected) {
  return o && o->kind == PROCORD_OUTCOME_VALUE && o->length == strlen(expected) &&
         memcmp(o->body, expected, o->length) == 0;
}

static void stop_pool(procord_pool_t *pool, int immediate) {
  procord_pool_shutdown(pool, immediate);
  procord_pool_wait(pool, -1);
  procord_pool_release(pool);
}

static procord_pool_stats_t stats_of(procord_pool_t *pool) {
  procord_pool_stats_t stats;
  procord_pool_stats(pool, &stats);
  return stats;
}

/* ---- Reuse ---- */

static void reusable_worker_runs_every_task_of_a_pool_of_one(void) {
  BEGIN();
  procord_pool_t *pool = make_pool((procord_pool_options_t){.max_workers = 1}, local_source(1));
  CHECK(pool);
  for (int i = 0; i < 200; i++) {
    char input[16], expected[16];
    snprintf(input, sizeof input, "%d", i);
    snprintf(expected, sizeof expected, "%d", 2 * i);
    procord_delegation_t *d = submit(pool, "double", input, 0, 0);
    CHECK(d);
    int right = outcome_is_value(finish(d), expected);
    procord_delegation_release(d);
    CHECK(right);
  }
  CHECK_EQ_INT(stats_of(pool).workers_started, 1);
  CHECK_EQ_INT(stats_of(pool).tasks_finished, 200);
  stop_pool(pool, 0);
  CHECK_NOTHING_LEFT();
}

static void many_tasks_in_flight_share_the_maximum_of_workers(void) {
  BEGIN();
  procord_pool_t *pool = make_pool((procord_pool_options_t){.max_workers = 3}, local_source(1));
  CHECK(pool);
  enum { COUNT = 300 };
  procord_delegation_t *tasks[COUNT];
  for (int i = 0; i < COUNT; i++) {
    char input[16];
    snprintf(input, sizeof input, "%d", i);
    tasks[i] = submit(pool, "double", input, 0, 0);
  }
  for (int i = 0; i < COUNT; i++) CHECK(tasks[i]);
  CHECK_EQ_INT(procord_delegation_wait(loop, tasks, COUNT, 1, 20000), COUNT);
  int right = 0;
  for (int i = 0; i < COUNT; i++) {
    char expected[16];
    snprintf(expected, sizeof expected, "%d", 2 * i);
    right += outcome_is_value(procord_delegation_outcome(tasks[i]), expected);
    procord_delegation_release(tasks[i]);
  }
  CHECK_EQ_INT(right, COUNT);
  procord_pool_stats_t stats = stats_of(pool);
  CHECK_EQ_INT(stats.workers_started, 3); /* grown to the maximum, not beyond */
  stop_pool(pool, 0);
  CHECK_NOTHING_LEFT();
}

static void original_stdio_worker_is_used_once_and_replaced(void) {
  BEGIN();
  procord_pool_t *pool = make_pool((procord_pool_options_t){.max_workers = 1}, local_source(0));
  CHECK(pool);
  for (int i = 0; i < 4; i++) {
    procord_delegation_t *d = submit(pool, "double", "21", 0, 0);
    int right = outcome_is_value(finish(d), "42");
    procord_delegation_release(d);
    CHECK(right);
  }
  CHECK_EQ_INT(stats_of(pool).workers_started, 4);
  stop_pool(pool, 0);
  CHECK_NOTHING_LEFT();
}

static void min_workers_are_started_ahead_and_kept(void) {
  BEGIN();
  procord_pool_t *pool =
      make_pool((procord_pool_options_t){.min_workers = 2, .max_workers = 4}, local_source(1));
  CHECK(pool);
  /* Started before any task (the loop starts them: watched, not awaited). */
  long long until = now_ms() + 5000;
  while (stats_of(pool).idle < 2 && now_ms() < until) usleep(1000);
  CHECK_EQ_INT(stats_of(pool).idle, 2);
  CHECK_EQ_INT(stats_of(pool).workers_started, 2);
  procord_delegation_t *d = submit(pool, "double", "1", 0, 0);
  int right = outcome_is_value(finish(d), "2");
  procord_delegation_release(d);
  CHECK(right);
  procord_pool_stats_t stats = stats_of(pool);
  CHECK_EQ_INT(stats.workers_started, 2);
  CHECK_EQ_INT(stats.workers, 2);
  stop_pool(pool, 0);
  CHECK_NOTHING_LEFT();
}

/* ---- Retiring and replacing ---- */

static void worker_is_retired_after_max_tasks(void) {
  BEGIN();
  procord_pool_t *pool = make_pool(
      (procord_pool_options_t){.max_workers = 1, .max_tasks_per_worker = 3}, local_source(1));
  CHECK(pool);
  for (int i = 0; i < 10; i++) {
    procord_delegation_t *d = submit(pool, "double", "2", 0, 0);
    int right = outcome_is_value(finish(d), "4");
    procord_delegation_release(d);
    CHECK(right);
  }
  CHECK_EQ_INT(stats_of(pool).workers_started, 4); /* 3 + 3 + 3 + 1 */
  stop_pool(pool, 0);
  CHECK_NOTHING_LEFT();
}

static void worker_above_the_memory_bound_is_retired(void) {
#ifdef UNDER_ADDRESS_SANITIZER
  return; /* its shadow memory counts in every worker's resident size: the plain build runs this */
#endif
  BEGIN();
  procord_pool_t *pool = make_pool(
      (procord_pool_options_t){.max_workers = 1, .max_resident_bytes = 64u << 20}, local_source(1));
  CHECK(pool);
  /* Each "hold" task keeps what it allocates touched in its worker: 1 MiB
     twice stays under the bound (one worker), then 100 MiB three times
     passes it after each task (a worker each). */
  const char *const sizes[] = {"1", "1", "100", "100", "100"};
  for (int i = 0; i < 5; i++) {
    procord_delegation_t *d = submit(pool, "hold", sizes[i], 0, 0);
    int right = outcome_is_value(finish(d), "held");
    procord_delegation_release(d);
    CHECK(right);
  }
  CHECK_EQ_INT(stats_of(pool).workers_started, 3);
  stop_pool(pool, 0);
  CHECK_NOTHING_LEFT();
}

static void idle_worker_above_the_minimum_stops_after_the_idle_timeout(void) {
  BEGIN();
  procord_pool_t *pool = make_pool(
      (procord_pool_options_t){.min_workers = 1, .max_workers = 2, .idle_timeout_ms = 100},
      local_source(1));
  CHECK(pool);
  procord_delegation_t *tasks[2] = {submit(pool, "sleep", "200", 0, 0),
                                    submit(pool, "sleep", "200", 0, 0)};
  CHECK_EQ_INT(procord_delegation_wait(loop, tasks, 2, 1, 10000), 2);
  procord_delegation_release(tasks[0]);
  procord_delegation_release(tasks[1]);
  CHECK_EQ_INT(stats_of(pool).workers, 2);
  long long until = now_ms() + 5000;
  while (stats_of(pool).workers > 1 && now_ms() < until) usleep(10000);
  CHECK_EQ_INT(stats_of(pool).workers, 1);
  /* Five idle timeouts more: the minimum stays, and nothing was restarted. */
  usleep(500 * 1000);
  CHECK_EQ_INT(stats_of(pool).workers, 1);
  CHECK_EQ_INT(stats_of(pool).workers_started, 2);
  stop_pool(pool, 0);
  CHECK_NOTHING_LEFT();
}

static void crashed_worker_disconnects_its_task_with_the_signal_and_is_replaced(void) {
  BEGIN();
  procord_pool_t *pool = make_pool((procord_pool_options_t){.max_workers = 1}, local_source(1));
  CHECK(pool);
  procord_delegation_t *d = submit(pool, "crash", "", 0, 0);
  const procord_outcome_t *o = finish(d);
  CHECK(o);
  int kind = o->kind, signal = o->signal;
  procord_delegation_release(d);
  CHECK_EQ_INT(kind, PROCORD_OUTCOME_DISCONNECTED);
  CHECK_EQ_INT(signal, SIGSEGV);
  d = submit(pool, "double", "5", 0, 0);
  int right = outcome_is_value(finish(d), "10");
  procord_delegation_release(d);
  CHECK(right);
  CHECK_EQ_INT(stats_of(pool).workers_started, 2);
  stop_pool(pool, 0);
  CHECK_NOTHING_LEFT();
}

static void idempotent_task_runs_again_after_its_worker_died(void) {
  BEGIN();
  char marker[] = "/tmp/procord-test-pool-XXXXXX";
  int fd = mkstemp(marker);
  CHECK(fd >= 0);
  close(fd);
  unlink(marker); /* "crash_once" crashes while the marker is missing, and makes it */
  procord_pool_t *pool =
      make_pool((procord_pool_options_t){.max_workers = 1, .max_retries = 2}, local_source(1));
  CHECK(pool);
  procord_delegation_t *d = submit(pool, "crash_once", marker, 0, 1);
  const procord_outcome_t *o = finish(d);
  int right = outcome_is_value(o, "survived"), attempts = o ? o->attempts : 0;
  procord_delegation_release(d);
  unlink(marker);
  CHECK(right);
  CHECK_EQ_INT(attempts, 2);
  CHECK_EQ_INT(stats_of(pool).tasks_retried, 1);
  stop_pool(pool, 0);
  CHECK_NOTHING_LEFT();
}

static void task_not_marked_idempotent_is_not_run_again(void) {
  BEGIN();
  char marker[] = "/tmp/procord-test-pool-XXXXXX";
  int fd = mkstemp(marker);
  CHECK(fd >= 0);
  close(fd);
  unlink(marker);
  procord_pool_t *pool =
      make_pool((procord_pool_options_t){.max_workers = 1, .max_retries = 2}, local_source(1));
  CHECK(pool);
  procord_delegation_t *d = submit(pool, "crash_once", marker, 0, 0);
  const procord_outcome_t *o = finish(d);
  int kind = o ? (int)o->kind : -1;
  procord_delegation_release(d);
  unlink(marker);
  CHECK_EQ_INT(kind, PROCORD_OUTCOME_DISCONNECTED);
  CHECK_EQ_INT(stats_of(pool).tasks_retried, 0);
  stop_pool(pool, 0);
  CHECK_NOTHING_LEFT();
}

static void missing_program_fails_the_task_with_enoent(void) {
  BEGIN();
  procord_pool_source_t source = local_source(1);
  source.worker.program = "/nonexistent/procord-worker";
  procord_pool_t *pool = make_pool((procord_pool_options_t){.max_workers = 1}, source);
  CHECK(pool);
  procord_delegation_t *d = submit(pool, "double", "1", 0, 0);
  const procord_outcome_t *o = finish(d);
  CHECK(o);
  int kind = o->kind, error = o->error;
  const char *call = o->call;
  procord_delegation_release(d);
  CHECK_EQ_INT(kind, PROCORD_OUTCOME_DISCONNECTED);
  CHECK_EQ_INT(error, -ENOENT);
  CHECK(call && strcmp(call, "posix_spawn") == 0);
  stop_pool(pool, 0);
  CHECK_NOTHING_LEFT();
}

static void program_that_exits_at_once_is_started_again_only_after_a_rest(void) {
  BEGIN();
  procord_pool_source_t source = local_source(1);
  const char *arguments[] = {"true", NULL};
  source.worker.program = "true";
  source.worker.arguments = arguments;
  procord_pool_t *pool =
      make_pool((procord_pool_options_t){.min_workers = 1, .max_workers = 1}, source);
  CHECK(pool);
  /* Kept started, it exits at once, again and again: the pool must rest
     (250 ms, then 500 ms...) rather than start it in a tight loop. Watching
     for 600 ms is the point here, not a wait for something. */
  usleep(600 * 1000);
  unsigned long long started = stats_of(pool).workers_started;
  stop_pool(pool, 1);
  CHECK(started >= 2 &&
        started <= 3); /* at 0 ms, after 250 ms of rest, and not again before 750 ms */
  CHECK_NOTHING_LEFT();
}

/* ---- At this program's own limits ---- */

/* This program's descriptor limit, lowered for a test, and what it was. */
typedef struct descriptor_limit_s {
  struct rlimit saved;
  int *placeholders; /* /dev/null, open to fill holes below the limit */
  int placeholder_count;
} descriptor_limit_t;

static void close_placeholders(descriptor_limit_t *limit) {
  for (int i = 0; i < limit->placeholder_count; i++) close(limit->placeholders[i]);
  free(limit->placeholders);
  limit->placeholders = NULL;
  limit->placeholder_count = 0;
}

/*
 * Lowers this program's soft RLIMIT_NOFILE so that exactly `room` more
 * descriptors can be opened. The limit must stay above the highest
 * descriptor open, and the holes below it (between inherited descriptors,
 * say) are free too: placeholders fill those beyond `room`. Returns 0, or -1
 * (with nothing changed) when that cannot be.
 */
static int lower_descriptor_limit(descriptor_limit_t *limit, int room) {
  *limit = (descriptor_limit_t){.placeholders = NULL};
  DIR *dir = opendir("/proc/self/fd");
  if (!dir) return -1;
  int own = dirfd(dir), open_count = 0, highest = -1;
  struct dirent *entry;
  while ((entry = readdir(dir)) != NULL) {
    if (entry->d_name[0] == '.' || atoi(entry->d_name) == own) continue;
    open_count++;
    if (atoi(entry->d_name) > highest) highest = atoi(entry->d_name);
  }
  closedir(dir);
  int value = open_count + room > highest + 1 ? open_count + room : highest + 1;
  int fill = value - open_count - room;
  limit->placeholders = calloc((size_t)fill + 1, sizeof *limit->placeholders);
  int error = !limit->placeholders || getrlimit(RLIMIT_NOFILE, &limit->saved) != 0;
  while (!error && limit->placeholder_count < fill) {
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC); /* the lowest free number: a hole */
    if (fd < 0) error = 1;
    else
      limit->placeholders[limit->placeholder_count++] = fd;
  }
  struct rlimit lowered = {(rlim_t)value, limit->saved.rlim_max};
  if (!error) error = setrlimit(RLIMIT_NOFILE, &lowered) != 0;
  if (error) close_placeholders(limit);
  return error ? -1 : 0;
}

/* Puts the limit back, then closes the placeholders. */
static void restore_descriptor_limit(descriptor_limit_t *limit) {
  setrlimit(RLIMIT_NOFILE, &limit->saved);
  close_placeholders(limit);
}

/* Says on stderr how the first of `tasks` that did not get `expected` ended. */
static void tell_first_failure(procord_delegation_t *const *tasks, int count,
                               const char *expected) {
  for (int i = 0; i < count; i++) {
    const procord_outcome_t *o = procord_delegation_outcome(tasks[i]);
    if (outcome_is_value(o, expected)) continue;
    fprintf(stderr, "    task %d of %d ended as kind %d: %s: %s\n", i + 1, count,
            o ? (int)o->kind : -1, o && o->call ? o->call : "-",
            o ? procord_err_name(o->error) : "-");
    return;
  }
}

/* A local worker in socket mode holds two of our descriptors: its end of
   the socketpair and its pidfd. */
enum { DESCRIPTORS_PER_WORKER = 2, TASKS_AT_THE_LIMIT = 40 };

/*
 * Submits TASKS_AT_THE_LIMIT tasks that sleep 20 ms (so that the workers are
 * busy as the next ones come, and the pool wants more of them) to `pool`,
 * waits for all, and returns how many answered.
 */
static int run_tasks_at_the_limit(procord_pool_t *pool) {
  procord_delegation_t *tasks[TASKS_AT_THE_LIMIT];
  int submitted = 0;
  while (submitted < TASKS_AT_THE_LIMIT && (tasks[submitted] = submit(pool, "sleep", "20", 0, 0)))
    submitted++;
  procord_delegation_wait(loop, tasks, submitted, 1, 10000); /* on one worker, under 1 s */
  tell_first_failure(tasks, submitted, "slept");
  int answered = 0;
  for (int i = 0; i < submitted; i++) {
    answered += outcome_is_value(procord_delegation_outcome(tasks[i]), "slept");
    procord_delegation_release(tasks[i]);
  }
  return answered;
}

static void pool_at_the_descriptor_limit_runs_queued_tasks_on_the_workers_it_has(void) {
  BEGIN();
  procord_pool_t *pool = make_pool((procord_pool_options_t){.max_workers = 8}, local_source(1));
  CHECK(pool);
  /* Room for two workers and one descriptor more: the third start fails at
     its socketpair with EMFILE. */
  descriptor_limit_t limit;
  int lowered = lower_descriptor_limit(&limit, 2 * DESCRIPTORS_PER_WORKER + 1) == 0;
  int answered = lowered ? run_tasks_at_the_limit(pool) : 0;
  procord_pool_stats_t stats = stats_of(pool);
  /* Back before any CHECK: a failed test's next image inherits the limit. */
  if (lowered) restore_descriptor_limit(&limit);
  CHECK(lowered);
  CHECK_EQ_INT(answered, TASKS_AT_THE_LIMIT);
  CHECK(stats.workers_started >= 1 && stats.workers_started < 8);
  CHECK(stats.starts_limited >= 1);
  stop_pool(pool, 0);
  CHECK_NOTHING_LEFT();
}

static void pool_without_a_worker_at_the_descriptor_limit_fails_the_task_at_once_with_emfile(void) {
  BEGIN();
  procord_pool_t *pool = make_pool((procord_pool_options_t){.max_workers = 2}, local_source(1));
  CHECK(pool);
  descriptor_limit_t limit;
  int lowered = lower_descriptor_limit(&limit, 1) == 0; /* not even a socketpair */
  procord_delegation_t *d = lowered ? submit(pool, "double", "1", 0, 0) : NULL;
  const procord_outcome_t *o = d ? finish(d) : NULL;
  int kind = o ? (int)o->kind : -1, error = o ? o->error : 0;
  const char *call = o ? o->call : NULL;
  procord_delegation_release(d);
  procord_pool_stats_t held = stats_of(pool);
  if (lowered) restore_descriptor_limit(&limit);
  /* Held at no worker for a while (from 250 ms), then it starts them again. */
  long long until = now_ms() + 5000;
  while (stats_of(pool).max_workers_now != 2 && now_ms() < until) usleep(1000);
  d = submit(pool, "double", "21", 0, 0);
  int right = outcome_is_value(finish(d), "42");
  procord_delegation_release(d);
  CHECK(lowered);
  CHECK_EQ_INT(kind, PROCORD_OUTCOME_DISCONNECTED);
  CHECK_EQ_INT(error, -EMFILE);
  CHECK(call && strcmp(call, "posix_spawn") == 0);
  CHECK_EQ_INT(held.starts_limited, 1);
  CHECK_EQ_INT(held.max_workers_now, 0);
  CHECK(right);
  stop_pool(pool, 0);
  CHECK_NOTHING_LEFT();
}

/*
 * `test_pool at-process-limit`, started as root: becomes a user of its own
 * (become_a_user_of_its_own, before any thread starts), so that the
 * processes RLIMIT_NPROC counts for its user are its own threads and
 * workers, nothing else on the machine. Lowers its soft RLIMIT_NPROC to
 * leave room for about two workers, runs tasks as above on a pool of 8 at
 * most, puts the limit back and prints "ANSWERED STARTED LIMITED".
 */
static int run_at_process_limit(void) {
  /* Its workers keep the lowered limit to their end, where LeakSanitizer
     (in the sanitized build) could not start its thread: they go without. */
  size_t count = 0;
  while (environ[count]) count++;
  const char **environment = calloc(count + 2, sizeof *environment);
  if (!environment) return 1;
  size_t kept = 0;
  for (size_t i = 0; i < count; i++)
    if (strncmp(environ[i], "ASAN_OPTIONS=", 13) != 0) environment[kept++] = environ[i];
  environment[kept] = "ASAN_OPTIONS=detect_leaks=0";
  procord_pool_source_t source = local_source(1);
  source.worker.environment = environment;
  procord_pool_t *pool = make_pool((procord_pool_options_t){.max_workers = 8}, source);
  free(environment); /* the pool has its copy */
  if (!pool) return 1;
  struct rlimit saved, lowered;
  getrlimit(RLIMIT_NPROC, &saved);
  DIR *dir = opendir("/proc/self/task");
  int threads = 0;
  for (struct dirent *entry; dir && (entry = readdir(dir)) != NULL;)
    threads += entry->d_name[0] != '.';
  if (dir) closedir(dir);
  /* A worker's task has a watchdog thread: room for two workers, or one. */
  lowered = (struct rlimit){(rlim_t)(threads + 3), saved.rlim_max};
  if (threads == 0 || setrlimit(RLIMIT_NPROC, &lowered) != 0) {
    stop_pool(pool, 1);
    return 1;
  }
  int answered = run_tasks_at_the_limit(pool);
  setrlimit(RLIMIT_NPROC, &saved);
  procord_pool_stats_t stats = stats_of(pool);
  printf("%d %llu %llu\n", answered, stats.workers_started, stats.starts_limited);
  fflush(stdout);
  stop_pool(pool, 0);
  return 0;
}

/* Becomes a user id that no account has (2000000000 and up, made unique by
   the pid): what RLIMIT_NPROC counts for it is the helper's alone. 0, or
   -errno. */
static int become_a_user_of_its_own(void) {
  uid_t user = 2000000000u + (uid_t)getpid();
  if (setgroups(0, NULL) != 0 || setresgid(user, user, user) != 0 ||
      setresuid(user, user, user) != 0)
    return -errno;
  prctl(PR_SET_DUMPABLE, 1); /* a uid change clears it; LeakSanitizer's tracer needs it */
  return 0;
}

/* Reads one line from `fd` within `timeout_ms`; its length, or -1. */
static int read_line_within(int fd, char *line, size_t size, int timeout_ms) {
  size_t filled = 0;
  long long until = now_ms() + timeout_ms;
  while (filled < size - 1 && !memchr(line, '\n', filled)) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    long long left = until - now_ms();
    if (left <= 0 || poll(&p, 1, (int)left) <= 0) return -1;
    ssize_t n = read(fd, line + filled, size - 1 - filled);
    if (n <= 0) return -1;
    filled += (size_t)n;
  }
  line[filled] = 0;
  return (int)filled;
}

/* RLIMIT_NPROC does not bind root: the check runs in a helper that is
   another user (run_at_process_limit). */
static void pool_at_the_process_limit_runs_queued_tasks_on_the_workers_it_has(void) {
  BEGIN();
  if (geteuid() != 0) {
    /* This user's process count is not this program's alone: not checked. */
    fprintf(stderr, "    skipped: not root, cannot run the helper as a user of its own\n");
    return;
  }
  int out[2];
  CHECK(pipe2(out, O_CLOEXEC) == 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  char *const arguments[] = {self_path, "at-process-limit", NULL};
  pid_t helper = -1;
  int spawned = posix_spawn(&helper, self_path, &actions, NULL, arguments, environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  char line[128] = {0};
  int n = spawned == 0 ? read_line_within(out[0], line, sizeof line, 20000) : -1;
  close(out[0]);
  int status = 0;
  if (spawned == 0) waitpid(helper, &status, 0);
  int answered = -1;
  unsigned long long started = 0, limited = 0;
  if (strncmp(line, "cannot become", 13) == 0) {
    fprintf(stderr, "    skipped: the helper %s", line); /* a container without CAP_SETUID */
    return;
  }
  int parsed = n > 0 && sscanf(line, "%d %llu %llu", &answered, &started, &limited) == 3;
  CHECK_EQ_INT(spawned, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK(parsed);
  CHECK_EQ_INT(answered, TASKS_AT_THE_LIMIT);
  CHECK(started >= 1 && started < 8);
  CHECK(limited >= 1);
  CHECK_NOTHING_LEFT();
}

/* ---- Killing, deadlines ---- */

/*
 * This program is a subreaper (see main), so what a worker's task started
 * becomes our child once the worker is gone. Reaps those orphans, waiting
 * for each, and returns how many there were, or -1 if one of them ended on
 * its own instead of being killed.
 */
static int reap_orphans(void) {
  int count = 0, status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, 0)) > 0 || (pid < 0 && errno == EINTR)) {
    if (pid < 0) continue;
    if (!WIFSIGNALED(status)) return -1;
    count++;
  }
  return count;
}

static void kill_of_a_running_pooled_task_kills_its_worker_and_the_pool_replaces_it(void) {
  BEGIN();
  procord_pool_t *pool = make_pool((procord_pool_options_t){.max_workers = 1}, local_source(1));
  CHECK(pool);
  procord_delegation_t *d = submit(pool, "sleep", "100000", 0, 0);
  procord_delegation_t *next = submit(pool, "double", "8", 0, 0);
  /* Running once its worker's pid is known. */
  long long until = now_ms() + 5000;
  while (procord_delegation_pid(d) <= 0 && now_ms() < until) usleep(1000);
  pid_t worker = procord_delegation_pid(d);
  CHECK(worker > 0);
  CHECK_EQ_INT(procord_delegation_kill(d), 0);
  const procord_outcome_t *o = finish(d);
  int kind = o ? (int)o->kind : -1;
  procord_delegation_release(d);
  CHECK_EQ_INT(kind, PROCORD_OUTCOME_KILLED);
  CHECK(kill(worker, 0) < 0 && errno == ESRCH); /* reaped before the outcome */
  int right = outcome_is_value(finish(next), "16");
  procord_delegation_release(next);
  CHECK(right);
  stop_pool(pool, 0);
  CHECK_NOTHING_LEFT();
}

static void kill_of_a_queued_task_ends_it_without_touching_a_worker(void) {
  BEGIN();
  procord_pool_t *pool = make_pool((procord_pool_options_t){.max_workers = 1}, local_source(1));
  CHECK(pool);
  procord_delegation_t *running = submit(pool, "sleep", "300", 0, 0);
  procord_delegation_t *queued = submit(pool, "double", "1", 0, 0);
  CHECK_EQ_INT(procord_delegation_kill(queued), 0);
  const procord_outcome_t *o = finish(queued);
  int kind = o ? (int)o->kind : -1;
  CHECK(!procord_delegation_is_finished(running)); /* the kill did not wait for a worker */
  procord_delegation_release(queued);
  CHECK_EQ_INT(kind, PROCORD_OUTCOME_KILLED);
  int right = outcome_is_value(finish(running), "slept");
  procord_delegation_release(running);
  CHECK(right);
  CHECK_EQ_INT(stats_of(pool).workers_started, 1);
  stop_pool(pool, 0);
  CHECK_NOTHING_LEFT();
}

/*
 * A task past its deadline ends within DEADLINE_MARGIN_MS of it (the kill,
 * the reaping, a start under the sanitizers), plus the grace period when its
 * worker needs it. Tight on purpose: each test's deadline is longer than
 * its margin, so a deadline armed twice too late fails. Not before it, but
 * for DEADLINE_EARLY_MS: the loop arms its timer from the time it read
 * last, which may be a little older than the delegation.
 */
#define DEADLINE_MARGIN_MS 300
#define DEADLINE_EARLY_MS 20
#define CHECK_ENDED_AT_DEADLINE(took, deadline_ms, grace_spent_ms)                                         \
  do {                                                                                                     \
    long long check_took = (took), check_deadline = (deadline_ms), check_grace = (grace_spent_ms);         \
    if (check_took < check_deadline - DEADLINE_EARLY_MS ||                                                 \
        check_took >= check_deadline + check_grace + DEADLINE_MARGIN_MS) {                                 \
      fprintf(                                                                                             \
          stderr,                                                                                          \
          "    %s:%d: ended after %lld ms: its deadline is %lld ms (%lld ms of grace, %d ms of margin)\n", \
          __FILE__, __LINE__, check_took, check_deadline, check_grace, DEADLINE_MARGIN_MS);                \
      check_current_failed = 1;                                                                            \
      return;                                                                                              \
    }                                                                                                      \
  } while (0)

static void deadline_ends_a_pooled_task_as_timed_out_and_kills_its_group(void) {
  BEGIN();
  procord_pool_t *pool =
      make_pool((procord_pool_options_t){.max_workers = 1, .exit_grace_ms = 200}, local_source(1));
  CHECK(pool);
  long long start = now_ms();
  procord_delegation_t *d = submit(pool, "sleep_child", "30000", 500, 0);
  const procord_outcome_t *o = finish(d);
  long long took = now_ms() - start;
  int kind = o ? (int)o->kind : -1, error = o ? o->error : 0, signal = o ? o->signal : 0;
  procord_delegation_release(d);
  CHECK_EQ_INT(kind, PROCORD_OUTCOME_TIMED_OUT);
  CHECK_EQ_INT(error, PROCORD_ETIMEOUT);
  CHECK_EQ_INT(signal, SIGTERM);
  CHECK_ENDED_AT_DEADLINE(took, 500, 0); /* the worker dies of the SIGTERM: no grace spent */
  /* The shell and `sleep` the task started, if it got that far, were killed
     with its worker (deadline_sends_sigterm_to_the_whole_process_group_of_the_task
     checks that they get the SIGTERM). */
  CHECK(reap_orphans() >= 0);
  stop_pool(pool, 0);
  CHECK_NOTHING_LEFT();
}

/*
 * The deadline's SIGTERM goes to the worker's process group, so what the task
 * started can clean up too: here a shell that leaves "TERM" in a file when it
 * gets SIGTERM. The worker survives SIGTERM and waits for the shell, so only a
 * SIGTERM sent to the group ends it in time; without it, the grace period's
 * SIGKILL ends everything and nothing is written.
 */
static void deadline_sends_sigterm_to_the_whole_process_group_of_the_task(void) {
  BEGIN();
  char directory[] = "/tmp/procord-test-XXXXXX", marker[64];
  CHECK(mkdtemp(directory));
  snprintf(marker, sizeof marker, "%s/term", directory);
  procord_pool_t *pool =
      make_pool((procord_pool_options_t){.max_workers = 1, .exit_grace_ms = 500}, local_source(1));
  CHECK(pool);
  long long start = now_ms();
  /* Long enough for the worker to have started its shell, even sanitized. */
  procord_delegation_t *d = submit(pool, "child_traps_term", marker, 1000, 0);
  const procord_outcome_t *o = finish(d);
  long long took = now_ms() - start;
  int kind = o ? (int)o->kind : -1;
  procord_delegation_release(d);
  char written[16] = "";
  FILE *file = fopen(marker, "re");
  if (file) {
    if (!fgets(written, sizeof written, file)) written[0] = 0;
    fclose(file);
  }
  unlink(marker);
  rmdir(directory);
  /* The shell's `sleep`, killed by the SIGTERM: an orphan of ours, unless
     the shell's `wait` reaped it before the trap ran. */
  int orphans = reap_orphans();
  stop_pool(pool, 0);
  CHECK_EQ_INT(kind, PROCORD_OUTCOME_TIMED_OUT);
  CHECK(strcmp(written, "TERM\n") == 0);
  CHECK_ENDED_AT_DEADLINE(took, 1000, 0); /* the shell and then the worker end at the SIGTERM */
  CHECK(orphans >= 0);                    /* none that ended on its own */
  CHECK_NOTHING_LEFT();
}

static void deadline_ends_a_one_off_delegation_as_timed_out(void) {
  BEGIN();
  const char *arguments[] = {"sh", "-c", "head -c 9 >/dev/null; sleep 30", NULL};
  procord_delegation_options_t options = {
      .task_name = "fact",
      .input = "5",
      .input_length = 1,
      .worker = {.program = "/bin/sh", .arguments = arguments, .stderr_fd = -1},
      .deadline_ms = 500,
  };
  long long start = now_ms();
  procord_delegation_t *d = NULL;
  CHECK_EQ_INT(procord_delegate(loop, &options, &d), 0);
  const procord_outcome_t *o = finish(d);
  long long took = now_ms() - start;
  int kind = o ? (int)o->kind : -1;
  const char *call = o ? o->call : NULL;
  procord_delegation_release(d);
  CHECK_EQ_INT(kind, PROCORD_OUTCOME_TIMED_OUT);
  CHECK(call && strcmp(call, "deadline") == 0);
  CHECK_ENDED_AT_DEADLINE(took, 500, 0); /* `sh` dies of the SIGTERM */
  CHECK(reap_orphans() >= 0); /* `sleep` got the SIGTERM with `sh`, or was never started */
  CHECK_NOTHING_LEFT();
}

static void deadline_of_a_task_that_answers_in_time_changes_nothing(void) {
  BEGIN();
  procord_pool_t *pool = make_pool((procord_pool_options_t){.max_workers = 1}, local_source(1));
  CHECK(pool);
  procord_delegation_t *d = submit(pool, "double", "3", 5000, 0);
  int right = outcome_is_value(finish(d), "6");
  procord_delegation_release(d);
  CHECK(right);
  stop_pool(pool, 0);
  CHECK_NOTHING_LEFT();
}

/* ---- Workers die with their main program ---- */

/*
 * `test_pool make-orphans`: a main program with two pooled workers busy in
 * long tasks. It prints their pids and that of a copy of itself (fork, no
 * exec) that keeps every descriptor open, so that the workers' sockets stay
 * open; then it dies of SIGKILL, running no exit handler. Only the
 * parent-death signal can then tell the workers.
 */
static int make_orphans(int socket_mode) {
  procord_pool_t *pool =
      make_pool((procord_pool_options_t){.max_workers = 2}, local_source(socket_mode));
  if (!pool) return 1;
  procord_delegation_t *tasks[2] = {submit(pool, "sleep", "60000", 0, 0),
                                    submit(pool, "sleep", "60000", 0, 0)};
  long long until = now_ms() + 10000;
  while ((procord_delegation_pid(tasks[0]) <= 0 || procord_delegation_pid(tasks[1]) <= 0) &&
         now_ms() < until)
    usleep(1000);
  pid_t holder = fork();
  if (holder == 0) {
    for (;;) pause();
  }
  printf("%d %d %d\n", (int)procord_delegation_pid(tasks[0]), (int)procord_delegation_pid(tasks[1]),
         (int)holder);
  fflush(stdout);
  kill(getpid(), SIGKILL);
  return 1;
}

/*
 * Starts this program as a main program (`mode`: make-orphans in socket
 * mode, make-stdio-orphans in the original one) that starts two workers,
 * forks a holder of their streams, and kills itself outright. Both workers
 * (now our children: we are a subreaper) must end within a second, though
 * their streams stay open.
 */
static int workers_die_with_their_killed_main_program(const char *mode) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return 0;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  char *const arguments[] = {self_path, (char *)mode, NULL};
  pid_t maker = -1;
  int spawned = posix_spawn(&maker, self_path, &actions, NULL, arguments, environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  char line[128] = {0};
  ssize_t n = spawned == 0 ? read(out[0], line, sizeof line - 1) : -1;
  close(out[0]);
  int status = 0;
  if (spawned == 0) waitpid(maker, &status, 0);
  int pids[3] = {0, 0, 0};
  int parsed = n > 0 && sscanf(line, "%d %d %d", &pids[0], &pids[1], &pids[2]) == 3;
  long long start = now_ms();
  int ended = parsed && process_exits_within(pids[0], 1000) &&
              process_exits_within(pids[1], (int)(1000 - (now_ms() - start)));
  for (int i = 0; parsed && i < 3; i++) {
    kill(pids[i], SIGKILL); /* the holder, and workers that outlived their main program */
    waitpid(pids[i], NULL, 0);
  }
  if (!parsed) fprintf(stderr, "    %s said: %s\n", mode, line);
  if (!ended && parsed) fprintf(stderr, "    %s: its workers outlived it\n", mode);
  return spawned == 0 && parsed && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL && ended;
}

static void workers_die_with_a_main_program_killed_while_their_sockets_stay_open(void) {
  BEGIN();
  CHECK(workers_die_with_their_killed_main_program("make-orphans"));
  CHECK_NOTHING_LEFT();
}

static void stdio_workers_die_with_a_main_program_killed_while_their_pipes_stay_open(void) {
  BEGIN();
  CHECK(workers_die_with_their_killed_main_program("make-stdio-orphans"));
  CHECK_NOTHING_LEFT();
}

/* ---- Queue, shutdown ---- */

static void full_queue_refuses_with_efull(void) {
  BEGIN();
  procord_pool_t *pool =
      make_pool((procord_pool_options_t){.max_workers = 1, .max_queue_length = 2}, local_source(1));
  CHECK(pool);
  /* One running (it left the queue once its worker had it), two queued: full. */
  procord_delegation_t *tasks[3] = {submit(pool, "sleep", "100", 0, 0)};
  long long until = now_ms() + 5000;
  while (procord_delegation_pid(tasks[0]) <= 0 && now_ms() < until) usleep(1000);
  tasks[1] = submit(pool, "sleep", "1", 0, 0);
  tasks[2] = submit(pool, "sleep", "1", 0, 0);
  procord_delegation_options_t options = {.task_name = "double", .input = "1", .input_length = 1};
  procord_delegation_t *refused = NULL;
  int error = procord_pool_delegate(pool, &options, &refused);
  CHECK_EQ_INT(procord_delegation_wait(loop, tasks, 3, 1, 10000), 3);
  for (int i = 0; i < 3; i++) procord_delegation_release(tasks[i]);
  CHECK_EQ_INT(error, PROCORD_EFULL);
  CHECK(refused == NULL);
  stop_pool(pool, 0);
  CHECK_NOTHING_LEFT();
}

static void graceful_shutdown_finishes_queued_tasks(void) {
  BEGIN();
  procord_pool_t *pool = make_pool((procord_pool_options_t){.max_workers = 1}, local_source(1));
  CHECK(pool);
  /* One running (it has a worker) and five queued when the shutdown comes. */
  procord_delegation_t *running = submit(pool, "sleep", "300", 0, 0);
  long long until = now_ms() + 5000;
  while (procord_delegation_pid(running) <= 0 && now_ms() < until) usleep(1000);
  CHECK(procord_delegation_pid(running) > 0);
  procord_delegation_t *tasks[5];
  for (int i = 0; i < 5; i++) tasks[i] = submit(pool, "double", "7", 0, 0);
  procord_pool_shutdown(pool, 0);
  procord_delegation_t *late = submit(pool, "double", "1", 0, 0);
  CHECK_EQ_INT(procord_pool_wait(pool, 10000), 1);
  int right = outcome_is_value(procord_delegation_outcome(running), "slept");
  procord_delegation_release(running);
  for (int i = 0; i < 5; i++) {
    right += outcome_is_value(procord_delegation_outcome(tasks[i]), "14");
    procord_delegation_release(tasks[i]);
  }
  procord_pool_release(pool);
  CHECK(late == NULL);
  CHECK_EQ_INT(right, 6);
  CHECK_NOTHING_LEFT();
}

static void immediate_shutdown_kills_running_and_queued_tasks(void) {
  BEGIN();
  procord_pool_t *pool = make_pool((procord_pool_options_t){.max_workers = 1}, local_source(1));
  CHECK(pool);
  procord_delegation_t *tasks[3] = {submit(pool, "sleep", "100000", 0, 0),
                                    submit(pool, "double", "1", 0, 0),
                                    submit(pool, "double", "2", 0, 0)};
  long long until = now_ms() + 5000;
  while (procord_delegation_pid(tasks[0]) <= 0 && now_ms() < until) usleep(1000);
  procord_pool_shutdown(pool, 1);
  CHECK_EQ_INT(procord_pool_wait(pool, 5000), 1);
  int killed = 0;
  for (int i = 0; i < 3; i++) {
    const procord_outcome_t *o = procord_delegation_outcome(tasks[i]);
    killed += o && o->kind == PROCORD_OUTCOME_KILLED;
    procord_delegation_release(tasks[i]);
  }
  procord_pool_release(pool);
  CHECK_EQ_INT(killed, 3);
  CHECK_NOTHING_LEFT();
}

static void released_pool_stops_its_workers(void) {
  BEGIN();
  procord_pool_t *pool =
      make_pool((procord_pool_options_t){.min_workers = 2, .max_workers = 2}, local_source(1));
  CHECK(pool);
  procord_delegation_t *d = submit(pool, "double", "1", 0, 0);
  finish(d);
  procord_delegation_release(d);
  CHECK_EQ_INT(stats_of(pool).workers, 2);
  procord_pool_release(pool);
  /* Nothing to wait on once released: the children say when they are gone. */
  long long until = now_ms() + 5000;
  while (!no_child_left() && now_ms() < until) usleep(5000);
  CHECK_NOTHING_LEFT();
}

static void pool_without_sources_is_einval(void) {
  procord_pool_options_t options = {.max_workers = 1};
  procord_pool_t *pool = NULL;
  CHECK_EQ_INT(procord_pool_new(loop, &options, &pool), PROCORD_EINVAL);
  procord_pool_source_t source = local_source(1);
  options.sources = &source;
  options.source_count = 1;
  options.min_workers = 3;
  CHECK_EQ_INT(procord_pool_new(loop, &options, &pool), PROCORD_EINVAL);
}

/* ---- Spawn options: limits, working directory ---- */

static void address_space_limit_fails_a_big_allocation_cleanly(void) {
#ifdef UNDER_ADDRESS_SANITIZER
  return; /* its shadow memory alone is far above the limit: the plain build runs this */
#endif
  BEGIN();
  procord_pool_source_t source = local_source(1);
  source.worker.limits.address_space_bytes = 256ull << 20;
  procord_pool_t *pool = make_pool((procord_pool_options_t){.max_workers = 1}, source);
  CHECK(pool);
  procord_delegation_t *d = submit(pool, "alloc", "1024", 0, 0);
  const procord_outcome_t *o = finish(d);
  int kind = o ? (int)o->kind : -1;
  procord_delegation_release(d);
  CHECK_EQ_INT(kind, PROCORD_OUTCOME_EXCEPTION);
  d = submit(pool, "alloc", "16", 0, 0);
  int right = outcome_is_value(finish(d), "allocated");
  procord_delegation_release(d);
  CHECK(right);
  CHECK_EQ_INT(stats_of(pool).workers_started, 1);
  stop_pool(pool, 0);
  CHECK_NOTHING_LEFT();
}

static void open_files_limit_reaches_the_worker(void) {
  BEGIN();
  procord_pool_source_t source = local_source(1);
  source.worker.limits.open_files = 40;
  procord_pool_t *pool = make_pool((procord_pool_options_t){.max_workers = 1}, source);
  CHECK(pool);
  procord_delegation_t *d = submit(pool, "nofile", "", 0, 0);
  int right = outcome_is_value(finish(d), "40");
  procord_delegation_release(d);
  CHECK(right);
  stop_pool(pool, 0);
  CHECK_NOTHING_LEFT();
}

static void limit_above_our_hard_limit_fails_the_start(void) {
  BEGIN();
  struct rlimit ours;
  getrlimit(RLIMIT_NOFILE, &ours);
  if (ours.rlim_max == RLIM_INFINITY || getuid() == 0)
    return; /* root may raise it: nothing to see */
  procord_pool_source_t source = local_source(1);
  source.worker.limits.open_files = (unsigned long long)ours.rlim_max + 1;
  procord_pool_t *pool = make_pool((procord_pool_options_t){.max_workers = 1}, source);
  CHECK(pool);
  procord_delegation_t *d = submit(pool, "double", "1", 0, 0);
  const procord_outcome_t *o = finish(d);
  int error = o ? o->error : 0;
  procord_delegation_release(d);
  CHECK_EQ_INT(error, -EPERM);
  stop_pool(pool, 0);
  CHECK_NOTHING_LEFT();
}

static void working_directory_is_the_workers(void) {
  BEGIN();
  char directory[] = "/tmp/procord-test-directory-XXXXXX"; /* not where the tests run */
  CHECK(mkdtemp(directory) != NULL);
  procord_pool_source_t source = local_source(1);
  source.worker.working_directory = directory;
  procord_pool_t *pool = make_pool((procord_pool_options_t){.max_workers = 1}, source);
  procord_delegation_t *d = pool ? submit(pool, "cwd", "", 0, 0) : NULL;
  int right = d && outcome_is_value(finish(d), directory);
  procord_delegation_release(d);
  if (pool) stop_pool(pool, 0);
  rmdir(directory);
  CHECK(right);
  CHECK_NOTHING_LEFT();
}

/* ---- Borrowed input ---- */

static int borrowed_releases;
static void release_borrowed(void *context) {
  (void)context;
  __atomic_add_fetch(&borrowed_releases, 1, __ATOMIC_SEQ_CST);
}

/* Waits (up to 5 s) for the borrowed inputs given back to reach `count`:
   the last reference may be dropped on the loop's thread just after the
   outcome is out. */
static int borrowed_released(int count) {
  long long until = now_ms() + 5000;
  while (__atomic_load_n(&borrowed_releases, __ATOMIC_SEQ_CST) < count && now_ms() < until)
    usleep(1000);
  return __atomic_load_n(&borrowed_releases, __ATOMIC_SEQ_CST) == count;
}

static procord_delegation_options_t borrowing(const char *task, const char *input) {
  procord_delegation_options_t options = {
      .task_name = task,
      .input = input,
      .input_length = strlen(input),
      .input_release = release_borrowed,
      .input_context = (void *)input,
  };
  return options;
}

static void borrowed_input_is_sent_then_given_back_once(void) {
  BEGIN();
  borrowed_releases = 0;
  procord_pool_t *pool = make_pool((procord_pool_options_t){.max_workers = 1}, local_source(1));
  CHECK(pool);
  static const char input[] = "21";
  procord_delegation_options_t options = borrowing("double", input);
  procord_delegation_t *d = NULL;
  CHECK_EQ_INT(procord_pool_delegate(pool, &options, &d), 0);
  int right = outcome_is_value(finish(d), "42");
  procord_delegation_release(d);
  CHECK(right);
  CHECK(borrowed_released(1));
  procord_pool_shutdown(pool, 0);
  procord_pool_wait(pool, -1);
  /* Refused: given back at once. */
  procord_delegation_t *refused = NULL;
  int error = procord_pool_delegate(pool, &options, &refused);
  procord_pool_release(pool);
  CHECK_EQ_INT(error, PROCORD_ECLOSED);
  CHECK_EQ_INT(__atomic_load_n(&borrowed_releases, __ATOMIC_SEQ_CST), 2); /* at once */
  CHECK_NOTHING_LEFT();
}

static void borrowed_input_of_a_one_off_delegation_is_given_back_once(void) {
  BEGIN();
  borrowed_releases = 0;
  static const char input[] = "4";
  procord_delegation_options_t options = borrowing("double", input);
  options.worker = local_source(1).worker;
  procord_delegation_t *d = NULL;
  CHECK_EQ_INT(procord_delegate(loop, &options, &d), 0);
  int right = outcome_is_value(finish(d), "8");
  procord_delegation_release(d);
  CHECK(right);
  CHECK(borrowed_released(1));
  CHECK_NOTHING_LEFT();
  CHECK_EQ_INT(__atomic_load_n(&borrowed_releases, __ATOMIC_SEQ_CST), 1); /* and no second time */
}

/* ---- Send ahead ---- */

/* A pool of one worker sending up to `depth` tasks ahead, warmed by one task
   (a worker is sent tasks ahead only once it has shown it takes task after
   task). */
static procord_pool_t *send_ahead_pool(int depth) {
  procord_pool_t *pool =
      make_pool((procord_pool_options_t){.max_workers = 1, .send_ahead = depth}, local_source(1));
  procord_delegation_t *warm = pool ? submit(pool, "double", "0", 0, 0) : NULL;
  int right = warm && outcome_is_value(finish(warm), "0");
  procord_delegation_release(warm);
  if (pool && !right) {
    stop_pool(pool, 1);
    return NULL;
  }
  return pool;
}

/* Waits (up to 5 s) until no task waits in the queue: the one behind a
   running task has been sent ahead to its worker. */
static int queue_empties(procord_pool_t *pool) {
  long long until = now_ms() + 5000;
  while (stats_of(pool).queued > 0 && now_ms() < until) usleep(1000);
  return stats_of(pool).queued == 0;
}

/* Once `running` has its worker: for 100 ms (well within its 300), `waiting`
   stays in the queue, with no worker, rather than being sent ahead. */
static int stays_in_the_queue(procord_delegation_t *running, procord_delegation_t *waiting,
                              procord_pool_t *pool) {
  long long until = now_ms() + 5000;
  while (procord_delegation_pid(running) <= 0 && now_ms() < until) usleep(1000);
  if (procord_delegation_pid(running) <= 0) return 0;
  for (long long end = now_ms() + 100; now_ms() < end; usleep(5000))
    if (stats_of(pool).queued != 1 || procord_delegation_pid(waiting) != -1) return 0;
  return !procord_delegation_is_finished(running);
}

static void task_sent_ahead_runs_after_the_running_one_on_the_same_worker(void) {
  BEGIN();
  procord_pool_t *pool = send_ahead_pool(1);
  CHECK(pool);
  procord_delegation_t *running = submit(pool, "sleep", "300", 0, 0);
  procord_delegation_t *ahead = submit(pool, "double", "4", 0, 1);
  CHECK(running && ahead);
  CHECK(queue_empties(pool));
  CHECK_EQ_INT(procord_delegation_pid(ahead), -1); /* not started: no worker yet */
  CHECK(!procord_delegation_is_finished(running));
  int slept = outcome_is_value(finish(running), "slept");
  int doubled = outcome_is_value(finish(ahead), "8");
  procord_delegation_release(running);
  procord_delegation_release(ahead);
  CHECK(slept && doubled);
  CHECK_EQ_INT(stats_of(pool).workers_started, 1);
  stop_pool(pool, 0);
  CHECK_NOTHING_LEFT();
}

static void task_sent_ahead_is_queued_again_when_its_worker_dies_first(void) {
  BEGIN();
  procord_pool_t *pool = send_ahead_pool(1);
  CHECK(pool);
  procord_delegation_t *crashing = submit(pool, "crash_after", "300", 0, 0);
  procord_delegation_t *ahead = submit(pool, "double", "5", 0, 1);
  CHECK(crashing && ahead);
  CHECK(queue_empties(pool));
  /* Out of the queue while its worker still runs the crashing task: sent ahead. */
  CHECK(!procord_delegation_is_finished(crashing));
  CHECK_EQ_INT(procord_delegation_pid(ahead), -1);
  const procord_outcome_t *o = finish(crashing);
  int kind = o ? (int)o->kind : -1, signal = o ? o->signal : 0;
  int doubled = outcome_is_value(finish(ahead), "10");
  int attempts = procord_delegation_outcome(ahead)->attempts;
  procord_delegation_release(crashing);
  procord_delegation_release(ahead);
  CHECK_EQ_INT(kind, PROCORD_OUTCOME_DISCONNECTED);
  CHECK_EQ_INT(signal, SIGSEGV);
  CHECK(doubled); /* it never started: it runs elsewhere, and that is no retry */
  CHECK_EQ_INT(attempts, 1);
  CHECK_EQ_INT(stats_of(pool).tasks_retried, 0);
  CHECK_EQ_INT(stats_of(pool).workers_started, 2);
  stop_pool(pool, 0);
  CHECK_NOTHING_LEFT();
}

static void killed_task_sent_ahead_ends_at_once_and_its_worker_when_it_gets_there(void) {
  BEGIN();
  procord_pool_t *pool = send_ahead_pool(1);
  CHECK(pool);
  procord_delegation_t *running = submit(pool, "sleep", "300", 0, 0);
  procord_delegation_t *ahead = submit(pool, "double", "6", 0, 1);
  CHECK(running && ahead);
  CHECK(queue_empties(pool));
  CHECK_EQ_INT(procord_delegation_kill(ahead), 0);
  const procord_outcome_t *o = finish(ahead);
  int kind = o ? (int)o->kind : -1;
  CHECK(!procord_delegation_is_finished(running)); /* the running task was left alone */
  procord_delegation_release(ahead);
  CHECK_EQ_INT(kind, PROCORD_OUTCOME_KILLED);
  int slept = outcome_is_value(finish(running), "slept");
  procord_delegation_release(running);
  CHECK(slept);
  /* The worker was killed rather than left to run the killed task for
     nobody; the next task gets a new one. */
  procord_delegation_t *next = submit(pool, "double", "7", 0, 0);
  int doubled = outcome_is_value(finish(next), "14");
  procord_delegation_release(next);
  CHECK(doubled);
  CHECK_EQ_INT(stats_of(pool).workers_started, 2);
  stop_pool(pool, 0);
  CHECK_NOTHING_LEFT();
}

/* Submits double(1), double(2) and double(3), idempotent, behind a running task. */
static void submit_three_doubles(procord_pool_t *pool, procord_delegation_t *tasks[3]) {
  tasks[0] = submit(pool, "double", "1", 0, 1);
  tasks[1] = submit(pool, "double", "2", 0, 1);
  tasks[2] = submit(pool, "double", "3", 0, 1);
}

static void
killed_task_in_the_middle_of_those_sent_ahead_stops_its_worker_and_the_next_runs_elsewhere(void) {
  BEGIN();
  procord_pool_t *pool = send_ahead_pool(4);
  CHECK(pool);
  procord_delegation_t *running = submit(pool, "sleep", "300", 0, 0), *ahead[3];
  submit_three_doubles(pool, ahead);
  CHECK(running && ahead[0] && ahead[1] && ahead[2]);
  CHECK(queue_empties(pool));
  CHECK_EQ_INT(procord_delegation_kill(ahead[1]), 0);
  int killed = finish(ahead[1])->kind == PROCORD_OUTCOME_KILLED;
  int right = outcome_is_value(finish(running), "slept") &&
              outcome_is_value(finish(ahead[0]), "2") && outcome_is_value(finish(ahead[2]), "6");
  procord_delegation_release(running);
  for (int i = 0; i < 3; i++) procord_delegation_release(ahead[i]);
  CHECK(killed);
  CHECK(right);
  CHECK_EQ_INT(stats_of(pool).workers_started, 2); /* killed on reaching the killed task */
  CHECK_EQ_INT(stats_of(pool).tasks_retried, 0);
  stop_pool(pool, 0);
  CHECK_NOTHING_LEFT();
}

static void tasks_sent_ahead_go_back_in_order_when_their_worker_dies(void) {
  BEGIN();
  procord_pool_t *pool = send_ahead_pool(4);
  CHECK(pool);
  procord_delegation_t *crashing = submit(pool, "crash_after", "300", 0, 0), *ahead[3];
  for (int i = 0; i < 3; i++) ahead[i] = submit(pool, "sleep", "100", 0, 1);
  CHECK(crashing && ahead[0] && ahead[1] && ahead[2]);
  CHECK(queue_empties(pool));
  CHECK(!procord_delegation_is_finished(
      crashing)); /* they went ahead, not to a worker of their own */
  CHECK_EQ_INT(procord_delegation_kill(ahead[1]), 0); /* dropped: it does not come back */
  int crashed = finish(crashing)->kind == PROCORD_OUTCOME_DISCONNECTED;
  /* Back in their order: the first ends while the last still waits behind it. */
  procord_delegation_t *returned[2] = {ahead[0], ahead[2]};
  procord_delegation_wait(loop, returned, 2, 0, 20000);
  int in_order =
      procord_delegation_is_finished(ahead[0]) && !procord_delegation_is_finished(ahead[2]);
  int right = outcome_is_value(finish(ahead[0]), "slept") &&
              outcome_is_value(finish(ahead[2]), "slept") &&
              finish(ahead[1])->kind == PROCORD_OUTCOME_KILLED;
  int attempts[2] = {procord_delegation_outcome(ahead[0])->attempts,
                     procord_delegation_outcome(ahead[2])->attempts};
  procord_delegation_release(crashing);
  for (int i = 0; i < 3; i++) procord_delegation_release(ahead[i]);
  CHECK(crashed);
  CHECK(in_order);
  CHECK(right);
  CHECK_EQ_INT(attempts[0], 1);
  CHECK_EQ_INT(attempts[1], 1);
  CHECK_EQ_INT(stats_of(pool).tasks_retried, 0);
  CHECK_EQ_INT(stats_of(pool).workers_started, 2);
  stop_pool(pool, 0);
  CHECK_NOTHING_LEFT();
}

static void task_not_marked_idempotent_is_not_sent_ahead(void) {
  BEGIN();
  procord_pool_t *pool = send_ahead_pool(4);
  CHECK(pool);
  procord_delegation_t *running = submit(pool, "sleep", "300", 0, 0);
  procord_delegation_t *waiting = submit(pool, "double", "2", 0, 0);
  int stays_queued = stays_in_the_queue(running, waiting, pool);
  int right = outcome_is_value(finish(running), "slept") && outcome_is_value(finish(waiting), "4");
  procord_delegation_release(running);
  procord_delegation_release(waiting);
  CHECK(stays_queued);
  CHECK(right);
  stop_pool(pool, 0);
  CHECK_NOTHING_LEFT();
}

static void worker_above_the_memory_bound_is_retired_after_its_tasks_sent_ahead(void) {
#ifdef UNDER_ADDRESS_SANITIZER
  return; /* its shadow memory counts in every worker's resident size */
#endif
  BEGIN();
  procord_pool_t *pool = make_pool(
      (procord_pool_options_t){.max_workers = 1, .send_ahead = 4, .max_resident_bytes = 64u << 20},
      local_source(1));
  CHECK(pool);
  /* Each "hold" keeps 8 MiB more: past the bound within a few tasks, while
     tasks are sent ahead all along. */
  enum { COUNT = 40 };
  procord_delegation_t *tasks[COUNT];
  for (int i = 0; i < COUNT; i++) tasks[i] = submit(pool, "hold", "8", 0, 1);
  for (int i = 0; i < COUNT; i++) CHECK(tasks[i]);
  CHECK_EQ_INT(procord_delegation_wait(loop, tasks, COUNT, 1, 20000), COUNT);
  int right = 0;
  for (int i = 0; i < COUNT; i++) {
    right += procord_delegation_outcome(tasks[i])->kind == PROCORD_OUTCOME_VALUE;
    procord_delegation_release(tasks[i]);
  }
  CHECK_EQ_INT(right, COUNT);
  CHECK(stats_of(pool).workers_started >= 3); /* retired again and again, never stuck */
  CHECK_EQ_INT(stats_of(pool).tasks_retried, 0);
  stop_pool(pool, 0);
  CHECK_NOTHING_LEFT();
}

static void without_send_ahead_the_next_task_waits_in_the_queue(void) {
  BEGIN();
  procord_pool_t *pool = make_pool((procord_pool_options_t){.max_workers = 1}, local_source(1));
  CHECK(pool);
  procord_delegation_t *warm = submit(pool, "double", "0", 0, 0);
  finish(warm);
  procord_delegation_release(warm);
  procord_delegation_t *running = submit(pool, "sleep", "300", 0, 0);
  procord_delegation_t *queued = submit(pool, "double", "2", 0, 0);
  int stays_queued = stays_in_the_queue(running, queued, pool);
  int right = outcome_is_value(finish(running), "slept") && outcome_is_value(finish(queued), "4");
  procord_delegation_release(running);
  procord_delegation_release(queued);
  CHECK(stays_queued);
  CHECK(right);
  stop_pool(pool, 0);
  CHECK_NOTHING_LEFT();
}

/* ---- The worker side of this program ---- */

static void task_sleep(void *context, const unsigned char *input, size_t length,
                       procord_reply_t *reply) {
  (void)context;
  usleep((useconds_t)(fixture_input_number(input, length) * 1000));
  fixture_reply_text(reply, PROCORD_FRAME_VALUE, "slept");
}

/* Starts `sleep` in the worker's group, then waits for it. */
static void task_sleep_child(void *context, const unsigned char *input, size_t length,
                             procord_reply_t *reply) {
  (void)context;
  char command[64];
  snprintf(command, sizeof command, "sleep %lld", fixture_input_number(input, length) / 1000);
  int status = system(command);
  (void)status;
  fixture_reply_text(reply, PROCORD_FRAME_VALUE, "slept");
}

static void ignore_term(int signal) { (void)signal; }

/*
 * Starts a shell that writes "TERM" to the file named by the input when it
 * gets SIGTERM, and waits for it, outliving SIGTERM itself: only a SIGTERM to
 * the whole group reaches the shell. No answer: the deadline has passed.
 */
static void task_child_traps_term(void *context, const unsigned char *input, size_t length,
                                  procord_reply_t *reply) {
  (void)context;
  char path[256] = {0};
  memcpy(path, input, length < sizeof path - 1 ? length : sizeof path - 1);
  struct sigaction survive = {0};
  survive.sa_handler = ignore_term; /* a handler, not SIG_IGN: the shell gets the default back */
  sigaction(SIGTERM, &survive, NULL);
  char *arguments[] = {"sh", "-c", "trap 'echo TERM > \"$0\"; exit 0' TERM; sleep 30 & wait", path,
                       NULL};
  pid_t shell;
  if (posix_spawn(&shell, "/bin/sh", NULL, NULL, arguments, environ) != 0) {
    fixture_reply_text(reply, PROCORD_FRAME_EXCEPTION, "cannot start sh");
    return;
  }
  while (waitpid(shell, NULL, 0) < 0 && errno == EINTR) {
  }
  _exit(0);
}

static void task_crash(void *context, const unsigned char *input, size_t length,
                       procord_reply_t *reply) {
  (void)context;
  (void)input;
  (void)length;
  (void)reply;
  signal(SIGSEGV, SIG_DFL); /* a sanitizer's handler would turn it into an abort */
  raise(SIGSEGV);
}

/* Sleeps, then crashes: a task that takes its worker down after a while. */
static void task_crash_after(void *context, const unsigned char *input, size_t length,
                             procord_reply_t *reply) {
  (void)reply;
  (void)context;
  usleep((useconds_t)(fixture_input_number(input, length) * 1000));
  signal(SIGSEGV, SIG_DFL);
  raise(SIGSEGV);
}

static void task_crash_once(void *context, const unsigned char *input, size_t length,
                            procord_reply_t *reply) {
  (void)context;
  char path[256] = {0};
  memcpy(path, input, length < sizeof path - 1 ? length : sizeof path - 1);
  int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
  if (fd >= 0) {
    close(fd);
    raise(SIGKILL);
  }
  fixture_reply_text(reply, PROCORD_FRAME_VALUE, "survived");
}

static char *volatile held; /* "alloc" stores here, so the allocation is not optimized away */
static char
    *volatile held_blocks[64]; /* what "hold" keeps: the worker grows (reachable: no leak) */
static int held_count;

static void task_alloc(void *context, const unsigned char *input, size_t length,
                       procord_reply_t *reply) {
  (void)context;
  size_t bytes = (size_t)fixture_input_number(input, length) << 20;
  char *memory = malloc(bytes);
  if (!memory) {
    fixture_reply_text(reply, PROCORD_FRAME_EXCEPTION, "cannot allocate");
    return;
  }
  memset(memory, 1, bytes);
  held = memory; /* so that the allocation is not optimized away */
  free(held);
  held = NULL;
  fixture_reply_text(reply, PROCORD_FRAME_VALUE, "allocated");
}

static void task_hold(void *context, const unsigned char *input, size_t length,
                      procord_reply_t *reply) {
  (void)context;
  size_t bytes = (size_t)fixture_input_number(input, length) << 20;
  char *memory = malloc(bytes);
  if (memory) memset(memory, 1, bytes);
  if (memory && held_count < 64) held_blocks[held_count++] = memory;
  fixture_reply_text(reply, memory ? PROCORD_FRAME_VALUE : PROCORD_FRAME_EXCEPTION,
                     memory ? "held" : "no memory");
}

static void task_nofile(void *context, const unsigned char *input, size_t length,
                        procord_reply_t *reply) {
  (void)context;
  (void)input;
  (void)length;
  struct rlimit limit;
  getrlimit(RLIMIT_NOFILE, &limit);
  char out[32];
  snprintf(out, sizeof out, "%llu", (unsigned long long)limit.rlim_cur);
  fixture_reply_text(reply, PROCORD_FRAME_VALUE, out);
}

static void task_cwd(void *context, const unsigned char *input, size_t length,
                     procord_reply_t *reply) {
  (void)context;
  (void)input;
  (void)length;
  char directory[4096];
  fixture_reply_text(reply, PROCORD_FRAME_VALUE,
                     getcwd(directory, sizeof directory) ? directory : "?");
}

static const procord_worker_task_t worker_tasks[] = {
    {"double", fixture_task_double, NULL},
    {"sleep", task_sleep, NULL},
    {"sleep_child", task_sleep_child, NULL},
    {"crash", task_crash, NULL},
    {"crash_once", task_crash_once, NULL},
    {"alloc", task_alloc, NULL},
    {"hold", task_hold, NULL},
    {"nofile", task_nofile, NULL},
    {"cwd", task_cwd, NULL},
    {"crash_after", task_crash_after, NULL},
    {"child_traps_term", task_child_traps_term, NULL},
};

int main(int argc, char **argv) {
  int at_process_limit = argc == 2 && strcmp(argv[1], "at-process-limit") == 0;
  /* Before the loop's thread starts: every thread is then that user's. */
  int user_error = at_process_limit ? become_a_user_of_its_own() : 0;
  if (user_error) {
    printf("cannot become another user: %s\n", procord_err_name(user_error));
    return 0;
  }
  /* That user must be able to start this program again for its workers:
     not from a clone in a private directory (mktemp -d makes one 0700). */
  char program[4096];
  ssize_t length = at_process_limit ? readlink("/proc/self/exe", program, sizeof program - 1) : -1;
  if (length > 0) {
    program[length] = 0;
    if (access(program, X_OK) != 0) {
      printf("cannot become another user that may run %s: %s\n", program, strerror(errno));
      return 0;
    }
  }
  loop = fixture_start(argc, argv, worker_tasks, sizeof worker_tasks / sizeof *worker_tasks,
                       self_path, sizeof self_path);
  if (!loop) return 1;
  socket_arguments[0] = stdio_arguments[0] = self_path;
  if (argc == 2 && strcmp(argv[1], "make-orphans") == 0) return make_orphans(1);
  if (argc == 2 && strcmp(argv[1], "make-stdio-orphans") == 0) return make_orphans(0);
  if (at_process_limit) return run_at_process_limit();
  /* What a worker's task leaves behind becomes ours: tests see it. */
  prctl(PR_SET_CHILD_SUBREAPER, 1);

  RUN(reusable_worker_runs_every_task_of_a_pool_of_one);
  RUN(many_tasks_in_flight_share_the_maximum_of_workers);
  RUN(original_stdio_worker_is_used_once_and_replaced);
  RUN(min_workers_are_started_ahead_and_kept);

  RUN(worker_is_retired_after_max_tasks);
  RUN(worker_above_the_memory_bound_is_retired);
  RUN(idle_worker_above_the_minimum_stops_after_the_idle_timeout);
  RUN(crashed_worker_disconnects_its_task_with_the_signal_and_is_replaced);
  RUN(idempotent_task_runs_again_after_its_worker_died);
  RUN(task_not_marked_idempotent_is_not_run_again);
  RUN(missing_program_fails_the_task_with_enoent);
  RUN(program_that_exits_at_once_is_started_again_only_after_a_rest);
  RUN(pool_at_the_descriptor_limit_runs_queued_tasks_on_the_workers_it_has);
  RUN(pool_without_a_worker_at_the_descriptor_limit_fails_the_task_at_once_with_emfile);
  RUN(pool_at_the_process_limit_runs_queued_tasks_on_the_workers_it_has);

  RUN(kill_of_a_running_pooled_task_kills_its_worker_and_the_pool_replaces_it);
  RUN(kill_of_a_queued_task_ends_it_without_touching_a_worker);
  RUN(deadline_ends_a_pooled_task_as_timed_out_and_kills_its_group);
  RUN(deadline_sends_sigterm_to_the_whole_process_group_of_the_task);
  RUN(deadline_ends_a_one_off_delegation_as_timed_out);
  RUN(deadline_of_a_task_that_answers_in_time_changes_nothing);

  RUN(workers_die_with_a_main_program_killed_while_their_sockets_stay_open);
  RUN(stdio_workers_die_with_a_main_program_killed_while_their_pipes_stay_open);

  RUN(borrowed_input_is_sent_then_given_back_once);
  RUN(borrowed_input_of_a_one_off_delegation_is_given_back_once);

  RUN(task_sent_ahead_runs_after_the_running_one_on_the_same_worker);
  RUN(task_sent_ahead_is_queued_again_when_its_worker_dies_first);
  RUN(killed_task_sent_ahead_ends_at_once_and_its_worker_when_it_gets_there);
  RUN(killed_task_in_the_middle_of_those_sent_ahead_stops_its_worker_and_the_next_runs_elsewhere);
  RUN(tasks_sent_ahead_go_back_in_order_when_their_worker_dies);
  RUN(task_not_marked_idempotent_is_not_sent_ahead);
  RUN(worker_above_the_memory_bound_is_retired_after_its_tasks_sent_ahead);
  RUN(without_send_ahead_the_next_task_waits_in_the_queue);

  RUN(full_queue_refuses_with_efull);
  RUN(graceful_shutdown_finishes_queued_tasks);
  RUN(immediate_shutdown_kills_running_and_queued_tasks);
  RUN(released_pool_stops_its_workers);
  RUN(pool_without_sources_is_einval);

  RUN(address_space_limit_fails_a_big_allocation_cleanly);
  RUN(open_files_limit_reaches_the_worker);
  RUN(limit_above_our_hard_limit_fails_the_start);
  RUN(working_directory_is_the_workers);

  procord_loop_free(loop);
  return CHECK_SUMMARY();
}
