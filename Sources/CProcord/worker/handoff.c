/*
 * The worker side of a server (procord_worker_serve_handoffs, procord/worker.h):
 * receive a session (a socket on which the server sends whole tasks and
 * takes their answers for their clients) from the server, serve it, report,
 * and wait for the next. The control channel itself is wire/control.c's.
 */
#define _GNU_SOURCE
#include "worker/worker_private.h"
#include "procord/worker.h"

#include <stdio.h>

/* Each session is served for as long as the server keeps it, and the task
   dies with it if the server closes it mid-task (the watchdog). */
static void serve_session(int session, void *context, unsigned char *last_answer, char *task_name,
                          size_t name_room) {
  const procord_worker_options_t *template = context;
  procord_worker_report_t report = {0};
  procord_worker_options_t options = *template;
  options.read_fd = options.write_fd = session;
  options.reusable = 1;
  options.end_with_peer = 1;
  options.report = &report;
  /* A session waits on the server, which bounds every client itself: a
     read timeout here would end an idle session just as the server hands
     it a task, and lose that task. */
  options.read_timeout_ms = 0;
  procord_worker_serve(&options);
  *last_answer = report.last_answer;
  snprintf(task_name, name_room + 1, "%s", report.task_name);
}

int procord_worker_serve_handoffs(const procord_worker_options_t *given, int control_fd) {
  procord_worker_options_t template;
  if (!given || PROCORD_OPTIONS_COPY(template, given, PROCORD_FIRST_SIZE_WORKER_OPTIONS) != 0)
    return PROCORD_EINVAL;
  template.stop_fd = control_fd;
  procord_lineage_mark_serving(); /* it may delegate from now on */
  return procord_control_serve_sessions(control_fd, serve_session, &template);
}
