/*
 * The worker loop (procord/worker.h): blocking reads and writes, one task at
 * a time, and a watchdog that ends the worker when its main program is gone.
 */
#define _GNU_SOURCE
#include "io/io_private.h"
#include "base/base_private.h"
#include "procord/worker.h"
#include "worker/worker_private.h"
#include "procord/error.h"
#include "wire/wire_private.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define READ_CHUNK 65536

typedef struct reader_s {
  int fd;
  int timeout_ms; /* for each wait for bytes; 0: none */
  procord_frame_parser_t parser;
  unsigned char buffer[READ_CHUNK];
  size_t start, end;
} reader_t;

static ssize_t read_some(const reader_t *r, void *into, size_t length) {
  int fd = r->fd;
  if (r->timeout_ms > 0) {
    int error = procord_wait_for(fd, POLLIN, r->timeout_ms);
    if (error) return error;
  }
  for (;;) {
    ssize_t n = read(fd, into, length);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
    int error = procord_wait_for(fd, POLLIN, r->timeout_ms);
    if (error) return error;
  }
}

/* Returns 1 with a frame, 0 at an end of stream between frames, or an error. */
static int next_frame(reader_t *r, procord_frame_t *frame) {
  for (;;) {
    if (r->start < r->end) {
      size_t used = 0;
      int result = procord_frame_parser_feed(&r->parser, r->buffer + r->start, r->end - r->start,
                                             &used, frame);
      r->start += used;
      if (result != 0) return result;
      continue;
    }
    unsigned char *window;
    size_t missing = procord_frame_parser_body_window(&r->parser, &window);
    if (missing) {
      ssize_t n = read_some(r, window, missing);
      if (n < 0) return (int)n;
      if (n == 0) return PROCORD_EDISCONNECTED;
      int result = procord_frame_parser_body_advance(&r->parser, (size_t)n, frame);
      if (result != 0) return result;
      continue;
    }
    ssize_t n = read_some(r, r->buffer, sizeof r->buffer);
    /* A main program that closes without reading our `0R` resets the socket:
       between frames, that is the same clean end as an end of stream. */
    if (n < 0 && n != -ECONNRESET) return (int)n;
    if (n <= 0) return procord_frame_parser_is_idle(&r->parser) ? 0 : PROCORD_EDISCONNECTED;
    r->start = 0;
    r->end = (size_t)n;
  }
}

/* Answers a protocol error with its `E` frame, and returns the error. */
static int protocol_error(procord_frame_writer_t *w, procord_worker_report_t *report, int error) {
  char digit = procord_error_to_frame_digit(error);
  if (digit) procord_frame_writer_send(w, PROCORD_FRAME_ERROR, &digit, 1);
  if (digit && report) report->last_answer = PROCORD_FRAME_ERROR;
  return error;
}

static const procord_worker_task_t *find_task(const procord_worker_options_t *options,
                                              const procord_frame_t *name) {
  for (size_t i = 0; i < options->task_count; i++) {
    const char *candidate = options->tasks[i].name;
    if (strlen(candidate) == name->length && memcmp(candidate, name->body, name->length) == 0)
      return &options->tasks[i];
  }
  return NULL;
}

/*
 * Ends the worker if its main program goes away while a task runs: the task
 * would otherwise run on for nobody (and a nested worker would outlive a
 * main program killed by a signal, which runs no atexit). Sockets only: a
 * closed peer shows as POLLHUP there, unlike a pipe's half-close.
 */
typedef struct watchdog_s {
  int fd;
  int stop[2];
  int task_running; /* atomic */
  int peer_gone;    /* atomic: seen between tasks; the next task is not run */
  pthread_t thread;
  int started;
} watchdog_t;

static void *watch_peer(void *argument) {
  watchdog_t *dog = argument;
  procord_thread_block_all_signals();
  /* A local peer that went away shows as POLLHUP. A TCP peer that went away
     has only sent its FIN, which a half-close sends too: over TCP a client
     must not half-close while it waits for an answer (docs/PROTOCOL.md). */
  struct sockaddr_storage address;
  socklen_t length = sizeof address;
  int tcp = getsockname(dog->fd, (struct sockaddr *)&address, &length) == 0 &&
            (address.ss_family == AF_INET || address.ss_family == AF_INET6);
  struct pollfd p[2] = {{.fd = dog->fd, .events = tcp ? POLLRDHUP : 0},
                        {.fd = dog->stop[0], .events = POLLIN}};
  for (;;) {
    if (procord_poll_retrying(p, 2, -1) < 0) return NULL;
    if (p[1].revents) return NULL;
    if (p[0].revents & (POLLHUP | POLLERR | (tcp ? POLLRDHUP : 0))) {
      /* Between tasks: the peer's frames may still be buffered, so say it
         is gone and let the task that would follow not run at all. */
      __atomic_store_n(&dog->peer_gone, 1, __ATOMIC_SEQ_CST);
      if (!__atomic_load_n(&dog->task_running, __ATOMIC_SEQ_CST)) return NULL;
      /* A task that can be cancelled is asked to stop, and killed only if
         it has not ended (exiting the worker) within the grace period. */
      if (procord_worker_request_termination() == 0) {
        struct pollfd stop = {.fd = dog->stop[0], .events = POLLIN};
        procord_poll_retrying(&stop, 1, PROCORD_WORKER_CANCEL_GRACE_MS);
        if (stop.revents) return NULL; /* the task ended: the worker is stopping */
      }
      kill(getpgrp() == getpid() ? 0 : getpid(), SIGKILL);
      return NULL;
    }
  }
}

static void watchdog_start(watchdog_t *dog, int fd) {
  memset(dog, 0, sizeof *dog);
  dog->fd = fd;
  if (pipe2(dog->stop, O_CLOEXEC) < 0) return;
  if (pthread_create(&dog->thread, NULL, watch_peer, dog) != 0) {
    close(dog->stop[0]);
    close(dog->stop[1]);
    return;
  }
  dog->started = 1;
}

static void watchdog_stop(watchdog_t *dog) {
  if (!dog->started) return;
  char byte = 0;
  procord_write_retrying(dog->stop[1], &byte, 1);
  pthread_join(dog->thread, NULL);
  close(dog->stop[0]);
  close(dog->stop[1]);
}

typedef struct session_s {
  const procord_worker_options_t *options; /* &copy */
  procord_worker_options_t copy;           /* the caller's, read by its size */
  reader_t reader;
  procord_frame_writer_t writer;
  procord_output_capture_t *capture; /* NULL unless capture_output */
  watchdog_t watchdog;
  int peer_left; /* after an answer, before its `0R` */
} session_t;

static void report_task(session_t *s, const procord_worker_task_t *task) {
  procord_worker_report_t *report = s->options->report;
  if (!report) return;
  snprintf(report->task_name, sizeof report->task_name, "%s", task->name);
  report->last_answer = 0;
}

static void report_answer(session_t *s, unsigned char kind) {
  procord_worker_report_t *report = s->options->report;
  if (!report) return;
  report->last_answer = kind;
  if (kind != PROCORD_FRAME_ERROR) report->tasks_served++;
}

static int run_task(session_t *s, const procord_worker_task_t *task, const procord_frame_t *input) {
  procord_reply_t reply = {0};
  __atomic_store_n(&s->watchdog.task_running, 1, __ATOMIC_SEQ_CST);
  /* Set after task_running, so that the watchdog either saw the task or left
     this flag for it: a task is never run for a peer known to be gone. */
  if (__atomic_load_n(&s->watchdog.peer_gone, __ATOMIC_SEQ_CST)) {
    __atomic_store_n(&s->watchdog.task_running, 0, __ATOMIC_RELEASE);
    return PROCORD_EDISCONNECTED;
  }
  task->run(task->context, input->body, input->length, &reply);
  __atomic_store_n(&s->watchdog.task_running, 0, __ATOMIC_RELEASE);
  procord_capture_drain(s->capture); /* what it printed arrives before its answer */
  static const char no_kind[] = "the task gave a reply of no valid kind";
  int valid = reply.kind == PROCORD_FRAME_VALUE || reply.kind == PROCORD_FRAME_EXCEPTION ||
              reply.kind == PROCORD_FRAME_UNKNOWN_EXCEPTION;
  unsigned char kind = valid ? reply.kind : PROCORD_FRAME_UNKNOWN_EXCEPTION;
  /* The answer, then `0R` when another task may follow, in one write. */
  int error = procord_frame_writer_send_answer(&s->writer, kind, valid ? reply.body : no_kind,
                                               valid ? reply.length : sizeof no_kind - 1,
                                               s->options->reusable);
  report_answer(s, kind);
  if (reply.release) reply.release(reply.release_context);
  else
    free(reply.body);
  if (error == 1) {
    /* The main program may close as soon as it has its answer: not an error. */
    s->peer_left = 1;
    return 0;
  }
  /* The main program went away (killed, or gave up): a disconnection. */
  return error == -EPIPE || error == -ECONNRESET ? PROCORD_EDISCONNECTED : error;
}

/* Serves one task; returns 1 when done and another may follow, 0 at a clean end. */
/* An error while reading frames: protocol errors are answered, the rest is not. */
static int reading_failed(session_t *s, int error) {
  if (error == PROCORD_ETOO_LONG || error == PROCORD_EILL_FORMED)
    return protocol_error(&s->writer, s->options->report, error);
  return error;
}

/*
 * Between tasks: true when the stop descriptor says stop before the peer has
 * sent anything of a next task (whose bytes, if any, win).
 */
static int told_to_stop(session_t *s) {
  reader_t *r = &s->reader;
  if (s->options->stop_fd <= 0 || r->start < r->end || !procord_frame_parser_is_idle(&r->parser))
    return 0;
  struct pollfd p[2] = {{.fd = r->fd, .events = POLLIN},
                        {.fd = s->options->stop_fd, .events = POLLIN}};
  int timeout = r->timeout_ms > 0 ? r->timeout_ms : -1;
  int n;
  n = procord_poll_retrying(p, 2, timeout);
  if (n == 0) return 1; /* silent for the read timeout: give up, as the read would */
  return n > 0 && !(p[0].revents & (POLLIN | POLLHUP | POLLERR)) && (p[1].revents != 0);
}

static int serve_one(session_t *s, int after_a_task) {
  procord_frame_writer_t *w = &s->writer;
  procord_worker_report_t *report = s->options->report;
  procord_frame_t frame;
  if (after_a_task && told_to_stop(s)) return 0;
  int got = next_frame(&s->reader, &frame);
  if (got == 0) return 0;
  if (got < 0) return reading_failed(s, got);
  if (frame.kind != PROCORD_FRAME_TASK) return protocol_error(w, report, PROCORD_EUNEXPECTED);
  const procord_worker_task_t *task = find_task(s->options, &frame);
  if (!task && report) {
    size_t n =
        frame.length < sizeof report->task_name - 1 ? frame.length : sizeof report->task_name - 1;
    memcpy(report->task_name, frame.body, n);
    report->task_name[n] = 0;
  }
  if (!task) return protocol_error(w, report, PROCORD_ETASK_NOT_SUPPORTED);
  report_task(s, task);
  got = next_frame(&s->reader, &frame);
  if (got == 0) return PROCORD_EDISCONNECTED;
  if (got < 0) return reading_failed(s, got);
  if (frame.kind != PROCORD_FRAME_VALUE) return protocol_error(w, report, PROCORD_EUNEXPECTED);
  int error = run_task(s, task, &frame);
  return error ? error : 1;
}

/*
 * The writer of the session being served, for procord_worker_print: the
 * first session of the process while it lasts (a worker serves one at a
 * time). The lock keeps a print from using a writer being torn down.
 */
static pthread_mutex_t current_lock = PTHREAD_MUTEX_INITIALIZER;
static procord_frame_writer_t *current_writer;

static int valid_custom_destination(unsigned char destination) {
  return destination != 'O' && destination != 'E';
}

int procord_worker_print(unsigned char destination, const void *text, size_t length) {
  if (!valid_custom_destination(destination)) return PROCORD_EINVALID_DESTINATION;
  if (length == 0) return 0;
  pthread_mutex_lock(&current_lock);
  int error = current_writer ? procord_frame_writer_send_parts(current_writer, PROCORD_FRAME_PRINT,
                                                               &destination, 1, text, length)
                             : PROCORD_ECLOSED;
  pthread_mutex_unlock(&current_lock);
  return error;
}

int procord_worker_flush(unsigned char destination) {
  if (!valid_custom_destination(destination)) return PROCORD_EINVALID_DESTINATION;
  pthread_mutex_lock(&current_lock);
  int error = current_writer
                  ? procord_frame_writer_send(current_writer, PROCORD_FRAME_FLUSH, &destination, 1)
                  : PROCORD_ECLOSED;
  pthread_mutex_unlock(&current_lock);
  return error;
}

void procord_worker_options_init(procord_worker_options_t *options) {
  procord_options_clear(options, sizeof *options);
}

int procord_worker_serve(const procord_worker_options_t *given) {
  procord_lineage_mark_serving(); /* it may delegate from now on */
  if (!given) return PROCORD_EINVAL;
  session_t *s = procord_allocate_zeroed(1, sizeof *s);
  if (!s) return -ENOMEM;
  if (PROCORD_OPTIONS_COPY(s->copy, given, PROCORD_FIRST_SIZE_WORKER_OPTIONS) != 0) {
    procord_free(s);
    return PROCORD_EINVAL;
  }
  const procord_worker_options_t *options = s->options = &s->copy;
  s->reader.fd = options->read_fd;
  s->reader.timeout_ms = options->read_timeout_ms;
  procord_frame_writer_init(&s->writer, options->write_fd, options->read_timeout_ms);
  procord_frame_parser_init(&s->reader.parser, options->max_message_size);
  if (options->end_with_peer && procord_fd_is_socket(options->read_fd))
    watchdog_start(&s->watchdog, options->read_fd);
  int result = 0;
  pthread_mutex_lock(&current_lock);
  if (!current_writer) current_writer = &s->writer;
  pthread_mutex_unlock(&current_lock);
  /* Without a capture (no descriptors left, say) the task's output goes
     where descriptors 1 and 2 point, which the callers keep off the protocol. */
  if (options->capture_output != PROCORD_CAPTURE_NONE &&
      procord_capture_start(&s->writer,
                            options->capture_output == PROCORD_CAPTURE_STDOUT_AND_STDERR,
                            &s->capture) != 0)
    s->capture = NULL;
  for (int tasks = 0; result == 0; tasks++) {
    int served = serve_one(s, tasks > 0);
    if (served <= 0) {
      result = served;
      break;
    }
    if (!options->reusable || s->peer_left) break;
  }
  procord_capture_stop(s->capture);
  pthread_mutex_lock(&current_lock);
  if (current_writer == &s->writer) current_writer = NULL;
  pthread_mutex_unlock(&current_lock);
  watchdog_stop(&s->watchdog);
  procord_frame_writer_destroy(&s->writer);
  procord_frame_parser_reset(&s->reader.parser);
  procord_free(s);
  return result;
}
