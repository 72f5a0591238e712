/*
 * Private to the C core: a connection's insides, shared by connection.c
 * (frames over a descriptor) and connection_secure.c (TLS under the
 * frames, and shared-secret authentication before them).
 */
#ifndef PROCORD_CONNECTION_PRIVATE_H
#define PROCORD_CONNECTION_PRIVATE_H

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "auth_private.h"
#include "frame_private.h"
#include "procord/connection.h"
#include "procord/security.h"

struct procord_connection_s {
  procord_connection_options_t options;
  procord_loop_t *loop;
  procord_connection_state_t state;
  procord_cause_t cause;
  const char *detail; /* static: more about the cause, or NULL */
  procord_frame_parser_t parser;
  struct evbuffer *output;
  struct event *read_event, *write_event, *close_timer;
  struct event *watch_timer; /* connect timeout, then idle timeout */
  int in_callback;   /* depth of callbacks running, so free can be deferred */
  int corked;        /* depth of procord_connection_cork: sends queue without writing */
  int free_requested;
  int reading_stopped;
  int write_failed;  /* the peer stopped reading: output is dropped from now on */
  int delivering;    /* a frame is being delivered: its body may be taken */
  /* Security (connection_secure.c). While `securing`, the state is
     CONNECTING: the owner's frames wait in `output`, and only the
     handshake's own frames (in `urgent`) are written. */
  procord_security_t *security;
  int securing;
  struct bufferevent *tls;  /* with TLS, every byte goes through it (read_event and write_event stay off) */
  struct evbuffer *urgent;  /* authentication frames, written before `output` */
  procord_auth_t auth;
  char *peer_name;          /* for the server's certificate check */
  /* A server's hold on a client (procord_connection_pause_reading,
     procord_connection_set_hooks). */
  int paused;
  struct evbuffer *stash; /* bytes read past the frame that paused reading */
  void (*on_input)(procord_connection_t *c, size_t count, void *context);
  void (*on_drained)(procord_connection_t *c, void *context);
};

/*
 * While paused, delivers no frame: what comes is kept (what was read past
 * the frame being delivered too), up to 16 KiB, then reading stops; the
 * peer's end or a failed write still disconnects. Unpaused, frames resume
 * from the loop, never inside this call. A server holds a client's next
 * task this way while the one before runs (one task per connection at a
 * time), and a worker's output while its client is slow.
 */
void procord_connection_pause_reading(procord_connection_t *c, int paused);

/*
 * Optional hooks for a server's accounting: `on_input` after each read of
 * `count` bytes from the peer (before they are parsed), `on_drained` when a
 * write from the loop has emptied the queue (never inside a send: check
 * procord_connection_pending_output after it). Either may be NULL. Both may
 * close or free the connection.
 */
void procord_connection_set_hooks(procord_connection_t *c,
                                  void (*on_input)(procord_connection_t *c, size_t count, void *context),
                                  void (*on_drained)(procord_connection_t *c, void *context));

/* Closes at once like procord_connection_close, but a socket is reset
   (SO_LINGER 0) rather than shut down in order: the peer learns it at once
   even when it is not reading (a worker busy with a task, with tasks sent
   ahead unread in its socket, would never see an orderly end). */
void procord_connection_abort(procord_connection_t *c);

/* Closes the descriptors and reports DISCONNECTED once; returns 0 if the
   connection was freed in the owner's callback. */
int procord_connection_disconnect(procord_connection_t *c, int error, const char *call,
                                  const char *detail);

/* The peer was heard from (it sent, or took some of ours): the idle
   timeout starts again. */
void procord_connection_heard(procord_connection_t *c);

/* Reports CONNECTED and writes what waits; returns 0 if the connection was
   freed or closed in the owner's callback. */
int procord_connection_become_connected(procord_connection_t *c);

/* Reads what the descriptor or the TLS layer has, delivering frames. */
void procord_connection_receive(procord_connection_t *c);

/* Writes what is queued; returns 0 if the connection was freed or closed. */
int procord_connection_flush(procord_connection_t *c);

/* connection_secure.c: */

/* Sets up TLS over the connection's socket (the handshake starts at once). */
int procord_connection_start_tls(procord_connection_t *c);

/* Starts authentication: sends the client's first `A` frame. */
int procord_connection_start_auth(procord_connection_t *c);

/* A frame (or parse error) received while securing; returns 0 if the
   connection was freed or disconnected. */
int procord_connection_secure_frame(procord_connection_t *c, const procord_frame_t *frame, int error);

/* TLS: moves what is queued to the TLS layer, returning what it still holds. */
size_t procord_connection_tls_write(procord_connection_t *c, struct evbuffer *queue);

/* TLS: bytes the TLS layer has not written yet. */
size_t procord_connection_tls_pending(const procord_connection_t *c);

/* TLS: takes up to `size` decrypted bytes; 0 when there are none now. */
size_t procord_connection_tls_read(procord_connection_t *c, void *buffer, size_t size);

/* Frees the TLS layer, which closes the socket. */
void procord_connection_tls_free(procord_connection_t *c);

#endif
