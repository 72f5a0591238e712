/*
 * Helpers shared by the C tests that start processes: what a test must leave
 * behind (no child, no descriptor), a monotonic clock, and the worker side
 * of a test program that is its own worker. Include after check.h, with
 * _GNU_SOURCE defined.
 */
#ifndef PROCORD_TEST_FIXTURES_H
#define PROCORD_TEST_FIXTURES_H

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "procord/procord.h"

/* How many descriptors this process has open (the harness lists them). */
static inline int count_descriptors(void) {
  static int open_now[CHECK_MAX_DESCRIPTORS];
  return check_descriptors(open_now, CHECK_MAX_DESCRIPTORS);
}

/* True when every child of ours has been reaped. */
static inline int no_child_left(void) {
  errno = 0;
  return waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD;
}

/* Waits up to `timeout_ms` for `pid` (any process, ours or not) to exit: a
   pidfd, nothing polls. True once it has (or when it is gone already). */
static inline int process_exits_within(pid_t pid, int timeout_ms) {
  int fd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0) return errno == ESRCH;
  struct pollfd p = {.fd = fd, .events = POLLIN};
  int n;
  while ((n = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR) {
  }
  close(fd);
  return n == 1;
}

/* Milliseconds on the monotonic clock. */
static inline long long now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Opens a test: remember the descriptors. */
#define BEGIN() int begin_descriptors = count_descriptors()

/* Closes a test: nothing may be left behind. */
#define CHECK_NOTHING_LEFT()                                                                       \
  do {                                                                                             \
    CHECK(no_child_left());                                                                        \
    CHECK_EQ_INT(count_descriptors(), begin_descriptors);                                          \
  } while (0)

/* A worker's reply of `kind` with `text` as its body. */
static inline void fixture_reply_text(procord_reply_t *reply, unsigned char kind,
                                      const char *text) {
  reply->kind = kind;
  reply->length = strlen(text);
  reply->body = malloc(reply->length ? reply->length : 1);
  memcpy(reply->body, text, reply->length);
}

/* A task's input read as a decimal number (0 if it is not one). */
static inline long long fixture_input_number(const unsigned char *input, size_t length) {
  char text[32] = {0};
  memcpy(text, input, length < sizeof text - 1 ? length : sizeof text - 1);
  return strtoll(text, NULL, 10);
}

/* `double`: twice a decimal integer, the task every real test worker serves. */
static inline void fixture_task_double(void *context, const unsigned char *input, size_t length,
                                       procord_reply_t *reply) {
  (void)context;
  char out[32];
  snprintf(out, sizeof out, "%lld", 2 * fixture_input_number(input, length));
  fixture_reply_text(reply, PROCORD_FRAME_VALUE, out);
}

/* `echo`: its input, as its value. */
static inline void fixture_task_echo(void *context, const unsigned char *input, size_t length,
                                     procord_reply_t *reply) {
  (void)context;
  reply->kind = PROCORD_FRAME_VALUE;
  reply->length = length;
  reply->body = length ? malloc(length) : NULL;
  if (length) memcpy(reply->body, input, length);
}

/* `sleep`: sleeps for the input's milliseconds, then answers "slept". */
static inline void fixture_task_sleep(void *context, const unsigned char *input, size_t length,
                                      procord_reply_t *reply) {
  (void)context;
  usleep((useconds_t)(fixture_input_number(input, length) * 1000));
  fixture_reply_text(reply, PROCORD_FRAME_VALUE, "slept");
}

/* `announce-then-sleep`: says "started" (its client gets it as a print),
   then sleeps as `sleep`. */
static inline void fixture_task_announce_then_sleep(void *context, const unsigned char *input,
                                                    size_t length, procord_reply_t *reply) {
  printf("started\n");
  fflush(stdout);
  fixture_task_sleep(context, input, length, reply);
}

/*
 * The start of a test program that is also its own worker: started as a
 * worker, it serves `tasks` and exits. Otherwise it turns core files off (its
 * workers may die of signals), stores this program's path in `self_path`
 * and returns a loop running on a thread of its own; NULL, said on stderr,
 * if either cannot be had.
 */
static inline procord_loop_t *fixture_start(int argc, char **argv,
                                            const procord_worker_task_t *tasks, size_t task_count,
                                            char *self_path, size_t size) {
  procord_worker_command_t command;
  procord_worker_main(argc, argv, tasks, task_count, &command);
  struct rlimit no_core = {0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  ssize_t n = readlink("/proc/self/exe", self_path, size - 1);
  if (n <= 0) {
    fprintf(stderr, "cannot find this program's path\n");
    return NULL;
  }
  self_path[n] = 0;
  procord_loop_t *loop = NULL;
  if (procord_loop_new(&loop) != 0 || procord_loop_start_thread(loop) != 0) {
    fprintf(stderr, "cannot start the loop\n");
    return NULL;
  }
  return loop;
}

#endif
