/* spawn_floor.c: the floor of starting a process and reaping it. */
#define _GNU_SOURCE
#include <errno.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_private.h"

extern char **environ;

static int start(const char *program, const char *const *arguments, pid_t *pid) {
  return -posix_spawn(pid, program, NULL, NULL, (char *const *)arguments, environ);
}

/* Reaps `pid`. Returns 0 if it exited with status 0, -ECHILD if not, or -errno. */
static int reap(pid_t pid) {
  int status = 0;
  int error = bench_wait(pid, &status);
  if (error) return error;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -ECHILD;
}

int procord_bench_spawn_sequential(const char *program, const char *const *arguments, int count,
                                   uint64_t *each_ns) {
  if (!program || !arguments || !arguments[0] || count < 0 || (count > 0 && !each_ns))
    return -EINVAL;
  for (int i = 0; i < count; i++) {
    pid_t pid;
    uint64_t begin = procord_bench_now_ns();
    int error = start(program, arguments, &pid);
    if (!error) error = reap(pid);
    each_ns[i] = procord_bench_now_ns() - begin;
    if (error) return error;
  }
  return 0;
}

int procord_bench_spawn_concurrent(const char *program, const char *const *arguments, int count,
                                   uint64_t *total_ns) {
  if (!program || !arguments || !arguments[0] || count < 0 || !total_ns) return -EINVAL;
  pid_t *pids = malloc(((size_t)count + 1) * sizeof *pids);
  if (!pids) return -ENOMEM;
  int started = 0, error = 0;
  uint64_t begin = procord_bench_now_ns();
  while (started < count && !error) {
    error = start(program, arguments, &pids[started]);
    if (!error) started++;
  }
  /* Every child started is reaped, whatever failed. */
  for (int i = 0; i < started; i++) {
    int reaped = reap(pids[i]);
    if (!error) error = reaped;
  }
  *total_ns = procord_bench_now_ns() - begin;
  free(pids);
  return error;
}
