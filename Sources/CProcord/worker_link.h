/*
 * Private to the C core: the link to one worker, a child process started
 * here or a connection to a worker server, with the frame connection over
 * it. A one-off delegation owns a link for its one task; a pool keeps links
 * and lends them to task after task.
 *
 * The link knows nothing of tasks: it starts the worker, carries frames,
 * and reports once, through on_ended, that nothing of the worker is left
 * (its stream closed and, for a child, the child reaped). Why it ended is
 * the first cause recorded: the connection's, or one the owner gave with
 * procord_link_fail.
 */
#ifndef PROCORD_WORKER_LINK_H
#define PROCORD_WORKER_LINK_H

#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include "procord/connect.h"
#include "procord/connection.h"
#include "procord/loop.h"
#include "procord/spawn.h"

typedef struct procord_link_s procord_link_t;

typedef struct procord_link_events_s {
  /* A remote link is connected: frames may be sent. (A local link is ready
     as soon as procord_link_start returns 0; this is not called for it.) */
  void (*on_ready)(procord_link_t *link, void *context);
  /* A frame from the worker, or a parse error (`frame` NULL); see
     procord_frame_cb. */
  void (*on_frame)(procord_link_t *link, const procord_frame_t *frame, int error, void *context);
  /* Nothing is left of the worker. Called once, on a loop turn of its own
     (never inside a procord_link_* call); the owner may free the link here. */
  void (*on_ended)(procord_link_t *link, void *context);
} procord_link_events_t;

typedef struct procord_link_options_s {
  const procord_spawn_options_t *worker; /* a local worker: how to start it */
  const char *remote_host;               /* or a worker server (copied) */
  int remote_port;
  int connect_timeout_ms;
  procord_security_t *security;          /* a worker server's: TLS, a secret (a reference is taken) */
  int idle_timeout_ms;
  size_t max_message_size;
  int exit_grace_ms; /* 0: 2000 ms */
  procord_link_events_t events;
  void *context;
} procord_link_options_t;

/* How the link ended, once on_ended has been called. */
typedef struct procord_link_end_s {
  int error;          /* the first cause recorded; 0 if the stream ended only because the
                         owner closed it (an owner's reader takes 0 as the end of stream) */
  const char *call;
  const char *detail;
  int exit_code;      /* the child's exit code, or -1 */
  int signal;         /* the signal that ended the child, or 0 */
  int killed_after_grace;
} procord_link_end_t;

struct procord_link_s {
  procord_loop_t *loop;
  procord_link_events_t events;
  void *context;
  int remote;
  char *host;
  int port;
  int connect_timeout_ms;
  struct timespec connect_start; /* the connect limit covers the handshake too */
  procord_security_t *security;
  int idle_timeout_ms;
  size_t max_message_size;
  int exit_grace_ms;

  procord_child_t child;
  pid_t pid;               /* as spawned (-1 for none); child.pid is -1 once reaped */
  int spawn_error;
  procord_connect_t *attempt;
  procord_connection_t *connection;
  struct event *exit_event;  /* pidfd readable, or the reap poll */
  struct event *grace_timer;
  struct event *end_event;   /* calls on_ended on a turn of its own */
  int reaped;
  int wait_status;
  int status_known;  /* reaped by us: wait_status is real (not when the host reaped it) */
  int ended;
  procord_link_end_t end;
};

/*
 * Makes a link; for a local worker, starts the child now, on the calling
 * thread (a spawn error is kept and reported by procord_link_start).
 * Returns NULL when out of memory.
 */
procord_link_t *procord_link_new(procord_loop_t *loop, const procord_link_options_t *options);

/*
 * On the loop's thread: watches the child and opens its connection, or
 * starts connecting to the server. Returns 0, or the error that ended the
 * link at once (a spawn error, out of memory; recorded in `end`, the child
 * killed and reaped, on_ended never called): the owner frees the link.
 */
int procord_link_start(procord_link_t *link);

/* True when frames may be sent. */
int procord_link_ready(const procord_link_t *link);

/* See procord_connection_send and procord_connection_send_owned_by. */
int procord_link_send(procord_link_t *link, unsigned char kind, const void *body, size_t length);
/* See procord_connection_send_owned_by. */
int procord_link_send_owned_by(procord_link_t *link, unsigned char kind, const void *body, size_t length,
                               procord_body_owner_t *owner);
void *procord_link_take_body(procord_link_t *link);
void procord_link_cork(procord_link_t *link, int corked);

/* Records why the link ends, unless a cause is recorded already. */
void procord_link_fail(procord_link_t *link, int error, const char *call);

/* Closes the stream (a worker that sent `0R` then exits); the child has the
   grace period to exit before it is killed. */
void procord_link_close(procord_link_t *link);

/* Sends `signal` to the child's process group (a remote link is closed
   instead); with `close_stream`, also closes the stream at once. */
void procord_link_kill(procord_link_t *link, int signal, int close_stream);

/* Starts the grace period: if the worker has neither closed its stream nor
   exited when it runs out, the child is killed (SIGKILL) and the stream
   closed. */
void procord_link_start_grace(procord_link_t *link);
void procord_link_cancel_grace(procord_link_t *link);

/* The child's resident memory in bytes, or 0 if unknown (remote, gone). */
size_t procord_link_resident_bytes(const procord_link_t *link);

/* Frees the link: only once it has ended, or after procord_link_start failed,
   or before it was started (a spawned child is then killed and reaped). */
void procord_link_free(procord_link_t *link);

#endif
