/*
 * A pool's sources (pool.c): their deep copies, the one chosen in turn, a
 * source resting after a failed start, and the hold on the pool's size
 * after a start failed for lack of resources.
 */
#define _GNU_SOURCE
#include "client/client_private.h"
#include "base/base_private.h"
#include "procord/error.h"

#include <errno.h>
#include <event2/event.h>
#include <string.h>

#define FIRST_BACKOFF_MS 250
#define LAST_BACKOFF_MS 10000

/* ---- Options: a deep copy, so the caller's may go away. ---- */

static void free_strings(const char *const *strings) {
  if (!strings) return;
  for (size_t i = 0; strings[i]; i++) procord_free((char *)strings[i]);
  procord_free((void *)strings);
}

static char **copy_strings(const char *const *strings, int *failed) {
  if (!strings) return NULL;
  size_t count = 0;
  while (strings[count]) count++;
  char **copy = procord_allocate_zeroed(count + 1, sizeof *copy);
  for (size_t i = 0; copy && i < count; i++) {
    if (!(copy[i] = procord_strdup(strings[i]))) {
      free_strings((const char *const *)copy); /* those before, up to this NULL */
      copy = NULL;
    }
  }
  if (!copy) *failed = 1;
  return copy;
}

static char *copy_string(const char *string, int *failed) {
  if (!string) return NULL;
  char *copy = procord_strdup(string);
  if (!copy) *failed = 1;
  return copy;
}

void procord_pool_free_source(procord_pool_source_t *s) {
  procord_free((char *)s->worker.program);
  free_strings(s->worker.arguments);
  free_strings(s->worker.environment);
  procord_free((char *)s->worker.working_directory);
  procord_free((char *)s->remote_host);
  procord_security_release(s->security);
}

int procord_pool_copy_source(procord_pool_source_t *to, const procord_pool_source_t *from) {
  int failed = 0;
  *to = *from;
  to->worker.program = copy_string(from->worker.program, &failed);
  to->worker.arguments = (const char *const *)copy_strings(from->worker.arguments, &failed);
  to->worker.environment = (const char *const *)copy_strings(from->worker.environment, &failed);
  to->worker.working_directory = copy_string(from->worker.working_directory, &failed);
  to->remote_host = copy_string(from->remote_host, &failed);
  procord_security_retain(to->security);
  if (failed) procord_pool_free_source(to);
  return failed ? -ENOMEM : 0;
}

/* The caller's sources, read by their size (base_private.h): the first
   one's is the array's stride. Returns 0 with `count` copies (shallow: they
   point into the caller's memory) in `*copies` (the caller frees the
   array), PROCORD_EINVAL, or -ENOMEM. */
int procord_pool_read_sources(const procord_pool_source_t *sources, size_t count,
                              procord_pool_source_t **copies) {
  size_t stride = procord_options_size(sources, PROCORD_FIRST_SIZE_POOL_SOURCE);
  procord_pool_source_t *read = procord_allocate_zeroed(count, sizeof *read);
  if (!read) return -ENOMEM;
  int error = 0;
  for (size_t i = 0; i < count && !error; i++) {
    const unsigned char *given = (const unsigned char *)sources + i * stride;
    if (procord_options_size(given, PROCORD_FIRST_SIZE_POOL_SOURCE) != stride)
      error = PROCORD_EINVAL;
    if (!error) error = PROCORD_OPTIONS_COPY(read[i], given, PROCORD_FIRST_SIZE_POOL_SOURCE);
    if (!error) error = procord_spawn_options_nested(&read[i].worker);
    if (!error && !read[i].remote_host && !read[i].worker.program) error = PROCORD_EINVAL;
  }
  if (error) procord_free(read);
  else
    *copies = read;
  return error;
}

/* The next source in turn that is not resting after a failure; if all are,
   the one that rests least (a task is better failed fast than kept). */
/* ---- Sources resting after a failure. ---- */

size_t procord_pool_choose_source(procord_pool_t *p, int *all_down) {
  long long now = procord_monotonic_ms();
  size_t count = p->options.source_count, best = p->next_source % count;
  for (size_t i = 0; i < count; i++) {
    size_t s = (p->next_source + i) % count;
    if (p->sources[s].down_until_ms <= now) {
      p->next_source = s + 1;
      *all_down = 0;
      return s;
    }
    if (p->sources[s].down_until_ms < p->sources[best].down_until_ms) best = s;
  }
  *all_down = 1;
  p->next_source = best + 1;
  return best;
}

void procord_pool_source_failed(procord_pool_t *p, size_t s,
                                const procord_link_end_t *start_failure) {
  pool_source_t *source = &p->sources[s];
  source->start_failed = start_failure != NULL;
  if (start_failure) source->start_failure = *start_failure;
  source->backoff_ms = source->backoff_ms ? source->backoff_ms * 2 : FIRST_BACKOFF_MS;
  if (source->backoff_ms > LAST_BACKOFF_MS) source->backoff_ms = LAST_BACKOFF_MS;
  source->down_until_ms = procord_monotonic_ms() + source->backoff_ms;
}

/* The source served: it rests no more. */
void procord_pool_source_served(procord_pool_t *p, size_t s) {
  p->sources[s].backoff_ms = 0;
  p->sources[s].down_until_ms = 0;
  p->sources[s].start_failed = 0;
}

/* ---- Holding the pool's size after a start failed for lack of resources. ---- */

/* Descriptors, processes, memory: this program's (or the system's) limits,
   which every source meets alike; not the fault of the program or server. */
int procord_pool_lacks_resources(int error) {
  return error == -EMFILE || error == -ENFILE || error == -EAGAIN || error == -ENOMEM ||
         error == -ENOBUFS;
}

/* The most workers the pool may have now: max_workers, or those it had
   when a start failed for lack of resources, until the hold ends. */
size_t procord_pool_worker_limit(procord_pool_t *p) {
  size_t limit = (size_t)p->options.max_workers;
  pthread_mutex_lock(&p->lock);
  if (p->held_until_ms > procord_monotonic_ms() && p->held_at < limit) limit = p->held_at;
  pthread_mutex_unlock(&p->lock);
  return limit;
}

static void set_hold(procord_pool_t *p, size_t held_at, long long until_ms) {
  pthread_mutex_lock(&p->lock);
  p->held_at = held_at;
  p->held_until_ms = until_ms;
  pthread_mutex_unlock(&p->lock);
}

/*
 * A start failed for lack of resources: retrying at once would fail alike,
 * and failing the tasks that wait would be wrong while workers can serve
 * them. The pool grows no further than the workers it has for a while
 * (from 250 ms, doubling up to 10 s, as a source rests), then tries again.
 * Holding at none, it fails tasks at once with `failure` (pump).
 */
void procord_pool_hold_size(procord_pool_t *p, size_t live, const procord_link_end_t *failure) {
  p->hold_failure = *failure;
  p->hold_backoff_ms = p->hold_backoff_ms ? p->hold_backoff_ms * 2 : FIRST_BACKOFF_MS;
  if (p->hold_backoff_ms > LAST_BACKOFF_MS) p->hold_backoff_ms = LAST_BACKOFF_MS;
  set_hold(p, live, procord_monotonic_ms() + p->hold_backoff_ms);
  pthread_mutex_lock(&p->lock);
  p->stats.starts_limited++;
  pthread_mutex_unlock(&p->lock);
  /* Without the timer, the hold ends at the next task or worker event. */
  if (!p->hold_timer) return;
  procord_timer_arm(p->hold_timer, p->hold_backoff_ms);
}

/* A worker ended and gave back what it held: a start may succeed again. */
void procord_pool_end_hold(procord_pool_t *p) { set_hold(p, 0, 0); }
