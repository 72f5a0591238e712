/*
 * minimal.c: one program that is both a main program and a worker, like
 * the original library's minimal example.
 *
 * As a main program it delegates fibo(N) for each N of its command line to
 * a worker process (this very program, started again in worker mode), or to
 * the worker server named by --procord-hostname and --procord-port, and
 * prints the results in order. Started with --procord-server, it is that
 * worker server.
 *
 *   minimal 10 20 30
 *   minimal --procord-server --procord-port 1111 &
 *   minimal --procord-hostname 127.0.0.1 --procord-port 1111 10 20 30
 *
 * With TLS (docs/SECURITY.md makes the files), on both sides:
 *
 *   minimal --procord-server --procord-tls-cert server.pem --procord-tls-key server.key &
 *   minimal --procord-hostname 127.0.0.1 --procord-tls-ca ca.pem 10 20 30
 *
 * Build: cc minimal.c $(pkg-config --cflags --libs procord) -o minimal
 */
#include "fibo_task.h"

static const procord_worker_task_t tasks[] = {{"fibo", fibo_task, NULL}};

int main(int argc, char **argv) {
  /* Worker or server: serves and exits. Otherwise: a main program. */
  procord_worker_command_t command;
  procord_worker_main(argc, argv, tasks, 1, &command);
  int count = argc - command.first_argument;
  if (count <= 0) {
    fprintf(stderr, "usage: %s [--procord-hostname HOST [--procord-port PORT]] N...\n", argv[0]);
    return 2;
  }

  /* --procord-tls-ca and friends, for the server named by --procord-hostname. */
  procord_security_t *security = NULL;
  char problem[512];
  if (procord_security_from_command(&command, PROCORD_SECURITY_CLIENT, &security, problem,
                                    sizeof problem) != 0) {
    fprintf(stderr, "%s: %s\n", argv[0], problem);
    return 2;
  }

  procord_loop_t *loop;
  if (procord_loop_new(&loop) != 0 || procord_loop_start_thread(loop) != 0) {
    fprintf(stderr, "%s: cannot start the loop\n", argv[0]);
    return 1;
  }
  /* This program again, in socket mode (the worker's stdout stays free). */
  const char *const worker_arguments[] = {argv[0], "--procord-worker", "--procord-socket-fd", "3",
                                          NULL};
  procord_delegation_t **delegations = calloc((size_t)count, sizeof *delegations);
  int started = 0, succeeded = 0;
  for (int i = 0; i < count && delegations; i++) {
    const char *input = argv[command.first_argument + i];
    /* Init first, then the fields we need: the rest keep their defaults,
       even fields a later Procord adds. */
    procord_delegation_options_t options;
    procord_delegation_options_init(&options);
    options.task_name = "fibo";
    options.input = input;
    options.input_length = strlen(input);
    options.worker.program = "/proc/self/exe";
    options.worker.arguments = worker_arguments;
    options.worker.channel = PROCORD_CHANNEL_SOCKET;
    options.worker.stderr_fd = -1;
    options.remote_host = command.hostname;
    options.remote_port = command.port >= 0 ? command.port : 1111;
    options.security = security;
    if (procord_delegate(loop, &options, &delegations[i]) != 0) break;
    started++;
  }
  /* All at once: each runs in a process of its own. */
  procord_delegation_wait(loop, delegations, (size_t)started, 1, -1);
  char worker[300];
  if (command.hostname)
    snprintf(worker, sizeof worker, "%s:%d", command.hostname,
             command.port >= 0 ? command.port : 1111);
  else
    snprintf(worker, sizeof worker, "%s", argv[0]);
  for (int i = 0; i < started; i++) {
    succeeded += print_outcome(argv[command.first_argument + i],
                               procord_delegation_outcome(delegations[i]), worker);
    procord_delegation_release(delegations[i]);
  }
  free(delegations);
  procord_loop_free(loop);
  procord_security_release(security);
  return succeeded == count ? 0 : 1;
}
