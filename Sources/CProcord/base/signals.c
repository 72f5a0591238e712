/*
 * Signals a thread of the core blocks (base_private.h): the core's own
 * threads take none of the program's, and SIGPIPE never kills a Procord
 * process (a broken pipe is a disconnection), without changing the
 * process's disposition, which the program's other children inherit.
 */
#define _GNU_SOURCE
#include "base/base_private.h"

#include <pthread.h>
#include <signal.h>
#include <time.h>

void procord_thread_block_all_signals(void) {
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
}

int procord_sigpipe_block(void) {
  sigset_t pipe_signal, previous;
  sigemptyset(&pipe_signal);
  sigaddset(&pipe_signal, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_signal, &previous);
  return sigismember(&previous, SIGPIPE) == 1;
}

void procord_sigpipe_unblock(int was_blocked, int may_be_pending) {
  if (was_blocked) return;
  sigset_t pipe_signal;
  sigemptyset(&pipe_signal);
  sigaddset(&pipe_signal, SIGPIPE);
  /* Only a write that failed with EPIPE left one: the others cost no call. */
  struct timespec now = {0, 0};
  while (may_be_pending && sigtimedwait(&pipe_signal, NULL, &now) == SIGPIPE) {
  }
  pthread_sigmask(SIG_UNBLOCK, &pipe_signal, NULL);
}
