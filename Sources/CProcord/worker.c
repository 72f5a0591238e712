/* The worker loop, with blocking I/O, and its command line (procord/worker.h). */
#define _GNU_SOURCE
#include "procord/worker.h"
#include "procord/error.h"
#include "procord/frame.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define READ_CHUNK 65536

typedef struct reader_s {
  int fd;
  procord_frame_parser_t parser;
  unsigned char buffer[READ_CHUNK];
  size_t start, end;
} reader_t;

/* Waits for a descriptor that was left non-blocking by whoever gave it to us. */
static int wait_for(int fd, short events) {
  struct pollfd p = {.fd = fd, .events = events};
  while (poll(&p, 1, -1) < 0) {
    if (errno != EINTR) return -errno;
  }
  return 0;
}

static ssize_t read_some(int fd, void *into, size_t length) {
  for (;;) {
    ssize_t n = read(fd, into, length);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
    int error = wait_for(fd, POLLIN);
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
      ssize_t n = read_some(r->fd, window, missing);
      if (n < 0) return (int)n;
      if (n == 0) return PROCORD_EDISCONNECTED;
      int result = procord_frame_parser_body_advance(&r->parser, (size_t)n, frame);
      if (result != 0) return result;
      continue;
    }
    ssize_t n = read_some(r->fd, r->buffer, sizeof r->buffer);
    /* A main program that closes without reading our `0R` resets the socket:
       between frames, that is the same clean end as an end of stream. */
    if (n < 0 && n != -ECONNRESET) return (int)n;
    if (n <= 0) return procord_frame_parser_is_idle(&r->parser) ? 0 : PROCORD_EDISCONNECTED;
    r->start = 0;
    r->end = (size_t)n;
  }
}

static int write_frame(int fd, unsigned char kind, const void *body, size_t length) {
  unsigned char header[PROCORD_FRAME_HEADER_MAX];
  struct iovec parts[2] = {
      {header, procord_frame_encode_header(kind, length, header)},
      {(void *)body, length},
  };
  int count = 2;
  struct iovec *at = parts;
  while (count > 0) {
    ssize_t n = writev(fd, at, count);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        int error = wait_for(fd, POLLOUT);
        if (error) return error;
        continue;
      }
      return -errno;
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

/* Answers a protocol error with its `E` frame, and returns the error. */
static int protocol_error(int fd, int error) {
  char digit = procord_error_to_frame_digit(error);
  if (digit) write_frame(fd, PROCORD_FRAME_ERROR, &digit, 1);
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

static int run_task(const procord_worker_options_t *options, const procord_worker_task_t *task,
                    const procord_frame_t *input) {
  procord_reply_t reply = {0};
  task->run(task->context, input->body, input->length, &reply);
  int error;
  if (reply.kind == PROCORD_FRAME_VALUE || reply.kind == PROCORD_FRAME_EXCEPTION ||
      reply.kind == PROCORD_FRAME_UNKNOWN_EXCEPTION) {
    error = write_frame(options->write_fd, reply.kind, reply.body, reply.length);
  } else {
    static const char text[] = "the task gave a reply of no valid kind";
    error = write_frame(options->write_fd, PROCORD_FRAME_UNKNOWN_EXCEPTION, text, sizeof text - 1);
  }
  free(reply.body);
  /* The main program went away (killed, or gave up): a disconnection. */
  return error == -EPIPE || error == -ECONNRESET ? PROCORD_EDISCONNECTED : error;
}

/* Serves one task; returns 1 when done and another may follow, 0 at a clean end. */
static int serve_one(const procord_worker_options_t *options, reader_t *r) {
  procord_frame_t frame;
  int got = next_frame(r, &frame);
  if (got == 0) return 0;
  if (got < 0) return got == PROCORD_EDISCONNECTED ? got : protocol_error(options->write_fd, got);
  if (frame.kind != PROCORD_FRAME_TASK) return protocol_error(options->write_fd, PROCORD_EUNEXPECTED);
  const procord_worker_task_t *task = find_task(options, &frame);
  if (!task) return protocol_error(options->write_fd, PROCORD_ETASK_NOT_SUPPORTED);
  got = next_frame(r, &frame);
  if (got == 0) return PROCORD_EDISCONNECTED;
  if (got < 0) return got == PROCORD_EDISCONNECTED ? got : protocol_error(options->write_fd, got);
  if (frame.kind != PROCORD_FRAME_VALUE) return protocol_error(options->write_fd, PROCORD_EUNEXPECTED);
  int error = run_task(options, task, &frame);
  return error ? error : 1;
}

int procord_worker_serve(const procord_worker_options_t *options) {
  reader_t *r = calloc(1, sizeof *r);
  if (!r) return -ENOMEM;
  r->fd = options->read_fd;
  procord_frame_parser_init(&r->parser, options->max_message_size);
  int result;
  for (;;) {
    result = serve_one(options, r);
    if (result <= 0) break;
    if (!options->reusable) {
      result = 0;
      break;
    }
    /* The main program may close as soon as it has its answer: not an error. */
    if (write_frame(options->write_fd, PROCORD_FRAME_REUSABLE, NULL, 0) < 0) {
      result = 0;
      break;
    }
  }
  procord_frame_parser_reset(&r->parser);
  free(r);
  return result;
}

/* ---- The command line ---- */

static int set_error(char *error, size_t size, int code, const char *format, const char *what) {
  if (error && size) snprintf(error, size, format, what);
  return code;
}

static int parse_number(const char *text, long long low, long long high, long long *value) {
  char *end;
  errno = 0;
  long long n = strtoll(text, &end, 10);
  if (errno || end == text || *end || n < low || n > high) return -1;
  *value = n;
  return 0;
}

int procord_worker_parse_arguments(int argc, const char *const *argv,
                                   procord_worker_command_t *command, char *error,
                                   size_t error_size) {
  memset(command, 0, sizeof *command);
  command->socket_fd = -1;
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    /* Only a leading run of options is ours: the program's own arguments
       (say `--worker-arg --procord-worker`) must never turn it into a worker. */
    if (strncmp(arg, "--procord-", 10) != 0) break;
    const char *name = arg + 10;
    const char *equals = strchr(name, '=');
    size_t name_length = equals ? (size_t)(equals - name) : strlen(name);
#define IS(option) (name_length == sizeof option - 1 && strncmp(name, option, name_length) == 0)
    if (IS("worker") || IS("server") || IS("reuse-address") || IS("dont-fork")) {
      if (equals) return set_error(error, error_size, PROCORD_EINVAL, "%s takes no value", arg);
      if (IS("worker")) command->mode = PROCORD_MODE_WORKER;
      else if (IS("server")) command->mode = PROCORD_MODE_SERVER;
      else if (IS("reuse-address")) command->reuse_address = 1;
      else command->dont_fork = 1;
      continue;
    }
    if (!(IS("input-file") || IS("output-file") || IS("hostname") || IS("socket-fd") || IS("port") ||
          IS("max-simultaneous-tasks") || IS("max-message-size")))
      return set_error(error, error_size, PROCORD_EINVAL, "unknown option %s", arg);
    const char *value = equals ? equals + 1 : (i + 1 < argc ? argv[++i] : NULL);
    if (!value) return set_error(error, error_size, PROCORD_EINVAL, "%s needs a value", arg);
    long long n = 0;
    if (IS("input-file")) command->input_file = value;
    else if (IS("output-file")) command->output_file = value;
    else if (IS("hostname")) command->hostname = value;
    else if (IS("socket-fd") && parse_number(value, 0, 1 << 30, &n) == 0) command->socket_fd = (int)n;
    else if (IS("port") && parse_number(value, 0, 65535, &n) == 0) command->port = (int)n;
    else if (IS("max-simultaneous-tasks") && parse_number(value, 1, 1 << 20, &n) == 0)
      command->max_simultaneous_tasks = (int)n;
    else if (IS("max-message-size") && parse_number(value, 1, (long long)1 << 50, &n) == 0)
      command->max_message_size = (size_t)n;
    else
      return set_error(error, error_size, PROCORD_EINVAL, "invalid number for %s", arg);
#undef IS
  }
  if (command->mode == PROCORD_MODE_NONE &&
      (command->input_file || command->output_file || command->socket_fd >= 0))
    return set_error(error, error_size, PROCORD_EINVAL, "%s",
                     "--procord-input-file, --procord-output-file and --procord-socket-fd "
                     "need --procord-worker");
  return 0;
}

static int open_or_error(const char *path, int flags) {
  int fd = open(path, flags | O_CLOEXEC, 0644);
  return fd < 0 ? -errno : fd;
}

int procord_worker_run(const procord_worker_command_t *command,
                       const procord_worker_task_t *tasks, size_t task_count) {
  struct sigaction ignore = {0};
  ignore.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &ignore, NULL); /* a vanished main program is a normal end */
  procord_worker_options_t options = {
      .read_fd = 0,
      .write_fd = 1,
      .tasks = tasks,
      .task_count = task_count,
      .max_message_size = command->max_message_size,
  };
  if (command->socket_fd >= 0) {
    /* Keep the protocol away from any process the task starts. */
    fcntl(command->socket_fd, F_SETFD, FD_CLOEXEC);
    options.read_fd = options.write_fd = command->socket_fd;
    options.reusable = 1;
    int result = procord_worker_serve(&options);
    close(command->socket_fd);
    return result;
  }
  int in = -1, out = -1;
  if (command->input_file || command->output_file) {
    in = command->input_file ? open_or_error(command->input_file, O_RDONLY) : fcntl(0, F_DUPFD_CLOEXEC, 3);
    out = command->output_file ? open_or_error(command->output_file, O_WRONLY | O_CREAT | O_TRUNC)
                               : fcntl(1, F_DUPFD_CLOEXEC, 3);
  } else {
    in = fcntl(0, F_DUPFD_CLOEXEC, 3);
    out = fcntl(1, F_DUPFD_CLOEXEC, 3);
  }
  if (in < 0 || out < 0) {
    int error = in < 0 ? (command->input_file ? in : -errno) : (command->output_file ? out : -errno);
    if (in >= 0) close(in);
    if (out >= 0) close(out);
    return error;
  }
  /* Whatever the task prints to stdout must not reach the protocol stream. */
  int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null >= 0) {
    dup2(null, 0);
    close(null);
  }
  dup2(2, 1);
  options.read_fd = in;
  options.write_fd = out;
  int result = procord_worker_serve(&options);
  close(in);
  close(out);
  return result;
}
