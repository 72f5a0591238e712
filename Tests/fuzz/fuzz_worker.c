/*
 * libFuzzer harness: a worker (procord_worker_serve) fed arbitrary bytes by
 * its main program.
 *
 * The input is what the main program sends, after an optional letter
 * 'a'..'p' (fuzz_support.h) whose bits choose:
 *   bit 0    reusable (`0R` after each answer, then the next task)
 *   bit 1    a maximum message size of 16 bytes (else the default)
 *   bits 2-3 the transport: 0 a pipe in, answers to /dev/null; 1 a pipe in,
 *            answers to a pipe nobody reads (every write fails, EPIPE);
 *            2 a socketpair both ways, whose peer reads every answer; 3 a
 *            socketpair whose peer closes as soon as it has written.
 * A helper thread plays the main program: it writes the input, closes its
 * side (or shuts down its writing), and reads what the worker answers.
 *
 * The worker serves five tasks: echo, fail (an `X`), print (`P` and `F`
 * frames to a custom destination, then a value), bad (a reply of no valid
 * kind) and lend (a body lent with a release callback). The same stream read
 * by the frame parser says what the worker must do: its return value, and,
 * on the socketpair whose peer reads everything, every byte it answers. Also
 * checked: it always returns (a hang is a libFuzzer timeout), it never
 * raises SIGPIPE (the handler here aborts), every reply is released once,
 * and no descriptor is left open.
 */
#define _GNU_SOURCE
#include "fuzz_support.h"
#include "procord/error.h"
#include "procord/frame.h"
#include "procord/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { PIPE_TO_NULL, PIPE_TO_CLOSED_PIPE, SOCKET, SOCKET_PEER_GONE };

static void append_frame(bytes_t *b, unsigned char kind, const void *prefix, size_t prefix_length,
                         const void *body, size_t length) {
  unsigned char header[PROCORD_FRAME_HEADER_MAX];
  append(b, header, procord_frame_encode_header(kind, prefix_length + length, header));
  append(b, prefix, prefix_length);
  append(b, body, length);
}

/* ---- The tasks ---- */

static int tasks_run, replies_released;

static void *copy_of(const void *data, size_t length) {
  void *copy = malloc(length ? length : 1);
  FUZZ_CHECK(copy, "out of memory");
  if (length) memcpy(copy, data, length);
  return copy;
}

static void echo(void *context, const unsigned char *input, size_t length, procord_reply_t *reply) {
  (void)context;
  tasks_run++;
  reply->kind = PROCORD_FRAME_VALUE;
  reply->body = length ? copy_of(input, length) : NULL;
  reply->length = length;
}

static const char fail_prefix[] = "error: ";

static void fail(void *context, const unsigned char *input, size_t length, procord_reply_t *reply) {
  (void)context;
  tasks_run++;
  unsigned char *body = malloc(sizeof fail_prefix - 1 + length);
  FUZZ_CHECK(body, "out of memory");
  memcpy(body, fail_prefix, sizeof fail_prefix - 1);
  if (length) memcpy(body + sizeof fail_prefix - 1, input, length);
  reply->kind = PROCORD_FRAME_EXCEPTION;
  reply->body = body;
  reply->length = sizeof fail_prefix - 1 + length;
}

static const char printed[] = "printed";

static void print(void *context, const unsigned char *input, size_t length,
                  procord_reply_t *reply) {
  (void)context;
  tasks_run++;
  FUZZ_CHECK(procord_worker_print('O', input, length) == PROCORD_EINVALID_DESTINATION,
             "a print to O was not refused");
  FUZZ_CHECK(procord_worker_flush('E') == PROCORD_EINVALID_DESTINATION,
             "a flush of E was not refused");
  procord_worker_print('7', input, length); /* fails once the main program has gone */
  procord_worker_flush('7');
  reply->kind = PROCORD_FRAME_VALUE;
  reply->body = copy_of(printed, sizeof printed - 1);
  reply->length = sizeof printed - 1;
}

static const char no_valid_kind[] = "the task gave a reply of no valid kind";

static void bad(void *context, const unsigned char *input, size_t length, procord_reply_t *reply) {
  (void)context;
  (void)input;
  (void)length;
  tasks_run++;
  reply->kind = 'Z';
  reply->body = copy_of("bad", 3); /* the worker still frees it */
  reply->length = 3;
}

static const char lent[] = "lent";

static void release_lent(void *context) {
  FUZZ_CHECK(context == lent, "release got another context");
  replies_released++;
}

static void lend(void *context, const unsigned char *input, size_t length, procord_reply_t *reply) {
  (void)context;
  (void)input;
  (void)length;
  tasks_run++;
  reply->kind = PROCORD_FRAME_VALUE;
  reply->body = (void *)lent;
  reply->length = sizeof lent - 1;
  reply->release = release_lent;
  reply->release_context = (void *)lent;
}

static const procord_worker_task_t tasks[] = {
    {"echo", echo, NULL}, {"fail", fail, NULL}, {"print", print, NULL},
    {"bad", bad, NULL},   {"lend", lend, NULL},
};
#define TASK_COUNT (sizeof tasks / sizeof tasks[0])

/* ---- What the worker must do, read from the same stream ---- */

typedef struct expected_s {
  int result;
  bytes_t output; /* what it answers, when its writes succeed */
  int tasks_run;
  int lent; /* how many of them were `lend` */
} expected_t;

typedef struct stream_s {
  const uint8_t *data;
  size_t length, at;
  procord_frame_parser_t *parser;
} stream_t;

/* As the worker's reader: 1 with a frame, 0 at the end between frames,
   PROCORD_EDISCONNECTED at the end inside one, or a protocol error. */
static int next_frame(stream_t *s, procord_frame_t *frame) {
  while (s->at < s->length) {
    size_t used = 0;
    int r = procord_frame_parser_feed(s->parser, s->data + s->at, s->length - s->at, &used, frame);
    s->at += used;
    if (r != 0) return r;
  }
  return procord_frame_parser_is_idle(s->parser) ? 0 : PROCORD_EDISCONNECTED;
}

static int answer_error(expected_t *e, int error) {
  char digit = procord_error_to_frame_digit(error);
  if (digit && error != PROCORD_EDISCONNECTED) append_frame(&e->output, 'E', NULL, 0, &digit, 1);
  return error;
}

static const procord_worker_task_t *find(const procord_frame_t *name) {
  for (size_t i = 0; i < TASK_COUNT; i++)
    if (strlen(tasks[i].name) == name->length &&
        memcmp(tasks[i].name, name->body, name->length) == 0)
      return &tasks[i];
  return NULL;
}

/* The task's frames and answer, as the worker writes them. */
static void expect_answer(expected_t *e, const procord_worker_task_t *task,
                          const procord_frame_t *input, int reusable) {
  e->tasks_run++;
  bytes_t *out = &e->output;
  if (task->run == echo) append_frame(out, 'V', NULL, 0, input->body, input->length);
  if (task->run == fail)
    append_frame(out, 'X', fail_prefix, sizeof fail_prefix - 1, input->body, input->length);
  if (task->run == print) {
    if (input->length) append_frame(out, 'P', "7", 1, input->body, input->length);
    append_frame(out, 'F', NULL, 0, "7", 1);
    append_frame(out, 'V', NULL, 0, printed, sizeof printed - 1);
  }
  if (task->run == bad) append_frame(out, 'U', NULL, 0, no_valid_kind, sizeof no_valid_kind - 1);
  if (task->run == lend) {
    e->lent++;
    append_frame(out, 'V', NULL, 0, lent, sizeof lent - 1);
  }
  if (reusable) append(out, "0R", 2);
}

/* procord_worker_serve as worker.h describes it; with `writes_fail`, no
   answer reaches the main program (it has gone). */
static void expect(expected_t *e, const uint8_t *data, size_t length, int reusable, size_t max,
                   int writes_fail) {
  memset(e, 0, sizeof *e);
  stream_t s = {data, length, 0, NULL};
  FUZZ_CHECK(procord_frame_parser_new(max, &s.parser) == 0, "out of memory");
  for (;;) {
    procord_frame_t frame;
    int got = next_frame(&s, &frame);
    if (got <= 0) {
      e->result = answer_error(e, got);
      break;
    }
    if (frame.kind != 'T') {
      e->result = answer_error(e, PROCORD_EUNEXPECTED);
      break;
    }
    const procord_worker_task_t *task = find(&frame);
    if (!task) {
      e->result = answer_error(e, PROCORD_ETASK_NOT_SUPPORTED);
      break;
    }
    got = next_frame(&s, &frame);
    if (got <= 0) {
      e->result = answer_error(e, got == 0 ? PROCORD_EDISCONNECTED : got);
      break;
    }
    if (frame.kind != 'V') {
      e->result = answer_error(e, PROCORD_EUNEXPECTED);
      break;
    }
    expect_answer(e, task, &frame, reusable);
    if (writes_fail) {
      e->result = PROCORD_EDISCONNECTED; /* the answer could not be written */
      break;
    }
    if (!reusable) {
      e->result = 0;
      break;
    }
  }
  procord_frame_parser_free(s.parser);
}

/* ---- The main program's side ---- */

typedef struct peer_s {
  int fd; /* the input goes there; on a socket, answers come from there */
  int is_socket;
  int close_at_once; /* SOCKET_PEER_GONE: close the socket once the input is written */
  const uint8_t *input;
  size_t length;
  bytes_t output;
} peer_t;

/* A pipe: writes the input and closes. */
static void write_to_pipe(peer_t *peer) {
  size_t at = 0;
  while (at < peer->length) {
    ssize_t n = write(peer->fd, peer->input + at, peer->length - at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break; /* EPIPE: the worker has returned */
    at += (size_t)n;
  }
  close(peer->fd);
}

/* A socket: writes the input while reading answers, so that neither side
   waits for the other however much each sends; then shuts down its
   writing and reads to the end, or (close_at_once) closes. */
static void talk_on_socket(peer_t *peer) {
  int fd = peer->fd;
  size_t at = 0;
  int writing = 1;
  if (peer->length == 0) {
    writing = 0;
    if (peer->close_at_once) {
      close(fd);
      return;
    }
    shutdown(fd, SHUT_WR);
  }
  for (;;) {
    struct pollfd p = {.fd = fd, .events = POLLIN | (writing ? POLLOUT : 0)};
    if (poll(&p, 1, -1) < 0) {
      FUZZ_CHECK(errno == EINTR, "poll: %s", strerror(errno));
      continue;
    }
    if (writing && (p.revents & (POLLOUT | POLLHUP | POLLERR))) {
      ssize_t n = send(fd, peer->input + at, peer->length - at, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) at += (size_t)n;
      if ((n < 0 && errno != EAGAIN && errno != EINTR) || at == peer->length) {
        writing = 0; /* all written, or the worker has returned */
        if (peer->close_at_once) {
          close(fd);
          return;
        }
        shutdown(fd, SHUT_WR);
      }
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      unsigned char buffer[65536];
      ssize_t n = recv(fd, buffer, sizeof buffer, MSG_DONTWAIT);
      if (n > 0 && !peer->close_at_once) append(&peer->output, buffer, (size_t)n);
      /* The end, or ECONNRESET when the worker left input unread. */
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) break;
    }
  }
  if (writing && peer->close_at_once) close(fd);
}

static void *play_main_program(void *argument) {
  peer_t *peer = argument;
  /* A write to a pipe whose worker has returned fails with EPIPE; here
     that is not the worker's SIGPIPE, which the process's handler catches. */
  sigset_t pipe_signal;
  sigemptyset(&pipe_signal);
  sigaddset(&pipe_signal, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_signal, NULL);
  if (peer->is_socket) talk_on_socket(peer);
  else
    write_to_pipe(peer);
  return NULL;
}

/* ---- The harness ---- */

static int dev_null = -1;

static void on_sigpipe(int signal) {
  (void)signal;
  static const char message[] = "\nthe worker raised SIGPIPE\n";
  (void)!write(2, message, sizeof message - 1);
  abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  dev_null = open("/dev/null", O_WRONLY | O_CLOEXEC);
  struct sigaction action = {.sa_handler = on_sigpipe};
  sigaction(SIGPIPE, &action, NULL);
  return 0;
}

static int is_one_of(int value, const int *allowed, size_t count) {
  for (size_t i = 0; i < count; i++)
    if (value == allowed[i]) return 1;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int descriptors = fuzz_count_descriptors();
  unsigned options = fuzz_options(&data, &size);
  int reusable = options & 1;
  size_t max = options & 2 ? 16 : 0;
  int transport = (int)(options >> 2);

  int in[2] = {-1, -1}, out[2] = {-1, -1}, pair[2] = {-1, -1};
  peer_t peer = {.input = data, .length = size};
  procord_worker_options_t worker = {
      .tasks = tasks, .task_count = TASK_COUNT, .reusable = reusable, .max_message_size = max};
  if (transport == PIPE_TO_NULL || transport == PIPE_TO_CLOSED_PIPE) {
    FUZZ_CHECK(pipe2(in, O_CLOEXEC) == 0, "pipe: %s", strerror(errno));
    peer.fd = in[1];
    worker.read_fd = in[0];
    worker.write_fd = dev_null;
    if (transport == PIPE_TO_CLOSED_PIPE) {
      FUZZ_CHECK(pipe2(out, O_CLOEXEC) == 0, "pipe: %s", strerror(errno));
      close(out[0]);
      worker.write_fd = out[1];
    }
  } else {
    FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0, "socketpair: %s",
               strerror(errno));
    peer.fd = pair[1];
    peer.is_socket = 1;
    peer.close_at_once = transport == SOCKET_PEER_GONE;
    worker.read_fd = worker.write_fd = pair[0];
    worker.read_timeout_ms = 10000; /* the bounded waits; never reached here */
  }

  tasks_run = replies_released = 0;
  pthread_t thread;
  FUZZ_CHECK(pthread_create(&thread, NULL, play_main_program, &peer) == 0, "pthread_create");
  int result = procord_worker_serve(&worker);
  /* The worker does not close its descriptors: the main program sees the
     end once they are closed here. */
  if (transport == PIPE_TO_NULL || transport == PIPE_TO_CLOSED_PIPE) close(in[0]);
  if (transport == PIPE_TO_CLOSED_PIPE) close(out[1]);
  if (transport == SOCKET || transport == SOCKET_PEER_GONE) close(pair[0]);
  pthread_join(thread, NULL);
  if (transport == SOCKET) close(pair[1]);

  expected_t ok, failing;
  expect(&ok, data, size, reusable, max, 0);
  expect(&failing, data, size, reusable, max, 1);
  switch (transport) {
  case PIPE_TO_NULL:
  case SOCKET:
    FUZZ_CHECK(result == ok.result, "served to %d, expected %d", result, ok.result);
    FUZZ_CHECK(tasks_run == ok.tasks_run, "ran %d tasks, expected %d", tasks_run, ok.tasks_run);
    FUZZ_CHECK(replies_released == ok.lent, "released %d lent replies of %d", replies_released,
               ok.lent);
    break;
  case PIPE_TO_CLOSED_PIPE:
    FUZZ_CHECK(result == failing.result, "served to %d with nobody reading, expected %d", result,
               failing.result);
    FUZZ_CHECK(tasks_run == failing.tasks_run, "ran %d tasks, expected %d", tasks_run,
               failing.tasks_run);
    FUZZ_CHECK(replies_released == failing.lent, "released %d lent replies of %d", replies_released,
               failing.lent);
    break;
  case SOCKET_PEER_GONE: {
    /* Whether a write comes before the peer's close is a race. */
    int allowed[] = {ok.result, failing.result, 0, PROCORD_EDISCONNECTED, -ECONNRESET};
    FUZZ_CHECK(is_one_of(result, allowed, sizeof allowed / sizeof allowed[0]),
               "served to %d with the peer gone (%d if it had stayed)", result, ok.result);
    FUZZ_CHECK(tasks_run <= ok.tasks_run, "ran %d tasks, at most %d expected", tasks_run,
               ok.tasks_run);
    break;
  }
  }
  if (transport == SOCKET)
    FUZZ_CHECK(peer.output.length == ok.output.length &&
                   (ok.output.length == 0 ||
                    memcmp(peer.output.data, ok.output.data, ok.output.length) == 0),
               "answered %zu bytes, expected %zu", peer.output.length, ok.output.length);
  free(peer.output.data);
  free(ok.output.data);
  free(failing.output.data);
  fuzz_check_descriptors(descriptors);
  return 0;
}
