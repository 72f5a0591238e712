/* Private to the C core: blocking frame writes shared by a worker's threads. */
#ifndef PROCORD_FRAME_WRITER_H
#define PROCORD_FRAME_WRITER_H

#include <pthread.h>
#include <stddef.h>

/*
 * Writes whole frames to a blocking (or non-blocking: it waits) descriptor.
 * A lock keeps frames from different threads (the task's output, the
 * answer) from interleaving. Writes never raise SIGPIPE.
 */
typedef struct procord_frame_writer_s {
  int fd;
  int is_socket;
  int timeout_ms; /* sockets: for each wait until the peer reads; 0: none */
  int failed;     /* the first error: a frame may be half written, so no more */
  pthread_mutex_t lock;
} procord_frame_writer_t;

/* True when `fd` is a socket (MSG_NOSIGNAL, POLLHUP and shutdown work on it). */
int procord_fd_is_socket(int fd);

void procord_frame_writer_init(procord_frame_writer_t *w, int fd, int timeout_ms);
void procord_frame_writer_destroy(procord_frame_writer_t *w);

/*
 * Writes one frame whose body is `prefix` (may be empty) followed by `body`.
 * Returns 0, PROCORD_ETIMEOUT, or a negated errno (-EPIPE: the peer is gone).
 */
int procord_frame_writer_send_parts(procord_frame_writer_t *w, unsigned char kind,
                                    const void *prefix, size_t prefix_length, const void *body,
                                    size_t length);

/*
 * Writes a task's answer and, with `then_reusable`, the frame `0R` after it,
 * in the same write (one system call for both, when they fit). Returns 0,
 * 1 when the answer was written but not `0R` (the peer went away as soon as
 * it had its answer: a clean end), or an error as send_parts.
 */
int procord_frame_writer_send_answer(procord_frame_writer_t *w, unsigned char kind, const void *body,
                                     size_t length, int then_reusable);

/* Writes one frame with `body`. */
int procord_frame_writer_send(procord_frame_writer_t *w, unsigned char kind, const void *body,
                              size_t length);

/* Waits until `fd` has `events` (POLLIN, POLLOUT), for at most `timeout_ms`
   (0: no limit). Returns 0, PROCORD_ETIMEOUT, or -errno. */
int procord_wait_for(int fd, short events, int timeout_ms);

#endif
