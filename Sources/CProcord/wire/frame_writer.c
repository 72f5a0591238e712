/* Blocking frame writes that never raise SIGPIPE (wire_private.h). */
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

void procord_frame_writer_init(procord_frame_writer_t *w, int fd, int timeout_ms) {
  w->fd = fd;
  w->is_socket = procord_fd_is_socket(fd);
  w->timeout_ms = timeout_ms;
  w->failed = 0;
  pthread_mutex_init(&w->lock, NULL);
}

void procord_frame_writer_destroy(procord_frame_writer_t *w) { pthread_mutex_destroy(&w->lock); }

/* Writes `parts` under the lock; see procord_frame_writer_send_answer for `tail`. */
static int send_locked(procord_frame_writer_t *w, struct iovec *parts, int count, size_t tail) {
  /* A writer that failed before writes none of this frame: all of it is
     unwritten, not only a lost `0R`. */
  size_t unwritten = SIZE_MAX;
  pthread_mutex_lock(&w->lock);
  int error = w->failed
                  ? w->failed
                  : procord_write_all_parts(w->fd, w->is_socket, parts, count,
                                            w->timeout_ms > 0 ? w->timeout_ms : 0, /* 0: no limit */
                                            &unwritten);
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

int procord_frame_writer_send_answer(procord_frame_writer_t *w, unsigned char kind,
                                     const void *body, size_t length, int then_reusable) {
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
