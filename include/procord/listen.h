/*
 * procord/listen.h: listening for peers over TCP, for a C program that
 * serves connections of its own with procord/connection.h. (A worker server,
 * procord/server.h, does all of this already: use this for something else.)
 *
 * A listener accepts on a loop and hands each accepted socket to a callback,
 * which usually opens a procord_connection_t over it. Like connections,
 * listeners are used on their loop's thread.
 */
#ifndef PROCORD_LISTEN_H
#define PROCORD_LISTEN_H

#include <stddef.h>
#include <sys/socket.h>

#include "procord/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct procord_listener_s procord_listener_t;

/*
 * Writes `address` as numeric `host:port` (`[host]:port` for IPv6) into
 * `out` of `size` bytes (64 is enough), or "?" if it cannot be read. This is
 * how listeners give a peer's address, and how the server's log names peers.
 */
void procord_address_string(const struct sockaddr *address, socklen_t length, char *out,
                            size_t size);

/*
 * Called on the loop's thread with each accepted connection: `fd` is
 * non-blocking, close-on-exec, with TCP_NODELAY, and owned by the callee
 * (procord_connection_open takes it); `peer` is the peer's address as text
 * ("127.0.0.1:51234", "[::1]:51234"), valid during the call only.
 */
typedef void (*procord_accept_cb)(procord_listener_t *listener, int fd, const char *peer,
                                  void *context);

typedef struct procord_listener_options_s {
  /* The size of this struct as the calling program was built with: set by
     procord_listener_options_init; 0 means the layout of this first
     release. A size larger than this library's struct, with a byte beyond
     it that is not 0 (a program built against a newer Procord than it runs
     with), is refused with PROCORD_EINVAL. */
  size_t size;
  /* An address or name to bind; NULL: "127.0.0.1" (never exposed by accident). */
  const char *hostname;
  int port;          /* 0: one the system picks (procord_listener_port says which) */
  int reuse_address; /* SO_REUSEADDR */
  /* A listening socket to take over (the listener owns it from the call on,
     and closes it if the call fails); 0 or -1: bind one. */
  int listen_fd;
  procord_accept_cb on_accept; /* required */
  void *context;
} procord_listener_options_t;

/*
 * Sets every field of `options` to its default (0, NULL: see each field)
 * and `size` to this struct's size. Call it first, then set the fields you
 * need: a field added in a later version then gets its default even in a
 * program built before it.
 */
void procord_listener_options_init(procord_listener_options_t *options);

/*
 * Binds and listens (or takes over listen_fd) and starts accepting on
 * `loop`. When the process runs out of descriptors it stops accepting for
 * 100 ms rather than spin. On the loop's thread (or before the loop runs).
 * Stores the listener in `*listener` (freed by procord_listener_close).
 * Returns 0, PROCORD_EINVAL, PROCORD_ERESOLVE for a host name that does not
 * resolve, a negated errno of socket, bind or listen (-EADDRINUSE), or -ENOMEM.
 */
int procord_listen(procord_loop_t *loop, const procord_listener_options_t *options,
                   procord_listener_t **listener);

/* Returns the port the listener is bound to, or -1 if it cannot be read. */
int procord_listener_port(const procord_listener_t *listener);

/*
 * Stops (`paused` non-zero) or resumes accepting; connections wait in the
 * system's queue meanwhile. On the loop's thread.
 */
void procord_listener_pause(procord_listener_t *listener, int paused);

/* Closes the listening socket and frees the listener; on_accept is not
   called after this. On the loop's thread; safe inside on_accept. */
void procord_listener_close(procord_listener_t *listener);

/*
 * The lower level: stores in `*fd` a non-blocking, close-on-exec TCP socket
 * bound to `hostname` (NULL: "127.0.0.1") and `port`, listening; the caller
 * owns it. Returns 0, PROCORD_EINVAL for a port outside 0..65535,
 * PROCORD_ERESOLVE, or a negated errno.
 */
int procord_listen_socket(const char *hostname, int port, int reuse_address, int *fd);

#ifdef __cplusplus
}
#endif

#endif
