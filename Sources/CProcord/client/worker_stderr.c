/* A local worker's stderr through a pipe: passed on, and its tail kept (client_private.h). */
#define _GNU_SOURCE
#include "client/client_private.h"
#include "io/io_private.h"
#include "procord/delegation.h"
#include "base/base_private.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TAIL_MAX PROCORD_STDERR_TAIL_MAX
/* What may wait for this program's stderr before the rest is dropped. */
#define PENDING_MAX (64 * 1024)
/* The Swift runtime's message, and how much of its line is kept. */
#define FATAL_MARK "Fatal error: "
#define FATAL_LINE_MAX 512
/* Reads: one buffer per loop turn, and a bound on a drain. */
#define READ_SIZE 16384
#define DRAIN_READS_MAX 16
/* Put between a kept `Fatal error:` line and the tail it scrolled out of. */
#define GAP_MARK "[...]\n"

struct procord_worker_stderr_s {
  procord_loop_t *loop;
  int fd; /* our end, or -1 once closed */
  pid_t pid;
  struct event *readable;
  struct event *writable; /* descriptor 2, while output waits for it */
  struct event *end_timer;
  void (*on_end)(void *context);
  void *end_context;
  int started;
  int at_end; /* the end of the pipe has been read */

  unsigned char ring[TAIL_MAX]; /* the last bytes, `head` the next to write */
  size_t head;
  unsigned long long total; /* bytes read in all */

  char fatal_line[FATAL_LINE_MAX]; /* the last line with FATAL_MARK, without its newline */
  size_t fatal_length;
  unsigned long long fatal_at; /* where that line started, counted as `total` */

  unsigned char *pending; /* waiting for descriptor 2 */
  size_t pending_length;
  size_t dropped; /* bytes not passed on since the last note */
};

/* ---- Passing on to this program's stderr ---- */

/* Writes as much of `bytes` to descriptor 2 as it takes without blocking;
   returns how much is done with (written, or dropped because our stderr is
   gone: closed, a pipe without reader, a full disk). */
static size_t write_without_blocking(const unsigned char *bytes, size_t length) {
  size_t done = 0;
  while (done < length) {
    struct pollfd p = {.fd = STDERR_FILENO, .events = POLLOUT};
    int n = procord_poll_retrying(&p, 1, 0);
    if (n < 0 || (p.revents & (POLLERR | POLLNVAL))) return length; /* gone: write() would say so */
    if (!(p.revents & POLLOUT)) return done;
    /* Writable means room for PIPE_BUF bytes at least (pipes, terminals). */
    size_t chunk = length - done < PIPE_BUF ? length - done : PIPE_BUF;
    ssize_t written = procord_write_retrying(STDERR_FILENO, bytes + done, chunk);
    if (written < 0 && errno == EAGAIN) return done;
    if (written <= 0) return length; /* EPIPE (SIGPIPE is blocked on the loop), EBADF, ENOSPC */
    done += (size_t)written;
  }
  return done;
}

static void write_note(procord_worker_stderr_t *s) {
  char note[160];
  int n =
      snprintf(note, sizeof note,
               "procord: %zu bytes that worker %d wrote to its stderr were dropped: this program's "
               "stderr did not take them\n",
               s->dropped, (int)s->pid);
  if (n > 0)
    write_without_blocking((const unsigned char *)note,
                           (size_t)n < sizeof note ? (size_t)n : sizeof note - 1);
  s->dropped = 0;
}

/* Writes what waits; once all of it is out, the note about what was dropped. */
static void flush_pending(procord_worker_stderr_t *s) {
  size_t done = write_without_blocking(s->pending, s->pending_length);
  memmove(s->pending, s->pending + done, s->pending_length - done);
  s->pending_length -= done;
  if (s->pending_length) return;
  if (s->dropped) write_note(s);
  if (s->writable) event_del(s->writable);
}

static void on_stderr_writable(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  flush_pending(context);
}

/* Keeps what descriptor 2 cannot take now, up to PENDING_MAX; once that is
   full, drops everything until the wait is over (the note says how much). */
static void keep_pending(procord_worker_stderr_t *s, const unsigned char *bytes, size_t length) {
  if (!s->pending && !(s->pending = procord_allocate(PENDING_MAX))) {
    s->dropped += length;
    return;
  }
  size_t room = s->dropped ? 0 : PENDING_MAX - s->pending_length;
  size_t kept = length < room ? length : room;
  memcpy(s->pending + s->pending_length, bytes, kept);
  s->pending_length += kept;
  s->dropped += length - kept;
  if (!s->writable)
    s->writable = event_new(procord_loop_base(s->loop), STDERR_FILENO, EV_WRITE | EV_PERSIST,
                            on_stderr_writable, s);
  /* No event, or one epoll refuses (descriptor 2 closed since): drop it. */
  if (!s->writable || event_add(s->writable, NULL) != 0) {
    s->dropped += s->pending_length;
    s->pending_length = 0;
  }
}

static void pass_on(procord_worker_stderr_t *s, const unsigned char *bytes, size_t length) {
  if (s->pending_length || s->dropped) {
    keep_pending(s, bytes, length);
    return;
  }
  size_t done = write_without_blocking(bytes, length);
  if (done < length) keep_pending(s, bytes + done, length - done);
}

/* ---- The tail ---- */

/* Remembers the last line of `bytes` holding the runtime's FATAL_MARK. */
static void note_fatal_line(procord_worker_stderr_t *s, const unsigned char *bytes, size_t length) {
  const unsigned char *mark = NULL, *from = bytes;
  const unsigned char *end = bytes + length;
  const unsigned char *found;
  while ((found = memmem(from, (size_t)(end - from), FATAL_MARK, sizeof FATAL_MARK - 1)) != NULL) {
    mark = found;
    from = found + 1;
  }
  if (!mark) return;
  const unsigned char *start = mark, *stop = mark;
  while (start > bytes && start[-1] != '\n') start--;
  while (stop < end && *stop != '\n') stop++;
  size_t line = (size_t)(stop - start);
  s->fatal_length = line < FATAL_LINE_MAX ? line : FATAL_LINE_MAX;
  memcpy(s->fatal_line, start, s->fatal_length);
  s->fatal_at = s->total + (unsigned long long)(start - bytes);
}

static void keep_tail(procord_worker_stderr_t *s, const unsigned char *bytes, size_t length) {
  note_fatal_line(s, bytes, length);
  s->total += length;
  if (length > TAIL_MAX) {
    bytes += length - TAIL_MAX;
    length = TAIL_MAX;
  }
  size_t first = TAIL_MAX - s->head < length ? TAIL_MAX - s->head : length;
  memcpy(s->ring + s->head, bytes, first);
  memcpy(s->ring, bytes + first, length - first);
  s->head = (s->head + length) % TAIL_MAX;
}

/* Where the text after the first newline of `text` starts; 0 without one. */
static size_t after_first_newline(const char *text, size_t length) {
  const char *newline = memchr(text, '\n', length);
  return newline && (size_t)(newline - text) + 1 < length ? (size_t)(newline - text) + 1 : 0;
}

char *procord_worker_stderr_tail(const procord_worker_stderr_t *s, size_t *length) {
  *length = 0;
  if (!s || s->total == 0) return NULL;
  size_t kept = s->total < TAIL_MAX ? (size_t)s->total : TAIL_MAX;
  char window[TAIL_MAX];
  size_t start = (s->head + TAIL_MAX - kept) % TAIL_MAX;
  size_t first = TAIL_MAX - start < kept ? TAIL_MAX - start : kept;
  memcpy(window, s->ring + start, first);
  memcpy(window + first, s->ring, kept - first);
  /* Cut: the tail starts with a whole line (not the end of a line, or of a
     character that was longer than the cut). */
  size_t from = s->total > TAIL_MAX ? after_first_newline(window, kept) : 0;
  unsigned long long window_at = s->total - kept + from;
  /* The runtime's message scrolled out (a long backtrace after it): it goes
     first, and the tail gives it room. */
  int fatal_first = s->fatal_length && s->fatal_at < window_at;
  size_t prefix = fatal_first ? s->fatal_length + 1 + sizeof GAP_MARK - 1 : 0;
  while (kept - from + prefix > TAIL_MAX) {
    size_t cut = kept - from + prefix - TAIL_MAX;
    size_t next = after_first_newline(window + from + cut, kept - from - cut);
    from += cut + next;
  }
  char *tail = procord_allocate(prefix + kept - from + 1);
  if (!tail) return NULL;
  if (fatal_first) {
    memcpy(tail, s->fatal_line, s->fatal_length);
    tail[s->fatal_length] = '\n';
    memcpy(tail + s->fatal_length + 1, GAP_MARK, sizeof GAP_MARK - 1);
  }
  memcpy(tail + prefix, window + from, kept - from);
  *length = prefix + kept - from;
  tail[*length] = 0;
  return tail;
}

/* ---- The pipe ---- */

static void report_end(procord_worker_stderr_t *s) {
  if (!s->on_end) return;
  void (*on_end)(void *) = s->on_end;
  s->on_end = NULL;
  event_del(s->end_timer);
  on_end(s->end_context);
}

/* Reads one buffer's worth: 1 if something came, 0 if nothing is there
   now, -1 at the end of the pipe (or an error no read gets past). */
static int read_once(procord_worker_stderr_t *s) {
  unsigned char buffer[READ_SIZE];
  ssize_t n = procord_read_retrying(s->fd, buffer, sizeof buffer);
  if (n < 0 && errno == EAGAIN) return 0;
  if (n <= 0) {
    s->at_end = 1;
    event_del(s->readable);
    return -1;
  }
  keep_tail(s, buffer, (size_t)n);
  pass_on(s, buffer, (size_t)n);
  return 1;
}

int procord_worker_stderr_drain(procord_worker_stderr_t *s) {
  /* A pipe holds 64 KiB by default: more reads than that takes mean a
     writer still at work (something the worker started), not left-overs. */
  for (int reads = 0; !s->at_end && reads < DRAIN_READS_MAX; reads++)
    if (read_once(s) == 0) break;
  return s->at_end;
}

static void on_pipe_readable(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  procord_worker_stderr_t *s = context;
  /* One buffer per turn: a chatty worker cannot starve the loop. */
  if (read_once(s) < 0) report_end(s);
}

static void on_end_timer(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  report_end(context);
}

int procord_worker_stderr_new(procord_loop_t *loop, procord_worker_stderr_t **result,
                              int *child_fd) {
  procord_worker_stderr_t *s = procord_allocate_zeroed(1, sizeof *s);
  if (!s) return -ENOMEM;
  s->loop = loop;
  s->pid = -1;
  int ends[2];
  if (pipe2(ends, O_CLOEXEC) < 0) {
    int error = -errno;
    procord_free(s);
    return error;
  }
  s->fd = ends[0];
  /* Our end only: the worker's stays blocking, as a stderr is. */
  int error = procord_fd_set_nonblocking(s->fd, 1);
  struct event_base *base = procord_loop_base(loop);
  s->readable = event_new(base, s->fd, EV_READ | EV_PERSIST, on_pipe_readable, s);
  s->end_timer = evtimer_new(base, on_end_timer, s);
  if (error || !s->readable || !s->end_timer) {
    if (!error) error = -ENOMEM;
    close(ends[1]);
    procord_worker_stderr_free(s);
    return error;
  }
  *child_fd = ends[1];
  *result = s;
  return 0;
}

void procord_worker_stderr_set_pid(procord_worker_stderr_t *s, pid_t pid) { s->pid = pid; }

int procord_worker_stderr_start(procord_worker_stderr_t *s) {
  s->started = 1;
  return event_add(s->readable, NULL) == 0 ? 0 : -ENOMEM;
}

int procord_worker_stderr_await_end(procord_worker_stderr_t *s, int limit_ms,
                                    void (*on_end)(void *), void *context) {
  s->on_end = on_end;
  s->end_context = context;
  if (s->at_end) {
    /* On a turn of its own all the same: the caller is not re-entered. */
    event_active(s->end_timer, EV_TIMEOUT, 0);
    return 0;
  }
  procord_timer_arm(s->end_timer, limit_ms);
  if (!evtimer_pending(s->end_timer, NULL)) {
    s->on_end = NULL;
    return -ENOMEM;
  }
  return 0;
}

void procord_worker_stderr_free(procord_worker_stderr_t *s) {
  if (!s) return;
  if (s->started && (s->pending_length || s->dropped)) {
    size_t done = write_without_blocking(s->pending, s->pending_length);
    s->dropped += s->pending_length - done;
    if (s->dropped) write_note(s);
  }
  if (s->readable) event_free(s->readable);
  if (s->writable) event_free(s->writable);
  if (s->end_timer) event_free(s->end_timer);
  if (s->fd >= 0) close(s->fd);
  procord_free(s->pending);
  procord_free(s);
}
