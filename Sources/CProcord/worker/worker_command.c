/* The worker's command line: `--procord-*` options, and running as they say (procord/worker.h). */
#define _GNU_SOURCE
#include "io/io_private.h"
#include "procord/error.h"
#include "procord/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

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
  command->handoff_fd = -1;
  command->port = -1;
  command->log_level = -1;
  command->read_timeout_ms = -1;
  command->drain_timeout_ms = -1;
  command->handshake_timeout_ms = -1;
  command->idle_timeout_ms = command->task_timeout_ms = command->answer_timeout_ms = -1;
  command->first_argument = argc;
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    /* Only a leading run of options is ours: the program's own arguments
       (say `--worker-arg --procord-worker`) must never turn it into a worker. */
    if (strncmp(arg, "--procord-", 10) != 0) {
      command->first_argument = i;
      break;
    }
    const char *name = arg + 10;
    const char *equals = strchr(name, '=');
    size_t name_length = equals ? (size_t)(equals - name) : strlen(name);
#define IS(option) (name_length == sizeof option - 1 && strncmp(name, option, name_length) == 0)
    if (IS("worker") || IS("server") || IS("reuse-address") || IS("dont-fork") ||
        IS("capture-output") || IS("tls") || IS("tls-require-client-cert")) {
      if (equals) return set_error(error, error_size, PROCORD_EINVAL, "%s takes no value", arg);
      if (IS("worker")) command->mode = PROCORD_MODE_WORKER;
      else if (IS("server"))
        command->mode = PROCORD_MODE_SERVER;
      else if (IS("reuse-address"))
        command->reuse_address = 1;
      else if (IS("capture-output"))
        command->capture_output = 1;
      else if (IS("tls"))
        command->tls = 1;
      else if (IS("tls-require-client-cert"))
        command->tls_require_client_certificate = 1;
      else
        command->dont_fork = 1;
      continue;
    }
    /* A secret on the command line would be in every user's `ps`. */
    if (IS("secret"))
      return set_error(error, error_size, PROCORD_EINVAL,
                       "%s: a secret is never read from the command "
                       "line; use --procord-secret-file PATH or --procord-secret-env NAME",
                       "--procord-secret");
    if (!(IS("input-file") || IS("output-file") || IS("hostname") || IS("socket-fd") ||
          IS("port") || IS("max-simultaneous-tasks") || IS("max-message-size") ||
          IS("handoff-fd") || IS("read-timeout") || IS("drain-timeout") || IS("log-level") ||
          IS("tls-cert") || IS("tls-key") || IS("tls-ca") || IS("tls-server-name") ||
          IS("secret-file") || IS("secret-env") || IS("handshake-timeout") ||
          IS("max-connections") || IS("max-connections-per-peer") || IS("max-tasks-per-peer") ||
          IS("idle-timeout") || IS("task-timeout") || IS("answer-timeout") ||
          IS("min-receive-rate") || IS("min-send-rate") || IS("max-buffered-task-bytes") ||
          IS("max-buffered-answer-bytes")))
      return set_error(error, error_size, PROCORD_EINVAL, "unknown option %s", arg);
    const char *value = equals ? equals + 1 : (i + 1 < argc ? argv[++i] : NULL);
    if (!value) return set_error(error, error_size, PROCORD_EINVAL, "%s needs a value", arg);
    long long n = 0;
    if (IS("input-file")) command->input_file = value;
    else if (IS("output-file"))
      command->output_file = value;
    else if (IS("hostname"))
      command->hostname = value;
    else if (IS("tls-cert"))
      command->tls_certificate_file = value;
    else if (IS("tls-key"))
      command->tls_private_key_file = value;
    else if (IS("tls-ca"))
      command->tls_ca_file = value;
    else if (IS("tls-server-name"))
      command->tls_server_name = value;
    else if (IS("secret-file"))
      command->secret_file = value;
    else if (IS("secret-env"))
      command->secret_environment = value;
    else if (IS("handshake-timeout") && parse_number(value, 1, 1 << 30, &n) == 0)
      command->handshake_timeout_ms = (int)n;
    else if (IS("socket-fd") && parse_number(value, 0, 1 << 30, &n) == 0)
      command->socket_fd = (int)n;
    /* 0 would be taken for "none" (a zero-initialized command) and the
       worker would serve stdin instead: refused. */
    else if (IS("handoff-fd") && parse_number(value, 1, 1 << 30, &n) == 0)
      command->handoff_fd = (int)n;
    else if (IS("log-level")) {
      static const char *const levels[] = {"error", "warning", "info", "debug"};
      command->log_level = -1;
      for (int level = 0; level < 4; level++)
        if (strcmp(value, levels[level]) == 0) command->log_level = level;
      if (command->log_level < 0)
        return set_error(error, error_size, PROCORD_EINVAL,
                         "%s: expected error, warning, info or debug", arg);
    } else if (IS("read-timeout") && parse_number(value, 0, 1 << 30, &n) == 0)
      command->read_timeout_ms = (int)n;
    else if (IS("drain-timeout") && parse_number(value, 0, 1 << 30, &n) == 0)
      command->drain_timeout_ms = (int)n;
    else if (IS("port") && parse_number(value, 0, 65535, &n) == 0)
      command->port = (int)n;
    else if (IS("max-simultaneous-tasks") && parse_number(value, 1, 1 << 20, &n) == 0)
      command->max_simultaneous_tasks = (int)n;
    else if (IS("max-message-size") && parse_number(value, 1, (long long)1 << 50, &n) == 0)
      command->max_message_size = (size_t)n;
    else if (IS("max-connections") && parse_number(value, 1, 1 << 24, &n) == 0)
      command->max_connections = (int)n;
    else if (IS("max-connections-per-peer") && parse_number(value, 1, 1 << 24, &n) == 0)
      command->max_connections_per_peer = (int)n;
    else if (IS("max-tasks-per-peer") && parse_number(value, 1, 1 << 20, &n) == 0)
      command->max_tasks_per_peer = (int)n;
    else if (IS("idle-timeout") && parse_number(value, 0, 1 << 30, &n) == 0)
      command->idle_timeout_ms = (int)n;
    else if (IS("task-timeout") && parse_number(value, 0, 1 << 30, &n) == 0)
      command->task_timeout_ms = (int)n;
    else if (IS("answer-timeout") && parse_number(value, 0, 1 << 30, &n) == 0)
      command->answer_timeout_ms = (int)n;
    else if (IS("min-receive-rate") && parse_number(value, 1, 1 << 30, &n) == 0)
      command->min_receive_rate = (int)n;
    else if (IS("min-send-rate") && parse_number(value, 1, 1 << 30, &n) == 0)
      command->min_send_rate = (int)n;
    else if (IS("max-buffered-task-bytes") && parse_number(value, 1, (long long)1 << 50, &n) == 0)
      command->max_buffered_task_bytes = (size_t)n;
    else if (IS("max-buffered-answer-bytes") && parse_number(value, 1, (long long)1 << 50, &n) == 0)
      command->max_buffered_answer_bytes = (size_t)n;
    else
      return set_error(error, error_size, PROCORD_EINVAL, "invalid number for %s", arg);
#undef IS
  }
  if (command->secret_file && command->secret_environment)
    return set_error(error, error_size, PROCORD_EINVAL, "%s",
                     "--procord-secret-file and --procord-secret-env exclude each other");
  if (command->mode != PROCORD_MODE_WORKER && (command->input_file || command->output_file ||
                                               command->socket_fd >= 0 || command->handoff_fd > 0))
    return set_error(error, error_size, PROCORD_EINVAL, "%s",
                     "--procord-input-file, --procord-output-file, --procord-socket-fd and "
                     "--procord-handoff-fd need --procord-worker");
  return 0;
}

static void ignore_signal(int signal) { (void)signal; }

/* The main program is gone: end this worker and what its task started. */
static void on_parent_death(int signal) {
  (void)signal;
  kill(getpgrp() == getpid() ? 0 : getpid(), SIGKILL);
}

/*
 * A worker of ours dies with whatever started it, even when that was killed
 * outright: Linux sends SIGHUP when the thread that started the worker (a
 * main program's loop thread, a server's thread) ends. The end of the
 * protocol stream does the same where it can, more slowly, and not for a
 * task that is busy. `parent` is the process that started us, or 0 when
 * that is unknown (then nothing is asked).
 */
/* The parent of `pid`, from /proc; 0 if unknown. */
static pid_t parent_of(pid_t pid) {
  char path[64], stat[512];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, stat, sizeof stat - 1);
  close(fd);
  if (n <= 0) return 0;
  stat[n] = 0;
  /* "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses. */
  const char *after_name = strrchr(stat, ')');
  int parent = 0;
  return after_name && sscanf(after_name + 1, " %*c %d", &parent) == 1 ? (pid_t)parent : 0;
}

static void die_with(pid_t parent) {
  if (parent <= 0 || parent == getpid()) return;
  if (getppid() != parent) {
    /* Started through a wrapper that did not exec us (`sh -c 'worker ...;
       ...'`), whose parent is `parent`: we die with the wrapper. Otherwise
       `parent` is gone already (a zombie not reaped yet looks alive to
       kill(0); a fork of it holding our stream open would hide its death). */
    if (parent_of(getppid()) != parent) {
      on_parent_death(SIGHUP);
      return;
    }
    parent = getppid();
  }
  struct sigaction action = {0};
  action.sa_handler = on_parent_death;
  sigaction(SIGHUP, &action, NULL);
  prctl(PR_SET_PDEATHSIG, SIGHUP);
  /* A parent that died before that call sent no signal: it must still be
     our parent (a fork of it holding our stream open would hide its death). */
  if (getppid() != parent) on_parent_death(SIGHUP);
}

/* The process at the other end of a socketpair it made: the one that
   started us. 0 if unknown, or if we made it ourselves (a test may). */
static pid_t socket_peer(int socket_fd) {
  struct ucred peer;
  socklen_t length = sizeof peer;
  if (getsockopt(socket_fd, SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0 || peer.pid <= 0 ||
      peer.pid == getpid())
    return 0;
  return peer.pid;
}

static int open_or_error(const char *path, int flags) {
  int fd = open(path, flags | O_CLOEXEC, 0644);
  return fd < 0 ? -errno : fd;
}

int procord_worker_run(const procord_worker_command_t *command, const procord_worker_task_t *tasks,
                       size_t task_count) {
  procord_lineage_mark_serving();
  /* Started through /proc/self/exe (the running binary, even if its file
     was replaced since), a worker is named `exe` in ps and pgrep: it takes
     its program's name, from argv[0], instead. */
  prctl(PR_SET_NAME, program_invocation_short_name);
  procord_worker_options_t options = {
      .size = sizeof options,
      .read_fd = 0,
      .write_fd = 1,
      .tasks = tasks,
      .task_count = task_count,
      .max_message_size = command->max_message_size,
  };
  options.read_timeout_ms = command->read_timeout_ms > 0 ? command->read_timeout_ms : 0;
  if (command->handoff_fd > 0) {
    /* The server decides when its workers stop (it closes their control
       socket once their task is done): a SIGTERM or SIGINT sent to every
       process of the service must not kill a running task. A handler, not
       SIG_IGN, so that what the task starts gets the default again at exec. */
    struct sigaction survive = {0};
    survive.sa_handler = ignore_signal;
    survive.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &survive, NULL);
    sigaction(SIGINT, &survive, NULL);
    procord_fd_set_cloexec(command->handoff_fd);
    die_with(socket_peer(command->handoff_fd));
    /* The client is elsewhere: what the task prints goes to it. */
    options.capture_output = PROCORD_CAPTURE_STDOUT_AND_STDERR;
    int result = procord_worker_serve_handoffs(&options, command->handoff_fd);
    close(command->handoff_fd);
    return result;
  }
  if (command->socket_fd >= 0) {
    int type = 0;
    socklen_t length = sizeof type;
    if (getsockopt(command->socket_fd, SOL_SOCKET, SO_TYPE, &type, &length) != 0) {
      /* Said on stderr, which a main program keeps the end of in the
         outcome: the worker has no protocol stream to say it on. Here, not
         in procord_worker_main, so that Swift's workers say it too. */
      int error = -errno;
      fprintf(
          stderr,
          "%s: --procord-socket-fd %d: descriptor %d is not a socket (%s): the main program must "
          "start this worker with the socket channel (PROCORD_CHANNEL_SOCKET in C, channel: "
          ".socket in Swift), or without --procord-socket-fd\n",
          program_invocation_name, command->socket_fd, command->socket_fd, procord_strerror(error));
      return error;
    }
    /* Keep the protocol away from any process the task starts. */
    procord_fd_set_cloexec(command->socket_fd);
    die_with(socket_peer(command->socket_fd));
    options.read_fd = options.write_fd = command->socket_fd;
    options.reusable = 1;
    options.end_with_peer = 1;
    /* Our stdout and stderr are the main program's already, unless it
       wants them as frames. */
    if (command->capture_output) options.capture_output = PROCORD_CAPTURE_STDOUT_AND_STDERR;
    int result = procord_worker_serve(&options);
    close(command->socket_fd);
    return result;
  }
  int in = -1, out = -1;
  if (command->input_file || command->output_file) {
    in = command->input_file ? open_or_error(command->input_file, O_RDONLY)
                             : fcntl(0, F_DUPFD_CLOEXEC, 3);
    out = command->output_file ? open_or_error(command->output_file, O_WRONLY | O_CREAT | O_TRUNC)
                               : fcntl(1, F_DUPFD_CLOEXEC, 3);
  } else {
    in = fcntl(0, F_DUPFD_CLOEXEC, 3);
    out = fcntl(1, F_DUPFD_CLOEXEC, 3);
  }
  if (in < 0 || out < 0) {
    int error =
        in < 0 ? (command->input_file ? in : -errno) : (command->output_file ? out : -errno);
    if (in >= 0) close(in);
    if (out >= 0) close(out);
    return error;
  }
  /* The original mode has no socket to say who started us: a Procord main
     program says so in our environment; otherwise our parent is it. */
  if (!command->input_file && !command->output_file)
    die_with(procord_lineage_parent() > 0 ? procord_lineage_parent() : getppid());
  /* Whatever the task prints to stdout must not reach the protocol stream:
     it travels as `P` frames to `O` (stderr stays the main program's). */
  int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null >= 0) {
    dup2(null, 0);
    close(null);
  }
  dup2(2, 1); /* if the capture cannot start, stdout still stays off the protocol */
  options.read_fd = in;
  options.write_fd = out;
  options.capture_output = PROCORD_CAPTURE_STDOUT;
  int result = procord_worker_serve(&options);
  close(in);
  close(out);
  return result;
}
