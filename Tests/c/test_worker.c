#define _GNU_SOURCE
/*
 * The worker side (procord/worker.h). The worker runs procord_worker_serve in
 * a thread on one end of a socketpair; the test thread plays the main
 * program on the other end with blocking reads and writes. A few tests start
 * this very program as a worker process (--procord-worker, see main).
 */
#include "check.h"
#include "fixtures.h"
#include "procord/error.h"
#include "procord/frame.h"
#include "procord/worker.h"

#include "procord/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- Tasks ---- */

static void task_fail(void *context, const unsigned char *input, size_t length,
                      procord_reply_t *reply) {
  (void)context, (void)input, (void)length;
  fixture_reply_text(reply, PROCORD_FRAME_UNKNOWN_EXCEPTION, "it failed");
}

static void task_raise(void *context, const unsigned char *input, size_t length,
                       procord_reply_t *reply) {
  (void)context, (void)input, (void)length;
  fixture_reply_text(reply, PROCORD_FRAME_EXCEPTION, "boom");
}

/* Answers with the text its context points to. */
static void task_context(void *context, const unsigned char *input, size_t length,
                         procord_reply_t *reply) {
  (void)input, (void)length;
  fixture_reply_text(reply, PROCORD_FRAME_VALUE, context);
}

static void task_bad_kind(void *context, const unsigned char *input, size_t length,
                          procord_reply_t *reply) {
  (void)context, (void)input, (void)length;
  fixture_reply_text(reply, 'Q', "x");
}

/* Says "s" on its stderr once it runs, then sleeps for 30 s: a task that is still running. */
static void task_sleep(void *context, const unsigned char *input, size_t length,
                       procord_reply_t *reply) {
  (void)context, (void)input, (void)length;
  if (write(STDERR_FILENO, "s", 1) < 0) {
  }
  struct timespec thirty = {30, 0};
  nanosleep(&thirty, NULL);
  fixture_reply_text(reply, PROCORD_FRAME_VALUE, "slept");
}

/* Answers with a static text lent to the worker, counting its releases. */
static const char lent_text[] = "lent, not copied";
static int lent_releases;
static void release_lent(void *context) {
  CHECK_EQ_INT((int)(context == lent_text), 1);
  lent_releases++;
}
static void task_lend(void *context, const unsigned char *input, size_t length,
                      procord_reply_t *reply) {
  (void)context, (void)input, (void)length;
  reply->kind = PROCORD_FRAME_VALUE;
  reply->body = (void *)lent_text;
  reply->length = sizeof lent_text - 1;
  reply->release = release_lent;
  reply->release_context = (void *)lent_text;
}

/* With the main program's side below; print-then-answer writes with it too. */
static void write_all(int fd, const void *data, size_t length);

/*
 * What print-then-answer prints: byte `i` of its stdio text or of its raw
 * text. The two alphabets share no byte, so a reader can tell the two texts
 * apart however they interleave; the shift every 4099 bytes keeps any 64 KiB
 * chunk of a text from looking like another (one sent twice or out of order
 * shows).
 */
static const char stdio_alphabet[] = "abcdefghijklmnopqrstuvwxyz\n";
static const char raw_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
static char printed_byte(const char *alphabet, size_t alphabet_length, size_t i) {
  return alphabet[(i + i / 4099) % alphabet_length];
}
#define STDIO_BYTE(i) printed_byte(stdio_alphabet, sizeof stdio_alphabet - 1, (i))
#define RAW_BYTE(i) printed_byte(raw_alphabet, sizeof raw_alphabet - 1, (i))

/*
 * Prints as many bytes as its input says to stdout through stdio (buffered,
 * never flushed here) and as many with raw write() calls; with a context, the
 * same to stderr. Its last stdio piece stays in stdio's buffer and its last
 * raw piece is written just before it returns, so only the drain before the
 * answer is sure to send them in time. Answers "printed N".
 */
static void task_print_then_answer(void *context, const unsigned char *input, size_t length,
                                   procord_reply_t *reply) {
  size_t n = (size_t)fixture_input_number(input, length);
  size_t last = n > 200 ? 100 : n - n / 2; /* 100 bytes, or the larger half of a short text */
  char *stdio_text = malloc(n + 1), *raw_text = malloc(n + 1);
  if (!stdio_text || !raw_text) abort();
  for (size_t i = 0; i < n; i++) {
    stdio_text[i] = STDIO_BYTE(i);
    raw_text[i] = RAW_BYTE(i);
  }
  stdio_text[n] = raw_text[n] = 0;
  printf("%.*s", (int)(n - last), stdio_text);
  write_all(STDOUT_FILENO, raw_text, n - last);
  if (context) {
    fputs(stdio_text, stderr);
    write_all(STDERR_FILENO, raw_text, n);
  }
  fputs(stdio_text + n - last, stdout);
  char answer[32];
  snprintf(answer, sizeof answer, "printed %zu", n);
  fixture_reply_text(reply, PROCORD_FRAME_VALUE, answer);
  write_all(STDOUT_FILENO, raw_text + n - last, last);
  free(stdio_text);
  free(raw_text);
}

static const procord_worker_task_t tasks[] = {
    {"double", fixture_task_double, NULL},
    {"fail", task_fail, NULL},
    {"raise", task_raise, NULL},
    {"echo", fixture_task_echo, NULL},
    {"context", task_context, "from the context"},
    {"bad-kind", task_bad_kind, NULL},
    {"sleep", task_sleep, NULL},
    {"lend", task_lend, NULL},
    {"print-then-answer", task_print_then_answer, NULL},
    {"print-to-both-then-answer", task_print_then_answer, "and to stderr"},
};
#define TASK_COUNT (sizeof tasks / sizeof tasks[0])

/* ---- A worker on a thread, and the main program's side ---- */

typedef struct {
  pthread_t thread;
  int worker_fd; /* the worker's end; closed by the thread when serve returns */
  int main_fd;   /* the test's end */
  procord_worker_options_t options;
  int result;
} worker_t;

static void *serve_then_close(void *argument) {
  worker_t *w = argument;
  w->result = procord_worker_serve(&w->options);
  close(w->worker_fd); /* so that the test's reads end */
  return NULL;
}

static int start_worker(worker_t *w, int reusable, size_t max_message_size) {
  memset(w, 0, sizeof *w);
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0) return -errno;
  w->main_fd = pair[0];
  w->worker_fd = pair[1];
  w->options.read_fd = w->options.write_fd = w->worker_fd;
  w->options.tasks = tasks;
  w->options.task_count = TASK_COUNT;
  w->options.reusable = reusable;
  w->options.max_message_size = max_message_size;
  int error = pthread_create(&w->thread, NULL, serve_then_close, w);
  if (error) {
    close(pair[0]);
    close(pair[1]);
    return -error;
  }
  return 0;
}

/* Joins the worker thread, closes the test's end, returns what serve returned. */
static int join_worker(worker_t *w) {
  pthread_join(w->thread, NULL);
  close(w->main_fd);
  return w->result;
}

static void write_all(int fd, const void *data, size_t length) {
  const unsigned char *bytes = data;
  while (length > 0) {
    ssize_t n = write(fd, bytes, length);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return; /* the worker stopped reading: what it sent tells why */
    bytes += n;
    length -= (size_t)n;
  }
}

/* Reads exactly `length` bytes; returns how many came before the end. */
static size_t read_exactly(int fd, void *into, size_t length) {
  unsigned char *bytes = into;
  size_t got = 0;
  while (got < length) {
    ssize_t n = read(fd, bytes + got, length - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += (size_t)n;
  }
  return got;
}

/*
 * Reads until the worker's end is closed. ECONNRESET counts as the end: a
 * socket closed with unread input resets its peer after the data.
 */
static size_t read_to_end(int fd, void *into, size_t capacity) {
  unsigned char *bytes = into;
  size_t got = 0;
  for (;;) {
    ssize_t n = read(fd, bytes + got, capacity - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || got + (size_t)n == capacity) return n > 0 ? got + (size_t)n : got;
    got += (size_t)n;
  }
}

/*
 * One whole conversation: writes `request`, closes the writing half, reads
 * every byte the worker sends until it is done; returns serve's result.
 */
static int converse(int reusable, size_t max, const char *request, size_t request_length,
                    char *answer, size_t capacity, size_t *answer_length) {
  worker_t w;
  int error = start_worker(&w, reusable, max);
  if (error) return error;
  write_all(w.main_fd, request, request_length);
  shutdown(w.main_fd, SHUT_WR);
  *answer_length = read_to_end(w.main_fd, answer, capacity);
  return join_worker(&w);
}

#define CONVERSE(reusable, request, answer, answer_length)                                         \
  converse((reusable), 0, (request), sizeof(request) - 1, (answer), sizeof(answer),                \
           &(answer_length))

/*
 * One whole conversation on a new worker: serve returns `expected_result`
 * and the worker sends exactly `expected_answer` ("" for nothing at all).
 */
#define CHECK_CONVERSATION(reusable, request, expected_result, expected_answer)                    \
  do {                                                                                             \
    char answer[64];                                                                               \
    size_t length = 99;                                                                            \
    CHECK_EQ_INT(CONVERSE((reusable), request, answer, length), (expected_result));                \
    CHECK_BYTES(answer, length, expected_answer);                                                  \
  } while (0)

/* ---- Answers ---- */

static void task_value_is_answered_with_v(void) {
  CHECK_CONVERSATION(0, "6Tdouble2V21", 0, "2V42");
}

static void task_unknown_exception_is_answered_with_u(void) {
  CHECK_CONVERSATION(0, "4Tfail0V", 0, "9Uit failed");
}

static void task_exception_is_answered_with_x(void) {
  CHECK_CONVERSATION(0, "5Traise1V1", 0, "4Xboom");
}

static void task_gets_its_context(void) {
  CHECK_CONVERSATION(0, "7Tcontext0V", 0, "16Vfrom the context");
}

static void task_reply_of_no_valid_kind_is_an_unknown_exception(void) {
  char answer[128];
  size_t length = 0;
  CHECK_EQ_INT(CONVERSE(0, "8Tbad-kind0V", answer, length), 0);
  CHECK(length > 2);
  CHECK(memcmp(answer, "38U", 3) == 0);
}

static void lent_answer_is_sent_then_released_not_freed(void) {
  lent_releases = 0;
  CHECK_CONVERSATION(0, "4Tlend0V", 0, "16Vlent, not copied");
  CHECK_EQ_INT(lent_releases, 1);
}

static void empty_output_is_answered_with_0v(void) { CHECK_CONVERSATION(0, "4Techo0V", 0, "0V"); }

static void binary_input_reaches_the_task_intact(void) {
  char answer[64];
  size_t length = 0;
  static const char request[] = "4Techo5V\0a\0\0b";
  CHECK_EQ_INT(converse(0, 0, request, sizeof request - 1, answer, sizeof answer, &length), 0);
  CHECK_EQ_INT(length, 7);
  CHECK(memcmp(answer, "5V\0a\0\0b", 7) == 0);
}

static void large_input_and_output_cross_intact(void) {
  /* Larger than the worker's read chunk, so the body goes through the window. */
  enum { SIZE = 300000 };
  char header[PROCORD_FRAME_HEADER_MAX + 8];
  size_t h = procord_frame_encode_header('T', 4, (unsigned char *)header);
  memcpy(header + h, "echo", 4);
  h += 4;
  h += procord_frame_encode_header('V', SIZE, (unsigned char *)header + h);
  char *request = malloc(h + SIZE);
  char *answer = malloc(SIZE + 64);
  CHECK(request && answer);
  memcpy(request, header, h);
  for (size_t i = 0; i < SIZE; i++) request[h + i] = (char)(i * 31 + 7);
  size_t length = 0;
  int result = converse(0, 0, request, h + SIZE, answer, SIZE + 64, &length);
  int same = length == 7 + SIZE && memcmp(answer, "300000V", 7) == 0 &&
             memcmp(answer + 7, request + h, SIZE) == 0;
  free(request);
  free(answer);
  CHECK_EQ_INT(result, 0);
  CHECK(same);
}

static void request_written_one_byte_at_a_time_is_served(void) {
  worker_t w;
  CHECK_EQ_INT(start_worker(&w, 0, 0), 0);
  static const char request[] = "006Tdouble03V100";
  for (size_t i = 0; i < sizeof request - 1; i++) write_all(w.main_fd, request + i, 1);
  char answer[16];
  size_t length = read_to_end(w.main_fd, answer, sizeof answer);
  CHECK_EQ_INT(join_worker(&w), 0);
  CHECK_BYTES(answer, length, "3V200");
}

static void nonblocking_descriptor_is_served(void) {
  worker_t w;
  CHECK_EQ_INT(start_worker(&w, 0, 0), 0);
  /* Set after the thread started: the worker must wait instead of failing on EAGAIN. */
  fcntl(w.worker_fd, F_SETFL, fcntl(w.worker_fd, F_GETFL) | O_NONBLOCK);
  write_all(w.main_fd, "6Tdouble", 8);
  write_all(w.main_fd, "1V", 2);
  write_all(w.main_fd, "4", 1);
  char answer[16];
  size_t length = read_to_end(w.main_fd, answer, sizeof answer);
  CHECK_EQ_INT(join_worker(&w), 0);
  CHECK_BYTES(answer, length, "1V8");
}

/* ---- One task or many ---- */

static void non_reusable_worker_returns_after_one_task(void) {
  worker_t w;
  CHECK_EQ_INT(start_worker(&w, 0, 0), 0);
  /* Two tasks, and the stream stays open: the worker must return all the same. */
  write_all(w.main_fd, "6Tdouble1V16Tdouble1V2", 22);
  pthread_join(w.thread, NULL);
  char answer[64];
  size_t length = read_to_end(w.main_fd, answer, sizeof answer);
  close(w.main_fd);
  CHECK_EQ_INT(w.result, 0);
  CHECK_BYTES(answer, length, "1V2");
}

static void reusable_worker_sends_0r_and_serves_the_next_task(void) {
  worker_t w;
  CHECK_EQ_INT(start_worker(&w, 1, 0), 0);
  char answer[16];
  write_all(w.main_fd, "6Tdouble2V21", 12);
  size_t length = read_exactly(w.main_fd, answer, 6);
  CHECK_BYTES(answer, length, "2V420R");
  write_all(w.main_fd, "5Traise0V", 9);
  length = read_exactly(w.main_fd, answer, 8);
  CHECK_BYTES(answer, length, "4Xboom0R");
  write_all(w.main_fd, "6Tdouble3V100", 13);
  length = read_exactly(w.main_fd, answer, 7);
  CHECK_BYTES(answer, length, "3V2000R");
  shutdown(w.main_fd, SHUT_WR);
  length = read_to_end(w.main_fd, answer, sizeof answer);
  CHECK_EQ_INT(length, 0);
  CHECK_EQ_INT(join_worker(&w), 0);
}

static void reusable_worker_serves_tasks_sent_together(void) {
  CHECK_CONVERSATION(1, "6Tdouble1V16Tdouble1V24Tfail0V", 0, "1V20R1V40R9Uit failed0R");
}

static void reusable_worker_ends_cleanly_when_the_stream_ends_between_tasks(void) {
  CHECK_CONVERSATION(1, "6Tdouble1V3", 0, "1V60R");
}

static void reusable_worker_ends_cleanly_when_main_closes_after_reading_0r(void) {
  worker_t w;
  CHECK_EQ_INT(start_worker(&w, 1, 0), 0);
  write_all(w.main_fd, "6Tdouble1V3", 11);
  char answer[8];
  size_t length = read_exactly(w.main_fd, answer, 5);
  CHECK_BYTES(answer, length, "1V60R");
  close(w.main_fd);
  pthread_join(w.thread, NULL);
  CHECK_EQ_INT(w.result, 0);
}

static void reusable_worker_ends_cleanly_when_main_closes_without_reading_0r(void) {
  worker_t w;
  CHECK_EQ_INT(start_worker(&w, 1, 0), 0);
  write_all(w.main_fd, "6Tdouble1V3", 11);
  char answer[8];
  size_t length = read_exactly(w.main_fd, answer, 3);
  CHECK_BYTES(answer, length, "1V6");
  struct pollfd ready = {.fd = w.main_fd, .events = POLLIN};
  CHECK_EQ_INT(poll(&ready, 1, -1), 1); /* the `0R` is here, and stays unread */
  close(w.main_fd);
  pthread_join(w.thread, NULL);
  CHECK_EQ_INT(w.result, 0);
}

static void end_of_stream_before_any_task_returns_0(void) {
  char answer[16];
  size_t length = 99;
  CHECK_EQ_INT(converse(0, 0, "", 0, answer, sizeof answer, &length), 0);
  CHECK_EQ_INT(length, 0);
  CHECK_EQ_INT(converse(1, 0, "", 0, answer, sizeof answer, &length), 0);
  CHECK_EQ_INT(length, 0);
}

/* ---- Protocol errors: the worker sends the E frame and returns the error ---- */

static void unknown_task_gets_e0(void) {
  CHECK_CONVERSATION(0, "4Tnope1V5", PROCORD_ETASK_NOT_SUPPORTED, "1E0");
}

static void unknown_task_gets_e0_in_reusable_mode_too(void) {
  CHECK_CONVERSATION(1, "4Tnope1V5", PROCORD_ETASK_NOT_SUPPORTED, "1E0");
}

static void twenty_digits_get_e3(void) {
  CHECK_CONVERSATION(0, "00000000000000000000", PROCORD_ETOO_LONG, "1E3");
}

static void twenty_digits_get_e3_without_waiting_for_more(void) {
  worker_t w;
  CHECK_EQ_INT(start_worker(&w, 0, 0), 0);
  write_all(w.main_fd, "00000000000000000000", 20); /* and the stream stays open */
  char answer[16];
  size_t length = read_to_end(w.main_fd, answer, sizeof answer);
  CHECK_EQ_INT(join_worker(&w), PROCORD_ETOO_LONG);
  CHECK_BYTES(answer, length, "1E3");
}

static void size_above_the_maximum_gets_e3(void) {
  char answer[16];
  size_t length = 0;
  static const char request[] = "6Tdouble11V12345678901";
  CHECK_EQ_INT(converse(0, 10, request, sizeof request - 1, answer, sizeof answer, &length),
               PROCORD_ETOO_LONG);
  CHECK_BYTES(answer, length, "1E3");
}

static void size_equal_to_the_maximum_is_served(void) {
  char answer[32];
  size_t length = 0;
  static const char request[] = "4Techo10V0123456789";
  CHECK_EQ_INT(converse(0, 10, request, sizeof request - 1, answer, sizeof answer, &length), 0);
  CHECK_BYTES(answer, length, "10V0123456789");
}

static void not_a_digit_gets_e2(void) { CHECK_CONVERSATION(0, "xyz", PROCORD_EILL_FORMED, "1E2"); }

static void ill_formed_body_gets_e2(void) {
  CHECK_CONVERSATION(0, "2E00", PROCORD_EILL_FORMED, "1E2");
}

static void value_before_task_gets_e1(void) {
  CHECK_CONVERSATION(0, "1V5", PROCORD_EUNEXPECTED, "1E1");
}

static void task_after_task_gets_e1(void) {
  CHECK_CONVERSATION(0, "6Tdouble6Tdouble", PROCORD_EUNEXPECTED, "1E1");
}

static void protocol_error_in_a_second_task_gets_its_e_frame(void) {
  CHECK_CONVERSATION(1, "6Tdouble1V1xyz", PROCORD_EILL_FORMED, "1V20R1E2");
}

/* ---- The end of the stream in the middle of a task ---- */

static void end_of_stream_inside_a_header_is_disconnected(void) {
  CHECK_CONVERSATION(0, "12", PROCORD_EDISCONNECTED, "");
}

static void end_of_stream_inside_a_task_name_is_disconnected(void) {
  CHECK_CONVERSATION(0, "6Tdou", PROCORD_EDISCONNECTED, "");
}

static void end_of_stream_between_task_and_value_is_disconnected(void) {
  CHECK_CONVERSATION(0, "6Tdouble", PROCORD_EDISCONNECTED, "");
}

static void end_of_stream_inside_a_value_is_disconnected(void) {
  CHECK_CONVERSATION(1, "6Tdouble5V12", PROCORD_EDISCONNECTED, "");
}

static void end_of_stream_inside_a_large_value_is_disconnected(void) {
  /* The body is read through the window (it is larger than the read chunk). */
  char request[16 + 70000];
  memcpy(request, "4Techo100000V", 13);
  memset(request + 13, 'a', sizeof request - 13);
  char answer[16];
  size_t length = 99;
  CHECK_EQ_INT(converse(0, 0, request, sizeof request, answer, sizeof answer, &length),
               PROCORD_EDISCONNECTED);
  CHECK_EQ_INT(length, 0);
}

/* ---- Writes never raise SIGPIPE ---- */

/*
 * In a child process, with SIGPIPE at its default disposition: serves
 * "6Tdouble1V3" on `read_fd` and answers on `write_fd`, whose reader is gone.
 * Exits 0 when serve returned PROCORD_EDISCONNECTED and SIGPIPE is still at
 * its default, neither blocked nor pending; another code says what went wrong.
 */
static void serve_to_a_vanished_reader_and_exit(int read_fd, int write_fd) {
  signal(SIGPIPE, SIG_DFL);
  struct sigaction before;
  sigaction(SIGPIPE, NULL, &before);
  if (before.sa_handler != SIG_DFL) _exit(10);
  procord_worker_options_t options = {
      .read_fd = read_fd, .write_fd = write_fd, .tasks = tasks, .task_count = TASK_COUNT};
  int result = procord_worker_serve(&options);
  if (result != PROCORD_EDISCONNECTED) _exit(11);
  struct sigaction after;
  sigaction(SIGPIPE, NULL, &after);
  if (after.sa_handler != SIG_DFL) _exit(12);
  sigset_t set;
  pthread_sigmask(SIG_BLOCK, NULL, &set);
  if (sigismember(&set, SIGPIPE)) _exit(13);
  sigpending(&set);
  if (sigismember(&set, SIGPIPE)) _exit(14);
  _exit(0);
}

/* Waits for a forked child; returns its status, or -1. */
static int wait_status(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return status;
}

static void worker_answering_on_a_pipe_without_reader_is_disconnected_without_sigpipe(void) {
  fflush(stdout);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    int request[2], answer[2];
    if (pipe(request) < 0 || pipe(answer) < 0) _exit(20);
    if (write(request[1], "6Tdouble1V3", 11) != 11) _exit(21);
    close(request[1]);
    close(answer[0]); /* the main program stopped reading before the answer */
    serve_to_a_vanished_reader_and_exit(request[0], answer[1]);
  }
  int status = wait_status(pid);
  CHECK(!WIFSIGNALED(status)); /* a SIGPIPE would have killed it */
  CHECK(WIFEXITED(status));
  CHECK_EQ_INT(WEXITSTATUS(status), 0);
}

static void worker_answering_on_a_closed_socket_is_disconnected_without_sigpipe(void) {
  fflush(stdout);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) < 0) _exit(20);
    if (write(pair[0], "6Tdouble1V3", 11) != 11) _exit(21);
    close(pair[0]); /* the main program is gone before the answer */
    serve_to_a_vanished_reader_and_exit(pair[1], pair[1]);
  }
  int status = wait_status(pid);
  CHECK(!WIFSIGNALED(status));
  CHECK(WIFEXITED(status));
  CHECK_EQ_INT(WEXITSTATUS(status), 0);
}

/* ---- This program as a worker process in socket mode ---- */

static char self_path[4096];

/* Starts this program as a socket-mode worker; its stderr goes to `stderr_fd` (-1: ours). */
static int spawn_self_worker(procord_child_t *child, int stderr_fd) {
  const char *arguments[] = {self_path, "--procord-worker", "--procord-socket-fd", "3", NULL};
  procord_spawn_options_t options = {.program = self_path,
                                     .arguments = arguments,
                                     .channel = PROCORD_CHANNEL_SOCKET,
                                     .stderr_fd = stderr_fd};
  return procord_spawn(&options, child);
}

/* True when `fd` becomes readable within `timeout_ms`. */
static int readable_within(int fd, int timeout_ms) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  int r;
  while ((r = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR) {
  }
  return r == 1;
}

/*
 * Waits up to `timeout_ms` for the child to exit and reaps it: returns 1 with
 * its status, or 0 if it was still running (it is then killed and reaped, so
 * that nothing is left).
 */
static int child_exits_within(procord_child_t *child, int timeout_ms, int *status) {
  int exited = 0;
  if (child->pidfd >= 0) {
    exited = readable_within(child->pidfd, timeout_ms);
  } else { /* no pidfd_open: look every 10 ms */
    for (int waited = 0; waited < timeout_ms; waited += 10) {
      siginfo_t info;
      memset(&info, 0, sizeof info);
      if (waitid(P_PID, (id_t)child->pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
          info.si_pid == child->pid) {
        exited = 1;
        break;
      }
      struct timespec tick = {0, 10 * 1000000L};
      nanosleep(&tick, NULL);
    }
  }
  if (!exited) procord_child_kill(child, SIGKILL);
  procord_child_reap(child, status);
  return exited;
}

static void socket_worker_whose_main_program_closes_during_a_task_is_killed(void) {
  BEGIN();
  int started[2];
  CHECK(pipe2(started, O_CLOEXEC) == 0);
  procord_child_t child;
  int spawned = spawn_self_worker(&child, started[1]);
  close(started[1]);
  if (spawned != 0) close(started[0]);
  CHECK_EQ_INT(spawned, 0);
  /* Its own process group: the worker's kill(0, SIGKILL) cannot reach us. */
  int own_group = getpgid(child.pid) == child.pid;
  int sent = write(child.write_fd, "5Tsleep0V", 9) == 9;
  /* The task says "s" on its stderr once it runs. */
  char said = 0;
  int running = sent && readable_within(started[0], 5000) && read(started[0], &said, 1) == 1;
  close(child.read_fd); /* the main program goes away while the task runs */
  int status = 0;
  int exited = child_exits_within(&child, 5000, &status);
  close(started[0]);
  CHECK(own_group);
  CHECK(sent);
  CHECK(running && said == 's');
  CHECK_EQ_INT(exited, 1);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  CHECK_NOTHING_LEFT();
}

static void socket_worker_whose_main_program_closes_between_tasks_exits_with_0(void) {
  BEGIN();
  procord_child_t child;
  CHECK_EQ_INT(spawn_self_worker(&child, -1), 0);
  char answer[8];
  size_t length = 0;
  if (write(child.write_fd, "6Tdouble1V3", 11) == 11 && readable_within(child.read_fd, 5000))
    length = read_exactly(child.read_fd, answer, 5);
  close(child.read_fd);
  int status = 0;
  int exited = child_exits_within(&child, 5000, &status);
  CHECK_BYTES(answer, length, "1V60R");
  CHECK_EQ_INT(exited, 1);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK_NOTHING_LEFT();
}

/* ---- What a task prints reaches the main program before its answer ---- */

/* Starts this program as a worker whose task's output comes back as `P` frames. */
static int spawn_self_capturing_worker(procord_child_t *child, procord_protocol_channel_t channel) {
  /* stdio mode captures stdout always; socket mode, stdout and stderr on request. */
  const char *stdio[] = {self_path, "--procord-worker", NULL};
  const char *socket[] = {self_path, "--procord-worker",         "--procord-socket-fd",
                          "3",       "--procord-capture-output", NULL};
  procord_spawn_options_t options = {.program = self_path,
                                     .channel = channel,
                                     .stderr_fd = -1,
                                     .arguments =
                                         channel == PROCORD_CHANNEL_SOCKET ? socket : stdio};
  return procord_spawn(&options, child);
}

typedef struct {
  char *bytes;
  size_t length, capacity;
} text_t;

static void text_append(text_t *t, const void *data, size_t length) {
  if (t->length + length > t->capacity) {
    size_t capacity = t->capacity ? t->capacity : 65536;
    while (capacity < t->length + length) capacity *= 2;
    t->bytes = realloc(t->bytes, capacity);
    if (!t->bytes) abort();
    t->capacity = capacity;
  }
  memcpy(t->bytes + t->length, data, length);
  t->length += length;
}

/* What a worker sent for one task. */
typedef struct {
  text_t printed[2]; /* the text of the `P` frames to O, to E */
  char answer[64];   /* the body of the `V` */
  size_t answer_length;
  int answers;              /* `V` frames */
  int printed_after_answer; /* `P` frames after the `V` */
  int other_frames;         /* any other frame, or anything after the `0R` */
  int complete;             /* the stream ended, or the `0R` came, between frames */
} transcript_t;

static void record_frame(transcript_t *t, const procord_frame_t *frame) {
  if (frame->kind == PROCORD_FRAME_PRINT && (frame->body[0] == 'O' || frame->body[0] == 'E')) {
    text_append(&t->printed[frame->body[0] == 'E'], frame->body + 1, frame->length - 1);
    if (t->answers) t->printed_after_answer++;
  } else if (frame->kind == PROCORD_FRAME_VALUE) {
    t->answers++;
    t->answer_length = frame->length < sizeof t->answer ? frame->length : sizeof t->answer;
    memcpy(t->answer, frame->body, t->answer_length);
  } else {
    t->other_frames++;
  }
}

/*
 * Reads and parses what the worker sends, for at most `timeout_ms` in all:
 * until the end of the stream, or with `until_0r` until the `0R` after the
 * answer (a reusable worker then waits for another task).
 */
static void read_transcript(int fd, int until_0r, int timeout_ms, transcript_t *t) {
  memset(t, 0, sizeof *t);
  procord_frame_parser_t *parser = NULL;
  if (procord_frame_parser_new(0, &parser) != 0)
    return; /* out of memory: nothing read, the test fails */
  unsigned char chunk[65536];
  long long deadline = now_ms() + timeout_ms;
  for (;;) {
    long long left = deadline - now_ms();
    if (left <= 0 || !readable_within(fd, (int)left)) break;
    ssize_t n = read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      t->complete = n == 0 && !until_0r && procord_frame_parser_is_idle(parser);
      break;
    }
    for (size_t offset = 0; offset < (size_t)n;) {
      size_t used = 0;
      procord_frame_t frame;
      int got =
          procord_frame_parser_feed(parser, chunk + offset, (size_t)n - offset, &used, &frame);
      offset += used;
      if (got < 0) {
        t->other_frames++; /* ill-formed: nothing after it can be trusted */
        goto done;
      }
      if (got == 0) continue;
      if (until_0r && frame.kind == PROCORD_FRAME_REUSABLE && t->answers == 1) {
        t->complete = 1;
        if (offset < (size_t)n) t->other_frames++;
        goto done;
      }
      record_frame(t, &frame);
    }
  }
done:
  procord_frame_parser_free(parser);
}

/*
 * True when `text` is what print-then-answer printed to one destination for
 * an input of `n`: all of its stdio text and all of its raw text, each in
 * order. stdio's buffer decides where its text falls among the raw writes,
 * so that interleaving is the only freedom.
 */
static int is_printed_text(const text_t *text, size_t n) {
  if (text->length != 2 * n) return 0;
  size_t stdio = 0, raw = 0;
  for (size_t i = 0; i < text->length; i++) {
    if (stdio < n && text->bytes[i] == STDIO_BYTE(stdio)) stdio++;
    else if (raw < n && text->bytes[i] == RAW_BYTE(raw))
      raw++;
    else
      return 0;
  }
  return 1;
}

/* One round of check_printing_task, as the checks need it. */
typedef struct {
  int complete, answers, answer_is_right, printed_after_answer, other_frames;
  size_t out, err;
  int out_is_right, err_is_right;
  int exited, status; /* of the worker, once it is reaped */
} round_t;

/* Sums up a transcript of print-then-answer for `n`, and frees its texts; true if all is right. */
static int sum_up(transcript_t *t, size_t n, int with_stderr, round_t *r) {
  char answer[32];
  snprintf(answer, sizeof answer, "printed %zu", n);
  r->complete = t->complete;
  r->answers = t->answers;
  r->answer_is_right =
      t->answer_length == strlen(answer) && memcmp(t->answer, answer, t->answer_length) == 0;
  r->printed_after_answer = t->printed_after_answer;
  r->other_frames = t->other_frames;
  r->out = t->printed[0].length;
  r->err = t->printed[1].length;
  r->out_is_right = is_printed_text(&t->printed[0], n);
  r->err_is_right = with_stderr ? is_printed_text(&t->printed[1], n) : r->err == 0;
  free(t->printed[0].bytes);
  free(t->printed[1].bytes);
  return r->complete && r->answers == 1 && r->answer_is_right && !r->printed_after_answer &&
         !r->other_frames && r->out_is_right && r->err_is_right;
}

/* Sends print-then-answer for `n` (in socket mode, the one that prints to stderr too). */
static void send_printing_task(int fd, int socket_mode, size_t n) {
  const char *name = socket_mode ? "print-to-both-then-answer" : "print-then-answer";
  char input[24], request[128];
  int input_length = snprintf(input, sizeof input, "%zu", n);
  size_t length = procord_frame_encode_header('T', strlen(name), (unsigned char *)request);
  memcpy(request + length, name, strlen(name));
  length += strlen(name);
  length +=
      procord_frame_encode_header('V', (size_t)input_length, (unsigned char *)request + length);
  memcpy(request + length, input, (size_t)input_length);
  length += (size_t)input_length;
  write_all(fd, request, length);
}

/*
 * `rounds` times, a new worker in `channel` mode runs print-then-answer for
 * `n` bytes (in socket mode to stdout and stderr): every byte printed comes
 * back in `P` frames to the right destination, all before the `V`, which is
 * exactly the answer; nothing else is sent, and the worker exits with 0.
 */
static void check_printing_task(procord_protocol_channel_t channel, size_t n, int rounds) {
  BEGIN();
  int socket_mode = channel == PROCORD_CHANNEL_SOCKET;
  round_t r = {0};
  for (int round = 0; round < rounds; round++) {
    procord_child_t child;
    CHECK_EQ_INT(spawn_self_capturing_worker(&child, channel), 0);
    send_printing_task(child.write_fd, socket_mode, n);
    if (!socket_mode) close(child.write_fd); /* all of it: a stdio-mode worker serves one task */
    transcript_t t;
    read_transcript(child.read_fd, socket_mode, 10000, &t);
    close(child.read_fd); /* a socket-mode worker then ends with the stream */
    r.exited = child_exits_within(&child, 5000, &r.status);
    int right = sum_up(&t, n, socket_mode, &r);
    if (!right || !r.exited || !WIFEXITED(r.status) || WEXITSTATUS(r.status) != 0) break;
  }
  CHECK(r.complete);
  CHECK_EQ_INT(r.answers, 1);
  CHECK(r.answer_is_right);
  CHECK_EQ_INT(r.printed_after_answer, 0);
  CHECK_EQ_INT(r.out, 2 * n);
  CHECK(r.out_is_right);
  CHECK_EQ_INT(r.err, socket_mode ? 2 * n : 0); /* stdio mode leaves stderr alone */
  CHECK(r.err_is_right);
  CHECK_EQ_INT(r.other_frames, 0);
  CHECK_EQ_INT(r.exited, 1);
  CHECK(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0);
  CHECK_NOTHING_LEFT();
}

/* Over three pipe buffers: the forwarding thread sends most of it, the drain what is left. */
static void
task_that_prints_just_before_answering_sends_its_p_frames_before_its_v_in_stdio_mode(void) {
  check_printing_task(PROCORD_CHANNEL_STDIO, 200000, 1);
}

static void
task_that_prints_just_before_answering_sends_its_p_frames_before_its_v_in_socket_mode(void) {
  check_printing_task(PROCORD_CHANNEL_SOCKET, 200000, 1);
}

/*
 * All of it is still in stdio's buffer or the pipe when the task returns.
 * Whether the drain or the forwarding thread takes it is a race that a test
 * cannot decide (either is right). A new worker's drain mostly wins (a
 * worker that has run tasks already much less often), so a few new workers
 * make sure some of the text is the drain's to send.
 */
static void
task_that_prints_a_few_bytes_just_before_answering_sends_them_before_its_v_in_stdio_mode(void) {
  check_printing_task(PROCORD_CHANNEL_STDIO, 5, 10);
}

static void
task_that_prints_a_few_bytes_just_before_answering_sends_them_before_its_v_in_socket_mode(void) {
  check_printing_task(PROCORD_CHANNEL_SOCKET, 5, 10);
}

/* ---- procord_worker_run ---- */

typedef struct {
  procord_worker_command_t command;
  int result;
} run_t;

static void *run_worker(void *argument) {
  run_t *r = argument;
  r->result = procord_worker_run(&r->command, tasks, TASK_COUNT);
  return NULL;
}

static void worker_run_on_a_socket_is_reusable_and_closes_it(void) {
  int pair[2];
  CHECK_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  run_t r = {0};
  r.command.mode = PROCORD_MODE_WORKER;
  r.command.socket_fd = pair[1];
  r.command.handoff_fd = -1;
  pthread_t thread;
  CHECK_EQ_INT(pthread_create(&thread, NULL, run_worker, &r), 0);
  write_all(pair[0], "6Tdouble1V46Tdouble1V5", 22);
  shutdown(pair[0], SHUT_WR);
  char answer[32];
  size_t length = read_to_end(pair[0], answer, sizeof answer);
  pthread_join(thread, NULL);
  close(pair[0]);
  CHECK_EQ_INT(r.result, 0);
  CHECK_BYTES(answer, length, "1V80R2V100R");
  CHECK(fcntl(pair[1], F_GETFD) < 0); /* closed by procord_worker_run */
}

/* Writes `text` to a new temporary file and returns its path (static buffer of the caller). */
static int make_temporary(char *path, const char *text) {
  int fd = mkstemp(path);
  if (fd < 0) return -1;
  write_all(fd, text, strlen(text));
  close(fd);
  return 0;
}

static void worker_run_serves_from_an_input_file_to_an_output_file(void) {
  char input[] = "/tmp/procord-test-input-XXXXXX";
  char output[] = "/tmp/procord-test-output-XXXXXX";
  CHECK_EQ_INT(make_temporary(input, "6Tdouble3V123"), 0);
  CHECK_EQ_INT(make_temporary(output, "old contents to be replaced"), 0);
  fflush(stdout);
  /* In a child: the file mode points its stdin at /dev/null and stdout at stderr. */
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    procord_worker_command_t command = {.mode = PROCORD_MODE_WORKER,
                                        .socket_fd = -1,
                                        .handoff_fd = -1,
                                        .input_file = input,
                                        .output_file = output};
    _exit(procord_worker_run(&command, tasks, TASK_COUNT) == 0 ? 0 : 1);
  }
  int status = 0;
  CHECK_EQ_INT(waitpid(pid, &status, 0), pid);
  char answer[64];
  int fd = open(output, O_RDONLY | O_CLOEXEC);
  size_t length = fd >= 0 ? read_to_end(fd, answer, sizeof answer) : 0;
  if (fd >= 0) close(fd);
  unlink(input);
  unlink(output);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK_BYTES(answer, length, "3V246");
}

static void worker_run_with_a_missing_input_file_is_enoent(void) {
  char output[] = "/tmp/procord-test-output-XXXXXX";
  CHECK_EQ_INT(make_temporary(output, ""), 0);
  procord_worker_command_t command = {.mode = PROCORD_MODE_WORKER,
                                      .socket_fd = -1,
                                      .handoff_fd = -1,
                                      .input_file = "/nonexistent/procord/input",
                                      .output_file = output};
  int result = procord_worker_run(&command, tasks, TASK_COUNT);
  unlink(output);
  CHECK_EQ_INT(result, -ENOENT);
}

/* ---- procord_worker_parse_arguments ---- */

#define PARSE_ARGS(command, error, ...)                                                            \
  procord_worker_parse_arguments(                                                                  \
      (int)(sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *)),                         \
      (const char *const[]){__VA_ARGS__}, (command), (error), sizeof(error))

static void arguments_without_procord_options_mean_no_worker(void) {
  procord_worker_command_t command;
  char error[128] = "";
  CHECK_EQ_INT(PARSE_ARGS(&command, error, "prog", "a", "--b"), 0);
  CHECK_EQ_INT(command.mode, PROCORD_MODE_NONE);
  CHECK_EQ_INT(command.socket_fd, -1);
  CHECK(command.input_file == NULL);
  CHECK(command.output_file == NULL);
  CHECK(command.hostname == NULL);
  CHECK_EQ_INT(command.port, -1);
  CHECK_EQ_INT(command.max_message_size, 0);
}

static void argument_procord_worker_sets_worker_mode(void) {
  procord_worker_command_t command;
  char error[128] = "";
  CHECK_EQ_INT(PARSE_ARGS(&command, error, "prog", "--procord-worker"), 0);
  CHECK_EQ_INT(command.mode, PROCORD_MODE_WORKER);
  CHECK_EQ_INT(command.socket_fd, -1);
  CHECK(command.input_file == NULL);
}

static void argument_zero_is_skipped(void) {
  procord_worker_command_t command;
  char error[128] = "";
  CHECK_EQ_INT(PARSE_ARGS(&command, error, "--procord-worker"), 0);
  CHECK_EQ_INT(command.mode, PROCORD_MODE_NONE);
}

static void socket_fd_takes_the_next_argument(void) {
  procord_worker_command_t command;
  char error[128] = "";
  CHECK_EQ_INT(PARSE_ARGS(&command, error, "prog", "--procord-worker", "--procord-socket-fd", "3"),
               0);
  CHECK_EQ_INT(command.mode, PROCORD_MODE_WORKER);
  CHECK_EQ_INT(command.socket_fd, 3);
}

static void socket_fd_takes_a_value_after_equals(void) {
  procord_worker_command_t command;
  char error[128] = "";
  CHECK_EQ_INT(PARSE_ARGS(&command, error, "prog", "--procord-socket-fd=3", "--procord-worker"), 0);
  CHECK_EQ_INT(command.socket_fd, 3);
}

static void socket_fd_that_is_negative_is_invalid(void) {
  procord_worker_command_t command;
  char error[128] = "";
  CHECK_EQ_INT(PARSE_ARGS(&command, error, "prog", "--procord-worker", "--procord-socket-fd=-1"),
               PROCORD_EINVAL);
  CHECK(strstr(error, "--procord-socket-fd") != NULL);
}

/* 0 means "none" in a zero-initialized command: as an argument it would
   quietly make a stdio worker of a server's. */
static void handoff_fd_0_is_invalid(void) {
  procord_worker_command_t command;
  char error[128] = "";
  CHECK_EQ_INT(PARSE_ARGS(&command, error, "prog", "--procord-worker", "--procord-handoff-fd", "0"),
               PROCORD_EINVAL);
  CHECK(strstr(error, "--procord-handoff-fd") != NULL);
}

static void input_file_points_into_argv(void) {
  procord_worker_command_t command;
  char error[128] = "";
  const char *argv[] = {"prog", "--procord-worker", "--procord-input-file", "X",
                        "--procord-output-file=Y"};
  CHECK_EQ_INT(procord_worker_parse_arguments(5, argv, &command, error, sizeof error), 0);
  CHECK(command.input_file == argv[3]);
  CHECK(command.output_file != NULL);
  CHECK(strcmp(command.output_file, "Y") == 0);
}

static void input_file_without_procord_worker_is_invalid(void) {
  procord_worker_command_t command;
  char error[256] = "";
  CHECK_EQ_INT(PARSE_ARGS(&command, error, "prog", "--procord-input-file", "X"), PROCORD_EINVAL);
  CHECK(strstr(error, "--procord-worker") != NULL);
}

static void socket_fd_without_procord_worker_is_invalid(void) {
  procord_worker_command_t command;
  char error[256] = "";
  CHECK_EQ_INT(PARSE_ARGS(&command, error, "prog", "--procord-socket-fd", "3"), PROCORD_EINVAL);
  CHECK(strstr(error, "--procord-worker") != NULL);
}

static void unknown_procord_option_is_invalid_with_a_message(void) {
  procord_worker_command_t command;
  char error[128] = "";
  CHECK_EQ_INT(PARSE_ARGS(&command, error, "prog", "--procord-worker", "--procord-nope=1"),
               PROCORD_EINVAL);
  CHECK(strstr(error, "--procord-nope") != NULL);
  CHECK(strstr(error, "unknown") != NULL);
}

static void unknown_procord_option_last_is_invalid(void) {
  procord_worker_command_t command;
  char error[128] = "";
  CHECK_EQ_INT(PARSE_ARGS(&command, error, "prog", "--procord-nope"), PROCORD_EINVAL);
  CHECK(strstr(error, "--procord-nope") != NULL);
}

static void unknown_procord_option_last_is_reported_as_unknown(void) {
  procord_worker_command_t command;
  char error[128] = "";
  CHECK_EQ_INT(PARSE_ARGS(&command, error, "prog", "--procord-nope"), PROCORD_EINVAL);
  CHECK(strstr(error, "unknown") != NULL);
}

static void port_70000_is_invalid(void) {
  procord_worker_command_t command;
  char error[128] = "";
  CHECK_EQ_INT(PARSE_ARGS(&command, error, "prog", "--procord-server", "--procord-port", "70000"),
               PROCORD_EINVAL);
  CHECK(strstr(error, "--procord-port") != NULL);
}

static void port_that_is_not_a_number_is_invalid(void) {
  procord_worker_command_t command;
  char error[128] = "";
  CHECK_EQ_INT(PARSE_ARGS(&command, error, "prog", "--procord-server", "--procord-port=80x"),
               PROCORD_EINVAL);
  CHECK_EQ_INT(PARSE_ARGS(&command, error, "prog", "--procord-server", "--procord-port="),
               PROCORD_EINVAL);
}

static void server_options_are_read(void) {
  procord_worker_command_t command;
  char error[128] = "";
  CHECK_EQ_INT(PARSE_ARGS(&command, error, "prog", "--procord-server", "--procord-hostname",
                          "example.org", "--procord-port=65535", "--procord-max-simultaneous-tasks",
                          "4", "--procord-reuse-address", "--procord-dont-fork",
                          "--procord-max-message-size=1000"),
               0);
  CHECK_EQ_INT(command.mode, PROCORD_MODE_SERVER);
  CHECK(command.hostname && strcmp(command.hostname, "example.org") == 0);
  CHECK_EQ_INT(command.port, 65535);
  CHECK_EQ_INT(command.max_simultaneous_tasks, 4);
  CHECK_EQ_INT(command.reuse_address, 1);
  CHECK_EQ_INT(command.dont_fork, 1);
  CHECK_EQ_INT(command.max_message_size, 1000);
}

static void server_bounds_on_clients_are_read(void) {
  procord_worker_command_t command;
  char error[128] = "";
  CHECK_EQ_INT(PARSE_ARGS(&command, error, "prog", "--procord-server"), 0);
  CHECK_EQ_INT(command.max_connections, 0);
  CHECK_EQ_INT(command.idle_timeout_ms, -1); /* not given: the server's default */
  CHECK_EQ_INT(command.task_timeout_ms, -1);
  CHECK_EQ_INT(command.answer_timeout_ms, -1);
  CHECK_EQ_INT(PARSE_ARGS(&command, error, "prog", "--procord-server", "--procord-max-connections",
                          "300", "--procord-max-connections-per-peer=20",
                          "--procord-max-tasks-per-peer", "3", "--procord-idle-timeout", "0",
                          "--procord-task-timeout=2500", "--procord-answer-timeout", "4000",
                          "--procord-min-receive-rate", "1000", "--procord-min-send-rate=2000",
                          "--procord-max-buffered-task-bytes", "1048576",
                          "--procord-max-buffered-answer-bytes=2097152"),
               0);
  CHECK_EQ_INT(command.max_connections, 300);
  CHECK_EQ_INT(command.max_connections_per_peer, 20);
  CHECK_EQ_INT(command.max_tasks_per_peer, 3);
  CHECK_EQ_INT(command.idle_timeout_ms, 0); /* given as 0: no limit */
  CHECK_EQ_INT(command.task_timeout_ms, 2500);
  CHECK_EQ_INT(command.answer_timeout_ms, 4000);
  CHECK_EQ_INT(command.min_receive_rate, 1000);
  CHECK_EQ_INT(command.min_send_rate, 2000);
  CHECK_EQ_INT(command.max_buffered_task_bytes, 1048576);
  CHECK_EQ_INT(command.max_buffered_answer_bytes, 2097152);
  CHECK_EQ_INT(
      PARSE_ARGS(&command, error, "prog", "--procord-server", "--procord-max-connections", "0"),
      PROCORD_EINVAL);
  CHECK(strstr(error, "--procord-max-connections") != NULL);
  CHECK_EQ_INT(
      PARSE_ARGS(&command, error, "prog", "--procord-server", "--procord-min-send-rate", "fast"),
      PROCORD_EINVAL);
  CHECK(strstr(error, "--procord-min-send-rate") != NULL);
}

static void flag_with_a_value_is_invalid(void) {
  procord_worker_command_t command;
  char error[128] = "";
  CHECK_EQ_INT(PARSE_ARGS(&command, error, "prog", "--procord-worker=yes"), PROCORD_EINVAL);
  CHECK(strstr(error, "--procord-worker") != NULL);
}

static void option_missing_its_value_is_invalid(void) {
  procord_worker_command_t command;
  char error[128] = "";
  CHECK_EQ_INT(PARSE_ARGS(&command, error, "prog", "--procord-worker", "--procord-socket-fd"),
               PROCORD_EINVAL);
  CHECK(strstr(error, "--procord-socket-fd") != NULL);
}

static void program_arguments_after_the_options_are_left_alone(void) {
  procord_worker_command_t command;
  char error[128] = "";
  CHECK_EQ_INT(PARSE_ARGS(&command, error, "prog", "--procord-worker", "--procord-socket-fd", "3",
                          "--verbose", "file", "--procord-nope", "--procord-port=70000"),
               0);
  CHECK_EQ_INT(command.mode, PROCORD_MODE_WORKER);
  CHECK_EQ_INT(command.socket_fd, 3);
  CHECK_EQ_INT(command.port, -1);
}

static void procord_option_after_a_program_argument_is_not_read(void) {
  procord_worker_command_t command;
  char error[128] = "";
  CHECK_EQ_INT(PARSE_ARGS(&command, error, "prog", "--worker-arg", "--procord-worker"), 0);
  CHECK_EQ_INT(command.mode, PROCORD_MODE_NONE);
  CHECK_EQ_INT(PARSE_ARGS(&command, error, "prog", "--procordx", "--procord-worker"), 0);
  CHECK_EQ_INT(command.mode, PROCORD_MODE_NONE);
}

static void first_argument_is_where_the_programs_own_arguments_begin(void) {
  procord_worker_command_t command;
  char error[128] = "";
  CHECK_EQ_INT(PARSE_ARGS(&command, error, "prog", "--procord-hostname", "h", "--procord-port=7",
                          "10", "20"),
               0);
  CHECK_EQ_INT(command.first_argument, 4);
  CHECK_EQ_INT(PARSE_ARGS(&command, error, "prog", "10"), 0);
  CHECK_EQ_INT(command.first_argument, 1);
  CHECK_EQ_INT(PARSE_ARGS(&command, error, "prog", "--procord-worker"), 0);
  CHECK_EQ_INT(command.first_argument, 2); /* argc: none of its own */
}

static void error_message_is_optional(void) {
  procord_worker_command_t command;
  const char *argv[] = {"prog", "--procord-nope=1"};
  CHECK_EQ_INT(procord_worker_parse_arguments(2, argv, &command, NULL, 0), PROCORD_EINVAL);
}

static void error_message_is_cut_to_the_buffer(void) {
  procord_worker_command_t command;
  char error[9];
  memset(error, 'z', sizeof error);
  const char *argv[] = {"prog", "--procord-nope=1"};
  CHECK_EQ_INT(procord_worker_parse_arguments(2, argv, &command, error, 8), PROCORD_EINVAL);
  CHECK(memchr(error, '\0', 8) != NULL);
  CHECK_EQ_INT(error[8], 'z');
}

int main(int argc, char **argv) {
  procord_worker_command_t command;
  procord_worker_main(argc, argv, tasks, TASK_COUNT, &command);
  ssize_t n = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
  if (n <= 0) {
    fprintf(stderr, "cannot find this program's path\n");
    return 1;
  }
  self_path[n] = 0;

  /* A write to a closed socket must be an error here, not a signal. */
  signal(SIGPIPE, SIG_IGN);

  RUN(task_value_is_answered_with_v);
  RUN(task_unknown_exception_is_answered_with_u);
  RUN(task_exception_is_answered_with_x);
  RUN(lent_answer_is_sent_then_released_not_freed);
  RUN(task_gets_its_context);
  RUN(task_reply_of_no_valid_kind_is_an_unknown_exception);
  RUN(empty_output_is_answered_with_0v);
  RUN(binary_input_reaches_the_task_intact);
  RUN(large_input_and_output_cross_intact);
  RUN(request_written_one_byte_at_a_time_is_served);
  RUN(nonblocking_descriptor_is_served);

  RUN(non_reusable_worker_returns_after_one_task);
  RUN(reusable_worker_sends_0r_and_serves_the_next_task);
  RUN(reusable_worker_serves_tasks_sent_together);
  RUN(reusable_worker_ends_cleanly_when_the_stream_ends_between_tasks);
  RUN(reusable_worker_ends_cleanly_when_main_closes_after_reading_0r);
  RUN(reusable_worker_ends_cleanly_when_main_closes_without_reading_0r);
  RUN(end_of_stream_before_any_task_returns_0);

  RUN(unknown_task_gets_e0);
  RUN(unknown_task_gets_e0_in_reusable_mode_too);
  RUN(twenty_digits_get_e3);
  RUN(twenty_digits_get_e3_without_waiting_for_more);
  RUN(size_above_the_maximum_gets_e3);
  RUN(size_equal_to_the_maximum_is_served);
  RUN(not_a_digit_gets_e2);
  RUN(ill_formed_body_gets_e2);
  RUN(value_before_task_gets_e1);
  RUN(task_after_task_gets_e1);
  RUN(protocol_error_in_a_second_task_gets_its_e_frame);

  RUN(end_of_stream_inside_a_header_is_disconnected);
  RUN(end_of_stream_inside_a_task_name_is_disconnected);
  RUN(end_of_stream_between_task_and_value_is_disconnected);
  RUN(end_of_stream_inside_a_value_is_disconnected);
  RUN(end_of_stream_inside_a_large_value_is_disconnected);

  RUN(worker_answering_on_a_pipe_without_reader_is_disconnected_without_sigpipe);
  RUN(worker_answering_on_a_closed_socket_is_disconnected_without_sigpipe);

  RUN(socket_worker_whose_main_program_closes_during_a_task_is_killed);
  RUN(socket_worker_whose_main_program_closes_between_tasks_exits_with_0);

  RUN(task_that_prints_just_before_answering_sends_its_p_frames_before_its_v_in_stdio_mode);
  RUN(task_that_prints_just_before_answering_sends_its_p_frames_before_its_v_in_socket_mode);
  RUN(task_that_prints_a_few_bytes_just_before_answering_sends_them_before_its_v_in_stdio_mode);
  RUN(task_that_prints_a_few_bytes_just_before_answering_sends_them_before_its_v_in_socket_mode);

  RUN(worker_run_on_a_socket_is_reusable_and_closes_it);
  RUN(worker_run_serves_from_an_input_file_to_an_output_file);
  RUN(worker_run_with_a_missing_input_file_is_enoent);

  RUN(arguments_without_procord_options_mean_no_worker);
  RUN(server_bounds_on_clients_are_read);
  RUN(argument_procord_worker_sets_worker_mode);
  RUN(argument_zero_is_skipped);
  RUN(socket_fd_takes_the_next_argument);
  RUN(socket_fd_takes_a_value_after_equals);
  RUN(socket_fd_that_is_negative_is_invalid);
  RUN(handoff_fd_0_is_invalid);
  RUN(input_file_points_into_argv);
  RUN(input_file_without_procord_worker_is_invalid);
  RUN(socket_fd_without_procord_worker_is_invalid);
  RUN(unknown_procord_option_is_invalid_with_a_message);
  RUN(unknown_procord_option_last_is_invalid);
  RUN(unknown_procord_option_last_is_reported_as_unknown);
  RUN(port_70000_is_invalid);
  RUN(port_that_is_not_a_number_is_invalid);
  RUN(server_options_are_read);
  RUN(flag_with_a_value_is_invalid);
  RUN(option_missing_its_value_is_invalid);
  RUN(program_arguments_after_the_options_are_left_alone);
  RUN(procord_option_after_a_program_argument_is_not_read);
  RUN(first_argument_is_where_the_programs_own_arguments_begin);
  RUN(error_message_is_optional);
  RUN(error_message_is_cut_to_the_buffer);
  return CHECK_SUMMARY();
}
