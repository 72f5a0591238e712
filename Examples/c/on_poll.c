/*
 * on_poll.c: Procord inside a program's own poll() loop.
 *
 * Any event loop (poll, epoll, GLib, libuv through uv_poll) can drive
 * Procord without giving it a thread: it watches one descriptor,
 * procord_loop_backend_fd, waits no longer than
 * procord_loop_backend_timeout, then calls procord_loop_run_nowait, which
 * does what is due and returns at once. Here the loop also watches the
 * program's stdin, as a real program watches its own descriptors: each
 * line read is one more fibo(N) to delegate; the results are printed as
 * they come, and the program ends when stdin has ended and every task is
 * done.
 *
 *   printf '10\n20\n30\n' | on_poll
 *
 * Build: cc on_poll.c $(pkg-config --cflags --libs procord) -o on_poll
 */
#define _POSIX_C_SOURCE 200809L
#include "fibo_task.h"

#include <errno.h>
#include <poll.h>
#include <unistd.h>

static const procord_worker_task_t tasks[] = {{"fibo", fibo_task, NULL}};

typedef struct {
  char input[24];
  const char *program;
} task_t;

static int running, succeeded, failed;

static void on_done(procord_delegation_t *delegation, const procord_outcome_t *outcome,
                    void *context) {
  task_t *task = context;
  if (print_outcome(task->input, outcome, task->program)) succeeded++;
  else
    failed++;
  fflush(stdout);
  running--;
  procord_delegation_release(delegation); /* nothing else holds it */
  free(task);
}

/* One line of stdin: a task for a worker process (this program again). */
static void delegate_line(procord_loop_t *loop, const char *line, const char *program) {
  task_t *task = calloc(1, sizeof *task);
  if (!task) return;
  snprintf(task->input, sizeof task->input, "%.*s", (int)strcspn(line, "\r\n"), line);
  task->program = program;
  const char *const worker_arguments[] = {program, "--procord-worker", "--procord-socket-fd", "3",
                                          NULL};
  procord_delegation_options_t options;
  procord_delegation_options_init(&options); /* every default, and the struct's size */
  options.task_name = "fibo";
  options.input = task->input;
  options.input_length = strlen(task->input);
  options.worker.program = PROCORD_SELF_EXECUTABLE_PATH;
  options.worker.arguments = worker_arguments;
  options.worker.channel = PROCORD_CHANNEL_SOCKET;
  options.on_done = on_done;
  options.context = task;
  procord_delegation_t *delegation;
  int error = procord_delegate(loop, &options, &delegation);
  if (error) {
    printf("fibo(%s) failed: %s\n", task->input, procord_strerror(error));
    failed++;
    free(task);
    return;
  }
  running++;
}

int main(int argc, char **argv) {
  procord_worker_command_t command;
  procord_worker_main(argc, argv, tasks, 1, &command); /* a worker serves and exits here */

  procord_loop_t *loop = NULL;
  int error = procord_loop_new_polled(&loop);
  if (error) {
    fprintf(stderr, "%s: cannot make a polled loop: %s\n", argv[0], procord_strerror(error));
    return 1;
  }
  char pending[4096]; /* stdin's bytes not yet a whole line */
  size_t pending_length = 0;
  int input_open = 1;
  while (input_open || running > 0) {
    struct pollfd watched[2] = {
        {procord_loop_backend_fd(loop), POLLIN, 0},
        {input_open ? STDIN_FILENO : -1, POLLIN, 0}, /* -1: poll skips it */
    };
    /* Asked before each wait: any call into Procord may set a timer. */
    if (poll(watched, 2, procord_loop_backend_timeout(loop)) < 0 && errno != EINTR) break;
    if (watched[1].revents) {
      ssize_t n = read(STDIN_FILENO, pending + pending_length, sizeof pending - 1 - pending_length);
      if (n <= 0) input_open = 0;
      else
        pending_length += (size_t)n;
      char *line = pending, *end;
      pending[pending_length] = 0;
      while ((end = strchr(line, '\n'))) {
        *end = 0;
        if (*line) delegate_line(loop, line, argv[0]);
        line = end + 1;
      }
      pending_length -= (size_t)(line - pending);
      memmove(pending, line, pending_length);
      if (!input_open && pending_length > 0) { /* a last line without its newline */
        pending[pending_length] = 0;
        delegate_line(loop, pending, argv[0]);
        pending_length = 0;
      }
    }
    procord_loop_run_nowait(loop);
  }
  procord_loop_free(loop);
  return failed == 0 && succeeded > 0 ? 0 : 1;
}
