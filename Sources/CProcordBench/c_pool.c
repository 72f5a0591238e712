/*
 * c_pool.c: the round trip of the library's own C pool, one worker, one
 * task at a time: what Procord adds over the ping-pong floor. On the loop's
 * own thread (the caller waits), or on a libevent base the caller runs
 * (procord_loop_new_on_base: on_done ends the caller's dispatch).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <event2/event.h>

#include "bench_private.h"
#include "procord/procord.h"

/* A host's base (NULL: the loop runs on a thread of its own). */
static struct event_base *host_base;

static void end_dispatch(procord_delegation_t *delegation, const procord_outcome_t *outcome,
                         void *context) {
  (void)delegation;
  (void)outcome;
  (void)context;
  event_base_loopbreak(host_base);
}

/* One task, start to answer. Returns 0, -EPROTO if it did not answer with
   a value, or the error of procord_pool_delegate. */
static int run_task(procord_loop_t *loop, procord_pool_t *pool,
                    const procord_delegation_options_t *options, uint64_t *elapsed_ns) {
  procord_delegation_t *delegation = NULL;
  uint64_t start = procord_bench_now_ns();
  int error = procord_pool_delegate(pool, options, &delegation);
  if (error) return error;
  if (host_base) {
    while (!procord_delegation_is_finished(delegation)) event_base_dispatch(host_base);
  } else {
    procord_delegation_wait(loop, &delegation, 1, 1, -1);
  }
  uint64_t end = procord_bench_now_ns();
  const procord_outcome_t *outcome = procord_delegation_outcome(delegation);
  if (!outcome || outcome->kind != PROCORD_OUTCOME_VALUE) error = -EPROTO;
  procord_delegation_release(delegation);
  if (elapsed_ns) *elapsed_ns = end - start;
  return error;
}

static int run_tasks(procord_loop_t *loop, procord_pool_t *pool,
                     const procord_delegation_options_t *options, int warmup, int rounds,
                     uint64_t *round_trip_ns) {
  int error = 0;
  for (int i = 0; i < warmup && !error; i++) error = run_task(loop, pool, options, NULL);
  for (int i = 0; i < rounds && !error; i++)
    error = run_task(loop, pool, options, &round_trip_ns[i]);
  return error;
}

int procord_bench_c_pool_rtt(const char *worker_program, const char *const *worker_arguments,
                             const char *task_name, const unsigned char *input, size_t input_length,
                             int on_host_base, int warmup, int rounds, uint64_t *round_trip_ns) {
  if (!worker_program || !worker_arguments || !task_name || (!input && input_length > 0) ||
      warmup < 0 || rounds < 0 || (rounds > 0 && !round_trip_ns))
    return -EINVAL;
  procord_loop_t *loop = NULL;
  host_base = on_host_base ? event_base_new() : NULL;
  if (on_host_base && !host_base) return -ENOMEM;
  int error = host_base ? procord_loop_new_on_base(host_base, &loop) : procord_loop_new(&loop);
  if (!error && !host_base) error = procord_loop_start_thread(loop);
  if (error) {
    if (loop) procord_loop_free(loop);
    if (host_base) event_base_free(host_base);
    host_base = NULL;
    return error;
  }
  procord_pool_source_t source = {
      .worker = {.program = worker_program,
                 .arguments = worker_arguments,
                 .channel = PROCORD_CHANNEL_SOCKET,
                 .stderr_fd = -1},
  };
  procord_pool_options_t pool_options = {.sources = &source, .source_count = 1, .max_workers = 1};
  procord_pool_t *pool = NULL;
  if (!(error = procord_pool_new(loop, &pool_options, &pool))) {
    procord_delegation_options_t task = {.task_name = task_name,
                                         .input = input,
                                         .input_length = input_length,
                                         .on_done = host_base ? end_dispatch : NULL};
    error = run_tasks(loop, pool, &task, warmup, rounds, round_trip_ns);
    procord_pool_shutdown(pool, 0);
    if (host_base) { /* no wait on the base's thread: procord_loop_free finishes the pool */
    } else {
      procord_pool_wait(pool, -1);
    }
    procord_pool_release(pool);
  }
  procord_loop_free(loop);
  if (host_base) event_base_free(host_base);
  host_base = NULL;
  return error;
}
