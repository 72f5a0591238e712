/*
 * procord/spawn.h: starting worker processes and reaping them.
 *
 * Workers are started with posix_spawn (never a bare fork: the Swift runtime
 * is multithreaded, and a forked copy inherits locked mutexes), with an empty
 * signal mask and default dispositions for SIGPIPE, SIGINT and SIGTERM. Each
 * worker leads a process group of its own, so that a kill reaches what its
 * task started (a nested Procord worker leads a group of its own again, and
 * ends when its parent's connection closes). Every descriptor Procord
 * creates is close-on-exec, and a child gets only its standard streams and,
 * in socket mode, the protocol socket: every other descriptor is closed in
 * the child, even one the program inherited without close-on-exec.
 *
 * Signals and the host program. Procord installs no signal handler in the
 * program that delegates: it follows each worker through a pidfd (where the
 * kernel has them) and reaps it with waitpid on that pid only. A host may
 * keep its own SIGCHLD handler, but must reap only its own children: one
 * that calls waitpid(-1) takes Procord's too, and such a worker's end is
 * then reported as reaped elsewhere (-ECHILD, see procord_child_try_reap),
 * never as a clean exit. SIGPIPE never reaches the host: sockets are
 * written with MSG_NOSIGNAL, and pipes on threads of Procord's (the loop's)
 * that block SIGPIPE and discard a pending one; the host's own disposition
 * is left as it is, and workers start with the default one.
 */
#ifndef PROCORD_SPAWN_H
#define PROCORD_SPAWN_H

#include <stddef.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The descriptor that carries the protocol in a worker started in socket
 * mode. The worker learns it from the option `--procord-socket-fd 3`, which
 * the caller puts in the worker's arguments.
 */
#define PROCORD_WORKER_SOCKET_FD 3

typedef enum procord_protocol_channel {
  /* The original mode: the protocol runs on the child's stdin and stdout
     (two pipes); its stderr is inherited or redirected. */
  PROCORD_CHANNEL_STDIO = 0,
  /* This project's mode: the protocol runs on one end of a socketpair, which
     the child finds as descriptor PROCORD_WORKER_SOCKET_FD; the child's stdin
     is /dev/null and its stdout and stderr are free for the task. */
  PROCORD_CHANNEL_SOCKET = 1,
} procord_protocol_channel_t;

/*
 * Resource limits for a worker (0: the limit it inherits). Each is set as
 * both its soft and its hard limit, so the task cannot raise it again, with
 * prlimit(2) right after the start: the worker program's own start-up may
 * run before them, but no task does (the worker gets its task only later),
 * and what the task starts inherits them. Embedded in procord_spawn_options_t,
 * this struct never grows (it has no `size`).
 */
typedef struct procord_resource_limits_s {
  /* RLIMIT_AS: allocations beyond it fail (malloc returns NULL; mmap ENOMEM). */
  unsigned long long address_space_bytes;
  /* RLIMIT_CPU: SIGXCPU once reached, SIGKILL a second later. Counts the
     worker's whole life, so in a pool it spans its tasks. */
  unsigned long long cpu_seconds;
  /* RLIMIT_NOFILE: descriptors numbered at or above it cannot be opened. */
  unsigned long long open_files;
} procord_resource_limits_t;

/*
 * A program that delegates to itself starts PROCORD_SELF_EXECUTABLE_PATH,
 * the running binary. Under a tool that runs the program inside itself
 * (valgrind, an emulator), that path is the tool: the environment variable
 * PROCORD_SELF_EXECUTABLE, when set and not empty, names the program to
 * start instead (`PROCORD_SELF_EXECUTABLE=./app valgrind ./app`). It is
 * ignored in a set-user-ID or set-group-ID program (secure_getenv).
 */
#define PROCORD_SELF_EXECUTABLE_PATH "/proc/self/exe"
#define PROCORD_SELF_EXECUTABLE_VARIABLE "PROCORD_SELF_EXECUTABLE"

typedef struct procord_spawn_options_s {
  /* The size of this struct as the calling program was built with: set by
     procord_spawn_options_init; 0 means the layout of this first release.
     A size larger than this library's struct, with a byte beyond it that is
     not 0 (a program built against a newer Procord than it runs with, that
     sets a field this one does not know), is refused with PROCORD_EINVAL.
     Embedded in other options (a delegation's, a pool source's, a
     server's), this struct never grows: its size there is 0 or its sizeof. */
  size_t size;
  /* The program: a path, or a bare name searched in PATH. Required.
     PROCORD_SELF_EXECUTABLE_PATH may be overridden, see above. */
  const char *program;
  /* argv for the child, NULL-terminated, argv[0] included. NULL: { program, NULL }. */
  const char *const *arguments;
  /* The environment, NULL-terminated; NULL: the caller's environment. */
  const char *const *environment;
  procord_protocol_channel_t channel;
  /* Descriptor to use as the child's stderr (above 0, 1 included;
     duplicated, not taken); 0 or -1: inherit the caller's, so that a
     zero-initialized struct never hands the child our stdin as its stderr. */
  int stderr_fd;
  /* The child's working directory; NULL: the caller's. A directory that
     cannot be entered fails the start with its errno (-ENOENT, -EACCES). A
     relative `program` path is then found from that directory. */
  const char *working_directory;
  procord_resource_limits_t limits;
  /* The child is a program of its own (a tool, a benchmark's probe), not a
     worker: it may delegate at once, without serving first (see
     PROCORD_ENOTSERVING below), and has no parent to die with. Its own
     workers still count toward PROCORD_MAX_DELEGATION_DEPTH. 0: a worker. */
  int main_program;
} procord_spawn_options_t;

/*
 * Sets every field of `options` to its default (what 0 means for each, as
 * said above: inherit the caller's environment, directory and stderr, the
 * stdio channel, no limits) and `size` to this struct's size. Call it
 * first, then set the fields you need: a field added in a later version
 * then gets its default even in a program built before it.
 */
void procord_spawn_options_init(procord_spawn_options_t *options);

/* A started child. The caller owns the descriptors in it. */
typedef struct procord_child_s {
  pid_t pid;
  int pidfd;    /* readable once the child exits; -1 where pidfd_open is missing */
  int read_fd;  /* the main program reads the protocol from this */
  int write_fd; /* and writes to this (equal to read_fd in socket mode) */
} procord_child_t;

/*
 * Starts a child. On success fills `*child` and returns 0; the child is
 * registered so that procord_reap_all_children (run at exit) can reap it. On
 * failure returns PROCORD_EINVAL (no program, or a `size` refused, see
 * procord_spawn_options_t), or a negated errno of the call that failed (posix_spawn
 * reports exec failures such as -ENOENT for a program that does not exist;
 * a limit that cannot be set, above this program's own hard limit, gives
 * prlimit's -EPERM) and leaves no descriptor or process behind.
 *
 * The child's environment gets PROCORD_LINEAGE ("DEPTH PARENT_PID"): how
 * many workers deep it is, and who started it (0 for a main_program). It is what lets a worker die
 * with its parent in every mode, and what stops runaway chains. Refused
 * before anything starts:
 * - PROCORD_ENOTSERVING: this process was itself started as a worker and
 *   has not begun to serve (its program does not call procord_worker_main,
 *   or Worker.runIfRequested, first): it would start copies of itself
 *   without end;
 * - PROCORD_ENESTED: the child would be deeper than the environment's
 *   PROCORD_MAX_DELEGATION_DEPTH (16 when unset or not a positive number).
 * A delegation refused so ends DISCONNECTED with call "spawn" and a detail
 * that says what to do.
 */
int procord_spawn(const procord_spawn_options_t *options, procord_child_t *child);

/* Sends `signal` to the child's whole process group. Returns 0 or -errno. */
int procord_child_kill(const procord_child_t *child, int signal);

/*
 * Reaps the child if it has exited, without blocking. Returns 1 and stores
 * the wait status in `*status` when it was reaped (the pidfd is closed and
 * the child unregistered), 0 if it is still running, -ECHILD if something
 * else in the program reaped it first (a SIGCHLD handler calling
 * waitpid(-1), say: the child is done with as after a reap, but its status
 * is lost and `*status` is 0, which must not be read as a clean exit), or
 * another -errno. Before the
 * reap, while the child's pid still reserves its process group's id, it
 * kills (SIGKILL) whatever is left in that group: processes the task started
 * and did not wait for. A task that wants something to outlive it must move
 * it out of the group (setsid).
 */
int procord_child_try_reap(procord_child_t *child, int *status);

/*
 * Waits for the child to exit, then reaps it like procord_child_try_reap.
 * Blocks: meant for a child that was just killed. Returns 1, -ECHILD (reaped
 * elsewhere, as above), or another -errno.
 */
int procord_child_reap(procord_child_t *child, int *status);

/*
 * Kills (SIGKILL to the process group) and reaps every child that was
 * spawned and not reaped yet. Registered with atexit, so that a main program
 * that exits leaves no worker behind.
 */
void procord_reap_all_children(void);

#ifdef __cplusplus
}
#endif

#endif
