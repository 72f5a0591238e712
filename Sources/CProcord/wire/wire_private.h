/*
 * Private to the C core: wire/, the bytes on the wire: frames (frame.c
 * parses, frame_writer.c writes whole frames), the shared-secret exchange
 * (auth.c), and the control channel between a server and its workers
 * (control.c).
 * The one header of this folder that others include (docs/ARCHITECTURE.md).
 */
#ifndef PROCORD_WIRE_PRIVATE_H
#define PROCORD_WIRE_PRIVATE_H

#include "base/base_private.h"
#include "procord/frame.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* ---- frame ---- */

/*
 * The frame parser's insides (procord/frame.h keeps them opaque): for the
 * core's own readers (a connection, a worker, a server's gate), which hold
 * a parser in their own struct instead of allocating one.
 */

struct procord_frame_parser_s {
  size_t max_message_size;
  int state;
  int digits;
  uint64_t size;
  unsigned char kind;
  unsigned char *body;
  size_t filled;
  int error;
};

/*
 * Initializes a parser the caller holds with a maximum message size (0: the
 * process-wide default). procord_frame_parser_reset releases the body it
 * may hold, and must be called before the parser's memory goes.
 */
void procord_frame_parser_init(procord_frame_parser_t *parser, size_t max_message_size);

/* ---- frame_writer ---- */

/* Blocking frame writes shared by a worker's threads. */

/*
 * Writes whole frames to a blocking (or non-blocking: it waits) descriptor.
 * A lock keeps frames from different threads (the task's output, the
 * answer) from interleaving. Writes never raise SIGPIPE.
 */
typedef struct procord_frame_writer_s {
  int fd;
  int is_socket;
  int timeout_ms; /* sockets: for each wait until the peer reads; 0: none */
  int failed;     /* the first error: a frame may be half written, so no more */
  pthread_mutex_t lock;
} procord_frame_writer_t;

void procord_frame_writer_init(procord_frame_writer_t *w, int fd, int timeout_ms);
void procord_frame_writer_destroy(procord_frame_writer_t *w);

/*
 * Writes one frame whose body is `prefix` (may be empty) followed by `body`.
 * Returns 0, PROCORD_ETIMEOUT, or a negated errno (-EPIPE: the peer is gone).
 */
int procord_frame_writer_send_parts(procord_frame_writer_t *w, unsigned char kind,
                                    const void *prefix, size_t prefix_length, const void *body,
                                    size_t length);

/*
 * Writes a task's answer and, with `then_reusable`, the frame `0R` after it,
 * in the same write (one system call for both, when they fit). Returns 0,
 * 1 when the answer was written but not `0R` (the peer went away as soon as
 * it had its answer: a clean end), or an error as send_parts.
 */
int procord_frame_writer_send_answer(procord_frame_writer_t *w, unsigned char kind,
                                     const void *body, size_t length, int then_reusable);

/* Writes one frame with `body`. */
int procord_frame_writer_send(procord_frame_writer_t *w, unsigned char kind, const void *body,
                              size_t length);

/* ---- auth ---- */

/*
 * Shared-secret authentication (docs/PROTOCOL.md,
 * "Shared-secret authentication"). Four `A` frames, the client first:
 *
 *   client -> server  client nonce (32 random bytes)
 *   server -> client  server nonce (32 random bytes)
 *   client -> server  client proof: HMAC-SHA256(secret, "procord-auth-v1 client" || nonces)
 *   server -> client  server proof: HMAC-SHA256(secret, "procord-auth-v1 server" || nonces)
 *
 * with `nonces` the client nonce then the server nonce. The server answers
 * a wrong proof (or any other frame) with a `U` frame saying why, and
 * closes. Proofs are compared in constant time. The labels keep a proof of
 * one side from being replayed as the other's; fresh nonces keep a proof
 * from being replayed on another connection.
 */

#define PROCORD_AUTH_NONCE_LENGTH 32
#define PROCORD_AUTH_PROOF_LENGTH 32
/* An `A` frame whole: its header and a nonce or a proof. */
#define PROCORD_AUTH_FRAME_MAX (PROCORD_FRAME_HEADER_MAX + PROCORD_AUTH_PROOF_LENGTH)
/* The largest frame either side reads before authentication is done: room
   for an original client's task name, so that its `T` is recognised. */
#define PROCORD_AUTH_MAX_FRAME 4096

typedef enum procord_auth_side { PROCORD_AUTH_CLIENT, PROCORD_AUTH_SERVER } procord_auth_side_t;

typedef struct procord_auth_s {
  const unsigned char *secret; /* lent: a security object's, which outlives the exchange */
  size_t secret_length;
  procord_auth_side_t side;
  int step; /* frames received so far */
  unsigned char client_nonce[PROCORD_AUTH_NONCE_LENGTH];
  unsigned char server_nonce[PROCORD_AUTH_NONCE_LENGTH];
} procord_auth_t;

/* What a step produced. */
typedef enum procord_auth_result {
  PROCORD_AUTH_CONTINUE, /* send `reply` (an `A` frame), then wait for the next frame */
  PROCORD_AUTH_DONE,     /* authenticated; send `reply` first if its length is not 0 */
  PROCORD_AUTH_FAILED,   /* `*reason` says why; a server sends it as a `U` frame and closes */
} procord_auth_result_t;

/* Writes the `A` frame of `body` (a nonce or a proof, at most
   PROCORD_AUTH_PROOF_LENGTH bytes) into `frame`; returns its length. */
size_t procord_auth_frame(const unsigned char *body, size_t length,
                          unsigned char frame[PROCORD_AUTH_FRAME_MAX]);

/* Starts, with `secret` (lent for the whole exchange). A client gets its
   first frame's body in `reply` (32 bytes); returns -ENOMEM if no random
   bytes could be had. (io's procord_auth_start starts with a security
   object's secret.) */
int procord_auth_begin(procord_auth_t *auth, const unsigned char *secret, size_t secret_length,
                       procord_auth_side_t side, unsigned char reply[PROCORD_AUTH_NONCE_LENGTH]);

/*
 * Takes the peer's next frame. `reply` has room for 32 bytes and its
 * length goes in `*reply_length` (0: nothing to send). `*reason` is a
 * static English sentence when it fails.
 */
procord_auth_result_t procord_auth_step(procord_auth_t *auth, const procord_frame_t *frame,
                                        unsigned char reply[PROCORD_AUTH_PROOF_LENGTH],
                                        size_t *reply_length, const char **reason);

/* ---- control: between a worker server and its workers (control.c) ---- */

/* Frame kinds on the control channel. */
#define PROCORD_CONTROL_READY 'r'
#define PROCORD_CONTROL_DONE 'd'
/* The byte that carries a session's socket to a worker. */
#define PROCORD_CONTROL_CLIENT 'C'
/* From older servers (a drain): skipped by a worker, which ends a session
   when the server closes it. */
#define PROCORD_CONTROL_STOP 'S'
/* The largest control frame body: the last answer's kind and a task name. */
#define PROCORD_CONTROL_BODY_MAX 129

/* How long a worker's task asked to stop may take before the watchdog kills
   it; the server waits this, and a second more, for such a worker. */
#define PROCORD_WORKER_CANCEL_GRACE_MS 2000

/* Sends one control frame (a body of at most PROCORD_CONTROL_BODY_MAX
   bytes). Returns 0 or -errno. */
int procord_control_send(int control_fd, unsigned char kind, const void *body, size_t length);

/* Receives one session's socket, close-on-exec; returns it, PROCORD_ECLOSED
   when the server closed the channel, PROCORD_EILL_FORMED, or -errno. */
int procord_control_receive_session(int control_fd);

/* Passes `session_fd` to the worker at the other end of `control_fd`.
   Returns 0 or -errno. */
int procord_control_hand_over(int control_fd, int session_fd);

/* Serves one session handed over (closed by the caller after), and says
   what to report: the kind of its last answer (0: none) and its last
   task's name (room for `name_room` bytes and a NUL). */
typedef void (*procord_control_session_cb)(int session, void *context, unsigned char *last_answer,
                                           char *task_name, size_t name_room);

/* Says ready on `control_fd`, then serves each session handed over with
   `serve` and reports after each, until the server closes the channel
   (returns 0) or it fails (a negative error code). */
int procord_control_serve_sessions(int control_fd, procord_control_session_cb serve, void *context);

#endif
