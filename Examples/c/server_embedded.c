/*
 * server_embedded.c: a worker server embedded in a program, on the
 * program's own loop (procord_server_start), beside the program's own
 * delegations, instead of a program that is only a server
 * (procord_server_run, see server.c).
 *
 * It starts a server for fibo on 127.0.0.1 and a port the system picks,
 * prints where it listens, delegates fibo(N) for each N of its command
 * line (20 when none is given) to that server over TCP, as any client
 * would, prints the results, then stops the server gracefully and waits
 * until its workers are gone.
 *
 *   server_embedded 20 30
 *
 * Build: cc server_embedded.c $(pkg-config --cflags --libs procord) -o server_embedded
 */
#include "fibo_task.h"

static const procord_worker_task_t tasks[] = {{"fibo", fibo_task, NULL}};

/* Warnings and errors only: the figures of a normal run are not news. */
static void log_line(void *context, procord_log_level_t level, const char *message) {
  (void)context;
  if (level <= PROCORD_LOG_WARNING) fprintf(stderr, "server: %s\n", message);
}

int main(int argc, char **argv) {
  /* The server's workers are this program again, started with
     --procord-worker --procord-handoff-fd 3: they serve and exit here. */
  procord_worker_command_t command;
  procord_worker_main(argc, argv, tasks, 1, &command);
  int count = argc - command.first_argument;
  const char *const default_inputs[] = {"20"};
  const char *const *inputs =
      count > 0 ? (const char *const *)argv + command.first_argument : default_inputs;
  if (count <= 0) count = 1;

  procord_loop_t *loop;
  if (procord_loop_new(&loop) != 0 || procord_loop_start_thread(loop) != 0) {
    fprintf(stderr, "%s: cannot start the loop\n", argv[0]);
    return 1;
  }

  /* The server: on our loop, started without blocking. */
  const char *const worker_arguments[] = {argv[0], "--procord-worker", "--procord-handoff-fd", "3",
                                          NULL};
  procord_server_options_t options;
  procord_server_options_init(&options); /* first: any field not set below has its default */
  options.hostname = "127.0.0.1";
  options.port = 0; /* one the system picks */
  options.max_simultaneous_tasks = 4;
  options.worker.program = PROCORD_SELF_EXECUTABLE_PATH;
  options.worker.arguments = worker_arguments;
  options.worker.channel = PROCORD_CHANNEL_SOCKET;
  options.log = log_line;
  procord_server_t *server;
  int error = procord_server_start(loop, &options, &server);
  if (error) {
    fprintf(stderr, "%s: the server did not start: %s\n", argv[0], procord_strerror(error));
    procord_loop_free(loop);
    return 1;
  }
  char address[PROCORD_SERVER_ADDRESS_SIZE];
  int port;
  procord_server_address(server, address, sizeof address, &port);
  printf("server listening on %s\n", address);
  fflush(stdout);

  /* Clients of it, on the same loop: all at once, each task in a worker
     process of the server. */
  procord_delegation_t **delegations = calloc((size_t)count, sizeof *delegations);
  int started = 0, succeeded = 0;
  for (int i = 0; i < count && delegations; i++) {
    procord_delegation_options_t delegation = {
        .task_name = "fibo",
        .input = inputs[i],
        .input_length = strlen(inputs[i]),
        .remote_host = "127.0.0.1",
        .remote_port = port,
    };
    if (procord_delegate(loop, &delegation, &delegations[i]) != 0) break;
    started++;
  }
  procord_delegation_wait(loop, delegations, (size_t)started, 1, -1);
  for (int i = 0; i < started; i++) {
    succeeded += print_outcome(inputs[i], procord_delegation_outcome(delegations[i]), address);
    procord_delegation_release(delegations[i]);
  }
  free(delegations);

  /* As SIGTERM would: running tasks finish, then every worker is reaped. */
  procord_server_stop(server, PROCORD_SERVER_STOP_GRACEFUL);
  procord_server_wait(server, -1);
  printf("server stopped\n");
  procord_server_free(server);
  procord_loop_free(loop);
  return succeeded == count ? 0 : 1;
}
