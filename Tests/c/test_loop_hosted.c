#define _GNU_SOURCE
/*
 * A loop hosted by someone else's event loop (procord/loop.h): on the
 * host's libevent base, or polled by a plain poll() loop through the
 * backend descriptor and timeout. The host's own timer keeps ticking on
 * time while 100 delegations and a 1,000-task pool run, and the library
 * starts no thread (/proc/self/task is counted at every tick). A server
 * starts, serves a client of the same loop (by name) and stops there.
 * Blocking waits on the host's thread are refused instead of dead-locking.
 *
 * This program is its own worker (`double`, `sleep`).
 */
#include "check.h"
#include "fixtures.h"
#include "procord/delegation.h"
#include "procord/error.h"
#include "procord/log.h"
#include "procord/loop.h"
#include "procord/pool.h"
#include "procord/server.h"
#include "procord/worker.h"

#include <dirent.h>
#include <event2/event.h>
#include <poll.h>
#include <pthread.h>
#include <sys/resource.h>

enum {
  DELEGATIONS = 100,
  POOL_TASKS = 1000,
  TICK_MS = 10,
  DELEGATIONS_PER_TICK = 5,
  /* How late the host's tick may come. A tick waits at most for the
     callbacks of one turn of the loop, each of which must return quickly:
     this is that, with room for a loaded two-core machine and sanitizers. */
  MOST_LATE_MS = 100,
};

static char self_path[4096];
static const char *worker_arguments[] = {self_path, "--procord-worker", "--procord-socket-fd", "3",
                                         NULL};

static const char *handoff_arguments[] = {self_path, "--procord-worker", "--procord-handoff-fd",
                                          "3", NULL};

static const procord_worker_task_t worker_tasks[] = {
    {"double", fixture_task_double, NULL},
    {"sleep", fixture_task_sleep, NULL},
};

static int thread_count(void) {
  DIR *tasks = opendir("/proc/self/task");
  if (!tasks) return -1;
  int count = 0;
  struct dirent *entry;
  while ((entry = readdir(tasks)))
    if (entry->d_name[0] != '.') count++;
  closedir(tasks);
  return count;
}

/* ---- The host's side: a timer of its own, and what it saw ---- */

typedef struct host_s host_t;

/* One task's context: its host, and its input (the index). */
typedef struct {
  host_t *host;
  int input;
} work_item_t;

struct host_s {
  struct event_base *base; /* the libevent host's; NULL for the poll() host */
  procord_loop_t *loop;
  long long next_tick_ms;
  long long most_late_ms;
  int ticks;
  int threads_at_start, most_threads;
  int waits_refused; /* procord_delegation_wait with a time, from a tick */
  /* The work */
  procord_delegation_t *delegations[DELEGATIONS];
  procord_delegation_t *pooled[POOL_TASKS];
  procord_pool_t *pool;
  int finished, wrong_values;
  int pool_stopped;
  int started, start_failed;
  work_item_t items[DELEGATIONS + POOL_TASKS];
};

static int start_delegations(host_t *host, int count);

/* The host's tick: how late it came, and how many threads there are. It
   also starts the next few one-off delegations, as a host program would
   over time (a start spawns a process on this thread: 100 at once would
   hold the tick back by 100 spawns). */
static void tick(host_t *host) {
  long long now = now_ms();
  if (now - host->next_tick_ms > host->most_late_ms) host->most_late_ms = now - host->next_tick_ms;
  host->ticks++;
  if (host->started < DELEGATIONS && start_delegations(host, DELEGATIONS_PER_TICK) != 0)
    host->start_failed = 1;
  host->next_tick_ms = now_ms() + TICK_MS;
  int threads = thread_count();
  if (threads > host->most_threads) host->most_threads = threads;
  /* On the host's thread, a wait with a time would wait for ever. */
  if (host->ticks == 3 && host->started > 0 &&
      procord_delegation_wait(host->loop, host->delegations, 1, 1, -1) == -EDEADLK &&
      procord_delegation_wait(host->loop, host->delegations, 1, 1, 1000) == -EDEADLK &&
      procord_delegation_wait(host->loop, host->delegations, 1, 1, 0) >= 0)
    host->waits_refused = 1;
}

static void on_libevent_tick(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  tick(context);
}

static void count_finished(procord_delegation_t *delegation, const procord_outcome_t *outcome,
                           void *context) {
  (void)delegation;
  work_item_t *item = context;
  host_t *host = item->host;
  char expected[32];
  snprintf(expected, sizeof expected, "%d", 2 * item->input);
  if (outcome->kind != PROCORD_OUTCOME_VALUE || outcome->length != strlen(expected) ||
      memcmp(outcome->body, expected, outcome->length) != 0)
    host->wrong_values++;
  if (++host->finished == DELEGATIONS + POOL_TASKS) procord_pool_shutdown(host->pool, 0);
}

static void on_pool_stopped(procord_pool_t *pool, void *context) {
  (void)pool;
  host_t *host = context;
  host->pool_stopped = 1;
  if (host->base) event_base_loopbreak(host->base);
}

static char inputs[DELEGATIONS + POOL_TASKS][16];

static const procord_spawn_options_t worker = {
    .program = self_path, .arguments = worker_arguments, .channel = PROCORD_CHANNEL_SOCKET};

/* Task `i`: a one-off delegation below DELEGATIONS, a pooled one above. */
static int start_task(host_t *host, int i) {
  snprintf(inputs[i], sizeof inputs[i], "%d", i);
  host->items[i] = (work_item_t){host, i};
  procord_delegation_options_t options = {
      .task_name = "double",
      .input = inputs[i],
      .input_length = strlen(inputs[i]),
      .worker = worker,
      .on_done = count_finished,
      .context = &host->items[i],
  };
  return i < DELEGATIONS
             ? procord_delegate(host->loop, &options, &host->delegations[i])
             : procord_pool_delegate(host->pool, &options, &host->pooled[i - DELEGATIONS]);
}

static int start_delegations(host_t *host, int count) {
  for (; count > 0 && host->started < DELEGATIONS; count--, host->started++)
    if (start_task(host, host->started) != 0) return -1;
  return 0;
}

/* 1,000 tasks queued for a pool of 4 workers, from the host's thread
   before its loop runs; the 100 one-off delegations start from its ticks. */
static int start_work(host_t *host) {
  procord_pool_source_t source = {.worker = worker};
  procord_pool_options_t pool_options = {.sources = &source,
                                         .source_count = 1,
                                         .max_workers = 4,
                                         .on_stopped = on_pool_stopped,
                                         .context = host};
  if (procord_pool_new(host->loop, &pool_options, &host->pool) != 0) return -1;
  for (int i = DELEGATIONS; i < DELEGATIONS + POOL_TASKS; i++)
    if (start_task(host, i) != 0) return -1;
  return 0;
}

static void release_work(host_t *host) {
  for (int i = 0; i < DELEGATIONS; i++) procord_delegation_release(host->delegations[i]);
  for (int i = 0; i < POOL_TASKS; i++) procord_delegation_release(host->pooled[i]);
  procord_pool_release(host->pool);
}

/* What both hosts must have seen once their loop is done: every task
   answered right, no thread of the library's, the tick on time, the waits
   refused. Says on stderr what it saw; returns whether all held. */
static int host_saw_everything_on_time(const host_t *host, const char *name) {
  fprintf(
      stderr,
      "    %s: %d tasks answered (%d wrong), %d ticks, the latest %lld ms late, threads %d (%d at start)\n",
      name, host->finished, host->wrong_values, host->ticks, host->most_late_ms, host->most_threads,
      host->threads_at_start);
  return host->pool_stopped && host->finished == DELEGATIONS + POOL_TASKS &&
         host->wrong_values == 0 && !host->start_failed &&
         host->most_threads == host->threads_at_start &&
         host->ticks >= DELEGATIONS / DELEGATIONS_PER_TICK && host->waits_refused &&
         host->most_late_ms <= MOST_LATE_MS;
}

/* ---- Tests ---- */

static void on_a_host_libevent_base_the_work_runs_with_no_thread_and_the_hosts_timer_on_time(void) {
  BEGIN();
  host_t host = {0};
  host.base = event_base_new();
  CHECK(host.base != NULL);
  host.threads_at_start = host.most_threads = thread_count();
  CHECK_EQ_INT(procord_loop_new_on_base(host.base, &host.loop), 0);
  CHECK_EQ_INT(start_work(&host), 0);
  struct event *timer = event_new(host.base, -1, EV_PERSIST, on_libevent_tick, &host);
  struct timeval every = {0, TICK_MS * 1000};
  host.next_tick_ms = now_ms() + TICK_MS;
  event_add(timer, &every);
  CHECK_EQ_INT(event_base_dispatch(host.base), 0);
  event_free(timer);

  CHECK(host_saw_everything_on_time(&host, "libevent host"));
  release_work(&host);
  procord_loop_free(host.loop);
  event_base_free(host.base);
  CHECK_NOTHING_LEFT();
}

static void through_a_poll_loop_the_work_runs_with_no_thread_and_the_hosts_timer_on_time(void) {
  BEGIN();
  host_t host = {0};
  host.threads_at_start = host.most_threads = thread_count();
  CHECK_EQ_INT(procord_loop_new_polled(&host.loop), 0);
  int backend = procord_loop_backend_fd(host.loop);
  CHECK(backend > 2);
  CHECK_EQ_INT(start_work(&host), 0);
  host.next_tick_ms = now_ms() + TICK_MS;
  while (!host.pool_stopped) {
    /* The host waits for whichever comes first: its own tick, the
       library's next timer, or the backend descriptor. */
    long long until_tick = host.next_tick_ms - now_ms();
    int timeout = procord_loop_backend_timeout(host.loop);
    if (until_tick < 0) until_tick = 0;
    if (timeout < 0 || timeout > until_tick) timeout = (int)until_tick;
    struct pollfd watched = {backend, POLLIN, 0};
    CHECK(poll(&watched, 1, timeout) >= 0);
    if (now_ms() >= host.next_tick_ms) tick(&host);
    CHECK_EQ_INT(procord_loop_run_nowait(host.loop), 0);
  }
  CHECK(host_saw_everything_on_time(&host, "poll host"));
  release_work(&host);
  procord_loop_free(host.loop);
  CHECK_NOTHING_LEFT();
}

/* A deadline is a timer of the library's: the poll host must wake for it
   through the timeout alone, with the backend descriptor quiet. */
static void a_polled_loops_timeout_brings_a_deadline_on_time(void) {
  BEGIN();
  procord_loop_t *loop = NULL;
  CHECK_EQ_INT(procord_loop_new_polled(&loop), 0);
  CHECK_EQ_INT(procord_loop_backend_timeout(loop), -1);
  procord_delegation_options_t options = {
      .task_name = "sleep",
      .input = "60000",
      .input_length = 5,
      .deadline_ms = 300,
      .worker = {.program = self_path,
                 .arguments = worker_arguments,
                 .channel = PROCORD_CHANNEL_SOCKET},
  };
  procord_delegation_t *d = NULL;
  long long started = now_ms();
  CHECK_EQ_INT(procord_delegate(loop, &options, &d), 0);
  int backend = procord_loop_backend_fd(loop);
  while (!procord_delegation_is_finished(d)) {
    struct pollfd watched = {backend, POLLIN, 0};
    poll(&watched, 1, procord_loop_backend_timeout(loop));
    procord_loop_run_nowait(loop);
    CHECK(now_ms() - started < 20000);
  }
  long long took = now_ms() - started;
  CHECK_EQ_INT(procord_delegation_outcome(d)->kind, PROCORD_OUTCOME_TIMED_OUT);
  CHECK(took >= 300);
  procord_delegation_release(d);
  procord_loop_free(loop);
  CHECK_NOTHING_LEFT();
}

typedef struct {
  procord_loop_t *loop;
  procord_delegation_t *delegation;
  int error;
  int done;
} from_thread_t;

static void *delegate_from_another_thread(void *argument) {
  from_thread_t *call = argument;
  procord_delegation_options_t options = {
      .task_name = "double",
      .input = "21",
      .input_length = 2,
      .worker = {.program = self_path,
                 .arguments = worker_arguments,
                 .channel = PROCORD_CHANNEL_SOCKET},
  };
  call->error = procord_delegate(call->loop, &options, &call->delegation);
  /* Off the loop's thread a wait may wait: the host's loop runs meanwhile. */
  if (!call->error && procord_delegation_wait(call->loop, &call->delegation, 1, 1, 20000) != 1)
    call->error = -1;
  __atomic_store_n(&call->done, 1, __ATOMIC_RELEASE);
  return NULL;
}

static void another_thread_delegates_through_the_hosts_loop_and_waits(void) {
  BEGIN();
  struct event_base *base = event_base_new();
  CHECK(base != NULL);
  from_thread_t call = {0};
  CHECK_EQ_INT(procord_loop_new_on_base(base, &call.loop), 0);
  pthread_t thread;
  CHECK_EQ_INT(pthread_create(&thread, NULL, delegate_from_another_thread, &call), 0);
  /* The host runs its base, a turn at a time, until the thread is done:
     the thread's calls and its task's end each wake the base. */
  struct timeval short_turn = {0, 50 * 1000};
  while (!__atomic_load_n(&call.done, __ATOMIC_ACQUIRE)) {
    event_base_loopexit(base, &short_turn);
    event_base_loop(base, EVLOOP_ONCE);
  }
  pthread_join(thread, NULL);
  CHECK_EQ_INT(call.error, 0);
  const procord_outcome_t *outcome = procord_delegation_outcome(call.delegation);
  CHECK_EQ_INT(outcome->kind, PROCORD_OUTCOME_VALUE);
  CHECK_BYTES(outcome->body, outcome->length, "42");
  procord_delegation_release(call.delegation);
  procord_loop_free(call.loop);
  event_base_free(base);
  CHECK_NOTHING_LEFT();
}

static void freeing_a_hosted_loop_kills_and_reaps_its_running_workers(void) {
  BEGIN();
  struct event_base *base = event_base_new();
  procord_loop_t *loop = NULL;
  CHECK_EQ_INT(procord_loop_new_on_base(base, &loop), 0);
  procord_delegation_options_t options = {
      .task_name = "sleep",
      .input = "60000",
      .input_length = 5,
      .worker = {.program = self_path,
                 .arguments = worker_arguments,
                 .channel = PROCORD_CHANNEL_SOCKET},
  };
  procord_delegation_t *d[3] = {0};
  for (int i = 0; i < 3; i++) CHECK_EQ_INT(procord_delegate(loop, &options, &d[i]), 0);
  /* Let them start: the host runs its base a few turns. */
  for (int i = 0; i < 5; i++) event_base_loop(base, EVLOOP_NONBLOCK);
  long long started = now_ms();
  procord_loop_free(loop);
  CHECK(now_ms() - started < 10000);
  for (int i = 0; i < 3; i++) {
    CHECK(procord_delegation_is_finished(d[i]));
    CHECK_EQ_INT(procord_delegation_outcome(d[i])->kind, PROCORD_OUTCOME_KILLED);
    procord_delegation_release(d[i]);
  }
  event_base_free(base);
  CHECK_NOTHING_LEFT();
}

/* ---- A server on the host's loop, and a client of it on the same loop ---- */

typedef struct {
  struct event_base *base; /* NULL: polled */
  procord_server_t *server;
  procord_delegation_t *delegation;
  int threads_in_on_done;
  int stopped;
} hosted_server_t;

static void stop_server_when_answered(procord_delegation_t *delegation,
                                      const procord_outcome_t *outcome, void *context) {
  (void)delegation;
  (void)outcome;
  hosted_server_t *hosted = context;
  hosted->threads_in_on_done = thread_count();
  procord_server_stop(hosted->server, PROCORD_SERVER_STOP_GRACEFUL);
}

static void on_server_stopped(void *context) {
  hosted_server_t *hosted = context;
  hosted->stopped = 1;
  if (hosted->base) event_base_loopbreak(hosted->base);
}

static void a_server_starts_serves_by_name_and_stops_on_a_hosts_loop(void) {
  BEGIN();
  int threads = thread_count();
  for (int polled = 0; polled <= 1; polled++) {
    hosted_server_t hosted = {0};
    hosted.base = polled ? NULL : event_base_new();
    procord_loop_t *loop = NULL;
    CHECK_EQ_INT(
        polled ? procord_loop_new_polled(&loop) : procord_loop_new_on_base(hosted.base, &loop), 0);
    procord_server_options_t options;
    procord_server_options_init(&options);
    options.port = 0;
    options.worker =
        (procord_spawn_options_t){.program = self_path, .arguments = handoff_arguments};
    options.on_stopped = on_server_stopped;
    options.context = &hosted;
    CHECK_EQ_INT(procord_server_start(loop, &options, &hosted.server), 0);
    char address[PROCORD_SERVER_ADDRESS_SIZE];
    int port = 0;
    CHECK_EQ_INT(procord_server_address(hosted.server, address, sizeof address, &port), 0);
    CHECK(port > 0);
    /* By name: "localhost" is looked up on the loop too. */
    procord_delegation_options_t task = {
        .task_name = "double",
        .input = "21",
        .input_length = 2,
        .remote_host = "localhost",
        .remote_port = port,
        .on_done = stop_server_when_answered,
        .context = &hosted,
    };
    CHECK_EQ_INT(procord_delegate(loop, &task, &hosted.delegation), 0);
    /* A wait for the server, on the host's thread, could never end. */
    CHECK_EQ_INT(procord_server_wait(hosted.server, -1), -EDEADLK);
    long long started = now_ms();
    while (!hosted.stopped && now_ms() - started < 20000) {
      if (polled) {
        struct pollfd watched = {procord_loop_backend_fd(loop), POLLIN, 0};
        poll(&watched, 1, procord_loop_backend_timeout(loop));
        procord_loop_run_nowait(loop);
      } else {
        event_base_dispatch(hosted.base);
      }
    }
    CHECK(hosted.stopped);
    CHECK(procord_server_is_stopped(hosted.server));
    const procord_outcome_t *outcome = procord_delegation_outcome(hosted.delegation);
    CHECK(outcome != NULL);
    CHECK_EQ_INT(outcome->kind, PROCORD_OUTCOME_VALUE);
    CHECK_BYTES(outcome->body, outcome->length, "42");
    CHECK_EQ_INT(hosted.threads_in_on_done, threads);
    procord_delegation_release(hosted.delegation);
    procord_server_free(hosted.server);
    procord_loop_free(loop);
    if (hosted.base) event_base_free(hosted.base);
  }
  CHECK_EQ_INT(thread_count(), threads);
  CHECK_NOTHING_LEFT();
}

typedef struct {
  procord_loop_t *loop;
  char logged[1024];
  int called;
} freed_in_callback_t;

static void keep_log_line(void *context, procord_log_level_t level, const char *line) {
  (void)level;
  freed_in_callback_t *freed = context;
  snprintf(freed->logged, sizeof freed->logged, "%s", line);
}

static void free_from_the_bases_callback(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  freed_in_callback_t *freed = context;
  procord_loop_free(freed->loop);
  freed->called = 1;
}

static void freeing_from_a_callback_of_the_hosts_base_says_so_and_can_be_done_again_after(void) {
  BEGIN();
  struct event_base *base = event_base_new();
  freed_in_callback_t freed = {0};
  CHECK_EQ_INT(procord_loop_new_on_base(base, &freed.loop), 0);
  procord_set_log(keep_log_line, &freed);
  procord_delegation_options_t options = {
      .task_name = "sleep",
      .input = "60000",
      .input_length = 5,
      .worker = {.program = self_path,
                 .arguments = worker_arguments,
                 .channel = PROCORD_CHANNEL_SOCKET},
  };
  procord_delegation_t *d = NULL;
  CHECK_EQ_INT(procord_delegate(freed.loop, &options, &d), 0);
  struct timeval soon = {0, 1000};
  CHECK_EQ_INT(event_base_once(base, -1, EV_TIMEOUT, free_from_the_bases_callback, &freed, &soon),
               0);
  while (!freed.called) CHECK_EQ_INT(event_base_loop(base, EVLOOP_ONCE), 0);
  procord_set_log(NULL, NULL);
  CHECK_CONTAINS(freed.logged,
                 "call procord_loop_free again once the base's dispatch has returned");
  /* The killed worker is reaped on the host's dispatch, as the host runs it. */
  int turns = 0;
  struct timeval tick = {0, 20 * 1000};
  while (!procord_delegation_is_finished(d) && turns < 500) {
    event_base_loopexit(base, &tick);
    CHECK_EQ_INT(event_base_dispatch(base), 0);
    turns++;
  }
  CHECK(procord_delegation_is_finished(d));
  procord_loop_free(freed.loop);
  CHECK_EQ_INT(procord_delegation_outcome(d)->kind, PROCORD_OUTCOME_KILLED);
  procord_delegation_release(d);
  event_base_free(base);
  CHECK_NOTHING_LEFT();
}

static void a_hosted_loop_is_run_by_its_host_only(void) {
  BEGIN();
  struct event_base *base = event_base_new();
  procord_loop_t *hosted = NULL, *polled = NULL;
  CHECK_EQ_INT(procord_loop_new_on_base(NULL, &hosted), PROCORD_EINVAL);
  CHECK_EQ_INT(procord_loop_new_on_base(base, &hosted), 0);
  CHECK_EQ_INT(procord_loop_new_polled(&polled), 0);
  CHECK_EQ_INT(procord_loop_run(hosted), PROCORD_EINVAL);
  CHECK_EQ_INT(procord_loop_start_thread(hosted), PROCORD_EINVAL);
  CHECK_EQ_INT(procord_loop_run(polled), PROCORD_EINVAL);
  CHECK_EQ_INT(procord_loop_backend_fd(hosted), PROCORD_EINVAL);
  CHECK_EQ_INT(procord_loop_backend_timeout(hosted), PROCORD_EINVAL);
  CHECK_EQ_INT(procord_loop_run_nowait(hosted), PROCORD_EINVAL);
  CHECK(procord_loop_is_current_thread(hosted));
  /* SIGPIPE is blocked on the host's thread: a write to a closed pipe is EPIPE. */
  int pipe_ends[2];
  CHECK_EQ_INT(pipe2(pipe_ends, O_CLOEXEC), 0);
  close(pipe_ends[0]);
  CHECK(write(pipe_ends[1], "x", 1) < 0 && errno == EPIPE);
  close(pipe_ends[1]);
  sigset_t pending_signals;
  sigpending(&pending_signals);
  if (sigismember(&pending_signals, SIGPIPE)) {
    sigset_t pipe_signal;
    sigemptyset(&pipe_signal);
    sigaddset(&pipe_signal, SIGPIPE);
    struct timespec now = {0, 0};
    sigtimedwait(&pipe_signal, NULL, &now);
  }
  procord_loop_free(polled);
  procord_loop_free(hosted);
  event_base_free(base);
  CHECK_NOTHING_LEFT();
}

int main(int argc, char **argv) {
  procord_worker_command_t command;
  procord_worker_main(argc, argv, worker_tasks, sizeof worker_tasks / sizeof *worker_tasks,
                      &command);
  struct rlimit no_core = {0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  ssize_t n = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
  if (n <= 0) return 1;
  self_path[n] = 0;
  RUN_WITHIN(on_a_host_libevent_base_the_work_runs_with_no_thread_and_the_hosts_timer_on_time, 120);
  RUN_WITHIN(through_a_poll_loop_the_work_runs_with_no_thread_and_the_hosts_timer_on_time, 120);
  RUN(a_polled_loops_timeout_brings_a_deadline_on_time);
  RUN(a_server_starts_serves_by_name_and_stops_on_a_hosts_loop);
  RUN(another_thread_delegates_through_the_hosts_loop_and_waits);
  RUN(freeing_a_hosted_loop_kills_and_reaps_its_running_workers);
  RUN(freeing_from_a_callback_of_the_hosts_base_says_so_and_can_be_done_again_after);
  RUN(a_hosted_loop_is_run_by_its_host_only);
  return CHECK_SUMMARY();
}
