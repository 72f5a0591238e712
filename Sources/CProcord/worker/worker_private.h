/*
 * Private to the C core: worker/, the worker's side. What others call of it
 * is public (procord/worker.h: worker.c serves, worker_command.c reads the
 * command line, handoff.c serves a server's sessions,
 * worker_termination.c cancels); here, what its files share: output
 * capture (capture.c).
 * The one header of this folder that others include (docs/ARCHITECTURE.md).
 */
#ifndef PROCORD_WORKER_PRIVATE_H
#define PROCORD_WORKER_PRIVATE_H

#include "io/io_private.h"

/* ---- capture ---- */

/* A worker's stdout and stderr, sent as `P` frames. */

typedef struct procord_output_capture_s procord_output_capture_t;

/*
 * Points this process's descriptor 1 (and 2 if `with_stderr`) at pipes, and
 * starts a thread that sends what arrives there through `writer` as `P`
 * frames to destination `O` (and `E`). Whatever the task writes (print,
 * printf, write(1), a child process) goes there, never onto the protocol.
 * Returns 0 or -errno (nothing changed then).
 */
int procord_capture_start(procord_frame_writer_t *writer, int with_stderr,
                          procord_output_capture_t **capture);

/*
 * Sends everything written so far (C stdio buffers flushed first), so that
 * it reaches the main program before the answer that follows.
 */
void procord_capture_drain(procord_output_capture_t *capture);

/* Drains, stops the thread, and puts descriptors 1 and 2 back. */
void procord_capture_stop(procord_output_capture_t *capture);

/* ---- worker_termination ---- */

/* Private: how the watchdog asks a worker's task to stop (worker_termination.c). */

/* Calls the callback of procord_worker_watch_termination, as a SIGTERM
   would, on its thread. Returns 0, or PROCORD_ECLOSED when nothing watches
   (then only killing the process stops its task). Async-signal-safe. */
int procord_worker_request_termination(void);

#endif
