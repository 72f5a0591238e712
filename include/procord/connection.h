/*
 * procord/connection.h: a buffered, non-blocking frame connection.
 *
 * One connection type serves every transport: a pipe pair (separate read and
 * write descriptors), a socketpair end or a TCP socket (one descriptor for
 * both). It reads frames with the parser of procord/frame.h, straight into
 * each body's final buffer, and queues outgoing frames, writing them as the
 * descriptor becomes writable. It lives on a procord loop and every function
 * here must be called on that loop's thread.
 */
#ifndef PROCORD_CONNECTION_H
#define PROCORD_CONNECTION_H

#include <stddef.h>

#include "procord/frame.h"
#include "procord/loop.h"
#include "procord/security.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct procord_connection_s procord_connection_t;

typedef enum procord_connection_state {
  PROCORD_CONNECTING,    /* a non-blocking connect(2) is in progress */
  PROCORD_CONNECTED,     /* frames flow both ways */
  PROCORD_DISCONNECTING, /* close_nicely: flushing what is queued, reading no more */
  PROCORD_DISCONNECTED,  /* descriptors closed; see procord_connection_cause */
} procord_connection_state_t;

/*
 * Why a connection is disconnected. `error` is 0 after a requested close, a
 * negated errno with `call` naming the system call that failed ("read",
 * "write", "connect"), PROCORD_EDISCONNECTED when the peer closed its end
 * (call "read"), PROCORD_ETIMEOUT when close_nicely ran out of time (call
 * "close") or a connect or idle timeout passed (call "connect" or "idle"),
 * or a protocol error code (call "parse").
 */
typedef struct procord_cause_s {
  int error;
  const char *call; /* static string, or NULL */
} procord_cause_t;

/*
 * Called with each complete frame (`error` 0), or once with a protocol error
 * from the parser (`frame` NULL, `error` PROCORD_ETOO_LONG, PROCORD_EILL_FORMED
 * or -ENOMEM), after which the connection reads no more: the owner decides
 * whether to answer with an `E` frame and close nicely. The frame's body is
 * valid during the call only, unless taken with procord_connection_take_body.
 */
typedef void (*procord_frame_cb)(procord_connection_t *connection, const procord_frame_t *frame,
                                 int error, void *context);

/* Called when the state changes (to CONNECTED after a connect, or DISCONNECTED). */
typedef void (*procord_state_cb)(procord_connection_t *connection, procord_connection_state_t state,
                                 void *context);

typedef struct procord_connection_options_s {
  /* The size of this struct as the calling program was built with: set by
     procord_connection_options_init; 0 means the layout of this first
     release. A size larger than this library's struct, with a byte beyond
     it that is not 0 (a program built against a newer Procord than it runs
     with), is refused with PROCORD_EINVAL. */
  size_t size;
  int read_fd;             /* the descriptor frames are read from */
  int write_fd;            /* the descriptor frames are written to (may equal read_fd) */
  int connecting;          /* non-zero: read_fd is a socket with a connect(2) in progress */
  size_t max_message_size; /* 0: procord_default_max_message_size() */
  /* With `connecting`: how long the connect may take before the connection
     is DISCONNECTED with PROCORD_ETIMEOUT, call "connect". 0: no limit. */
  int connect_timeout_ms;
  /* Once connected: how long the peer may stay silent (no byte read from
     it, and none of ours taken by it) before the connection is DISCONNECTED
     with PROCORD_ETIMEOUT, call "idle". 0: no limit. */
  int idle_timeout_ms;
  procord_frame_cb on_frame;
  procord_state_cb on_state;
  void *context; /* passed to both callbacks */
  /* Optional, a client's security (procord/security.h; a reference is
     taken): on a connected socket, TLS and/or authentication run first,
     with the state CONNECTING, bounded by connect_timeout_ms; frames sent
     meanwhile wait. Failing, the connection is DISCONNECTED with
     PROCORD_ETLS (call "tls") or PROCORD_EAUTH (call "authenticate"), and
     procord_connection_detail says why. */
  procord_security_t *security;
  /* The host connected to: the name the server's certificate must carry
     (unless the security names one). Copied. */
  const char *peer_name;
} procord_connection_options_t;

/*
 * Sets every field of `options` to its default (0, NULL: see each field)
 * and `size` to this struct's size. Call it first, then set the fields you
 * need: a field added in a later version then gets its default even in a
 * program built before it.
 */
void procord_connection_options_init(procord_connection_options_t *options);

/*
 * Opens a connection on `loop` over the options' descriptors, which it takes
 * over: it makes them non-blocking and closes them when it disconnects (also
 * on failure here). Stores the connection in `*connection`; the caller frees
 * it with procord_connection_free. Returns 0, PROCORD_EINVAL (a descriptor
 * below 0, no on_frame, or a `size` refused), or another negative error
 * code (-ENOMEM).
 */
int procord_connection_open(procord_loop_t *loop, const procord_connection_options_t *options,
                            procord_connection_t **connection);

/*
 * Queues one frame (header and a copy of the body) and starts writing it.
 * Returns 0, PROCORD_ECLOSED if the connection is disconnecting or
 * disconnected, or -ENOMEM. No callback runs inside this call. A write error
 * never shows up here: once the peer has stopped reading, frames are dropped
 * and the connection reads on to the end of the stream (the peer may have
 * sent an `E` frame saying why), then disconnects; if it was not reading any
 * more, it disconnects with the write error as the cause.
 */
int procord_connection_send(procord_connection_t *connection, unsigned char kind, const void *body,
                            size_t length);

/*
 * Like procord_connection_send, but without copying the body: the connection
 * owns `body` from this call on and calls `release(body)` once it is written
 * or dropped (also when this call fails). Returns what
 * procord_connection_send returns.
 */
int procord_connection_send_owned(procord_connection_t *connection, unsigned char kind, void *body,
                                  size_t length, void (*release)(void *body));

/*
 * What the body of a frame sent with procord_connection_send_owned_by
 * belongs to. Embed it in the owner (typically first) and set `release`.
 */
typedef struct procord_body_owner_s procord_body_owner_t;
struct procord_body_owner_s {
  void (*release)(procord_body_owner_t *owner);
};

/*
 * Like procord_connection_send, without copying the body, which belongs to
 * `owner`: the connection calls owner->release(owner) once the body is
 * written or dropped (also when this call fails), and until then the body
 * must stay valid and unchanged. The same owner may lend bodies to several
 * frames and connections, counting its references itself. Returns what
 * procord_connection_send returns.
 */
int procord_connection_send_owned_by(procord_connection_t *connection, unsigned char kind,
                                     const void *body, size_t length, procord_body_owner_t *owner);

/*
 * While corked (`corked` non-zero), sends only queue their frames; uncorking
 * writes everything queued at once, in one system call when it fits. For
 * frames that go together (a task's `T` and `V`, several tasks at once).
 * Corks nest: each cork (non-zero) needs its uncork (0), and only the last
 * uncork writes.
 */
void procord_connection_cork(procord_connection_t *connection, int corked);

/*
 * Takes ownership of the body of the frame being delivered to on_frame.
 * Returns it (the caller gives it back with procord_free, procord/memory.h:
 * free() does the same unless the program set an allocator), or NULL
 * outside on_frame.
 */
void *procord_connection_take_body(procord_connection_t *connection);

/*
 * Stops reading, writes what is queued, then closes: the state goes to
 * DISCONNECTING, then DISCONNECTED with cause 0, or with PROCORD_ETIMEOUT if
 * the queue is not written within `timeout_ms` milliseconds (negative: no
 * limit).
 */
void procord_connection_close_nicely(procord_connection_t *connection, int timeout_ms);

/* Closes at once, dropping what is queued. The state goes to DISCONNECTED, cause 0. */
void procord_connection_close(procord_connection_t *connection);

/* Returns the connection's state now. */
procord_connection_state_t procord_connection_state(const procord_connection_t *connection);

/* Returns why the connection is DISCONNECTED (all zero before that); `call`
   is a static string. */
procord_cause_t procord_connection_cause(const procord_connection_t *connection);

/* Returns a static English sentence with more about why the connection is
   DISCONNECTED (a TLS or authentication failure's reason), or NULL. */
const char *procord_connection_detail(const procord_connection_t *connection);

/* Returns how many bytes are queued and not written yet. */
size_t procord_connection_pending_output(const procord_connection_t *connection);

/*
 * Closes the connection if needed and frees it. Safe inside the connection's
 * own callbacks (the memory is released when the callback returns). No
 * callback is called after this.
 */
void procord_connection_free(procord_connection_t *connection);

#ifdef __cplusplus
}
#endif

#endif
