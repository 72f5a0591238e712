/* Blocking frame writes that never raise SIGPIPE (frame_writer.h). */
#define _GNU_SOURCE
#include "wire/wire_private.h"
#include "procord/error.h"
#include "procord/frame.h"

#include <errno.h>
#include <stdint.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

int procord_wait_for(int fd, short events, int timeout_ms) {
  struct pollfd p = {.fd = fd, .events = events};
  int r;
  while ((r = poll(&p, 1, timeout_ms > 0 ? timeout_ms : -1)) < 0) {
    if (errno != EINTR) return -errno;
  }
  return r == 0 ? PROCORD_ETIMEOUT : 0;
}

int procord_fd_is_socket(int fd) {
  struct stat status;
  return fstat(fd, &status) == 0 && S_ISSOCK(status.st_mode);
}

void procord_frame_writer_init(procord_frame_writer_t *w, int fd, int timeout_ms) {
  w->fd = fd;
  w->is_socket = procord_fd_is_socket(fd);
  w->timeout_ms = timeout_ms;
  w->failed = 0;
  pthread_mutex_init(&w->lock, NULL);
}

void procord_frame_writer_destroy(procord_frame_writer_t *w) { pthread_mutex_destroy(&w->lock); }

/*
 * writev that never raises SIGPIPE, whose default would kill the worker when
 * the main program has gone: MSG_NOSIGNAL on a socket; on a pipe, SIGPIPE is
 * blocked around the write and a pending one discarded. The process's
 * disposition stays as it was, for the task's own children.
 */
static ssize_t write_parts(const procord_frame_writer_t *w, struct iovec *parts, int count) {
  if (w->is_socket) {
    /* Never block in the send itself, so that the time limit applies even
       on a blocking socket (a server's client). */
    struct msghdr message = {.msg_iov = parts, .msg_iovlen = (size_t)count};
    return sendmsg(w->fd, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  sigset_t pipe_signal, previous;
  sigemptyset(&pipe_signal);
  sigaddset(&pipe_signal, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_signal, &previous);
  ssize_t n = writev(w->fd, parts, count);
  int error = errno;
  if (n < 0 && error == EPIPE && !sigismember(&previous, SIGPIPE)) {
    struct timespec now = {0, 0};
    sigtimedwait(&pipe_signal, NULL, &now);
  }
  pthread_sigmask(SIG_SETMASK, &previous, NULL);
  errno = error;
  return n;
}

/* Writes every part; on an error, `*unwritten` (if not NULL) says how many
   bytes were left. */
static int write_all_parts(procord_frame_writer_t *w, struct iovec *at, int count, size_t *unwritten) {
  while (count > 0) {
    ssize_t n = write_parts(w, at, count);
    int error = 0;
    if (n < 0) {
      if (errno == EINTR) continue;
      /* A peer that stops reading must not hold the worker forever. */
      if (errno == EAGAIN || errno == EWOULDBLOCK) error = procord_wait_for(w->fd, POLLOUT, w->timeout_ms);
      else error = -errno;
      if (!error) continue;
      if (unwritten)
        for (*unwritten = 0; count > 0; at++, count--) *unwritten += at->iov_len;
      return error;
    }
    while (count > 0 && (size_t)n >= at->iov_len) {
      n -= (ssize_t)at->iov_len;
      at++;
      count--;
    }
    if (count > 0) {
      at->iov_base = (unsigned char *)at->iov_base + n;
      at->iov_len -= (size_t)n;
    }
  }
  return 0;
}

/* Writes `parts` under the lock; see procord_frame_writer_send_answer for `tail`. */
static int send_locked(procord_frame_writer_t *w, struct iovec *parts, int count, size_t tail) {
  /* A writer that failed before writes none of this frame: all of it is
     unwritten, not only a lost `0R`. */
  size_t unwritten = SIZE_MAX;
  pthread_mutex_lock(&w->lock);
  int error = w->failed ? w->failed : write_all_parts(w, parts, count, &unwritten);
  if (error) w->failed = error;
  pthread_mutex_unlock(&w->lock);
  return error && tail && unwritten <= tail ? 1 : error;
}

int procord_frame_writer_send_parts(procord_frame_writer_t *w, unsigned char kind,
                                    const void *prefix, size_t prefix_length, const void *body,
                                    size_t length) {
  unsigned char header[PROCORD_FRAME_HEADER_MAX];
  struct iovec parts[3] = {
      {header, procord_frame_encode_header(kind, prefix_length + length, header)},
      {(void *)prefix, prefix_length},
      {(void *)body, length},
  };
  return send_locked(w, parts, 3, 0);
}

int procord_frame_writer_send_answer(procord_frame_writer_t *w, unsigned char kind, const void *body,
                                     size_t length, int then_reusable) {
  static const char reusable[] = "0R";
  unsigned char header[PROCORD_FRAME_HEADER_MAX];
  struct iovec parts[3] = {
      {header, procord_frame_encode_header(kind, length, header)},
      {(void *)body, length},
      {(void *)reusable, then_reusable ? 2 : 0},
  };
  return send_locked(w, parts, 3, then_reusable ? 2 : 0);
}

int procord_frame_writer_send(procord_frame_writer_t *w, unsigned char kind, const void *body,
                              size_t length) {
  return procord_frame_writer_send_parts(w, kind, NULL, 0, body, length);
}
