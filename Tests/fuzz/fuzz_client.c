/*
 * libFuzzer harness: a main program fed arbitrary bytes by its worker.
 *
 * A real delegation (procord_delegate, or a pool's) goes to a worker
 * server played by a thread of this harness: it listens on 127.0.0.1,
 * accepts each connection, reads the task the client sends (`T`, `V`; or,
 * with a secret, the client's first `A`), answers with the fuzz input,
 * shuts down its writing and reads what else the client sends until the
 * client closes. The delegations run on one procord loop, started once.
 *
 * The input is the worker's bytes, after an optional letter 'a'..'p'
 * (fuzz_support.h) whose bits choose:
 *   bit 0    a maximum message size of 16 bytes (else the default)
 *   bits 1-2 0 a one-off delegation; 1 two tasks through a pool of one
 *            worker; 2 a one-off with a shared secret (the fuzzer cannot
 *            know it); 3 a one-off whose 100 KiB input is lent
 *            (input_release)
 *   bit 3    kill the (first) task right after delegating it
 *
 * The same bytes read by the frame parser say how the task must end (the
 * mapping of docs/PROTOCOL.md: kind, error, call, body, `0R`, and every
 * `P`/`F` frame handed to on_print before the answer); checked for one-off
 * tasks and a pool's first. Also checked: every delegation finishes within
 * 10 s with a valid outcome, a killed one as KILLED, a client with a secret
 * never gets a task run (it never sends `T` or `V`, and ends DISCONNECTED),
 * a lent input is given back exactly once, and no descriptor is left open.
 */
#define _GNU_SOURCE
#include "fuzz_support.h"
#include "procord/delegation.h"
#include "procord/error.h"
#include "procord/frame.h"
#include "procord/loop.h"
#include "procord/pool.h"
#include "procord/security.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LIMIT_MS 10000
#define LENT_LENGTH (100 * 1024)

enum { ONE_OFF, POOL, SECRET, LENT };

static const char task_name[] = "task";
static const char small_input[] = "input";
static unsigned char lent_input[LENT_LENGTH];

static procord_loop_t *loop;
static procord_security_t *security; /* a client's, with a random secret */
static int listener = -1;
static int port;

/* ---- The fake worker server ---- */

static pthread_mutex_t server_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t server_cond = PTHREAD_COND_INITIALIZER;
/* Guarded by server_lock: */
static const uint8_t *answer; /* the fuzz bytes of the current input */
static size_t answer_length;
static int expect_secret;          /* the client starts with `A` */
static const void *expected_input; /* what each `V` must carry */
static size_t expected_input_length;
static unsigned long accepted, closed;

/* Reads from `fd` into `parser`'s frames, calling `on_frame` with each, until
   it returns 0, the end of the stream, or the time limit. */
static void read_frames(int fd, procord_frame_parser_t *parser,
                        int (*on_frame)(const procord_frame_t *)) {
  unsigned char buffer[65536];
  for (;;) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int ready = poll(&p, 1, LIMIT_MS);
    if (ready < 0 && errno == EINTR) continue;
    FUZZ_CHECK(ready > 0, "the client sent nothing for %d ms", LIMIT_MS);
    ssize_t n = recv(fd, buffer, sizeof buffer, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return; /* the end, or a reset (the client closed with our bytes unread) */
    size_t at = 0;
    while (at < (size_t)n) {
      procord_frame_t frame;
      size_t used = 0;
      int r = procord_frame_parser_feed(parser, buffer + at, (size_t)n - at, &used, &frame);
      at += used;
      FUZZ_CHECK(r >= 0, "the client sent an ill-formed frame (%d)", r);
      if (r == 1 && !on_frame(&frame)) return;
    }
  }
}

/* The connection being served, on the server's thread only. */
static int serving_secret;
static const void *serving_input;
static size_t serving_input_length;
static int frames_of_task; /* of the current task: `T` then `V` */

/* A task's frames: `T` with the task's name, `V` with its input, in turns. */
static int on_task_frame(const procord_frame_t *frame) {
  FUZZ_CHECK(!serving_secret,
             "a client with a secret sent a `%c` frame before it was authenticated", frame->kind);
  if (frames_of_task == 0) {
    FUZZ_CHECK(frame->kind == 'T' && frame->length == sizeof task_name - 1 &&
                   memcmp(frame->body, task_name, frame->length) == 0,
               "the client sent a `%c` frame of %zu bytes for its task name", frame->kind,
               frame->length);
  } else {
    FUZZ_CHECK(frame->kind == 'V' && frame->length == serving_input_length &&
                   memcmp(frame->body, serving_input, frame->length) == 0,
               "the client sent a `%c` frame of %zu bytes for its input", frame->kind,
               frame->length);
  }
  frames_of_task = (frames_of_task + 1) % 2;
  return frames_of_task != 0; /* a whole task read: stop there */
}

static int auth_frames; /* the client's `A` frames so far */

/* With a secret, only `A` frames: the nonce, then perhaps a proof. */
static int on_secret_frame(const procord_frame_t *frame) {
  FUZZ_CHECK(frame->kind == 'A' && frame->length == 32,
             "a client with a secret sent a `%c` frame of %zu bytes", frame->kind, frame->length);
  FUZZ_CHECK(++auth_frames <= 2, "a client sent %d `A` frames", auth_frames);
  return 0; /* the first read stops after the nonce */
}

static int on_frame_until_end(const procord_frame_t *frame) {
  if (serving_secret) on_secret_frame(frame);
  else
    on_task_frame(frame);
  return 1;
}

static void serve(int fd) {
  pthread_mutex_lock(&server_lock);
  const uint8_t *bytes = answer;
  size_t length = answer_length;
  serving_secret = expect_secret;
  serving_input = expected_input;
  serving_input_length = expected_input_length;
  pthread_mutex_unlock(&server_lock);
  frames_of_task = 0;
  auth_frames = 0;
  procord_frame_parser_t *parser = NULL;
  FUZZ_CHECK(procord_frame_parser_new(2 * LENT_LENGTH, &parser) == 0, "out of memory");
  read_frames(fd, parser, serving_secret ? on_secret_frame : on_task_frame);
  for (size_t at = 0; at < length;) {
    ssize_t n = send(fd, bytes + at, length - at, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break; /* the client stopped reading: it has decided */
    at += (size_t)n;
  }
  shutdown(fd, SHUT_WR);
  read_frames(fd, parser, on_frame_until_end);
  procord_frame_parser_free(parser);
}

/* Connections are accepted under the lock, so that wait_server_idle sees
   each one either waiting in the listener or counted. */
static void *run_server(void *argument) {
  (void)argument;
  for (;;) {
    struct pollfd p = {.fd = listener, .events = POLLIN};
    if (poll(&p, 1, -1) < 0) continue;
    pthread_mutex_lock(&server_lock);
    int fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0) accepted++;
    pthread_mutex_unlock(&server_lock);
    if (fd < 0) continue;
    serve(fd);
    close(fd);
    pthread_mutex_lock(&server_lock);
    closed++;
    pthread_cond_broadcast(&server_cond);
    pthread_mutex_unlock(&server_lock);
  }
  return NULL;
}

/* Waits until the server has closed every connection and none is waiting
   to be accepted (a killed task may have connected all the same). */
static void wait_server_idle(void) {
  struct timespec limit;
  clock_gettime(CLOCK_REALTIME, &limit);
  limit.tv_sec += LIMIT_MS / 1000;
  pthread_mutex_lock(&server_lock);
  for (;;) {
    struct pollfd p = {.fd = listener, .events = POLLIN};
    int waiting = poll(&p, 1, 0) > 0;
    if (closed == accepted && !waiting) break;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    FUZZ_CHECK(now.tv_sec < limit.tv_sec ||
                   (now.tv_sec == limit.tv_sec && now.tv_nsec < limit.tv_nsec),
               "the server still serves %lu connections (and %d waits) after %d ms",
               accepted - closed, waiting, LIMIT_MS);
    if (closed == accepted) {
      /* One waits to be accepted: the server takes it at once. */
      pthread_mutex_unlock(&server_lock);
      usleep(100);
      pthread_mutex_lock(&server_lock);
    } else {
      pthread_cond_timedwait(&server_cond, &server_lock, &limit);
    }
  }
  pthread_mutex_unlock(&server_lock);
}

/* ---- What the delegation must end with ---- */

/* One print as on_print sees it: `P` or `F`, the destination, the length, the text. */
static void append_print(bytes_t *b, unsigned char kind, unsigned char destination,
                         const unsigned char *text, size_t length) {
  unsigned char head[2 + sizeof length] = {kind, destination};
  memcpy(head + 2, &length, sizeof length);
  append(b, head, sizeof head);
  append(b, text, length);
}

typedef struct expected_s {
  procord_outcome_kind_t kind;
  int error;
  const char *call;
  const uint8_t *body;
  size_t length;
  int reusable;
  bytes_t prints;
} expected_t;

/* As docs/PROTOCOL.md maps a worker's frames to a status. */
static void expect(expected_t *e, const uint8_t *data, size_t size, size_t max) {
  memset(e, 0, sizeof *e);
  procord_frame_parser_t *parser = NULL;
  FUZZ_CHECK(procord_frame_parser_new(max, &parser) == 0, "out of memory");
  size_t at = 0;
  int answered = 0;
  for (;;) {
    procord_frame_t frame;
    size_t used = 0;
    int r = at < size ? procord_frame_parser_feed(parser, data + at, size - at, &used, &frame) : 0;
    at += used;
    if (r == 0 && at < size) continue;
    if (answered) {
      e->reusable = r == 1 && frame.kind == 'R';
      break;
    }
    if (r <= 0) {
      e->kind = PROCORD_OUTCOME_DISCONNECTED;
      e->error = r == 0 ? PROCORD_EDISCONNECTED : r;
      e->call = r == 0 ? "read" : "parse";
      break;
    }
    if (frame.kind == 'P' || frame.kind == 'F') {
      append_print(&e->prints, frame.kind, frame.body[0], frame.kind == 'P' ? frame.body + 1 : NULL,
                   frame.kind == 'P' ? frame.length - 1 : 0);
      continue;
    }
    if (frame.kind == 'V' || frame.kind == 'X' || frame.kind == 'U') {
      e->kind = frame.kind == 'V'   ? PROCORD_OUTCOME_VALUE
                : frame.kind == 'X' ? PROCORD_OUTCOME_EXCEPTION
                                    : PROCORD_OUTCOME_UNKNOWN_EXCEPTION;
      e->body = data + at - frame.length; /* the body is the bytes just consumed */
      e->length = frame.length;
      answered = 1;
      continue;
    }
    if (frame.kind == 'E') {
      int code = 0;
      procord_error_from_frame_body(frame.body, frame.length, &code);
      e->kind = code == PROCORD_ETASK_NOT_SUPPORTED ? PROCORD_OUTCOME_NO_WORKER
                                                    : PROCORD_OUTCOME_DISCONNECTED;
      if (code != PROCORD_ETASK_NOT_SUPPORTED) {
        e->error = code;
        e->call = "peer";
      }
      break;
    }
    e->kind = PROCORD_OUTCOME_DISCONNECTED;
    e->error = PROCORD_EUNEXPECTED;
    e->call = "receive";
    break;
  }
  procord_frame_parser_free(parser);
}

/* ---- The delegations ---- */

typedef struct task_s {
  procord_delegation_t *delegation;
  bytes_t prints;
  int done_calls;
} task_t;

static void on_print(procord_delegation_t *delegation, unsigned char destination,
                     const unsigned char *text, size_t length, void *context) {
  (void)delegation;
  task_t *task = context;
  FUZZ_CHECK(task->done_calls == 0, "a print after on_done");
  append_print(&task->prints, text ? 'P' : 'F', destination, text, length);
}

static void on_done(procord_delegation_t *delegation, const procord_outcome_t *outcome,
                    void *context) {
  (void)delegation;
  (void)outcome;
  task_t *task = context;
  task->done_calls++;
}

static int lent_releases;

static void release_lent(void *context) {
  FUZZ_CHECK(context == lent_input, "input_release got another context");
  __atomic_add_fetch(&lent_releases, 1, __ATOMIC_SEQ_CST);
}

/* A finished task's outcome is one of the kinds, whole. */
static const procord_outcome_t *finished_outcome(task_t *task) {
  procord_delegation_t *d = task->delegation;
  int finished = procord_delegation_wait(loop, &d, 1, 1, LIMIT_MS);
  FUZZ_CHECK(finished == 1, "a delegation has not finished after %d ms", LIMIT_MS);
  FUZZ_CHECK(task->done_calls == 1, "on_done ran %d times", task->done_calls);
  const procord_outcome_t *o = procord_delegation_outcome(d);
  FUZZ_CHECK(o, "a finished delegation has no outcome");
  int answered = o->kind == PROCORD_OUTCOME_VALUE || o->kind == PROCORD_OUTCOME_EXCEPTION ||
                 o->kind == PROCORD_OUTCOME_UNKNOWN_EXCEPTION;
  FUZZ_CHECK(answered || o->kind == PROCORD_OUTCOME_NO_WORKER ||
                 o->kind == PROCORD_OUTCOME_DISCONNECTED || o->kind == PROCORD_OUTCOME_KILLED,
             "outcome kind %d", (int)o->kind);
  FUZZ_CHECK(answered ? o->length == 0 || o->body : !o->body && o->length == 0,
             "outcome kind %d with a body of %zu bytes at %p", (int)o->kind, o->length,
             (void *)o->body);
  FUZZ_CHECK(o->kind != PROCORD_OUTCOME_DISCONNECTED || (o->error != 0 && o->call),
             "disconnected without a cause");
  FUZZ_CHECK(o->exit_code == -1 && o->signal == 0 && o->worker_pid == -1 && !o->killed_after_grace,
             "a remote task with a process: exit %d signal %d pid %d", o->exit_code, o->signal,
             (int)o->worker_pid);
  return o;
}

/* The outcome the worker's bytes call for. */
static void check_expected(task_t *task, const procord_outcome_t *o, const expected_t *e,
                           int one_off) {
  FUZZ_CHECK(o->kind == e->kind, "outcome kind %d, expected %d (error %s, call %s)", (int)o->kind,
             (int)e->kind, procord_err_name(o->error), o->call ? o->call : "-");
  FUZZ_CHECK(o->error == e->error, "error %s, expected %s", procord_err_name(o->error),
             procord_err_name(e->error));
  FUZZ_CHECK((!o->call && !e->call) || (o->call && e->call && strcmp(o->call, e->call) == 0),
             "call %s, expected %s", o->call ? o->call : "-", e->call ? e->call : "-");
  FUZZ_CHECK(o->length == e->length && (e->length == 0 || memcmp(o->body, e->body, e->length) == 0),
             "a body of %zu bytes, expected %zu", o->length, e->length);
  FUZZ_CHECK(!one_off || o->reusable == e->reusable, "reusable %d, expected %d", o->reusable,
             e->reusable);
  FUZZ_CHECK(o->attempts == 1, "%d attempts", o->attempts);
  FUZZ_CHECK(task->prints.length == e->prints.length &&
                 (e->prints.length == 0 ||
                  memcmp(task->prints.data, e->prints.data, e->prints.length) == 0),
             "on_print saw %zu bytes of prints, expected %zu", task->prints.length,
             e->prints.length);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  for (size_t i = 0; i < LENT_LENGTH; i++) lent_input[i] = (unsigned char)(i * 131 + 7);
  FUZZ_CHECK(procord_loop_new(&loop) == 0 && procord_loop_start_thread(loop) == 0, "no loop");
  unsigned char secret[32];
  FILE *random = fopen("/dev/urandom", "rbe");
  FUZZ_CHECK(random && fread(secret, 1, sizeof secret, random) == sizeof secret,
             "no random secret");
  fclose(random);
  procord_security_options_t options = {
      .role = PROCORD_SECURITY_CLIENT, .secret = secret, .secret_length = sizeof secret};
  char error[256];
  FUZZ_CHECK(procord_security_new(&options, &security, error, sizeof error) == 0, "%s", error);
  listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t length = sizeof address;
  FUZZ_CHECK(listener >= 0 && bind(listener, (struct sockaddr *)&address, sizeof address) == 0 &&
                 listen(listener, 64) == 0 &&
                 getsockname(listener, (struct sockaddr *)&address, &length) == 0,
             "no listening socket: %s", strerror(errno));
  port = ntohs(address.sin_port);
  pthread_t thread;
  FUZZ_CHECK(pthread_create(&thread, NULL, run_server, NULL) == 0, "no server thread");
  pthread_detach(thread);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int descriptors = fuzz_count_descriptors();
  unsigned options = fuzz_options(&data, &size);
  size_t max = options & 1 ? 16 : 0;
  int mode = (int)((options >> 1) & 3);
  int kill_first = options & 8;

  pthread_mutex_lock(&server_lock);
  answer = data;
  answer_length = size;
  expect_secret = mode == SECRET;
  expected_input = mode == LENT ? (const void *)lent_input : small_input;
  expected_input_length = mode == LENT ? LENT_LENGTH : sizeof small_input - 1;
  pthread_mutex_unlock(&server_lock);
  lent_releases = 0;

  task_t tasks[2] = {{0}};
  int count = mode == POOL ? 2 : 1;
  procord_delegation_options_t delegation = {
      .task_name = task_name,
      .input = expected_input,
      .input_length = expected_input_length,
      .remote_host = "127.0.0.1",
      .remote_port = port,
      .connect_timeout_ms = LIMIT_MS,
      .max_message_size = max,
      .on_done = on_done,
      .on_print = on_print,
      .capture_output = 1,
      .input_release = mode == LENT ? release_lent : NULL,
      .input_context = mode == LENT ? lent_input : NULL,
      .security = mode == SECRET ? security : NULL,
  };
  procord_pool_t *pool = NULL;
  if (mode == POOL) {
    procord_pool_source_t source = {.remote_host = "127.0.0.1", .remote_port = port};
    procord_pool_options_t pool_options = {.sources = &source,
                                           .source_count = 1,
                                           .max_workers = 1,
                                           .connect_timeout_ms = LIMIT_MS,
                                           .max_message_size = max};
    FUZZ_CHECK(procord_pool_new(loop, &pool_options, &pool) == 0, "no pool");
  }
  int killed = 0;
  for (int i = 0; i < count; i++) {
    delegation.context = &tasks[i];
    int error = pool ? procord_pool_delegate(pool, &delegation, &tasks[i].delegation)
                     : procord_delegate(loop, &delegation, &tasks[i].delegation);
    FUZZ_CHECK(error == 0, "delegating failed: %s", procord_err_name(error));
    if (i == 0 && kill_first) {
      int r = procord_delegation_kill(tasks[0].delegation);
      FUZZ_CHECK(r == 0 || r == PROCORD_ECLOSED, "kill gave %s", procord_err_name(r));
      killed = r == 0;
    }
  }

  expected_t expected;
  expect(&expected, data, size, max ? max : procord_default_max_message_size());
  for (int i = 0; i < count; i++) {
    const procord_outcome_t *o = finished_outcome(&tasks[i]);
    if (i == 0 && killed) {
      FUZZ_CHECK(o->kind == PROCORD_OUTCOME_KILLED, "a killed task ended as %d", (int)o->kind);
    } else if (mode == SECRET) {
      FUZZ_CHECK(o->kind == PROCORD_OUTCOME_DISCONNECTED,
                 "a client with a secret nobody proved ended as %d", (int)o->kind);
    } else if (i == 0) {
      check_expected(&tasks[i], o, &expected, mode != POOL);
    }
  }
  for (int i = 0; i < count; i++) {
    procord_delegation_release(tasks[i].delegation);
    free(tasks[i].prints.data);
  }
  free(expected.prints.data);
  if (pool) {
    procord_pool_shutdown(pool, 0);
    FUZZ_CHECK(procord_pool_wait(pool, LIMIT_MS) == 1, "the pool has not stopped after %d ms",
               LIMIT_MS);
    procord_pool_release(pool);
  }
  wait_server_idle();
  if (mode == LENT) {
    for (int waited = 0;
         __atomic_load_n(&lent_releases, __ATOMIC_SEQ_CST) == 0 && waited < LIMIT_MS; waited++)
      usleep(1000);
    FUZZ_CHECK(lent_releases == 1, "the lent input was given back %d times", lent_releases);
  }
  fuzz_check_descriptors(descriptors);
  return 0;
}
