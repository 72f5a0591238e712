#define _GNU_SOURCE
/*
 * Worker servers (procord/server.h, docs/SERVER.md) as a C program uses
 * them, and as their clients see them on the wire: a task slot is for a
 * task, not a connection; time limits over a whole task and a whole
 * answer, with minimum rates; round robin over connections; bounds on
 * connections (evicting the one idle longest, or refusing with a `U`
 * frame), per client address, and on the bytes of tasks being read; `E0`
 * from the server itself; `0R` after an answer; draining on SIGTERM; the
 * figures of procord_server_stats_t.
 *
 * Most tests start this very program as a worker server (server_fixture.h:
 * --procord-server, with short limits given as --procord-* options), its
 * workers being this program again; its port comes from its sd_notify
 * message (READY=1, STATUS=listening on 127.0.0.1:PORT) on an abstract
 * datagram socket of ours, its log (stderr) through a pipe. The clients are plain sockets of
 * the test, writing frames by hand and reading them with a small parser of
 * their own, so that the test says exactly what went on the wire and when.
 * Two tests (figures, task bytes) run a server on a thread of the test with
 * options only the C API has (stats, max_buffered_task_bytes).
 *
 * Every test ends by checking that no child process is left and that the
 * number of open descriptors is back to what it was.
 */
#include "check.h"
#include "fixtures.h"
#include "server_fixture.h"

#include "procord/error.h"
#include "procord/frame.h"
#include "procord/server.h"
#include "procord/spawn.h"
#include "procord/worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- Tasks the server's workers serve ---- */

static const procord_worker_task_t tasks[] = {
    {"echo", fixture_task_echo, NULL},
    {"sleep", fixture_task_sleep, NULL},
    {"announce-then-sleep", fixture_task_announce_then_sleep, NULL},
};
#define TASK_COUNT (sizeof tasks / sizeof tasks[0])

/* ---- Clients: plain sockets, frames written by hand ---- */

typedef struct {
  int fd;
  unsigned char *buffer; /* bytes received and not yet taken as frames */
  size_t used, size, taken;
  int ended;       /* the end of the stream (or a reset) was read */
  int end_error;   /* 0 for the end of the stream, else the errno (ECONNRESET) */
  size_t received; /* bytes, in all */
} client_t;

typedef struct {
  unsigned char kind;
  const unsigned char *body; /* in the client's buffer, until its next frame */
  size_t length;
} frame_t;

/* A client not connected: client_close does nothing to it. */
/* clang-format off */
#define CLIENT_NONE {.fd = -1}
/* clang-format on */

/* Connects to the server's port from `from` (a local address, NULL:
   127.0.0.1), with a receive buffer of `receive_buffer` bytes (0: the
   system's). 0 or -errno. */
static int client_connect_with(client_t *c, int port, const char *from, int receive_buffer) {
  memset(c, 0, sizeof *c);
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c->fd < 0) return -errno;
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (receive_buffer > 0)
    setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
  if (from) {
    struct sockaddr_in local = {.sin_family = AF_INET};
    if (inet_pton(AF_INET, from, &local.sin_addr) != 1 ||
        bind(c->fd, (struct sockaddr *)&local, sizeof local) != 0) {
      int error = -errno;
      close(c->fd);
      c->fd = -1;
      return error ? error : -EINVAL;
    }
  }
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(c->fd, (struct sockaddr *)&address, sizeof address) != 0) {
    int error = -errno;
    close(c->fd);
    c->fd = -1;
    return error;
  }
  return 0;
}

static int client_connect(client_t *c) { return client_connect_with(c, server.port, NULL, 0); }

static void client_close(client_t *c) {
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  free(c->buffer);
  c->buffer = NULL;
  c->used = c->size = c->taken = 0;
}

/* Writes all of `bytes`, waiting for room up to `timeout_ms`; 0, or -errno
   (-ETIMEDOUT when the server did not take them in time). */
static int client_send_within(client_t *c, const void *bytes, size_t length, int timeout_ms) {
  const unsigned char *at = bytes;
  long long end = now_ms() + timeout_ms;
  while (length > 0) {
    ssize_t n = send(c->fd, at, length, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      at += n;
      length -= (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
    long long left = end - now_ms();
    if (left <= 0) return -ETIMEDOUT;
    struct pollfd p = {.fd = c->fd, .events = POLLOUT};
    poll(&p, 1, (int)left);
  }
  return 0;
}

static int client_send(client_t *c, const char *text) {
  return client_send_within(c, text, strlen(text), 5000);
}

/* Writes a task's frames: `T` with its name, `V` with its input. */
static int client_send_task(client_t *c, const char *name, const void *input, size_t length) {
  char header[64];
  snprintf(header, sizeof header, "%zuT%s%zuV", strlen(name), name, length);
  int error = client_send(c, header);
  return error ? error : client_send_within(c, input, length, 5000);
}

static int client_send_text_task(client_t *c, const char *name, const char *input) {
  return client_send_task(c, name, input, strlen(input));
}

/* A whole frame at the start of the buffer: 1 (in `frame`), 0 not yet, -1 ill-formed. */
static int parse_frame(client_t *c, frame_t *frame) {
  size_t size = 0, at = 0;
  const unsigned char *b = c->buffer + c->taken;
  size_t have = c->used - c->taken;
  while (at < have && b[at] >= '0' && b[at] <= '9') {
    if (at >= 19) return -1;
    size = size * 10 + (size_t)(b[at] - '0');
    at++;
  }
  if (at == have) return 0;
  if (at == 0) return -1;
  if (have - at - 1 < size) return 0;
  frame->kind = b[at];
  frame->body = b + at + 1;
  frame->length = size;
  c->taken += at + 1 + size;
  return 1;
}

/* Reads what is there now, without waiting: 1 if bytes came, 0 if none, -1 at the end. */
static int client_pull(client_t *c) {
  if (c->ended) return -1;
  if (c->taken > 0) { /* what earlier frames used goes */
    memmove(c->buffer, c->buffer + c->taken, c->used - c->taken);
    c->used -= c->taken;
    c->taken = 0;
  }
  if (c->size - c->used < 65536) {
    size_t size = c->size ? c->size * 2 : 131072;
    unsigned char *bigger = realloc(c->buffer, size);
    if (!bigger) return -1;
    c->buffer = bigger;
    c->size = size;
  }
  ssize_t n;
  while ((n = recv(c->fd, c->buffer + c->used, c->size - c->used, MSG_DONTWAIT)) < 0 &&
         errno == EINTR) {
  }
  if (n > 0) {
    c->used += (size_t)n;
    c->received += (size_t)n;
    return 1;
  }
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
  c->ended = 1;
  c->end_error = n < 0 ? errno : 0;
  return -1;
}

/* The next frame, waiting up to `timeout_ms` (0: only what is there now):
   1 (in `frame`), 0 at the end of the stream (or a reset), -1 none in time,
   -2 ill-formed. The server's log is read meanwhile. */
static int client_frame(client_t *c, int timeout_ms, frame_t *frame) {
  long long end = now_ms() + timeout_ms;
  for (;;) {
    int parsed = parse_frame(c, frame);
    if (parsed) return parsed > 0 ? 1 : -2;
    int pulled = client_pull(c);
    if (pulled > 0) continue;
    if (pulled < 0) return 0;
    long long left = end - now_ms();
    if (left <= 0) return -1;
    struct pollfd p[2] = {{.fd = c->fd, .events = POLLIN}, {.fd = server.log_fd, .events = POLLIN}};
    poll(p, server.log_fd >= 0 ? 2 : 1, (int)left);
    if (p[1].revents) read_log(0);
  }
}

/* The task's answer, skipping prints: as client_frame. */
static int client_answer(client_t *c, int timeout_ms, frame_t *frame) {
  long long end = now_ms() + timeout_ms;
  for (;;) {
    long long left = end - now_ms();
    int r = client_frame(c, left > 0 ? (int)left : 0, frame);
    if (r != 1 || (frame->kind != PROCORD_FRAME_PRINT && frame->kind != PROCORD_FRAME_FLUSH))
      return r;
  }
}

/* Whether the connection ends within `timeout_ms` with nothing more read: 1
   at its end (or a reset), 0 if a frame came, -1 if it is still open. */
static int client_ends_within(client_t *c, int timeout_ms) {
  frame_t frame = {0};
  int r = client_frame(c, timeout_ms, &frame);
  return r == 0 ? 1 : r == -1 ? -1 : 0;
}

/* The frame is `kind` with `text` as its body. */
static int frame_is(int result, const frame_t *frame, unsigned char kind, const char *text) {
  return result == 1 && frame->kind == kind && frame->length == strlen(text) &&
         memcmp(frame->body, text, frame->length) == 0;
}

/* Says what a frame is, for a failed check. */
static void show_frame(const char *what, int result, const frame_t *frame) {
  if (result == 1)
    fprintf(stderr, "    %s: frame %c of %zu bytes: \"%.*s\"\n", what, frame->kind, frame->length,
            (int)(frame->length < 200 ? frame->length : 200), (const char *)frame->body);
  else
    fprintf(stderr, "    %s: %s\n", what,
            result == 0    ? "the end of the stream"
            : result == -1 ? "nothing in time"
                           : "an ill-formed frame");
}

/* The next frame is `kind` with `text`, within `timeout_ms` (prints skipped); says what came when
 * not. */
#define CHECK_ANSWER(client, timeout_ms, kind, text)                                               \
  do {                                                                                             \
    frame_t check_frame = {0};                                                                     \
    int check_result = client_answer((client), (timeout_ms), &check_frame);                        \
    if (!frame_is(check_result, &check_frame, (kind), (text))) {                                   \
      fprintf(stderr, "    %s:%d: expected frame %c \"%s\"\n", __FILE__, __LINE__, (kind),         \
              (text));                                                                             \
      show_frame("got", check_result, &check_frame);                                               \
      check_current_failed = 1;                                                                    \
      return;                                                                                      \
    }                                                                                              \
  } while (0)

/* An answer `text`, then `0R`. */
#define CHECK_VALUE_THEN_0R(client, timeout_ms, text)                                              \
  do {                                                                                             \
    CHECK_ANSWER((client), (timeout_ms), PROCORD_FRAME_VALUE, (text));                             \
    CHECK_ANSWER((client), 2000, PROCORD_FRAME_REUSABLE, "");                                      \
  } while (0)

/* An echo of `text` on the connection is answered within 5 s (says what came when not). */
static int echoes_on(client_t *c, const char *text) {
  frame_t frame = {0};
  int r = client_send_text_task(c, "echo", text) == 0 ? client_answer(c, 5000, &frame) : -1;
  if (frame_is(r, &frame, PROCORD_FRAME_VALUE, text)) return 1;
  show_frame("instead of the echo", r, &frame);
  return 0;
}

/* An echo of `text` on `c`, and the `0R` after it: the connection is then
   idle between tasks, with nothing left to read. */
static int echoes_then_idles(client_t *c, const char *text) {
  frame_t frame = {0};
  return echoes_on(c, text) &&
         frame_is(client_frame(c, 2000, &frame), &frame, PROCORD_FRAME_REUSABLE, "");
}

/* A one-off: a new connection, an echo of `text` answered within 5 s, closed. */
static int echo_is_served(const char *text) {
  client_t c;
  if (client_connect(&c) != 0) return 0;
  int answered = echoes_on(&c, text);
  client_close(&c);
  return answered;
}

/* `count` bytes of a pattern that shows where each byte belongs. */
static unsigned char *pattern(size_t count) {
  unsigned char *bytes = malloc(count ? count : 1);
  for (size_t i = 0; bytes && i < count; i++) bytes[i] = (unsigned char)(i * 7 + i / 65536);
  return bytes;
}

/* ---- A task slot is for a task ---- */

/* With one slot, connections that only connect, or send half a frame, hold
   no worker: a whole task from another client is answered at once. */
static void idle_and_half_sent_connections_hold_no_task_slot(void) {
  BEGIN();
  const char *const options[] = {"--procord-max-simultaneous-tasks", "1", NULL};
  CHECK_EQ_INT(start_server(options, NULL), 0);
  client_t idle[20], half[5], c = CLIENT_NONE;
  int opened = 0, error = 0;
  for (int i = 0; i < 20 && !error; i++, opened++) error = client_connect(&idle[i]);
  static const char *const halves[] = {"4Tec", "4Techo", "4Techo5", "4Techo5Vhe", "12"};
  int half_opened = 0;
  for (int i = 0; i < 5 && !error; i++, half_opened++)
    if (!(error = client_connect(&half[i]))) error = client_send(&half[i], halves[i]);
  long long start = now_ms();
  if (!error) error = client_connect(&c);
  if (!error) error = client_send_text_task(&c, "echo", "served");
  frame_t frame = {0};
  int r = error ? -1 : client_answer(&c, 5000, &frame);
  long long took = now_ms() - start;
  int answered = frame_is(r, &frame, PROCORD_FRAME_VALUE, "served");
  if (!answered) show_frame("the whole task's answer", r, &frame);
  for (int i = 0; i < opened; i++) client_close(&idle[i]);
  for (int i = 0; i < half_opened; i++) client_close(&half[i]);
  client_close(&c);
  int stopped = stop_server();
  CHECK_EQ_INT(error, 0);
  CHECK(answered);
  if (took >= 1000) fprintf(stderr, "    answered after %lld ms\n", took);
  CHECK(took < 1000);
  CHECK(stopped);
  CHECK_NOTHING_LEFT();
}

/* ---- Time limits ---- */

/* A task that trickles in (a byte every 100 ms) is dropped at the task's
   time limit, however steadily it trickles; the next client is served. */
static void trickled_task_is_dropped_at_the_task_time_limit(void) {
  BEGIN();
  const char *const options[] = {"--procord-task-timeout", "500", NULL};
  CHECK_EQ_INT(start_server(options, NULL), 0);
  client_t c;
  CHECK_EQ_INT(client_connect(&c), 0);
  static const char task[] = "4Techo20Vtwenty bytes of input";
  long long start = now_ms(), ended_at = 0;
  int sent = 0, ended = 0;
  while (!ended && now_ms() - start < 5000) {
    if (sent < (int)sizeof task - 1) {
      ssize_t n = send(c.fd, task + sent, 1, MSG_NOSIGNAL);
      if (n == 1) sent++;
      else
        ended = 1; /* EPIPE, ECONNRESET: dropped */
    }
    if (!ended) ended = client_ends_within(&c, 100) == 1;
    if (ended) ended_at = now_ms();
  }
  long long took = ended_at - start;
  int served = echo_is_served("next");
  client_close(&c);
  int logged = logged_within("its task did not arrive in time", 2000);
  int stopped = stop_server();
  if (!ended || took < 480 || took > 2500)
    fprintf(stderr, "    ended %d after %lld ms, %d bytes sent; the log:\n%.4000s\n", ended, took,
            sent, server.log);
  CHECK(ended);
  CHECK(took >= 480);  /* the limit is 500 ms from the first byte */
  CHECK(took <= 2500); /* and not much more */
  CHECK(sent < (int)sizeof task - 1);
  CHECK(logged);
  CHECK(served);
  CHECK(stopped);
  CHECK_NOTHING_LEFT();
}

/* A big task sent steadily, faster than the minimum rate, arrives whole
   although it takes longer than the task time limit alone. */
static void big_task_sent_steadily_is_not_cut_off_by_the_task_time_limit(void) {
  BEGIN();
  const char *const options[] = {"--procord-task-timeout", "300", "--procord-min-receive-rate",
                                 "1048576", NULL};
  CHECK_EQ_INT(start_server(options, NULL), 0);
  enum { SIZE = 4 << 20, PIECE = 128 << 10, EVERY_MS = 30 };
  unsigned char *input = pattern(SIZE);
  client_t c = CLIENT_NONE;
  int error = input ? client_connect(&c) : -ENOMEM;
  long long start = now_ms();
  char header[64];
  snprintf(header, sizeof header, "4Techo%dV", SIZE);
  if (!error) error = client_send(&c, header);
  /* 32 pieces, one every 30 ms: about 1 s for 4 MiB, when the limit alone is 300 ms. */
  for (size_t at = 0; !error && at < SIZE; at += PIECE) {
    error = client_send_within(&c, input + at, PIECE, 5000);
    usleep(EVERY_MS * 1000);
  }
  long long sent_in = now_ms() - start;
  frame_t frame = {0};
  int r = error ? -1 : client_answer(&c, 10000, &frame);
  int echoed = r == 1 && frame.kind == PROCORD_FRAME_VALUE && frame.length == SIZE &&
               memcmp(frame.body, input, SIZE) == 0;
  if (!echoed) show_frame("the answer", r, &frame);
  int reusable =
      echoed && client_frame(&c, 2000, &frame) == 1 && frame.kind == PROCORD_FRAME_REUSABLE;
  free(input);
  client_close(&c);
  int stopped = stop_server();
  if (error || !echoed)
    fprintf(stderr, "    sent in %lld ms (error %d); the log:\n%.4000s\n", sent_in, error,
            server.log);
  CHECK_EQ_INT(error, 0);
  CHECK(sent_in > 600); /* it did take longer than the limit alone */
  CHECK(echoed);
  CHECK(reusable);
  CHECK(stopped);
  CHECK_NOTHING_LEFT();
}

/* A client that asks for a big answer and never reads it is dropped at the
   answer's time limit; meanwhile its worker, the only one, serves another. */
static void client_not_taking_its_answer_is_dropped_and_its_worker_serves_another(void) {
  BEGIN();
  const char *const options[] = {"--procord-max-simultaneous-tasks",
                                 "1",
                                 "--procord-answer-timeout",
                                 "1000",
                                 "--procord-min-send-rate",
                                 "67108864",
                                 "--procord-log-level",
                                 "debug",
                                 NULL};
  CHECK_EQ_INT(start_server(options, NULL), 0);
  enum { SIZE = 8 << 20 };
  unsigned char *input = pattern(SIZE);
  client_t greedy = CLIENT_NONE, other = CLIENT_NONE;
  /* A small receive buffer: the answer stays in the server, not in our kernel. */
  int error = input ? client_connect_with(&greedy, server.port, NULL, 4096) : -ENOMEM;
  if (!error) error = client_send_task(&greedy, "echo", input, SIZE);
  free(input);
  /* Its answer is queued (the server logs the task as answered). */
  int queued = !error && logged_within(": task echo, value", 10000);
  long long queued_at = now_ms();
  frame_t frame = {0};
  int r = -1;
  if (queued) error = client_connect(&other);
  if (queued && !error) error = client_send_text_task(&other, "echo", "meanwhile");
  if (queued && !error) r = client_answer(&other, 3000, &frame);
  long long answered_after = now_ms() - queued_at;
  int answered = frame_is(r, &frame, PROCORD_FRAME_VALUE, "meanwhile");
  if (!answered) show_frame("the other client's answer", r, &frame);
  read_log_now();
  int dropped_before = strstr(server.log, "did not take its answer in time") != NULL;
  int dropped = logged_within("did not take its answer in time", 5000);
  long long dropped_after = now_ms() - queued_at;
  /* The greedy client, reading at last, finds part of its answer, then the end. */
  int ended = 0;
  long long end = now_ms() + 5000;
  while (!ended && now_ms() < end) {
    int pulled = client_pull(&greedy);
    if (pulled < 0) ended = 1;
    else if (pulled == 0) {
      struct pollfd p = {.fd = greedy.fd, .events = POLLIN};
      poll(&p, 1, 100);
    }
  }
  size_t whole = strlen("8388608V") + SIZE + strlen("0R");
  client_close(&greedy);
  client_close(&other);
  int stopped = stop_server();
  if (!queued || !answered || dropped_before || !dropped)
    fprintf(
        stderr,
        "    queued %d, answered %d after %lld ms, dropped before %d, dropped %d after %lld ms; "
        "the log:\n%.4000s\n",
        queued, answered, answered_after, dropped_before, dropped, dropped_after, server.log);
  CHECK_EQ_INT(error, 0);
  CHECK(queued);
  CHECK(answered);
  CHECK(!dropped_before); /* served while the greedy client still held its answer */
  CHECK(dropped);
  CHECK(dropped_after < 3000);
  CHECK(ended);
  CHECK(greedy.received < whole);
  CHECK(stopped);
  CHECK_NOTHING_LEFT();
}

/* ---- Sharing the workers ---- */

/* With one slot, 50 tasks pipelined on one connection do not all go before
   another connection's one task: each connection has one task at a time,
   and goes behind the others after each. */
static void pipelined_tasks_of_one_connection_take_turns_with_another_connection(void) {
  BEGIN();
  const char *const options[] = {"--procord-max-simultaneous-tasks", "1", NULL};
  CHECK_EQ_INT(start_server(options, NULL), 0);
  enum { TASKS = 50 };
  char pipelined[TASKS * 16] = "";
  for (int i = 0; i < TASKS; i++) strcat(pipelined, "5Tsleep2V20");
  client_t a = CLIENT_NONE, b = CLIENT_NONE;
  int error = client_connect(&a);
  if (!error) error = client_send(&a, pipelined);
  if (!error) error = client_connect(&b);
  if (!error) error = client_send(&b, "5Tsleep2V20");
  /* Reads both until b's answer. */
  int a_answers = 0, b_answered = 0, bad = 0;
  long long end = now_ms() + 10000;
  frame_t frame = {0};
  while (!error && !b_answered && !bad && now_ms() < end) {
    int r;
    while ((r = client_frame(&a, 0, &frame)) == 1) {
      if (frame_is(r, &frame, PROCORD_FRAME_VALUE, "slept")) a_answers++;
      else if (frame.kind != PROCORD_FRAME_REUSABLE)
        bad = 1;
    }
    if (r != -1) bad = 1;
    r = client_frame(&b, 0, &frame);
    if (frame_is(r, &frame, PROCORD_FRAME_VALUE, "slept")) b_answered = 1;
    else if (r != -1)
      bad = 1;
    struct pollfd p[2] = {{.fd = a.fd, .events = POLLIN}, {.fd = b.fd, .events = POLLIN}};
    if (!b_answered && !bad) poll(p, 2, 100);
  }
  int a_answers_before_b = a_answers;
  /* The rest of a's tasks are all answered, each followed by `0R`. */
  int reusable = 0;
  while (!error && !bad && a_answers < TASKS && now_ms() < end) {
    int r = client_frame(&a, (int)(end - now_ms()), &frame);
    if (frame_is(r, &frame, PROCORD_FRAME_VALUE, "slept")) a_answers++;
    else if (r == 1 && frame.kind == PROCORD_FRAME_REUSABLE)
      reusable++;
    else
      bad = 1;
  }
  int last_reusable = client_frame(&a, 2000, &frame) == 1 && frame.kind == PROCORD_FRAME_REUSABLE;
  client_close(&a);
  client_close(&b);
  int stopped = stop_server();
  if (!b_answered || a_answers_before_b > 3)
    fprintf(stderr, "    b answered %d, after %d of a's %d answers\n", b_answered,
            a_answers_before_b, TASKS);
  CHECK_EQ_INT(error, 0);
  CHECK(!bad);
  CHECK(b_answered);
  CHECK(a_answers_before_b <= 3);
  CHECK_EQ_INT(a_answers, TASKS);
  CHECK(last_reusable);
  CHECK(stopped);
  CHECK_NOTHING_LEFT();
}

/* ---- Bounds on connections ---- */

/* At max_connections, a new connection closes the one idle longest. */
static void new_connection_at_max_connections_closes_the_one_idle_longest(void) {
  BEGIN();
  const char *const options[] = {"--procord-max-connections", "4", "--procord-log-level", "info",
                                 NULL};
  CHECK_EQ_INT(start_server(options, NULL), 0);
  /* Four connections idle between tasks, each since its echo was
     answered, one after another: the first is the one idle longest. (A
     connection that has sent nothing is not even accepted yet: the kernel
     holds it until its first bytes, TCP_DEFER_ACCEPT.) */
  client_t held[4], fifth = CLIENT_NONE;
  int opened = 0, error = 0;
  for (; opened < 4 && !error; opened++)
    if (!(error = client_connect(&held[opened])) && !echoes_then_idles(&held[opened], "held"))
      error = -EPROTO;
  /* The fifth's task makes it a connection, which closes the first. */
  if (!error) error = client_connect(&fifth);
  if (!error) error = client_send_text_task(&fifth, "echo", "fifth");
  int oldest_ended = !error && client_ends_within(&held[0], 3000) == 1;
  int others_open = 1;
  for (int i = 1; i < opened && !error; i++) others_open &= client_ends_within(&held[i], 100) == -1;
  frame_t answer = {0};
  int r = error ? -1 : client_answer(&fifth, 5000, &answer);
  int served = frame_is(r, &answer, PROCORD_FRAME_VALUE, "fifth");
  if (!served) show_frame("the fifth got", r, &answer);
  for (int i = 0; i < opened; i++) client_close(&held[i]);
  client_close(&fifth);
  int logged = logged_within("to make way for a new connection (at max_connections, 4)", 3000);
  int stopped = stop_server();
  CHECK_EQ_INT(error, 0);
  CHECK(oldest_ended);
  CHECK(others_open);
  CHECK(served);
  CHECK(logged);
  CHECK(stopped);
  CHECK_NOTHING_LEFT();
}

/* At max_connections with every connection mid-task, a new one is refused
   with a `U` frame that says why, and closed; the others stay. */
static void new_connection_at_max_connections_none_idle_is_refused_with_a_u_frame(void) {
  BEGIN();
  const char *const options[] = {"--procord-max-connections", "4", NULL};
  CHECK_EQ_INT(start_server(options, NULL), 0);
  client_t held[4], fifth = CLIENT_NONE;
  int opened = 0, error = 0;
  for (; opened < 4 && !error; opened++)
    if (!(error = client_connect(&held[opened])))
      error = client_send(&held[opened], "4Techo10Vhalf");
  usleep(300 * 1000); /* the server reads the halves: all four are mid-task */
  /* A byte, so that the kernel hands the fifth over (TCP_DEFER_ACCEPT). */
  if (!error) error = client_connect(&fifth);
  if (!error) error = client_send(&fifth, "4");
  frame_t frame = {0};
  int r = error ? -1 : client_frame(&fifth, 3000, &frame);
  int refused = r == 1 && frame.kind == PROCORD_FRAME_UNKNOWN_EXCEPTION;
  char why[300] = "";
  if (r == 1) snprintf(why, sizeof why, "%.*s", (int)frame.length, (const char *)frame.body);
  if (!refused) show_frame("the fifth got", r, &frame);
  int closed = refused && client_ends_within(&fifth, 3000) == 1;
  int others_open = 1;
  for (int i = 0; i < opened && !error; i++) others_open &= client_ends_within(&held[i], 100) == -1;
  for (int i = 0; i < opened; i++) client_close(&held[i]);
  client_close(&fifth);
  int logged = logged_within("none idle (max_connections)", 3000);
  int stopped = stop_server();
  CHECK_EQ_INT(error, 0);
  CHECK(refused);
  CHECK_CONTAINS(why, "4 connections");
  CHECK_CONTAINS(why, "none idle");
  CHECK(closed);
  CHECK(others_open);
  CHECK(logged);
  CHECK(stopped);
  CHECK_NOTHING_LEFT();
}

/* Beyond max_connections_per_peer, an address's connection is refused with
   a `U` frame naming the limit; another address is not. */
static void connection_beyond_max_connections_per_peer_is_refused_with_a_u_frame(void) {
  BEGIN();
  const char *const options[] = {"--procord-max-connections-per-peer", "2", NULL};
  CHECK_EQ_INT(start_server(options, NULL), 0);
  /* Connections count once the server has them: the kernel hands one over
     with its first bytes (TCP_DEFER_ACCEPT). */
  client_t first = CLIENT_NONE, second = CLIENT_NONE, third = CLIENT_NONE, elsewhere = CLIENT_NONE;
  int error = client_connect(&first);
  if (!error && !echoes_then_idles(&first, "first")) error = -EPROTO;
  if (!error) error = client_connect(&second);
  if (!error && !echoes_then_idles(&second, "second")) error = -EPROTO;
  if (!error) error = client_connect(&third);
  if (!error) error = client_send(&third, "4");
  frame_t frame = {0};
  int r = error ? -1 : client_frame(&third, 3000, &frame);
  char why[300] = "";
  if (r == 1) snprintf(why, sizeof why, "%.*s", (int)frame.length, (const char *)frame.body);
  int refused = r == 1 && frame.kind == PROCORD_FRAME_UNKNOWN_EXCEPTION;
  if (!refused) show_frame("the third got", r, &frame);
  int closed = refused && client_ends_within(&third, 3000) == 1;
  /* Another address of this machine is another peer. */
  int elsewhere_error =
      error ? error : client_connect_with(&elsewhere, server.port, "127.0.0.2", 0);
  int elsewhere_served = !elsewhere_error && echoes_on(&elsewhere, "elsewhere");
  /* The first two are still served. */
  int second_served = !error && echoes_on(&second, "second");
  client_close(&first);
  client_close(&second);
  client_close(&third);
  client_close(&elsewhere);
  int logged = logged_within("(max_connections_per_peer)", 3000);
  int stopped = stop_server();
  CHECK_EQ_INT(error, 0);
  CHECK(refused);
  CHECK_CONTAINS(why, "2 connections");
  CHECK_CONTAINS(why, "limit");
  CHECK(closed);
  CHECK_EQ_INT(elsewhere_error, 0);
  CHECK(elsewhere_served);
  CHECK(second_served);
  CHECK(logged);
  CHECK(stopped);
  CHECK_NOTHING_LEFT();
}

/* With max_tasks_per_peer 1 and slots to spare, two tasks from one address
   run one after the other, while another address's runs beside them. */
static void tasks_of_one_address_beyond_max_tasks_per_peer_wait_their_turn(void) {
  BEGIN();
  const char *const options[] = {"--procord-max-simultaneous-tasks", "4",
                                 "--procord-max-tasks-per-peer", "1", NULL};
  CHECK_EQ_INT(start_server(options, NULL), 0);
  /* Workers warm: a task, then a moment for the second warm worker. */
  int warm = echo_is_served("warm");
  usleep(300 * 1000);
  enum { SLEEP_MS = 400 };
  client_t c[3] = {CLIENT_NONE, CLIENT_NONE, CLIENT_NONE};
  static const char *const from[3] = {"127.0.0.1", "127.0.0.1", "127.0.0.2"};
  int error = 0;
  for (int i = 0; i < 3 && !error; i++) error = client_connect_with(&c[i], server.port, from[i], 0);
  long long start = now_ms(), answered[3] = {0, 0, 0};
  for (int i = 0; i < 3 && !error; i++) error = client_send_text_task(&c[i], "sleep", "400");
  int done = 0, bad = 0;
  while (!error && !bad && done < 3 && now_ms() - start < 10000) {
    for (int i = 0; i < 3; i++) {
      frame_t frame = {0};
      if (answered[i]) continue;
      int r = client_answer(&c[i], 0, &frame);
      if (r == -1) continue;
      if (!frame_is(r, &frame, PROCORD_FRAME_VALUE, "slept")) bad = 1;
      answered[i] = now_ms() - start;
      done++;
    }
    struct pollfd p[3] = {{.fd = c[0].fd, .events = POLLIN},
                          {.fd = c[1].fd, .events = POLLIN},
                          {.fd = c[2].fd, .events = POLLIN}};
    if (done < 3 && !bad) poll(p, 3, 50);
  }
  for (int i = 0; i < 3; i++) client_close(&c[i]);
  int stopped = stop_server();
  long long first = answered[0] < answered[1] ? answered[0] : answered[1];
  long long second = answered[0] < answered[1] ? answered[1] : answered[0];
  fprintf(stderr, "    answered after %lld and %lld ms (127.0.0.1), %lld ms (127.0.0.2)\n", first,
          second, answered[2]);
  CHECK(warm);
  CHECK_EQ_INT(error, 0);
  CHECK(!bad);
  CHECK_EQ_INT(done, 3);
  CHECK(first >= SLEEP_MS && second >= SLEEP_MS && answered[2] >= SLEEP_MS);
  CHECK(second - first >= SLEEP_MS - 100); /* one task later */
  CHECK(answered[2] < second - 200);       /* the other address did not wait */
  CHECK(stopped);
  CHECK_NOTHING_LEFT();
}

/* ---- What the server answers itself ---- */

/* A task of a name the server does not serve is answered `1E0` by the
   server, and the connection closed, without `0R`; the server serves on. */
static void unknown_task_is_answered_e0_by_the_server_which_serves_on(void) {
  BEGIN();
  const char *const options[] = {"--procord-log-level", "info", NULL};
  CHECK_EQ_INT(start_server(options, NULL), 0);
  client_t c;
  CHECK_EQ_INT(client_connect(&c), 0);
  int error = client_send(&c, "7Tunknown1V1");
  frame_t frame = {0};
  int r = error ? -1 : client_frame(&c, 5000, &frame);
  int e0 = frame_is(r, &frame, PROCORD_FRAME_ERROR, "0");
  if (!e0) show_frame("the answer", r, &frame);
  int closed = e0 && client_ends_within(&c, 3000) == 1;
  client_close(&c);
  int served = echo_is_served("after");
  int logged = logged_within("answered E0: no task named unknown", 3000);
  int stopped = stop_server();
  CHECK_EQ_INT(error, 0);
  CHECK(e0);
  CHECK(closed);
  CHECK(served);
  CHECK(logged);
  CHECK(stopped);
  CHECK_NOTHING_LEFT();
}

/* An answer is followed by `0R`, and the same connection serves the next task. */
static void answer_is_followed_by_0r_and_the_connection_serves_another_task(void) {
  BEGIN();
  CHECK_EQ_INT(start_server(NULL, NULL), 0);
  client_t c;
  CHECK_EQ_INT(client_connect(&c), 0);
  int error = client_send_text_task(&c, "echo", "first");
  frame_t frame = {0};
  int r1 = error ? -1 : client_frame(&c, 5000, &frame);
  int first = frame_is(r1, &frame, PROCORD_FRAME_VALUE, "first");
  int r2 = first ? client_frame(&c, 2000, &frame) : -1;
  int reusable = frame_is(r2, &frame, PROCORD_FRAME_REUSABLE, "");
  if (!first || !reusable) show_frame("after the first task", first ? r2 : r1, &frame);
  if (!error && reusable) error = client_send_text_task(&c, "echo", "second");
  int r3 = !error && reusable ? client_frame(&c, 5000, &frame) : -1;
  int second = frame_is(r3, &frame, PROCORD_FRAME_VALUE, "second");
  int r4 = second ? client_frame(&c, 2000, &frame) : -1;
  int reusable_again = frame_is(r4, &frame, PROCORD_FRAME_REUSABLE, "");
  client_close(&c);
  int stopped = stop_server();
  CHECK_EQ_INT(error, 0);
  CHECK(first);
  CHECK(reusable);
  CHECK(second);
  CHECK(reusable_again);
  CHECK(stopped);
  CHECK_NOTHING_LEFT();
}

/* On SIGTERM: idle connections are closed at once, new ones refused, and a
   task in progress is answered without `0R`, then its connection closed;
   the server exits 0. */
static void sigterm_answers_a_running_task_without_0r_and_closes_idle_connections_at_once(void) {
  BEGIN();
  const char *const options[] = {"--procord-log-level", "info", NULL};
  CHECK_EQ_INT(start_server(options, NULL), 0);
  client_t running = CLIENT_NONE, idle = CLIENT_NONE;
  int error = client_connect(&idle);
  frame_t frame = {0};
  /* Idle after a task (and `0R`). */
  if (!error) error = client_send_text_task(&idle, "echo", "before");
  int idle_served =
      !error && frame_is(client_frame(&idle, 5000, &frame), &frame, PROCORD_FRAME_VALUE, "before");
  idle_served = idle_served &&
                frame_is(client_frame(&idle, 2000, &frame), &frame, PROCORD_FRAME_REUSABLE, "");
  if (!error) error = client_connect(&running);
  if (!error) error = client_send_text_task(&running, "announce-then-sleep", "600");
  /* Its task runs once it prints. */
  int r = error ? -1 : client_frame(&running, 5000, &frame);
  int started = r == 1 && frame.kind == PROCORD_FRAME_PRINT;
  if (!started) show_frame("the running task's first frame", r, &frame);
  long long stop_at = now_ms();
  if (started) procord_child_kill(&server.child, SIGTERM);
  int idle_closed = started && client_ends_within(&idle, 2000) == 1;
  long long idle_closed_after = now_ms() - stop_at;
  int refused = 0;
  if (started) {
    client_t late;
    int late_error = client_connect(&late);
    refused = late_error == -ECONNREFUSED;
    if (!late_error) client_close(&late);
  }
  int answered = 0, closed = 0;
  if (started) {
    r = client_answer(&running, 5000, &frame);
    answered = frame_is(r, &frame, PROCORD_FRAME_VALUE, "slept");
    if (!answered) show_frame("the running task's answer", r, &frame);
    r = answered ? client_frame(&running, 3000, &frame) : -1;
    closed = r == 0;
    if (answered && !closed) show_frame("after the answer, instead of the end", r, &frame);
  }
  long long answered_after = now_ms() - stop_at;
  /* It exits by itself once the task is answered. */
  int status = -1;
  int exited = started && server_exits_within(3000, &status);
  int clean = exited && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  if (exited) {
    close(server.child.read_fd);
    close(server.child.write_fd);
    server.running = 0;
  }
  client_close(&running);
  client_close(&idle);
  stop_server(); /* what is left of ours: its log, its notify socket */
  if (clean && strstr(server.log, "Sanitizer")) {
    fprintf(stderr, "    the server's log has a sanitizer report:\n%.4000s\n", server.log);
    clean = 0;
  }
  if (!idle_closed || idle_closed_after > 300 || !clean)
    fprintf(stderr,
            "    idle closed %d after %lld ms, answered after %lld ms, exit status %d; the log:\n"
            "%.4000s\n",
            idle_closed, idle_closed_after, answered_after, status, server.log);
  CHECK_EQ_INT(error, 0);
  CHECK(idle_served);
  CHECK(started);
  CHECK(idle_closed);
  CHECK(idle_closed_after < 300); /* at once, not after the running task */
  CHECK(refused);
  CHECK(answered);
  CHECK(closed); /* no `0R` */
  CHECK(clean);
  CHECK_NOTHING_LEFT();
}

/* ---- A server on a thread of the test, with options only the C API has ---- */

/* The server's figures, read as another thread must. */
static procord_server_stats_t figures(thread_server_t *s) {
  procord_server_stats_t copy;
  procord_server_stats_read(&s->stats, &copy);
  return copy;
}

static int answered_and_connected(const procord_server_stats_t *f) {
  return f->tasks_answered == 1 && f->connections_now == 1;
}

static int no_connection(const procord_server_stats_t *f) { return f->connections_now == 0; }

/* The figures once `settled` says so, or as they are after 5 s. */
static procord_server_stats_t figure_settled(thread_server_t *s,
                                             int (*settled)(const procord_server_stats_t *)) {
  long long end = now_ms() + 5000;
  procord_server_stats_t now = figures(s);
  while (!settled(&now) && now_ms() < end) {
    usleep(5 * 1000);
    now = figures(s);
  }
  return now;
}

/* After a task answered, an unknown task and a protocol error, the figures
   say so, and connections_now comes back to 0 once the clients are gone. */
static void figures_count_answers_unknown_tasks_protocol_errors_and_connections(void) {
  BEGIN();
  thread_server_t s;
  thread_server_prepare(&s, tasks, TASK_COUNT);
  s.options.stats = &s.stats;
  int port = thread_server_start(&s);
  CHECK(port > 0);
  server.port = port;
  client_t answered = CLIENT_NONE, unknown = CLIENT_NONE, wrong = CLIENT_NONE;
  frame_t frame = {0};
  int error = client_connect(&answered);
  if (!error) error = client_send_text_task(&answered, "echo", "counted");
  int r1 = error ? -1 : client_frame(&answered, 5000, &frame);
  int value = frame_is(r1, &frame, PROCORD_FRAME_VALUE, "counted");
  /* The answered client is still connected (the figure follows the answer's
     frames by a moment). */
  procord_server_stats_t during = figure_settled(&s, &answered_and_connected);
  if (!error) error = client_connect(&unknown);
  if (!error) error = client_send(&unknown, "7Tunknown1V1");
  int r2 = error ? -1 : client_frame(&unknown, 5000, &frame);
  int e0 = frame_is(r2, &frame, PROCORD_FRAME_ERROR, "0");
  if (!error) error = client_connect(&wrong);
  if (!error) error = client_send(&wrong, "1V1"); /* a value where a task's name belongs */
  int r3 = error ? -1 : client_frame(&wrong, 5000, &frame);
  int e1 = frame_is(r3, &frame, PROCORD_FRAME_ERROR, "1");
  client_close(&answered);
  client_close(&unknown);
  client_close(&wrong);
  /* The server sees them go. */
  procord_server_stats_t after = figure_settled(&s, &no_connection);
  int stopped = thread_server_stop(&s, port);
  server.port = 0;
  if (!value || !e0 || !e1)
    fprintf(stderr, "    value %d, E0 %d, E1 %d; the log:\n%s", value, e0, e1, s.log);
  CHECK_EQ_INT(error, 0);
  CHECK(value);
  CHECK(e0);
  CHECK(e1);
  CHECK_EQ_INT(during.connections_now, 1);
  CHECK_EQ_INT(during.tasks_answered, 1);
  CHECK_EQ_INT(after.tasks_answered, 1);
  CHECK_EQ_INT(after.unknown_tasks, 1);
  CHECK_EQ_INT(after.protocol_errors, 1);
  CHECK_EQ_INT(after.connections_accepted, 3);
  CHECK_EQ_INT(after.connections_now, 0);
  CHECK_EQ_INT(after.tasks_running_now, 0);
  CHECK_EQ_INT(after.tasks_waiting_now, 0);
  CHECK_EQ_INT(after.task_bytes_buffered_now, 0);
  CHECK(stopped);
  CHECK_NOTHING_LEFT();
}

/* A client that sends a big echo in pieces, on a thread, then reads its answer. */
typedef struct {
  int port;
  size_t size, piece;
  int every_ms;
  pthread_t thread;
  int error;                      /* of connecting or sending */
  int echoed;                     /* its input came back whole */
  int result;                     /* client_answer's */
  long long sent_at, answered_at; /* ms from its start */
  size_t received;                /* bytes of answer */
} big_sender_t;

static void *send_big_echo(void *argument) {
  big_sender_t *b = argument;
  long long start = now_ms();
  unsigned char *input = pattern(b->size);
  client_t c = CLIENT_NONE;
  b->error = input ? client_connect_with(&c, b->port, NULL, 0) : -ENOMEM;
  char header[64];
  snprintf(header, sizeof header, "4Techo%zuV", b->size);
  if (!b->error) b->error = client_send_within(&c, header, strlen(header), 5000);
  for (size_t at = 0; !b->error && at < b->size; at += b->piece) {
    size_t length = b->size - at < b->piece ? b->size - at : b->piece;
    b->error = client_send_within(&c, input + at, length, 10000);
    usleep((useconds_t)b->every_ms * 1000);
  }
  b->sent_at = now_ms() - start;
  frame_t frame = {0};
  if (!b->error) {
    /* Not client_answer: the log it reads is the process server's. */
    long long end = now_ms() + 5000;
    int r;
    while ((r = parse_frame(&c, &frame)) == 0 && now_ms() < end) {
      int pulled = client_pull(&c);
      if (pulled < 0) break;
      struct pollfd p = {.fd = c.fd, .events = POLLIN};
      if (pulled == 0) poll(&p, 1, 100);
    }
    b->result = r;
    b->echoed = r == 1 && frame.kind == PROCORD_FRAME_VALUE && frame.length == b->size &&
                memcmp(frame.body, input, b->size) == 0;
    b->received = r == 1 ? frame.length : 0;
  }
  b->answered_at = now_ms() - start;
  client_close(&c);
  free(input);
  return NULL;
}

/* The most task bytes the server held, sampled until `answered` tasks are
   answered or `timeout_ms` has passed. */
static unsigned long long most_held_until(thread_server_t *s, unsigned long long answered,
                                          int timeout_ms) {
  unsigned long long most = 0;
  long long end = now_ms() + timeout_ms;
  for (;;) {
    procord_server_stats_t now = figures(s);
    if (now.task_bytes_buffered_now > most) most = now.task_bytes_buffered_now;
    if (now.tasks_answered >= answered || now_ms() >= end) return most;
    usleep(2 * 1000);
  }
}

/*
 * With max_buffered_task_bytes 1 MiB, two big tasks arrive at once: the
 * first (4 MiB, faster than the minimum rate) holds the budget; the second
 * (2 MiB) waits for room, and is read on once the first is whole. Both are
 * answered, and a small task from a third client is served meanwhile.
 *
 * The second is sent slower than the minimum rate: alone it would miss its
 * time limit (300 ms + 1 s per 2 MiB: 1.3 s for the 1.6 s it takes), and
 * it is served only because the time it waits for room is not counted.
 */
static void big_tasks_beyond_max_buffered_task_bytes_wait_for_room_and_all_complete(void) {
  BEGIN();
  thread_server_t s;
  thread_server_prepare(&s, tasks, TASK_COUNT);
  s.options.stats = &s.stats;
  s.options.max_buffered_task_bytes = 1 << 20;
  s.options.task_timeout_ms = 300;
  s.options.min_receive_rate = 2 << 20;
  s.options.drain_timeout_ms = 1000; /* a task still arriving at the stop does not hold it up */
  int port = thread_server_start(&s);
  CHECK(port > 0);
  server.port = port;
  /* The first: 4 MiB, 64 KiB every 25 ms (2.5 MiB/s: 1.6 s). */
  big_sender_t first = {.port = port, .size = 4 << 20, .piece = 64 << 10, .every_ms = 25};
  /* The second: 2 MiB, 64 KiB every 50 ms (1.25 MiB/s: 1.6 s). */
  big_sender_t second = {.port = port, .size = 2 << 20, .piece = 64 << 10, .every_ms = 50};
  int first_started = pthread_create(&first.thread, NULL, send_big_echo, &first) == 0;
  /* Once the first holds about the budget, the second starts. */
  long long start = now_ms();
  while (first_started && now_ms() - start < 3000 &&
         figures(&s).task_bytes_buffered_now < (1 << 20) - (64 << 10))
    usleep(2 * 1000);
  long long second_at = now_ms() - start;
  int second_started =
      first_started && pthread_create(&second.thread, NULL, send_big_echo, &second) == 0;
  /* While the second waits for room, a small task. */
  usleep(200 * 1000);
  long long small_at = now_ms() - start;
  client_t small = CLIENT_NONE;
  frame_t frame = {0};
  int error = client_connect(&small);
  if (!error) error = client_send_text_task(&small, "echo", "small");
  int r = error ? -1 : client_frame(&small, 3000, &frame);
  long long small_answered_at = now_ms() - start;
  int small_served = frame_is(r, &frame, PROCORD_FRAME_VALUE, "small");
  if (!small_served) show_frame("the small task's answer", r, &frame);
  client_close(&small);
  unsigned long long most = most_held_until(&s, 3, 5000);
  if (first_started) pthread_join(first.thread, NULL);
  if (second_started) pthread_join(second.thread, NULL);
  procord_server_stats_t after = figures(&s);
  int stopped = thread_server_stop(&s, port);
  server.port = 0;
  long long first_answered_at = first.answered_at,
            second_answered_at = second_at + second.answered_at;
  fprintf(
      stderr,
      "    first answered after %lld ms (%zu bytes); second started after %lld ms, answered "
      "after %lld ms (%zu bytes); small task sent after %lld ms, answered after %lld ms; at most %llu "
      "bytes held while the small one was read and after\n",
      first_answered_at, first.received, second_at, second_answered_at, second.received, small_at,
      small_answered_at, most);
  if (!first.echoed || !second.echoed) fprintf(stderr, "    the log:\n%s", s.log);
  CHECK(first_started && second_started);
  CHECK_EQ_INT(error, 0);
  CHECK(small_served);
  CHECK_EQ_INT(first.error, 0);
  CHECK_EQ_INT(second.error, 0);
  CHECK(first.echoed);
  CHECK(second.echoed);
  CHECK(small_answered_at < first_answered_at); /* meanwhile */
  CHECK_EQ_INT(after.task_timeouts, 0);
  CHECK(stopped);
  CHECK_NOTHING_LEFT();
}

int main(int argc, char **argv) {
  procord_loop_t *loop = fixture_start(argc, argv, tasks, TASK_COUNT, self_path, sizeof self_path);
  if (!loop) return 1;
  /* A write to a closed socket must be an error here, not a signal. */
  signal(SIGPIPE, SIG_IGN);

  RUN(idle_and_half_sent_connections_hold_no_task_slot);
  RUN(trickled_task_is_dropped_at_the_task_time_limit);
  RUN(big_task_sent_steadily_is_not_cut_off_by_the_task_time_limit);
  RUN(client_not_taking_its_answer_is_dropped_and_its_worker_serves_another);
  RUN(pipelined_tasks_of_one_connection_take_turns_with_another_connection);
  RUN(new_connection_at_max_connections_closes_the_one_idle_longest);
  RUN(new_connection_at_max_connections_none_idle_is_refused_with_a_u_frame);
  RUN(connection_beyond_max_connections_per_peer_is_refused_with_a_u_frame);
  RUN(tasks_of_one_address_beyond_max_tasks_per_peer_wait_their_turn);
  RUN(unknown_task_is_answered_e0_by_the_server_which_serves_on);
  RUN(answer_is_followed_by_0r_and_the_connection_serves_another_task);
  RUN(sigterm_answers_a_running_task_without_0r_and_closes_idle_connections_at_once);
  RUN(figures_count_answers_unknown_tasks_protocol_errors_and_connections);
  /* Found a deadlock: two big tasks past the budget both waited for room,
     each holding some of it, and neither was ever read on. */
  RUN(big_tasks_beyond_max_buffered_task_bytes_wait_for_room_and_all_complete);

  procord_loop_free(loop);
  return CHECK_SUMMARY();
}
