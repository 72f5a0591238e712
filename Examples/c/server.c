/*
 * server.c: a worker server built with the server API directly (rather than
 * the --procord-server option that procord_worker_main understands). It
 * serves fibo on 127.0.0.1 at the port given (0: one the system picks, shown
 * in the log), with at most 4 tasks at once, each in a worker process that
 * is this program again, until SIGTERM or SIGINT; then it prints its
 * figures. It bounds its clients (docs/SERVER.md): 256 connections, 64 from
 * one address, a task must arrive within 5 s.
 *
 *   server 1111 &
 *   minimal --procord-hostname 127.0.0.1 --procord-port 1111 10 20
 *
 * Build: cc server.c $(pkg-config --cflags --libs procord) -o server
 */
#include "fibo_task.h"

static const procord_worker_task_t tasks[] = {{"fibo", fibo_task, NULL}};

static void log_line(void *context, procord_log_level_t level, const char *message) {
  (void)context;
  static const char *const names[] = {"error", "warning", "info", "debug"};
  fprintf(stderr, "server: %s: %s\n", names[level], message);
}

static procord_server_stats_t stats;

int main(int argc, char **argv) {
  /* The server's workers are started with --procord-worker --procord-handoff-fd 3. */
  procord_worker_command_t command;
  procord_worker_main(argc, argv, tasks, 1, &command);
  if (argc - command.first_argument != 1) {
    fprintf(stderr, "usage: %s PORT\n", argv[0]);
    return 2;
  }
  char *end;
  long port = strtol(argv[command.first_argument], &end, 10);
  if (*end || end == argv[command.first_argument] || port < 0 || port > 65535) {
    fprintf(stderr, "%s: not a port number: %s\n", argv[0], argv[command.first_argument]);
    return 2;
  }
  const char *const worker_arguments[] = {argv[0], "--procord-worker", "--procord-handoff-fd", "3",
                                          NULL};
  procord_server_options_t options;
  procord_server_options_init(&options); /* every default, and the struct's size */
  options.hostname = "127.0.0.1";
  options.port = (int)port;
  options.reuse_address = 1;
  options.max_simultaneous_tasks = 4;
  options.worker.program = PROCORD_SELF_EXECUTABLE_PATH;
  options.worker.arguments = worker_arguments;
  options.worker.channel = PROCORD_CHANNEL_SOCKET;
  options.handle_signals = 1;
  options.log = log_line;
  options.max_connections = 256;
  options.max_connections_per_peer = 64;
  options.task_timeout_ms = 5000;
  options.stats = &stats;
  int error = procord_server_run(&options);
  if (error) {
    fprintf(stderr, "%s: %s\n", argv[0], procord_strerror(error));
    return 1;
  }
  /* The run is over: plain reads are fine (procord_server_stats_read is for
     another thread while it runs). */
  fprintf(stderr, "server: answered %llu tasks on %llu connections; refused %llu, timed out %llu\n",
          stats.tasks_answered, stats.connections_accepted,
          stats.refused_max_connections + stats.refused_peer_connections + stats.handshakes_refused,
          stats.task_timeouts + stats.idle_timeouts + stats.answer_timeouts);
  return 0;
}
