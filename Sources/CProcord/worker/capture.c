/*
 * A worker's stdout and stderr as `P` frames (worker_private.h): pipes in place of
 * descriptors 1 and 2, a thread that forwards what they carry, and a drain
 * before each answer so that output and answer arrive in order.
 */
#define _GNU_SOURCE
#include "worker/worker_private.h"
#include "procord/frame.h"
#include "base/base_private.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHUNK 65536

typedef struct stream_s {
  int closed;                /* every writer is gone (the task replaced the descriptor) */
  int target;                /* 1 or 2 */
  unsigned char destination; /* 'O' or 'E' */
  int saved;                 /* the descriptor it had before, put back at stop */
  int read_fd;               /* our end of the pipe */
} stream_t;

struct procord_output_capture_s {
  procord_frame_writer_t *writer;
  stream_t streams[2];
  int count;
  int stop[2];
  pthread_t thread;
  pthread_mutex_t reading; /* one reader at a time: the thread or a drain */
  int failed;              /* the peer is gone: drop output from now on */
  unsigned char chunk[CHUNK];
};

/* Only the standard streams: fflush(NULL) would wait on the lock of any
   FILE another thread is blocked on. */
static void flush_standard_streams(void) {
  fflush(stdout);
  fflush(stderr);
}

/* Reads what is available on one stream and sends it; 0 once empty. Caller holds `reading`. */
static int forward_available(procord_output_capture_t *c, stream_t *s) {
  while (!s->closed) {
    ssize_t n = read(s->read_fd, c->chunk, sizeof c->chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) s->closed = 1; /* the task closed or replaced the descriptor */
    if (n <= 0) return 0;      /* EAGAIN: empty for now */
    if (!c->failed && procord_frame_writer_send_parts(c->writer, PROCORD_FRAME_PRINT,
                                                      &s->destination, 1, c->chunk, (size_t)n) != 0)
      c->failed = 1;
  }
  return 0;
}

static void *forward(void *argument) {
  procord_output_capture_t *c = argument;
  procord_thread_block_all_signals();
  struct pollfd p[3];
  for (int i = 0; i < c->count; i++)
    p[i] = (struct pollfd){.fd = c->streams[i].read_fd, .events = POLLIN};
  p[c->count] = (struct pollfd){.fd = c->stop[0], .events = POLLIN};
  for (;;) {
    if (procord_poll_retrying(p, (unsigned long)c->count + 1, -1) < 0) return NULL;
    if (p[c->count].revents) return NULL;
    pthread_mutex_lock(&c->reading);
    for (int i = 0; i < c->count; i++) {
      if (p[i].revents) forward_available(c, &c->streams[i]);
      if (c->streams[i].closed) p[i].fd = -1; /* poll would report its end forever */
    }
    pthread_mutex_unlock(&c->reading);
  }
}

static int redirect(stream_t *s, int target, unsigned char destination) {
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) < 0) return -errno;
  s->target = target;
  s->destination = destination;
  s->saved = fcntl(target, F_DUPFD_CLOEXEC, 3);
  s->read_fd = pipe_fds[0];
  fcntl(s->read_fd, F_SETFL, O_NONBLOCK);
  /* dup2 clears close-on-exec on `target`: what the task starts writes here too. */
  if (s->saved < 0 || dup2(pipe_fds[1], target) < 0) {
    int error = -errno;
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    if (s->saved >= 0) close(s->saved);
    return error;
  }
  close(pipe_fds[1]);
  return 0;
}

static void restore(stream_t *s) {
  dup2(s->saved, s->target);
  close(s->saved);
  close(s->read_fd);
}

/* Puts the streams back, closes the stop pipe (-1: none) and frees. */
static void release_capture(procord_output_capture_t *c) {
  for (int i = 0; i < c->count; i++) restore(&c->streams[i]);
  if (c->stop[0] >= 0) {
    close(c->stop[0]);
    close(c->stop[1]);
  }
  pthread_mutex_destroy(&c->reading);
  procord_free(c);
}

int procord_capture_start(procord_frame_writer_t *writer, int with_stderr,
                          procord_output_capture_t **result) {
  procord_output_capture_t *c = procord_allocate_zeroed(1, sizeof *c);
  if (!c) return -ENOMEM;
  c->writer = writer;
  pthread_mutex_init(&c->reading, NULL);
  flush_standard_streams(); /* what was printed before belongs where it was going */
  int error = pipe2(c->stop, O_CLOEXEC) < 0 ? -errno : 0;
  if (!error) error = redirect(&c->streams[c->count], 1, 'O');
  if (!error) c->count++;
  if (!error && with_stderr) error = redirect(&c->streams[c->count], 2, 'E');
  if (!error && with_stderr) c->count++;
  if (!error) error = -pthread_create(&c->thread, NULL, forward, c);
  if (error) {
    if (c->stop[0] <= 0) c->stop[0] = c->stop[1] = -1; /* no pipe to close */
    release_capture(c);
    return error;
  }
  *result = c;
  return 0;
}

void procord_capture_drain(procord_output_capture_t *c) {
  if (!c) return;
  flush_standard_streams();
  pthread_mutex_lock(&c->reading);
  for (int i = 0; i < c->count; i++) forward_available(c, &c->streams[i]);
  pthread_mutex_unlock(&c->reading);
}

void procord_capture_stop(procord_output_capture_t *c) {
  if (!c) return;
  procord_capture_drain(c);
  char byte = 0;
  procord_write_retrying(c->stop[1], &byte, 1);
  pthread_join(c->thread, NULL);
  release_capture(c);
}
