#define _GNU_SOURCE
/*
 * Options structs versioned by their `size` (procord_*_options_init, and
 * every entry point reading the caller's struct by that size):
 * - each init function sets the size and the defaults, which behave as a
 *   zero struct's do;
 * - a program built against an older, smaller struct (simulated: `size`
 *   cut at a field, garbage in the bytes after) gets the defaults for the
 *   fields it does not know, whatever those bytes hold;
 * - `size` 0 reads the whole struct of the first release;
 * - a program built against a newer, larger struct that sets a field this
 *   library does not know is refused with PROCORD_EINVAL; zeros there are
 *   accepted.
 *
 * This program is its own worker (--procord-worker), serving `double` and
 * `parent` (what its PROCORD_LINEAGE says of who started it: 0 for a
 * main_program, else its parent's pid).
 */
#include "check.h"
#include "fixtures.h"
#include "procord/procord.h"

#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

static procord_loop_t *loop;
static char self_path[4096];
static const char *socket_arguments[] = {NULL, "--procord-worker", "--procord-socket-fd", "3",
                                         NULL};

/* `parent`: the second field of this worker's PROCORD_LINEAGE ("DEPTH PARENT CHANNEL"). */
static void task_parent(void *context, const unsigned char *input, size_t length,
                        procord_reply_t *reply) {
  (void)context, (void)input, (void)length;
  const char *lineage = getenv("PROCORD_LINEAGE");
  char parent[32] = "none";
  if (lineage) sscanf(lineage, "%*d %31s", parent);
  fixture_reply_text(reply, PROCORD_FRAME_VALUE, parent);
}

static const procord_worker_task_t tasks[] = {{"double", fixture_task_double, NULL},
                                              {"parent", task_parent, NULL}};

/* ---- Structs of other sizes than ours, in memory aligned for any of them ---- */

/* Bytes a newer Procord's struct has beyond ours in these tests. */
#define NEWER_BYTES 16

typedef union {
  unsigned char bytes[1024];
  max_align_t align;
} struct_buffer_t;

/*
 * What a program built against an older header passes: `options` up to
 * `cut` bytes, its size `cut`, and garbage (0xFF) in every byte after, where
 * the fields it does not know would be.
 */
static void *older(struct_buffer_t *b, const void *options, size_t cut) {
  memset(b->bytes, 0xFF, sizeof b->bytes);
  memcpy(b->bytes, options, cut);
  memcpy(b->bytes, &cut, sizeof cut);
  return b->bytes;
}

/*
 * What a program built against a newer header passes: `options` (`size`
 * bytes), then NEWER_BYTES of fields this library does not know, one of
 * them set when `field_set`, and its size saying so.
 */
static void *newer(struct_buffer_t *b, const void *options, size_t size, int field_set) {
  memset(b->bytes, 0, sizeof b->bytes);
  memcpy(b->bytes, options, size);
  size_t claimed = size + NEWER_BYTES;
  memcpy(b->bytes, &claimed, sizeof claimed);
  if (field_set) b->bytes[size + NEWER_BYTES / 2] = 1;
  return b->bytes;
}

/* ---- What a spawned child says on its stderr (ours, for a while) ---- */

/*
 * Spawns `sh -c 'echo "lineage=$PROCORD_LINEAGE" >&2'` with `options` (whose
 * program and arguments it sets), with this program's stderr a pipe
 * meanwhile, and reaps it. Returns procord_spawn's result; stores in
 * `*parent` the child's lineage parent (-1 when it said nothing: its stderr
 * was not ours).
 */
static int spawn_telling_lineage(procord_spawn_options_t *options, long *parent) {
  static const char *arguments[] = {"sh", "-c", "echo \"lineage=$PROCORD_LINEAGE\" >&2", NULL};
  options->program = "/bin/sh";
  options->arguments = arguments;
  *parent = -1;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) return -errno;
  fflush(stderr);
  int saved = fcntl(2, F_DUPFD_CLOEXEC, 3);
  dup2(fds[1], 2);
  close(fds[1]);
  procord_child_t child;
  int result = procord_spawn(options, &child);
  dup2(saved, 2);
  close(saved);
  if (result == 0) {
    close(child.read_fd);
    if (child.write_fd != child.read_fd) close(child.write_fd);
    int status;
    procord_child_reap(&child, &status);
  }
  char text[256] = "";
  ssize_t n = read(fds[0], text, sizeof text - 1);
  text[n > 0 ? n : 0] = 0;
  close(fds[0]);
  long depth;
  if (sscanf(text, "lineage=%ld %ld", &depth, parent) != 2) *parent = -1;
  return result;
}

/* ---- Delegations and pools to this program ---- */

static void self_worker(procord_spawn_options_t *worker) {
  worker->program = self_path;
  worker->arguments = socket_arguments;
  worker->channel = PROCORD_CHANNEL_SOCKET;
}

/* Runs `task_name` with `input` as `options` say (task and input set here);
   copies the answer's text into `answer` ("" for none). Returns procord_delegate's result. */
static int delegate_and_wait(procord_delegation_options_t *options, const char *task_name,
                             const char *input, char *answer, size_t size) {
  options->task_name = task_name;
  options->input = input;
  options->input_length = strlen(input);
  answer[0] = 0;
  procord_delegation_t *d = NULL;
  int result = procord_delegate(loop, options, &d);
  if (result != 0) return result;
  if (procord_delegation_wait(loop, &d, 1, 1, 10000) == 1) {
    const procord_outcome_t *o = procord_delegation_outcome(d);
    if (o->kind == PROCORD_OUTCOME_VALUE && o->length < size) {
      memcpy(answer, o->body, o->length);
      answer[o->length] = 0;
    }
  }
  procord_delegation_release(d);
  return 0;
}

/* A pool task's answer text, as delegate_and_wait. */
static int pool_run(procord_pool_t *pool, const char *task_name, const char *input, char *answer,
                    size_t size) {
  procord_delegation_options_t options;
  procord_delegation_options_init(&options);
  options.task_name = task_name;
  options.input = input;
  options.input_length = strlen(input);
  answer[0] = 0;
  procord_delegation_t *d = NULL;
  int result = procord_pool_delegate(pool, &options, &d);
  if (result != 0) return result;
  if (procord_delegation_wait(loop, &d, 1, 1, 10000) == 1) {
    const procord_outcome_t *o = procord_delegation_outcome(d);
    if (o->kind == PROCORD_OUTCOME_VALUE && o->length < size) {
      memcpy(answer, o->body, o->length);
      answer[o->length] = 0;
    }
  }
  procord_delegation_release(d);
  return 0;
}

static void pool_end(procord_pool_t *pool) {
  procord_pool_shutdown(pool, 0);
  procord_pool_wait(pool, 10000);
  procord_pool_release(pool);
}

static int released;
static void note_release(void *context) { (*(int *)context)++; }
static void note_done(procord_delegation_t *delegation, const procord_outcome_t *outcome,
                      void *context) {
  (void)delegation, (void)outcome;
  (*(int *)context)++;
}
static void note_stopped(procord_pool_t *pool, void *context) {
  (void)pool;
  (*(int *)context)++;
}

/* ---- Init functions: the size, and the defaults ---- */

/* `init` on a struct full of garbage leaves what a zero struct holds, with
   its size (and an embedded worker's) set. */
#define CHECK_INIT(type, init, nested_worker)                                                      \
  do {                                                                                             \
    type made, expected;                                                                           \
    memset(&made, 0xA5, sizeof made);                                                              \
    init(&made);                                                                                   \
    memset(&expected, 0, sizeof expected);                                                         \
    expected.size = sizeof(type);                                                                  \
    nested_worker;                                                                                 \
    if (memcmp(&made, &expected, sizeof made) != 0) fprintf(stderr, "    %s\n", #init);            \
    CHECK(memcmp(&made, &expected, sizeof made) == 0);                                             \
  } while (0)

static void each_init_sets_its_size_and_the_zero_defaults(void) {
  CHECK_INIT(procord_spawn_options_t, procord_spawn_options_init, (void)0);
  CHECK_INIT(procord_delegation_options_t, procord_delegation_options_init,
             expected.worker.size = sizeof(procord_spawn_options_t));
  CHECK_INIT(procord_pool_options_t, procord_pool_options_init, (void)0);
  CHECK_INIT(procord_pool_source_t, procord_pool_source_init,
             expected.worker.size = sizeof(procord_spawn_options_t));
  CHECK_INIT(procord_connect_options_t, procord_connect_options_init, (void)0);
  CHECK_INIT(procord_connection_options_t, procord_connection_options_init, (void)0);
  CHECK_INIT(procord_listener_options_t, procord_listener_options_init, (void)0);
  CHECK_INIT(procord_security_options_t, procord_security_options_init, (void)0);
  CHECK_INIT(procord_worker_options_t, procord_worker_options_init, (void)0);
}

static void spawn_with_init_options_gives_the_child_the_callers_stderr(void) {
  BEGIN();
  procord_spawn_options_t options;
  procord_spawn_options_init(&options);
  long parent;
  CHECK_EQ_INT(spawn_telling_lineage(&options, &parent), 0);
  CHECK_EQ_INT(parent, getpid()); /* said on our stderr, as a worker of ours */
  CHECK_NOTHING_LEFT();
}

static void delegation_with_init_options_answers(void) {
  BEGIN();
  procord_delegation_options_t options;
  procord_delegation_options_init(&options);
  self_worker(&options.worker);
  char answer[32];
  CHECK_EQ_INT(delegate_and_wait(&options, "double", "21", answer, sizeof answer), 0);
  CHECK_BYTES(answer, strlen(answer), "42");
  CHECK_NOTHING_LEFT();
}

static void pool_with_init_options_and_source_answers(void) {
  BEGIN();
  procord_pool_source_t source;
  procord_pool_source_init(&source);
  self_worker(&source.worker);
  procord_pool_options_t options;
  procord_pool_options_init(&options);
  options.sources = &source;
  options.source_count = 1;
  procord_pool_t *pool = NULL;
  CHECK_EQ_INT(procord_pool_new(loop, &options, &pool), 0);
  char answer[32] = "";
  if (pool) {
    CHECK_EQ_INT(pool_run(pool, "double", "21", answer, sizeof answer), 0);
    pool_end(pool);
  }
  CHECK_BYTES(answer, strlen(answer), "42");
  CHECK_NOTHING_LEFT();
}

static void security_with_init_options_and_a_secret_is_made(void) {
  procord_security_options_t options;
  procord_security_options_init(&options);
  options.secret = "0123456789abcdef0123456789abcdef";
  options.secret_length = 32;
  procord_security_t *security = NULL;
  char error[256] = "";
  CHECK_EQ_INT(procord_security_new(&options, &security, error, sizeof error), 0);
  CHECK(security && procord_security_uses_secret(security) && !procord_security_uses_tls(security));
  procord_security_release(security);
}

static void worker_with_init_options_serves_a_task(void) {
  BEGIN();
  int pair[2];
  CHECK_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  CHECK_EQ_INT(write(pair[0], "6Tdouble2V21", 12), 12);
  shutdown(pair[0], SHUT_WR);
  procord_worker_options_t options;
  procord_worker_options_init(&options);
  options.read_fd = options.write_fd = pair[1];
  options.tasks = tasks;
  options.task_count = 2;
  CHECK_EQ_INT(procord_worker_serve(&options), 0);
  char answer[32] = "";
  ssize_t n = read(pair[0], answer, sizeof answer - 1);
  answer[n > 0 ? n : 0] = 0;
  close(pair[0]);
  close(pair[1]);
  CHECK_BYTES(answer, strlen(answer), "2V42");
  CHECK_NOTHING_LEFT();
}

/* ---- Older programs: the fields after their size are defaults ---- */

static void older_spawn_options_get_the_default_for_a_later_field(void) {
  BEGIN();
  procord_spawn_options_t options;
  procord_spawn_options_init(&options);
  struct_buffer_t b;
  /* Built before main_program: its bytes (0xFF) must read as 0, a worker. */
  procord_spawn_options_t *old =
      older(&b, &options, offsetof(procord_spawn_options_t, main_program));
  long parent;
  CHECK_EQ_INT(spawn_telling_lineage(old, &parent), 0);
  CHECK_EQ_INT(parent, getpid());
  CHECK_NOTHING_LEFT();
}

static void size_0_reads_the_whole_struct_of_the_first_release(void) {
  BEGIN();
  procord_spawn_options_t options = {0}; /* never initialized: size 0 */
  options.main_program = 1;              /* the last field, read all the same */
  long parent;
  CHECK_EQ_INT(spawn_telling_lineage(&options, &parent), 0);
  CHECK_EQ_INT(parent, 0);
  CHECK_NOTHING_LEFT();
}

static void older_delegation_options_get_defaults_for_later_fields(void) {
  BEGIN();
  procord_delegation_options_t options;
  procord_delegation_options_init(&options);
  self_worker(&options.worker);
  /* Its worker's struct, cut before main_program, with 1 there. */
  options.worker.size = offsetof(procord_spawn_options_t, main_program);
  options.worker.main_program = 1;
  struct_buffer_t b;
  procord_delegation_options_t *old =
      older(&b, &options, offsetof(procord_delegation_options_t, on_done));
  /* Set where fields the program does not know would be: never to be read.
     (on_done would run before the delegation counts as finished.) */
  int done = 0;
  old->on_done = note_done;
  old->context = &done;
  old->input_release = note_release;
  old->input_context = &released;
  released = 0;
  char answer[32];
  CHECK_EQ_INT(delegate_and_wait(old, "parent", "", answer, sizeof answer), 0);
  char expected[32];
  snprintf(expected, sizeof expected, "%d", (int)getpid());
  CHECK_BYTES(answer, strlen(answer), expected); /* a worker of ours, not a main program */
  CHECK_EQ_INT(done, 0);
  CHECK_EQ_INT(released, 0); /* the input was copied, not borrowed */
  CHECK_NOTHING_LEFT();
}

static void older_pool_options_get_defaults_for_later_fields(void) {
  BEGIN();
  procord_pool_source_t source;
  procord_pool_source_init(&source);
  self_worker(&source.worker);
  procord_pool_options_t options;
  procord_pool_options_init(&options);
  options.sources = &source;
  options.source_count = 1;
  struct_buffer_t b;
  procord_pool_options_t *old =
      older(&b, &options, offsetof(procord_pool_options_t, max_message_size));
  /* Fields it does not know: an answer of 2 bytes would be too long. */
  old->max_message_size = 1;
  int stopped = 0;
  old->on_stopped = note_stopped;
  old->on_room = note_stopped;
  old->context = &stopped;
  procord_pool_t *pool = NULL;
  CHECK_EQ_INT(procord_pool_new(loop, old, &pool), 0);
  char answer[32] = "";
  if (pool) {
    CHECK_EQ_INT(pool_run(pool, "double", "5", answer, sizeof answer), 0);
    pool_end(pool);
  }
  CHECK_BYTES(answer, strlen(answer), "10");
  CHECK_EQ_INT(stopped, 0); /* on_stopped, beyond its size, was never called */
  CHECK_NOTHING_LEFT();
}

/* Two sources of an older program, an array at its stride: the second is
   found where that program put it, and garbage after it is not read (its
   `security`, 0xFF..., would be retained). */
static void older_pool_sources_are_read_at_their_stride(void) {
  BEGIN();
  size_t stride = offsetof(procord_pool_source_t, security);
  procord_pool_source_t source;
  procord_pool_source_init(&source);
  self_worker(&source.worker);
  struct_buffer_t b;
  older(&b, &source, stride);
  memcpy(b.bytes + stride, b.bytes, stride);
  procord_pool_options_t options;
  procord_pool_options_init(&options);
  options.sources = (const procord_pool_source_t *)b.bytes;
  options.source_count = 2;
  options.min_workers = 2;
  procord_pool_t *pool = NULL;
  CHECK_EQ_INT(procord_pool_new(loop, &options, &pool), 0);
  char answer[32] = "";
  procord_pool_stats_t stats = {0};
  if (pool) {
    CHECK_EQ_INT(pool_run(pool, "double", "5", answer, sizeof answer), 0);
    for (long long end = now_ms() + 10000; now_ms() < end; usleep(10 * 1000)) {
      procord_pool_stats(pool, &stats);
      if (stats.workers == 2 && stats.idle == 2) break;
    }
    pool_end(pool);
  }
  CHECK_BYTES(answer, strlen(answer), "10");
  CHECK_EQ_INT(stats.workers, 2);
  CHECK_NOTHING_LEFT();
}

/* Sources of one array with sizes that differ: the stride is unknown. */
static void pool_sources_of_different_sizes_are_refused(void) {
  BEGIN();
  procord_pool_source_t sources[2];
  procord_pool_source_init(&sources[0]);
  procord_pool_source_init(&sources[1]);
  self_worker(&sources[0].worker);
  self_worker(&sources[1].worker);
  sources[1].size = offsetof(procord_pool_source_t, security);
  procord_pool_options_t options;
  procord_pool_options_init(&options);
  options.sources = sources;
  options.source_count = 2;
  procord_pool_t *pool = NULL;
  CHECK_EQ_INT(procord_pool_new(loop, &options, &pool), PROCORD_EINVAL);
  CHECK(pool == NULL);
  CHECK_NOTHING_LEFT();
}

/* ---- Newer programs: a field this library does not know, set, is refused ---- */

static void newer_spawn_options_with_a_field_set_are_refused(void) {
  BEGIN();
  procord_spawn_options_t options;
  procord_spawn_options_init(&options);
  options.program = "/bin/true";
  struct_buffer_t b;
  procord_child_t child;
  CHECK_EQ_INT(procord_spawn(newer(&b, &options, sizeof options, 1), &child), PROCORD_EINVAL);
  CHECK_NOTHING_LEFT();
}

static void newer_spawn_options_with_zeros_beyond_are_accepted(void) {
  BEGIN();
  procord_spawn_options_t options;
  procord_spawn_options_init(&options);
  struct_buffer_t b;
  long parent;
  CHECK_EQ_INT(spawn_telling_lineage(newer(&b, &options, sizeof options, 0), &parent), 0);
  CHECK_EQ_INT(parent, getpid());
  CHECK_NOTHING_LEFT();
}

static void newer_delegation_options_with_a_field_set_are_refused_giving_the_input_back(void) {
  BEGIN();
  procord_delegation_options_t options;
  procord_delegation_options_init(&options);
  self_worker(&options.worker);
  options.task_name = "double";
  options.input = "1";
  options.input_length = 1;
  options.input_release = note_release;
  options.input_context = &released;
  released = 0;
  struct_buffer_t b;
  procord_delegation_t *d = NULL;
  CHECK_EQ_INT(procord_delegate(loop, newer(&b, &options, sizeof options, 1), &d), PROCORD_EINVAL);
  CHECK(d == NULL);
  CHECK_EQ_INT(released, 1);
  CHECK_NOTHING_LEFT();
}

static void newer_delegation_options_with_zeros_beyond_are_accepted(void) {
  BEGIN();
  procord_delegation_options_t options;
  procord_delegation_options_init(&options);
  self_worker(&options.worker);
  struct_buffer_t b;
  char answer[32];
  CHECK_EQ_INT(delegate_and_wait(newer(&b, &options, sizeof options, 0), "double", "8", answer,
                                 sizeof answer),
               0);
  CHECK_BYTES(answer, strlen(answer), "16");
  CHECK_NOTHING_LEFT();
}

/* An embedded worker keeps its place: it cannot be larger than ours. */
static void delegation_with_a_larger_worker_is_refused(void) {
  BEGIN();
  procord_delegation_options_t options;
  procord_delegation_options_init(&options);
  self_worker(&options.worker);
  options.task_name = "double";
  options.worker.size = sizeof options.worker + NEWER_BYTES;
  procord_delegation_t *d = NULL;
  CHECK_EQ_INT(procord_delegate(loop, &options, &d), PROCORD_EINVAL);
  CHECK(d == NULL);
  CHECK_NOTHING_LEFT();
}

static void newer_pool_options_and_sources_with_a_field_set_are_refused(void) {
  BEGIN();
  procord_pool_source_t source;
  procord_pool_source_init(&source);
  self_worker(&source.worker);
  procord_pool_options_t options;
  procord_pool_options_init(&options);
  options.sources = &source;
  options.source_count = 1;
  struct_buffer_t b, s;
  procord_pool_t *pool = NULL;
  CHECK_EQ_INT(procord_pool_new(loop, newer(&b, &options, sizeof options, 1), &pool),
               PROCORD_EINVAL);
  options.sources = newer(&s, &source, sizeof source, 1);
  CHECK_EQ_INT(procord_pool_new(loop, &options, &pool), PROCORD_EINVAL);
  CHECK(pool == NULL);
  /* A pool's task too. */
  options.sources = &source;
  CHECK_EQ_INT(procord_pool_new(loop, &options, &pool), 0);
  if (pool) {
    procord_delegation_options_t task;
    procord_delegation_options_init(&task);
    task.task_name = "double";
    procord_delegation_t *d = NULL;
    CHECK_EQ_INT(procord_pool_delegate(pool, newer(&b, &task, sizeof task, 1), &d), PROCORD_EINVAL);
    CHECK(d == NULL);
    pool_end(pool);
  }
  CHECK_NOTHING_LEFT();
}

static void on_connected(int fd, int error, const char *call, const char *detail, void *context) {
  (void)error, (void)call, (void)detail, (void)context;
  if (fd >= 0) close(fd);
}

static void on_frame(procord_connection_t *connection, const procord_frame_t *frame, int error,
                     void *context) {
  (void)connection, (void)frame, (void)error, (void)context;
}

static void on_accept(procord_listener_t *listener, int fd, const char *peer, void *context) {
  (void)listener, (void)peer, (void)context;
  close(fd);
}

/* The connection and listener options lend descriptors: refused, they are
   closed all the same (CHECK_NOTHING_LEFT counts them). */
static void newer_io_options_with_a_field_set_are_refused(void) {
  BEGIN();
  struct_buffer_t b;
  procord_connect_options_t connect;
  procord_connect_options_init(&connect);
  connect.host = "127.0.0.1";
  connect.port = 1;
  connect.on_done = on_connected;
  procord_connect_t *attempt = NULL;
  CHECK_EQ_INT(procord_connect(loop, newer(&b, &connect, sizeof connect, 1), &attempt),
               PROCORD_EINVAL);

  int fds[2];
  CHECK_EQ_INT(pipe2(fds, O_CLOEXEC), 0);
  procord_connection_options_t connection;
  procord_connection_options_init(&connection);
  connection.read_fd = fds[0];
  connection.write_fd = fds[1];
  connection.on_frame = on_frame;
  procord_connection_t *c = NULL;
  CHECK_EQ_INT(procord_connection_open(loop, newer(&b, &connection, sizeof connection, 1), &c),
               PROCORD_EINVAL);
  CHECK(c == NULL);

  procord_listener_options_t listener;
  procord_listener_options_init(&listener);
  listener.listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  listener.on_accept = on_accept;
  procord_listener_t *l = NULL;
  CHECK_EQ_INT(procord_listen(loop, newer(&b, &listener, sizeof listener, 1), &l), PROCORD_EINVAL);
  CHECK(l == NULL);
  CHECK_NOTHING_LEFT();
}

static void newer_security_options_with_a_field_set_are_refused_saying_why(void) {
  procord_security_options_t options;
  procord_security_options_init(&options);
  options.secret = "0123456789abcdef0123456789abcdef";
  options.secret_length = 32;
  struct_buffer_t b;
  procord_security_t *security = NULL;
  char error[256] = "";
  CHECK_EQ_INT(
      procord_security_new(newer(&b, &options, sizeof options, 1), &security, error, sizeof error),
      PROCORD_EINVAL);
  CHECK(security == NULL);
  CHECK_CONTAINS(error, "a newer Procord");
}

static void newer_worker_options_with_a_field_set_are_refused(void) {
  BEGIN();
  int pair[2];
  CHECK_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  procord_worker_options_t options;
  procord_worker_options_init(&options);
  options.read_fd = options.write_fd = pair[1];
  options.tasks = tasks;
  options.task_count = 2;
  struct_buffer_t b;
  CHECK_EQ_INT(procord_worker_serve(newer(&b, &options, sizeof options, 1)), PROCORD_EINVAL);
  CHECK_EQ_INT(procord_worker_serve_handoffs(newer(&b, &options, sizeof options, 1), pair[1]),
               PROCORD_EINVAL);
  close(pair[0]);
  close(pair[1]);
  CHECK_NOTHING_LEFT();
}

/* A size too small to hold the size itself is no struct at all. */
/* A server's options too: a newer program's field is refused at the start,
   with a log line saying why; zeros beyond are accepted. */
static char server_said[512];
static void keep_server_line(void *context, procord_log_level_t level, const char *line) {
  (void)context;
  if (level == PROCORD_LOG_ERROR) snprintf(server_said, sizeof server_said, "%s", line);
}

static void newer_server_options_with_a_field_set_are_refused_saying_why(void) {
  BEGIN();
  procord_loop_t *loop = NULL;
  CHECK_EQ_INT(procord_loop_new(&loop), 0);
  procord_server_options_t options;
  procord_server_options_init(&options);
  options.dont_fork = 1;
  static const procord_worker_task_t tasks[] = {{"double", fixture_task_double, NULL}};
  options.tasks = tasks;
  options.task_count = 1;
  options.log = keep_server_line;
  struct_buffer_t b;
  procord_server_t *server = NULL;
  server_said[0] = 0;
  CHECK_EQ_INT(procord_server_start(loop, newer(&b, &options, sizeof options, 1), &server),
               PROCORD_EINVAL);
  CHECK_CONTAINS(server_said, "set a field it does not know");
  CHECK_EQ_INT(procord_server_start(loop, newer(&b, &options, sizeof options, 0), &server), 0);
  procord_server_free(server);
  procord_loop_free(loop);
  CHECK_NOTHING_LEFT();
}

/* A struct never initialized (the stack's bytes, 0xA5 here): its size is no
   size, so nothing else in it is read, called or closed. */
static void never_initialized_options_are_refused_without_reading_them(void) {
  BEGIN();
  procord_loop_t *loop = NULL;
  CHECK_EQ_INT(procord_loop_new(&loop), 0);
  procord_delegation_options_t delegation;
  memset(&delegation, 0xA5, sizeof delegation); /* input_release too: calling it would crash */
  procord_delegation_t *d = NULL;
  CHECK_EQ_INT(procord_delegate(loop, &delegation, &d), PROCORD_EINVAL);
  procord_spawn_options_t spawn;
  memset(&spawn, 0xA5, sizeof spawn);
  procord_child_t child;
  CHECK_EQ_INT(procord_spawn(&spawn, &child), PROCORD_EINVAL);
  procord_connection_options_t connection;
  memset(&connection, 0, sizeof connection);
  memset(&connection.size, 0xA5, sizeof connection.size); /* descriptors 0 would be closed */
  procord_connection_t *c = NULL;
  CHECK_EQ_INT(procord_connection_open(loop, &connection, &c), PROCORD_EINVAL);
  CHECK(fcntl(0, F_GETFD) != -1);
  procord_loop_free(loop);
  CHECK_NOTHING_LEFT();
}

static void size_smaller_than_the_size_field_is_refused(void) {
  BEGIN();
  procord_spawn_options_t options;
  procord_spawn_options_init(&options);
  options.program = "/bin/true";
  options.size = sizeof options.size - 1;
  procord_child_t child;
  CHECK_EQ_INT(procord_spawn(&options, &child), PROCORD_EINVAL);
  CHECK_NOTHING_LEFT();
}

int main(int argc, char **argv) {
  loop = fixture_start(argc, argv, tasks, 2, self_path, sizeof self_path);
  if (!loop) return 1;
  socket_arguments[0] = self_path;

  RUN(each_init_sets_its_size_and_the_zero_defaults);
  RUN(spawn_with_init_options_gives_the_child_the_callers_stderr);
  RUN(delegation_with_init_options_answers);
  RUN(pool_with_init_options_and_source_answers);
  RUN(security_with_init_options_and_a_secret_is_made);
  RUN(worker_with_init_options_serves_a_task);

  RUN(older_spawn_options_get_the_default_for_a_later_field);
  RUN(size_0_reads_the_whole_struct_of_the_first_release);
  RUN(older_delegation_options_get_defaults_for_later_fields);
  RUN(older_pool_options_get_defaults_for_later_fields);
  RUN(older_pool_sources_are_read_at_their_stride);
  RUN(pool_sources_of_different_sizes_are_refused);

  RUN(newer_spawn_options_with_a_field_set_are_refused);
  RUN(newer_spawn_options_with_zeros_beyond_are_accepted);
  RUN(newer_delegation_options_with_a_field_set_are_refused_giving_the_input_back);
  RUN(newer_delegation_options_with_zeros_beyond_are_accepted);
  RUN(delegation_with_a_larger_worker_is_refused);
  RUN(newer_pool_options_and_sources_with_a_field_set_are_refused);
  RUN(newer_io_options_with_a_field_set_are_refused);
  RUN(newer_security_options_with_a_field_set_are_refused_saying_why);
  RUN(newer_worker_options_with_a_field_set_are_refused);
  RUN(newer_server_options_with_a_field_set_are_refused_saying_why);
  RUN(never_initialized_options_are_refused_without_reading_them);
  RUN(size_smaller_than_the_size_field_is_refused);

  procord_loop_free(loop);
  return CHECK_SUMMARY();
}
