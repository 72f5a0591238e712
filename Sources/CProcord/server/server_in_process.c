/*
 * A worker server's in-process worker (dont_fork, server_private.h): a
 * thread of the server that serves the sessions handed to it over its
 * control socket with the server's own tasks, through the worker's public
 * API, as a worker process would. What runs here runs on that thread.
 */
#define _GNU_SOURCE
#include "procord/worker.h"
#include "server/server_private.h"
#include "base/base_private.h"

#include <errno.h>
#include <stdio.h>
#include <unistd.h>

typedef struct in_process_s {
  procord_worker_options_t options;
  int fd;
} in_process_t;

/* The server's own thread serves one task per session (so that what its
   task prints is captured only meanwhile), and is never killed. */
static void serve_session_in_process(int session, void *context, unsigned char *last_answer,
                                     char *task_name, size_t name_room) {
  in_process_t *here = context;
  procord_worker_report_t report = {0};
  procord_worker_options_t options = here->options;
  options.read_fd = options.write_fd = session;
  options.reusable = 0;
  options.end_with_peer = 0;
  options.report = &report;
  options.stop_fd = here->fd;
  options.read_timeout_ms = 0; /* the server bounds its clients itself */
  procord_worker_serve(&options);
  *last_answer = report.last_answer;
  snprintf(task_name, name_room + 1, "%s", report.task_name);
}

static void *run_in_process(void *argument) {
  in_process_t *here = argument;
  procord_thread_block_all_signals(); /* the server's signals are the loop's */
  procord_lineage_mark_serving();     /* its tasks may delegate */
  procord_control_serve_sessions(here->fd, serve_session_in_process, here);
  close(here->fd);
  procord_free(here);
  return NULL;
}

int server_in_process_start(server_t *s, int control_fd, pthread_t *thread) {
  in_process_t *here = procord_allocate_zeroed(1, sizeof *here);
  if (!here) {
    close(control_fd);
    return -ENOMEM;
  }
  here->fd = control_fd;
  here->options = (procord_worker_options_t){
      .size = sizeof here->options,
      .tasks = s->options->tasks,
      .task_count = s->options->task_count,
      .max_message_size = s->max_message_size,
      /* The task's stdout goes to its client; stderr stays the server's (its log). */
      .capture_output = PROCORD_CAPTURE_STDOUT,
  };
  if (pthread_create(thread, NULL, run_in_process, here) != 0) {
    close(control_fd);
    procord_free(here);
    return -EAGAIN;
  }
  return 0;
}
