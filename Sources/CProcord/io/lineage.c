/* Where this process stands in a chain of delegations (io_private.h). */
#define _GNU_SOURCE
#include "io/io_private.h"
#include "wire/wire_private.h"
#include "procord/error.h"
#include "procord/frame.h"
#include "procord/spawn.h"
#include "base/base_private.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Read once: what this process was started with. */
static pthread_once_t read_once = PTHREAD_ONCE_INIT;
static int depth;
static pid_t parent;
static int channel = -1; /* the protocol's, a procord_protocol_channel_t; -1: unknown */
static int serving;
static int told_parent;

static void read_lineage(void) {
  const char *value = getenv(PROCORD_LINEAGE_VARIABLE);
  int d = 0, c = -1;
  long p = 0;
  if (value && sscanf(value, "%d %ld %d", &d, &p, &c) >= 2 && d > 0 && p >= 0) {
    depth = d;
    parent = (pid_t)p; /* 0: started as a program of its own */
    channel = c;
  }
}

/*
 * A worker that delegates before serving is a program that forgot its worker
 * entry point: its main program would only see it end without an answer (or
 * read its prints as ill-formed frames). Its protocol channel is still there,
 * untouched: a `U` frame on it tells the main program what went wrong, and
 * where. Once; written like any answer (never raising SIGPIPE, and giving
 * up after a second if the main program does not read).
 */
static void tell_parent(const char *why) {
  int fd = channel == PROCORD_CHANNEL_SOCKET  ? PROCORD_WORKER_SOCKET_FD
           : channel == PROCORD_CHANNEL_STDIO ? 1
                                              : -1;
  if (fd < 0 || __atomic_exchange_n(&told_parent, 1, __ATOMIC_ACQ_REL)) return;
  char who[48];
  int length = snprintf(who, sizeof who, "worker (pid %d): ", (int)getpid());
  procord_frame_writer_t writer;
  procord_frame_writer_init(&writer, fd, 1000);
  procord_frame_writer_send_parts(&writer, PROCORD_FRAME_UNKNOWN_EXCEPTION, who, (size_t)length,
                                  why, strlen(why));
  procord_frame_writer_destroy(&writer);
}

pid_t procord_lineage_parent(void) {
  pthread_once(&read_once, read_lineage);
  return parent;
}

void procord_lineage_mark_serving(void) { __atomic_store_n(&serving, 1, __ATOMIC_RELEASE); }

/* At exit: a worker whose main returned without serving tells its main
   program why it has no answer, rather than only ending. */
static pid_t watched_worker; /* the process the constructor watches, not a fork of it */

static void tell_if_never_served(void) {
  if (getpid() != watched_worker || __atomic_load_n(&serving, __ATOMIC_ACQUIRE)) return;
  tell_parent(
      "this process was started as a Procord worker but its main returned without serving its "
      "tasks: its program must call its worker entry point first thing in main (Worker.main(tasks:) "
      "or Worker.runIfRequested(tasks:) in Swift, procord_worker_main in C)");
}

/* Whether the leading `--procord-*` options, as Procord passes them to a
   worker it starts, include --procord-worker. */
static int started_as_worker(int argc, char **argv) {
  for (int i = 1; i < argc && argv[i] && strncmp(argv[i], "--procord-", 10) == 0; i++) {
    if (strcmp(argv[i], "--procord-worker") == 0) return 1;
    if (strcmp(argv[i], "--procord-socket-fd") == 0) i++; /* and its value */
  }
  return 0;
}

/* Before main: a process exec'd by a Procord process as its worker (so its
   parent is that process, and its command line asks to be a worker) is
   watched for a main that returns without serving. glibc passes the
   command line to constructors. */
__attribute__((constructor)) static void watch_a_worker_that_may_not_serve(int argc, char **argv) {
  pthread_once(&read_once, read_lineage);
  /* Only with --procord-worker: a program started without it may be meant
     to be no worker at all (a tool, a stand-in that exits), and its exit
     status is then its main program's evidence. */
  if (parent > 0 && getppid() == parent && started_as_worker(argc, argv)) {
    watched_worker = getpid();
    atexit(tell_if_never_served);
  }
}

/* Read at each start, so that a program may lower it for its workers. */
static int max_depth(void) {
  const char *value = getenv(PROCORD_MAX_DEPTH_VARIABLE);
  char *end = NULL;
  long n = value ? strtol(value, &end, 10) : 0;
  return value && end != value && *end == 0 && n > 0 && n <= INT_MAX
             ? (int)n
             : PROCORD_DEFAULT_MAX_DELEGATION_DEPTH;
}

int procord_lineage_may_spawn(void) {
  pthread_once(&read_once, read_lineage);
  /* Exec'd by a Procord process as its worker (a process its task started
     has another parent), and not serving: main ran instead of the worker
     entry point, and is delegating again. */
  if (parent > 0 && getppid() == parent && !__atomic_load_n(&serving, __ATOMIC_ACQUIRE)) {
    tell_parent(procord_lineage_refusal(PROCORD_ENOTSERVING));
    return PROCORD_ENOTSERVING;
  }
  return depth + 1 > max_depth() ? PROCORD_ENESTED : 0;
}

const char *procord_lineage_refusal(int error) {
  if (error == PROCORD_ENOTSERVING)
    return "this process was started as a Procord worker and delegates before serving its tasks: "
           "its program must call its worker entry point first thing in main "
           "(Worker.main(tasks:) or Worker.runIfRequested(tasks:) in Swift, procord_worker_main in C), "
           "or it starts copies of itself without end";
  if (error == PROCORD_ENESTED)
    return "the worker would be more delegations deep than PROCORD_MAX_DELEGATION_DEPTH "
           "(16 unless the environment says otherwise): a task that delegates recursively "
           "without end, or a program whose workers delegate before serving";
  return NULL;
}

char **procord_lineage_environment(const char *const *base, int main_program, int child_channel) {
  pthread_once(&read_once, read_lineage);
  size_t count = 0, kept = 0;
  while (base[count]) count++;
  char entry[64];
  int length = snprintf(entry, sizeof entry, "%s=%d %ld %d", PROCORD_LINEAGE_VARIABLE, depth + 1,
                        main_program ? 0L : (long)getpid(), child_channel);
  /* The pointers, then the one string of ours, in one block. */
  char **environment = procord_allocate((count + 2) * sizeof *environment + (size_t)length + 1);
  if (!environment) return NULL;
  char *ours = (char *)(environment + count + 2);
  memcpy(ours, entry, (size_t)length + 1);
  size_t prefix = strlen(PROCORD_LINEAGE_VARIABLE);
  for (size_t i = 0; i < count; i++)
    if (strncmp(base[i], PROCORD_LINEAGE_VARIABLE, prefix) != 0 || base[i][prefix] != '=')
      environment[kept++] = (char *)base[i];
  environment[kept++] = ours;
  environment[kept] = NULL;
  return environment;
}
