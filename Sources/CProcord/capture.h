/* Private to the C core: a worker's stdout and stderr, sent as `P` frames. */
#ifndef PROCORD_CAPTURE_H
#define PROCORD_CAPTURE_H

#include "frame_writer.h"

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

#endif
