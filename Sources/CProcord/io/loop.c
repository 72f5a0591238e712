/*
 * The readiness loop: one libevent base, a queue of calls from other threads,
 * and an eventfd that wakes the base when the queue gets work (procord/loop.h).
 * The base is the loop's own (run by procord_loop_run, on the caller's
 * thread or one of the loop's, or step by step by the host's poll loop
 * through loop_backend.c), or a host program's, which the host runs.
 */
#define _GNU_SOURCE
#include "io/io_private.h"
#include "base/base_private.h"
#include "procord/error.h"

#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/* Callbacks run before the base polls its descriptors again, however many
   more are active: work that keeps queueing work cannot starve I/O. */
#define MAX_CALLBACKS_BETWEEN_POLLS 32

typedef enum loop_mode {
  LOOP_OWN_BASE,  /* procord_loop_new: run by procord_loop_run or the loop's thread */
  LOOP_HOST_BASE, /* procord_loop_new_on_base: the host runs its base */
  LOOP_POLLED,    /* procord_loop_new_polled: the host polls the backend descriptor */
} loop_mode_t;

struct procord_loop_s {
  loop_mode_t mode;
  pthread_t owner; /* hosted modes: the thread that runs the host's loop */
  int backend_fd;  /* LOOP_POLLED: what the host polls (loop_backend.c), else -1 */
  int freeing;     /* hosted modes: procord_loop_free runs the base until the work is gone */
  struct event_base *base;
  int wake_fd;
  struct event *wake_event;
  pthread_mutex_t queue_lock;
  procord_list_t queue;             /* procord_queued_call_t, oldest first */
  int stop_requested;               /* guarded by queue_lock */
  int free_requested;               /* guarded by queue_lock: stop once no work is left */
  procord_queued_call_t abort_call; /* procord_loop_free's, queued without allocating */
  int abort_queued;                 /* guarded by queue_lock: abort_call is in the queue */
  pthread_t thread;
  int has_thread;
  int thread_done; /* atomic: the loop's own thread has returned */
  pthread_t running_thread;
  int running;
  procord_list_t work; /* procord_loop_work_t, newest first */
  pthread_mutex_t done_lock;
  pthread_cond_t done_cond;
  void *resolver; /* the name resolver on this loop's base (connect.c), freed with it */
  void (*resolver_free)(void *resolver);
};

static void run_queue(evutil_socket_t fd, short events, void *argument) {
  (void)events;
  procord_loop_t *loop = argument;
  uint64_t count;
  procord_read_retrying(fd, &count, sizeof count);
  pthread_mutex_lock(&loop->queue_lock);
  procord_list_t taken;
  procord_list_init(&taken);
  procord_list_move_all(&loop->queue, &taken);
  pthread_mutex_unlock(&loop->queue_lock);
  procord_list_t *node;
  while ((node = procord_list_pop_front(&taken))) {
    /* Out of the list before the call, which may free its node's owner, or
       queue the node again. */
    procord_queued_call_t *call = PROCORD_LIST_ENTRY(node, procord_queued_call_t, node);
    int allocated = call->allocated;
    call->fn(call->argument);
    if (allocated) procord_free(call);
  }
  pthread_mutex_lock(&loop->queue_lock);
  int stop = loop->stop_requested || (loop->free_requested && procord_list_is_empty(&loop->work) &&
                                      procord_list_is_empty(&loop->queue));
  pthread_mutex_unlock(&loop->queue_lock);
  /* A host's base is the host's to stop: only procord_loop_free's own
     turns of it end here. */
  if (stop && (loop->mode == LOOP_OWN_BASE || loop->freeing)) event_base_loopbreak(loop->base);
}

/* A hosted loop's thread writes to workers' pipes and sockets: SIGPIPE is
   blocked on it for good (loop.h), unless the process ignores it. */
static void block_sigpipe_on_this_thread(void) {
  struct sigaction current;
  if (sigaction(SIGPIPE, NULL, &current) == 0 && current.sa_handler == SIG_IGN) return;
  procord_sigpipe_block();
}

static int create(struct event_base *host_base, loop_mode_t mode, procord_loop_t **result) {
  if (!result) return PROCORD_EINVAL;
  /* libevent prints on stderr unless told otherwise: the core never prints.
     A host's base comes with the host's libevent, and its log (procord_set_log
     takes it over if the host wants). */
  if (mode != LOOP_HOST_BASE) procord_log_take_libevent();
  procord_loop_t *loop = procord_allocate_zeroed(1, sizeof *loop);
  if (!loop) return -ENOMEM;
  loop->mode = mode;
  loop->owner = pthread_self();
  loop->backend_fd = -1;
  procord_list_init(&loop->work);
  procord_list_init(&loop->queue);
  pthread_mutex_init(&loop->queue_lock, NULL);
  pthread_mutex_init(&loop->done_lock, NULL);
  pthread_condattr_t attributes;
  pthread_condattr_init(&attributes);
  pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
  pthread_cond_init(&loop->done_cond, &attributes);
  pthread_condattr_destroy(&attributes);
  loop->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  int error = loop->wake_fd < 0 ? -errno : 0;
  if (!error && host_base) {
    loop->base = host_base;
  } else if (!error) {
    struct event_config *config = event_config_new();
    if (config)
      event_config_set_max_dispatch_interval(config, NULL, MAX_CALLBACKS_BETWEEN_POLLS, 0);
    /* A polled loop nests libevent's epoll descriptor in its backend one. */
    if (config && mode == LOOP_POLLED) procord_backend_configure(config);
    loop->base = config ? event_base_new_with_config(config) : NULL;
    if (config) event_config_free(config);
    if (!loop->base) error = mode == LOOP_POLLED ? PROCORD_EINVAL : -ENOMEM;
  }
  if (!error) {
    loop->wake_event = event_new(loop->base, loop->wake_fd, EV_READ | EV_PERSIST, run_queue, loop);
    if (!loop->wake_event || event_add(loop->wake_event, NULL) < 0) error = -ENOMEM;
  }
  if (!error && mode == LOOP_POLLED)
    error = procord_backend_open(loop->base, loop->wake_fd, &loop->backend_fd);
  if (!error && mode != LOOP_OWN_BASE) block_sigpipe_on_this_thread();
  if (error) {
    if (loop->wake_event) event_free(loop->wake_event);
    if (loop->base && !host_base) event_base_free(loop->base);
    if (loop->wake_fd >= 0) close(loop->wake_fd);
    procord_free(loop);
    return error;
  }
  *result = loop;
  return 0;
}

int procord_loop_new(procord_loop_t **loop) { return create(NULL, LOOP_OWN_BASE, loop); }

int procord_loop_new_on_base(struct event_base *base, procord_loop_t **loop) {
  if (!base) return PROCORD_EINVAL;
  return create(base, LOOP_HOST_BASE, loop);
}

int procord_loop_new_polled(procord_loop_t **loop) { return create(NULL, LOOP_POLLED, loop); }

int procord_loop_backend_fd(const procord_loop_t *loop) {
  return loop && loop->mode == LOOP_POLLED ? loop->backend_fd : PROCORD_EINVAL;
}

int procord_loop_backend_timeout(procord_loop_t *loop) {
  if (!loop || loop->mode != LOOP_POLLED) return PROCORD_EINVAL;
  return procord_backend_timeout(loop->base);
}

int procord_loop_run_nowait(procord_loop_t *loop) {
  if (!loop || loop->mode != LOOP_POLLED) return PROCORD_EINVAL;
  if (!procord_loop_is_current_thread(loop)) return -EPERM;
  return event_base_loop(loop->base, EVLOOP_NONBLOCK) < 0 ? PROCORD_EINVAL : 0;
}

static void wake(procord_loop_t *loop) {
  uint64_t one = 1;
  procord_write_retrying(loop->wake_fd, &one, sizeof one);
}

int procord_loop_call(procord_loop_t *loop, procord_loop_fn fn, void *argument) {
  procord_queued_call_t *call = procord_allocate_zeroed(1, sizeof *call); /* in no list */
  if (!call) return -ENOMEM;
  call->allocated = 1;
  procord_loop_queue(loop, call, fn, argument);
  return 0;
}

void procord_loop_queue(procord_loop_t *loop, procord_queued_call_t *call, procord_loop_fn fn,
                        void *argument) {
  call->fn = fn;
  call->argument = argument;
  pthread_mutex_lock(&loop->queue_lock);
  /* The loop takes the whole queue each time it wakes, so only a call that
     finds the queue empty needs to wake it: a burst of calls costs one
     eventfd write, not one each. */
  int was_empty = procord_list_is_empty(&loop->queue);
  procord_list_push_back(&loop->queue, &call->node);
  pthread_mutex_unlock(&loop->queue_lock);
  if (!was_empty) return;
  /* From the loop's own thread (a callback, or a Swift job on the loop,
     queueing more work), marking the wake event active saves the eventfd's
     write, poll and read. It cannot starve the loop's I/O even if work keeps
     queueing work: the base polls its descriptors again after every
     MAX_CALLBACKS_BETWEEN_POLLS callbacks (procord_loop_new). */
  if (procord_loop_is_current_thread(loop)) event_active(loop->wake_event, EV_READ, 0);
  else
    wake(loop);
}

/* The loop's base, run here until run_queue breaks it: for an own base, by
   procord_loop_run; for a host's, by procord_loop_free only. */
static int run_base(procord_loop_t *loop) {
  /* A write to a pipe whose reader is gone raises SIGPIPE in the writing
     thread: blocked here, it stays pending and the write fails with EPIPE,
     which the connection handles. The process's disposition is left alone,
     so other children of the program do not inherit an ignored SIGPIPE. */
  int sigpipe_was_blocked = procord_sigpipe_block();
  loop->running_thread = pthread_self();
  __atomic_store_n(&loop->running, 1, __ATOMIC_RELEASE);
  int result = event_base_loop(loop->base, EVLOOP_NO_EXIT_ON_EMPTY);
  __atomic_store_n(&loop->running, 0, __ATOMIC_RELEASE);
  procord_sigpipe_unblock(sigpipe_was_blocked, 1);
  pthread_mutex_lock(&loop->queue_lock);
  loop->stop_requested = 0;
  pthread_mutex_unlock(&loop->queue_lock);
  return result < 0 ? PROCORD_EINVAL : 0;
}

int procord_loop_run(procord_loop_t *loop) {
  /* A hosted loop runs where its host runs it; running it here too would
     take the host's events (or, polled, spin). */
  if (loop->mode != LOOP_OWN_BASE) return PROCORD_EINVAL;
  return run_base(loop);
}

static void *thread_main(void *argument) {
  /* The loop thread must never take a signal meant for the program. */
  procord_thread_block_all_signals();
  procord_loop_t *loop = argument;
  run_base(loop);
  __atomic_store_n(&loop->thread_done, 1, __ATOMIC_RELEASE);
  return NULL;
}

int procord_loop_start_thread(procord_loop_t *loop) {
  if (loop->has_thread || loop->mode != LOOP_OWN_BASE) return PROCORD_EINVAL;
  int error = pthread_create(&loop->thread, NULL, thread_main, loop);
  if (error) return -error;
  loop->has_thread = 1;
  return 0;
}

void procord_loop_stop(procord_loop_t *loop) {
  pthread_mutex_lock(&loop->queue_lock);
  loop->stop_requested = 1;
  pthread_mutex_unlock(&loop->queue_lock);
  wake(loop);
}

int procord_loop_is_current_thread(const procord_loop_t *loop) {
  if (loop->mode != LOOP_OWN_BASE) return pthread_equal(loop->owner, pthread_self());
  return __atomic_load_n(&loop->running, __ATOMIC_ACQUIRE) &&
         pthread_equal(loop->running_thread, pthread_self());
}

typedef struct waited_call_s {
  procord_queued_call_t queued; /* on the waiting caller's stack: nothing to allocate */
  procord_loop_t *loop;
  procord_loop_fn fn;
  void *argument;
  int done; /* guarded by the done lock */
} waited_call_t;

static void run_waited_call(void *argument) {
  waited_call_t *call = argument;
  call->fn(call->argument);
  pthread_mutex_lock(&call->loop->done_lock);
  call->done = 1;
  pthread_cond_broadcast(&call->loop->done_cond);
  pthread_mutex_unlock(&call->loop->done_lock);
}

void procord_loop_call_and_wait(procord_loop_t *loop, procord_loop_fn fn, void *argument) {
  int elsewhere = loop->mode != LOOP_OWN_BASE ||
                  (loop->has_thread && !__atomic_load_n(&loop->thread_done, __ATOMIC_ACQUIRE)) ||
                  __atomic_load_n(&loop->running, __ATOMIC_ACQUIRE);
  if (!elsewhere || procord_loop_is_current_thread(loop)) {
    fn(argument);
    return;
  }
  waited_call_t call = {.loop = loop, .fn = fn, .argument = argument};
  procord_loop_queue(loop, &call.queued, run_waited_call, &call);
  pthread_mutex_lock(&loop->done_lock);
  while (!call.done) pthread_cond_wait(&loop->done_cond, &loop->done_lock);
  pthread_mutex_unlock(&loop->done_lock);
}

static void abort_all_work(void *argument) {
  procord_loop_t *loop = argument;
  pthread_mutex_lock(&loop->queue_lock);
  loop->abort_queued = 0;
  pthread_mutex_unlock(&loop->queue_lock);
  procord_list_t *node, *following;
  PROCORD_LIST_FOREACH_SAFE(node, following, &loop->work) {
    procord_loop_work_t *work = PROCORD_LIST_ENTRY(node, procord_loop_work_t, node);
    work->abort(work);
  }
}

static int has_work_left(procord_loop_t *loop) {
  pthread_mutex_lock(&loop->queue_lock);
  int left = !procord_list_is_empty(&loop->work) || !procord_list_is_empty(&loop->queue);
  pthread_mutex_unlock(&loop->queue_lock);
  return left;
}

void procord_loop_free(procord_loop_t *loop) {
  if (!loop) return;
  pthread_mutex_lock(&loop->queue_lock);
  loop->free_requested = 1;
  /* Its own node, so that the free cannot fail; queued once at a time (a
     free called again after a host's base could not run may find it
     still queued). */
  int queue = !loop->abort_queued;
  loop->abort_queued = 1;
  pthread_mutex_unlock(&loop->queue_lock);
  if (queue) procord_loop_queue(loop, &loop->abort_call, abort_all_work, loop);
  if (loop->has_thread) pthread_join(loop->thread, NULL);
  /* Stopped before (procord_loop_stop), or never run, or hosted: finish
     here. A host's base runs its own events meanwhile too (loop.h). */
  loop->freeing = 1;
  while (has_work_left(loop)) {
    wake(loop);
    if (run_base(loop) < 0) {
      /* libevent refuses to run a base from inside its own dispatch (a
         host's callback): the work left still needs the loop, so it stays,
         and the host's dispatch goes on unbroken. */
      loop->freeing = 0;
      procord_log_write(
          PROCORD_LOG_ERROR,
          "procord_loop_free: the host's event base could not be run (called from one of its "
          "callbacks?): the loop's work is being stopped, but the loop is not freed; call "
          "procord_loop_free again once the base's dispatch has returned");
      return;
    }
  }
  if (loop->resolver) loop->resolver_free(loop->resolver);
  event_free(loop->wake_event);
  if (loop->mode != LOOP_HOST_BASE) event_base_free(loop->base);
  if (loop->backend_fd >= 0) close(loop->backend_fd);
  close(loop->wake_fd);
  pthread_mutex_destroy(&loop->queue_lock);
  pthread_mutex_destroy(&loop->done_lock);
  pthread_cond_destroy(&loop->done_cond);
  procord_free(loop);
}

struct event_base *procord_loop_base(procord_loop_t *loop) {
  return loop->base;
}

void *procord_loop_resolver(procord_loop_t *loop) { return loop->resolver; }

void procord_loop_set_resolver(procord_loop_t *loop, void *resolver,
                               void (*free_resolver)(void *)) {
  loop->resolver = resolver;
  loop->resolver_free = free_resolver;
}
pthread_mutex_t *procord_loop_done_lock(procord_loop_t *loop) { return &loop->done_lock; }
pthread_cond_t *procord_loop_done_cond(procord_loop_t *loop) { return &loop->done_cond; }

int procord_loop_wait_until(procord_loop_t *loop, int (*holds)(void *argument), void *argument,
                            int timeout_ms) {
  /* On the loop's own thread (a callback, or a hosted loop's host),
     nothing can change while it waits: it would wait forever. */
  if (timeout_ms != 0 && procord_loop_is_current_thread(loop)) return -EDEADLK;
  struct timespec deadline;
  clock_gettime(CLOCK_MONOTONIC, &deadline);
  if (timeout_ms >= 0) {
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
      deadline.tv_sec++;
      deadline.tv_nsec -= 1000000000L;
    }
  }
  pthread_mutex_lock(&loop->done_lock);
  int result;
  while (!(result = holds(argument))) {
    if (timeout_ms < 0) {
      pthread_cond_wait(&loop->done_cond, &loop->done_lock);
    } else if (pthread_cond_timedwait(&loop->done_cond, &loop->done_lock, &deadline) == ETIMEDOUT) {
      result = holds(argument);
      break;
    }
  }
  pthread_mutex_unlock(&loop->done_lock);
  return result;
}

#define REAP_POLL_MS 100

struct event *procord_loop_watch_child(procord_loop_t *loop, int pidfd,
                                       void (*callback)(int, short, void *), void *argument) {
  struct event *watch = event_new(loop->base, pidfd, pidfd >= 0 ? EV_READ | EV_PERSIST : EV_PERSIST,
                                  callback, argument);
  if (watch && (pidfd >= 0 ? event_add(watch, NULL) : procord_timer_arm(watch, REAP_POLL_MS)) == 0)
    return watch;
  if (watch) event_free(watch);
  return NULL;
}

void procord_loop_add_work(procord_loop_t *loop, procord_loop_work_t *work) {
  pthread_mutex_lock(&loop->queue_lock);
  procord_list_push_front(&loop->work, &work->node); /* aborted newest first */
  pthread_mutex_unlock(&loop->queue_lock);
}

void procord_loop_remove_work(procord_loop_t *loop, procord_loop_work_t *work) {
  pthread_mutex_lock(&loop->queue_lock);
  if (procord_list_is_linked(&work->node)) procord_list_remove(&work->node); /* once is enough */
  int last = loop->free_requested && procord_list_is_empty(&loop->work);
  pthread_mutex_unlock(&loop->queue_lock);
  /* Wake the queue so it sees that the loop may stop now. */
  if (last) wake(loop);
}
