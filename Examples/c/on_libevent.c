/*
 * on_libevent.c: Procord on a program's own libevent loop.
 *
 * A program that already runs a libevent event_base (a server, a proxy)
 * gives it to Procord with procord_loop_new_on_base: the core's events join
 * the program's, on its thread, and the library starts no thread. Here the
 * program's own timer keeps ticking while fibo(N), for each N of the command
 * line, runs in worker processes (this very program, started again in worker
 * mode); the results are printed in order once all are in.
 *
 *   on_libevent 10 20 30
 *
 * Build: cc on_libevent.c $(pkg-config --cflags --libs procord libevent_core) -o on_libevent
 */
#include "fibo_task.h"

#include <event2/event.h>

static const procord_worker_task_t tasks[] = {{"fibo", fibo_task, NULL}};

typedef struct {
  struct event_base *base;
  int left;  /* delegations not finished yet */
  int ticks; /* the program's own timer, meanwhile */
} program_t;

/* on_done runs on the base's thread (this one), from the base's dispatch. */
static void on_done(procord_delegation_t *delegation, const procord_outcome_t *outcome,
                    void *context) {
  (void)delegation;
  (void)outcome;
  program_t *program = context;
  if (--program->left == 0) event_base_loopbreak(program->base);
}

static void on_tick(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  ((program_t *)context)->ticks++;
}

int main(int argc, char **argv) {
  procord_worker_command_t command;
  procord_worker_main(argc, argv, tasks, 1, &command); /* a worker serves and exits here */
  int count = argc - command.first_argument;
  if (count <= 0) {
    fprintf(stderr, "usage: %s N...\n", argv[0]);
    return 2;
  }

  program_t program = {event_base_new(), count, 0};
  procord_loop_t *loop = NULL;
  int error = program.base ? procord_loop_new_on_base(program.base, &loop) : -ENOMEM;
  if (error) {
    fprintf(stderr, "%s: cannot put Procord on the event base: %s\n", argv[0],
            procord_strerror(error));
    return 1;
  }
  struct event *timer = event_new(program.base, -1, EV_PERSIST, on_tick, &program);
  struct timeval every = {0, 1000};
  event_add(timer, &every);

  const char *const worker_arguments[] = {argv[0], "--procord-worker", "--procord-socket-fd", "3",
                                          NULL};
  procord_delegation_t **delegations = calloc((size_t)count, sizeof *delegations);
  int started = 0;
  for (int i = 0; i < count && delegations; i++, started++) {
    const char *input = argv[command.first_argument + i];
    procord_delegation_options_t options;
    procord_delegation_options_init(&options); /* every default, and the struct's size */
    options.task_name = "fibo";
    options.input = input;
    options.input_length = strlen(input);
    options.worker.program = PROCORD_SELF_EXECUTABLE_PATH;
    options.worker.arguments = worker_arguments;
    options.worker.channel = PROCORD_CHANNEL_SOCKET;
    options.on_done = on_done;
    options.context = &program;
    error = procord_delegate(loop, &options, &delegations[i]);
    if (error) {
      fprintf(stderr, "%s: cannot delegate fibo(%s): %s\n", argv[0], input,
              procord_strerror(error));
      break;
    }
  }
  /* The program's loop, as it always runs: Procord's work is part of it. */
  program.left -= count - started;
  if (program.left > 0) event_base_dispatch(program.base);

  int succeeded = 0;
  for (int i = 0; i < started; i++) {
    succeeded += print_outcome(argv[command.first_argument + i],
                               procord_delegation_outcome(delegations[i]), argv[0]);
    procord_delegation_release(delegations[i]);
  }
  fprintf(stderr, "%s: the program's own timer ticked %d times meanwhile\n", argv[0],
          program.ticks);
  free(delegations);
  event_free(timer);
  procord_loop_free(loop); /* before the base, which is the program's */
  event_base_free(program.base);
  return succeeded == count ? 0 : 1;
}
