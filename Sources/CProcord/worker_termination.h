/* Private: how the watchdog asks a worker's task to stop (worker_termination.c). */
#ifndef PROCORD_WORKER_TERMINATION_H
#define PROCORD_WORKER_TERMINATION_H

/* Calls the callback of procord_worker_watch_termination, as a SIGTERM
   would, on its thread. Returns 0, or PROCORD_ECLOSED when nothing watches
   (then only killing the process stops its task). Async-signal-safe. */
int procord_worker_request_termination(void);

/* How long a task asked to stop may take before the watchdog kills it. */
#define PROCORD_WORKER_CANCEL_GRACE_MS 2000

#endif
