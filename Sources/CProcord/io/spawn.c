/* Starting workers with posix_spawn, killing and reaping them (procord/spawn.h). */
#define _GNU_SOURCE
#include "procord/spawn.h"
#include "io/io_private.h"
#include "base/base_private.h"
#include "procord/error.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* Children spawned and not yet reaped, so that an exiting program reaps them.
   Room for a child is made before it is started (one that could not be
   listed is not started), and the list is given back once empty. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t *registry;
static size_t registry_count, registry_reserved, registry_capacity;
static pthread_once_t atexit_once = PTHREAD_ONCE_INIT;

static void register_atexit(void) { atexit(procord_reap_all_children); }

/* With the lock held. */
static void registry_forget_if_empty(void) {
  if (registry_count || registry_reserved) return;
  procord_free(registry);
  registry = NULL;
  registry_capacity = 0;
}

/* Makes room for one more child; 0 or -ENOMEM. */
static int registry_reserve(void) {
  pthread_once(&atexit_once, register_atexit);
  pthread_mutex_lock(&registry_lock);
  if (registry_count + registry_reserved == registry_capacity) {
    size_t capacity = registry_capacity ? registry_capacity * 2 : 8;
    pid_t *grown = procord_reallocate(registry, capacity * sizeof *grown);
    if (!grown) {
      pthread_mutex_unlock(&registry_lock);
      return -ENOMEM;
    }
    registry = grown;
    registry_capacity = capacity;
  }
  registry_reserved++;
  pthread_mutex_unlock(&registry_lock);
  return 0;
}

/* Fills the room registry_reserve made with `pid`, or gives it back (pid -1). */
static void registry_settle(pid_t pid) {
  pthread_mutex_lock(&registry_lock);
  registry_reserved--;
  if (pid > 0) registry[registry_count++] = pid;
  registry_forget_if_empty();
  pthread_mutex_unlock(&registry_lock);
}

static void registry_remove(pid_t pid) {
  pthread_mutex_lock(&registry_lock);
  for (size_t i = 0; i < registry_count; i++) {
    if (registry[i] == pid) {
      registry[i] = registry[--registry_count];
      break;
    }
  }
  registry_forget_if_empty();
  pthread_mutex_unlock(&registry_lock);
}

void procord_reap_all_children(void) {
  pthread_mutex_lock(&registry_lock);
  for (size_t i = 0; i < registry_count; i++) kill(-registry[i], SIGKILL);
  for (size_t i = 0; i < registry_count; i++) {
    procord_waitpid_retrying(registry[i], NULL, 0);
  }
  registry_count = 0;
  registry_forget_if_empty();
  pthread_mutex_unlock(&registry_lock);
}

/* Moves `fd` to a number above `floor`, keeping it close-on-exec. */
static int move_above(int fd, int floor) {
  if (fd > floor) return fd;
  int moved = fcntl(fd, F_DUPFD_CLOEXEC, floor + 1);
  int error = errno;
  close(fd);
  errno = error;
  return moved;
}

static void close_if_open(int fd) {
  if (fd >= 0) close(fd);
}

/* The descriptors of the channel: ours[0] read, ours[1] write; theirs likewise. */
static int make_channel(procord_protocol_channel_t channel, int ours[2], int theirs[2]) {
  if (channel == PROCORD_CHANNEL_SOCKET) {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0) return -errno;
    ours[0] = ours[1] = pair[0];
    /* dup2 onto the same number would keep close-on-exec set: stay clear of it. */
    theirs[0] = theirs[1] = move_above(pair[1], PROCORD_WORKER_SOCKET_FD);
    if (theirs[0] < 0) {
      int error = -errno;
      close(pair[0]);
      return error;
    }
    return 0;
  }
  int to_child[2], from_child[2];
  if (pipe2(to_child, O_CLOEXEC) < 0) return -errno;
  if (pipe2(from_child, O_CLOEXEC) < 0) {
    int error = -errno;
    close(to_child[0]);
    close(to_child[1]);
    return error;
  }
  ours[0] = from_child[0];
  ours[1] = to_child[1];
  /* Above 2, so that the dup2 onto 0 cannot overwrite the other one. */
  theirs[0] = move_above(to_child[0], 2);
  theirs[1] = move_above(from_child[1], 2);
  if (theirs[0] < 0 || theirs[1] < 0) {
    int error = -errno;
    close_if_open(theirs[0]);
    close_if_open(theirs[1]);
    close(ours[0]);
    close(ours[1]);
    return error;
  }
  return 0;
}

static int file_actions(posix_spawn_file_actions_t *actions, const procord_spawn_options_t *options,
                        const int theirs[2], int stderr_copy) {
  int e = 0;
  if (options->channel == PROCORD_CHANNEL_SOCKET) {
    e = e ? e : posix_spawn_file_actions_addopen(actions, 0, "/dev/null", O_RDONLY, 0);
    e = e ? e : posix_spawn_file_actions_adddup2(actions, theirs[0], PROCORD_WORKER_SOCKET_FD);
  } else {
    e = e ? e : posix_spawn_file_actions_adddup2(actions, theirs[0], 0);
    e = e ? e : posix_spawn_file_actions_adddup2(actions, theirs[1], 1);
  }
  if (!e && stderr_copy >= 0) e = posix_spawn_file_actions_adddup2(actions, stderr_copy, 2);
  /* Only the intended descriptors reach the worker: not even those the
     program inherited without close-on-exec (a parent's pipes, say). */
  int first_closed = options->channel == PROCORD_CHANNEL_SOCKET ? PROCORD_WORKER_SOCKET_FD + 1 : 3;
  if (!e) e = posix_spawn_file_actions_addclosefrom_np(actions, first_closed);
  if (!e && options->working_directory)
    e = posix_spawn_file_actions_addchdir_np(actions, options->working_directory);
  return e;
}

static int attributes(posix_spawnattr_t *attr) {
  sigset_t none, defaults;
  sigemptyset(&none);
  /* Ignored dispositions survive exec; a worker starts with the defaults. */
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  sigaddset(&defaults, SIGINT);
  sigaddset(&defaults, SIGTERM);
  int e = posix_spawnattr_setflags(attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                             POSIX_SPAWN_SETSIGDEF);
  e = e ? e : posix_spawnattr_setpgroup(attr, 0);
  e = e ? e : posix_spawnattr_setsigmask(attr, &none);
  e = e ? e : posix_spawnattr_setsigdefault(attr, &defaults);
  return e;
}

static int limit(pid_t pid, int resource, unsigned long long value, unsigned long long hard) {
  if (!value) return 0;
  struct rlimit wanted = {(rlim_t)value, (rlim_t)hard};
  return prlimit(pid, resource, &wanted, NULL) == 0 ? 0 : -errno;
}

/* Before the worker gets a task: see procord_resource_limits_t. */
static int apply_resource_limits(pid_t pid, const procord_resource_limits_t *limits) {
  int error = limit(pid, RLIMIT_AS, limits->address_space_bytes, limits->address_space_bytes);
  /* A second between SIGXCPU and SIGKILL, for the task to notice. */
  if (!error) error = limit(pid, RLIMIT_CPU, limits->cpu_seconds, limits->cpu_seconds + 1);
  if (!error) error = limit(pid, RLIMIT_NOFILE, limits->open_files, limits->open_files);
  return error;
}

/* The program to execute: /proc/self/exe is PROCORD_SELF_EXECUTABLE when
   set (under valgrind, /proc/self/exe is valgrind itself). secure_getenv: a
   set-user-ID program never lets its caller choose what it runs. */
static const char *program_to_execute(const char *program) {
  if (strcmp(program, PROCORD_SELF_EXECUTABLE_PATH) != 0) return program;
  const char *override = secure_getenv(PROCORD_SELF_EXECUTABLE_VARIABLE);
  return override && *override ? override : program;
}

void procord_spawn_options_init(procord_spawn_options_t *options) {
  procord_options_clear(options, sizeof *options);
}

int procord_spawn(const procord_spawn_options_t *given, procord_child_t *child) {
  procord_spawn_options_t copy;
  if (!given || !child || PROCORD_OPTIONS_COPY(copy, given, PROCORD_FIRST_SIZE_SPAWN_OPTIONS) != 0)
    return PROCORD_EINVAL;
  const procord_spawn_options_t *options = &copy;
  if (!options->program) return PROCORD_EINVAL;
  /* A worker that forgot to serve, or recursion without end, stops here
     rather than in a machine full of processes. */
  int refused = procord_lineage_may_spawn();
  if (refused) return refused;
  char **environment = procord_lineage_environment(
      options->environment ? options->environment : (const char *const *)environ,
      options->main_program, options->channel);
  if (!environment) return -ENOMEM;
  int ours[2] = {-1, -1}, theirs[2] = {-1, -1};
  int error = make_channel(options->channel, ours, theirs);
  if (error) {
    procord_free(environment);
    return error;
  }
  const char *default_arguments[] = {options->program, NULL};
  const char *const *arguments = options->arguments ? options->arguments : default_arguments;

  /* The descriptor for stderr may be 0, 1 or 3, which the channel's dup2s
     overwrite first: hand the child a copy from above them. */
  int stderr_copy = -1;
  if (options->stderr_fd > 0 && options->stderr_fd != 2) {
    stderr_copy = fcntl(options->stderr_fd, F_DUPFD_CLOEXEC, PROCORD_WORKER_SOCKET_FD + 1);
    if (stderr_copy < 0) {
      int error = -errno;
      procord_free(environment);
      close(ours[0]);
      if (ours[1] != ours[0]) close(ours[1]);
      close(theirs[0]);
      if (theirs[1] != theirs[0]) close(theirs[1]);
      return error;
    }
  }
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  pid_t pid = -1;
  int e = file_actions(&actions, options, theirs, stderr_copy);
  e = e ? e : attributes(&attr);
  int listed = !e && registry_reserve() == 0;
  if (!e && !listed) e = ENOMEM;
  e = e ? e
        : posix_spawnp(&pid, program_to_execute(options->program), &actions, &attr,
                       (char *const *)arguments, environment);
  procord_free(environment);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  close(theirs[0]);
  if (theirs[1] != theirs[0]) close(theirs[1]);
  close_if_open(stderr_copy);
  if (e) {
    if (listed) registry_settle(-1);
    close(ours[0]);
    if (ours[1] != ours[0]) close(ours[1]);
    return -e;
  }
  int limit_error = apply_resource_limits(pid, &options->limits);
  if (limit_error) {
    close(ours[0]);
    if (ours[1] != ours[0]) close(ours[1]);
    kill(pid, SIGKILL);
    procord_waitpid_retrying(pid, NULL, 0);
    registry_settle(-1);
    return limit_error;
  }
  registry_settle(pid);
  child->pid = pid;
  child->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (child->pidfd >= 0) procord_fd_set_cloexec(child->pidfd);
  child->read_fd = ours[0];
  child->write_fd = ours[1];
  return 0;
}

int procord_child_kill(const procord_child_t *child, int signal) {
  if (child->pid <= 0) return PROCORD_EINVAL;
  if (kill(-child->pid, signal) < 0) {
    /* The group may be gone while the leader is an unreaped zombie. */
    if (errno == ESRCH) return 0;
    return -errno;
  }
  return 0;
}

int procord_child_reap(procord_child_t *child, int *status) {
  if (child->pid <= 0) return PROCORD_EINVAL;
  siginfo_t info;
  while (waitid(P_PID, (id_t)child->pid, &info, WEXITED | WNOWAIT) < 0) {
    if (errno == ECHILD) break; /* reaped elsewhere: try_reap says so */
    if (errno != EINTR) return -errno;
  }
  return procord_child_try_reap(child, status);
}

int procord_child_try_reap(procord_child_t *child, int *status) {
  if (child->pid <= 0) return PROCORD_EINVAL;
  /* Exited but not reaped yet, so its pid still reserves the group's id:
     end what the task started and left behind in the group, then reap. */
  siginfo_t info = {0};
  if (waitid(P_PID, (id_t)child->pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
      info.si_pid == child->pid)
    kill(-child->pid, SIGKILL);
  pid_t r = procord_waitpid_retrying(child->pid, status, WNOHANG);
  /* Reaped elsewhere: by the host program (a SIGCHLD handler calling
     waitpid(-1)) or procord_reap_all_children at exit. The status is lost;
     the child is done with all the same. */
  int reaped_elsewhere = r < 0 && errno == ECHILD;
  if (r < 0 && !reaped_elsewhere) return -errno;
  if (r == 0) return 0;
  if (reaped_elsewhere) *status = 0;
  registry_remove(child->pid);
  close_if_open(child->pidfd);
  child->pidfd = -1;
  child->pid = -1;
  return reaped_elsewhere ? -ECHILD : 1;
}
