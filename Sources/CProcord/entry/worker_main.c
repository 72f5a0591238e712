/*
 * The worker main entry and the server a command line asks for
 * (procord/worker.h): what a C program calls first in main, as the Swift
 * overlay's Worker.runIfRequested does.
 */
#define _GNU_SOURCE
#include "io/io_private.h"
#include "procord/error.h"
#include "procord/security.h"
#include "procord/server.h"
#include "procord/worker.h"

#include <errno.h> /* program_invocation_name */
#include <stdio.h>
#include <sys/socket.h>
#include <stdlib.h>

#define DEFAULT_SERVER_PORT 1111

static const char *const level_names[] = {"error", "warning", "info", "debug"};

static void log_to_stderr(void *context, procord_log_level_t level, const char *message) {
  if ((int)level > *(const int *)context) return;
  fprintf(stderr, "procord server: %s: %s\n", level_names[level], message);
}

/* A command line's time limit as the server's options take it: not given
   (-1) is the default (0), and 0 given is no limit (-1). */
static int server_time_limit(int command_ms) {
  return command_ms < 0 ? 0 : command_ms == 0 ? -1 : command_ms;
}

int procord_worker_run_server(const procord_worker_command_t *command,
                              const procord_worker_task_t *tasks, size_t task_count) {
  /* The workers are this program again, told what the server was told. */
  char read_timeout[24], max_message_size[32];
  const char *arguments[10];
  size_t n = 0;
  arguments[n++] = program_invocation_name;
  arguments[n++] = "--procord-worker";
  arguments[n++] = "--procord-handoff-fd";
  arguments[n++] = "3";
  if (command->read_timeout_ms >= 0) {
    snprintf(read_timeout, sizeof read_timeout, "%d", command->read_timeout_ms);
    arguments[n++] = "--procord-read-timeout";
    arguments[n++] = read_timeout;
  }
  if (command->max_message_size > 0) {
    snprintf(max_message_size, sizeof max_message_size, "%zu", command->max_message_size);
    arguments[n++] = "--procord-max-message-size";
    arguments[n++] = max_message_size;
  }
  arguments[n] = NULL;
  int level = command->log_level >= 0 ? command->log_level : PROCORD_LOG_WARNING;
  /* Read before any worker starts: a secret in the environment is removed
     from it, so workers never inherit it. */
  procord_security_t *security = NULL;
  char problem[512];
  int error = procord_security_from_command(command, PROCORD_SECURITY_SERVER, &security, problem,
                                            sizeof problem);
  if (error) {
    log_to_stderr(&level, PROCORD_LOG_ERROR, problem);
    return error;
  }
  procord_server_options_t options = {
      .hostname = command->hostname,
      .port = command->port >= 0 ? command->port : DEFAULT_SERVER_PORT,
      .reuse_address = command->reuse_address,
      .listen_fd = -1,
      .max_simultaneous_tasks = command->max_simultaneous_tasks,
      .dont_fork = command->dont_fork,
      .tasks = tasks,
      .task_count = task_count,
      .worker = {.program = "/proc/self/exe",
                 .arguments = arguments,
                 .channel = PROCORD_CHANNEL_SOCKET,
                 .stderr_fd = -1},
      .handle_signals = 1,
      .drain_timeout_ms = command->drain_timeout_ms > 0 ? command->drain_timeout_ms : 0,
      .read_timeout_ms = command->read_timeout_ms > 0 ? command->read_timeout_ms : 0,
      .log = log_to_stderr,
      .context = &level,
      .security = security,
      .handshake_timeout_ms = command->handshake_timeout_ms > 0 ? command->handshake_timeout_ms : 0,
      .max_message_size = command->max_message_size,
      .max_connections = command->max_connections,
      .max_connections_per_peer = command->max_connections_per_peer,
      .max_tasks_per_peer = command->max_tasks_per_peer,
      .idle_timeout_ms = server_time_limit(command->idle_timeout_ms),
      .task_timeout_ms = server_time_limit(command->task_timeout_ms),
      .answer_timeout_ms = server_time_limit(command->answer_timeout_ms),
      .min_receive_rate = command->min_receive_rate,
      .min_send_rate = command->min_send_rate,
      .max_buffered_task_bytes = command->max_buffered_task_bytes,
      .max_buffered_answer_bytes = command->max_buffered_answer_bytes,
  };
  error = procord_server_run(&options);
  procord_security_release(security);
  return error;
}

void procord_worker_main(int argc, char **argv, const procord_worker_task_t *tasks,
                         size_t task_count, procord_worker_command_t *command) {
  char error[256];
  if (procord_worker_parse_arguments(argc, (const char *const *)argv, command, error,
                                     sizeof error) != 0) {
    /* The entry point was called: what is wrong is said here, on stderr
       (a main program keeps its end), not as a worker that never served. */
    procord_lineage_mark_serving();
    fprintf(stderr, "%s: %s\n", argc > 0 && argv[0] ? argv[0] : "procord", error);
    exit(2);
  }
  if (command->mode == PROCORD_MODE_NONE) return;
  const char *program = argc > 0 && argv[0] ? argv[0] : "procord";
  if (command->mode == PROCORD_MODE_WORKER)
    exit(procord_worker_run(command, tasks, task_count) == 0 ? 0 : 1);
  int result = procord_worker_run_server(command, tasks, task_count);
  if (result != 0) fprintf(stderr, "%s: server: %s\n", program, procord_strerror(result));
  exit(result == 0 ? 0 : 1);
}
