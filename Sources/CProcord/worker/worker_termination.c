/* A worker's SIGTERM, or the watchdog's news that its peer is gone, turned
   into a call on a thread of its own, so that a task running on Swift
   concurrency can be cancelled (procord/worker.h). */
#define _GNU_SOURCE
#include "procord/error.h"
#include "procord/worker.h"
#include "worker/worker_private.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

typedef struct termination_watch_s {
  int read_fd;
  void (*on_termination)(void *context);
  void *context;
} termination_watch_t;

/* Written by the handler, read by the watcher; -1 until installed. */
static int termination_write_fd = -1;

static void on_termination_signal(int signal) {
  (void)signal;
  int saved = errno; /* the handler must leave errno as it found it */
  unsigned char byte = 1;
  ssize_t ignored = write(termination_write_fd, &byte, 1); /* a full pipe already says it */
  (void)ignored;
  errno = saved;
}

static void *watch_termination_pipe(void *argument) {
  termination_watch_t *watch = argument;
  unsigned char bytes[16];
  for (;;) {
    ssize_t got = read(watch->read_fd, bytes, sizeof bytes);
    if (got > 0) watch->on_termination(watch->context);
    else if (got < 0 && errno != EINTR)
      return NULL;
  }
}

int procord_worker_request_termination(void) {
  if (__atomic_load_n(&termination_write_fd, __ATOMIC_ACQUIRE) < 0) return PROCORD_ECLOSED;
  on_termination_signal(0);
  return 0;
}

int procord_worker_watch_termination(void (*on_termination)(void *context), void *context,
                                     int on_sigterm) {
  if (!on_termination) return PROCORD_EINVAL;
  /* Once per process: the first caller claims it, atomically. */
  static int claimed;
  if (__atomic_exchange_n(&claimed, 1, __ATOMIC_ACQ_REL)) return PROCORD_EINVAL;
  static termination_watch_t state;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
    int error = -errno;
    __atomic_store_n(&claimed, 0, __ATOMIC_RELEASE);
    return error;
  }
  /* Only the write end is non-blocking: the watcher sleeps in read. */
  procord_fd_set_nonblocking(fds[0], 0);
  state = (termination_watch_t){fds[0], on_termination, context};
  /* A thread that blocks every signal, so that none is delivered to it. */
  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &previous);
  pthread_t thread;
  int error = pthread_create(&thread, NULL, watch_termination_pipe, &state);
  pthread_sigmask(SIG_SETMASK, &previous, NULL);
  if (error) {
    close(fds[0]);
    close(fds[1]);
    __atomic_store_n(&claimed, 0, __ATOMIC_RELEASE);
    return -error;
  }
  pthread_detach(thread);
  __atomic_store_n(&termination_write_fd, fds[1], __ATOMIC_RELEASE);
  if (!on_sigterm) return 0;
  /* A handler, not SIG_IGN: what the task starts gets the default again at exec. */
  struct sigaction action = {0};
  action.sa_handler = on_termination_signal;
  action.sa_flags = SA_RESTART;
  sigemptyset(&action.sa_mask);
  return sigaction(SIGTERM, &action, NULL) == 0 ? 0 : -errno;
}
