/*
 * Private to the C core: a server's security, in the server process.
 *
 * The gate (server_gate.c) takes each accepted connection through TLS and
 * shared-secret authentication before the server sees it as a client:
 * a peer that fails is answered (when the protocol lets it be), logged,
 * and closed, and never reaches a worker process. The relay
 * (server_relay.c) then carries a TLS client's plaintext to and from the
 * server's own reading of clients (server_clients.c) over a socketpair, so
 * that this reading is the same for every client, and workers never hold a
 * TLS session or the server's private key.
 */
#ifndef PROCORD_SERVER_SECURE_H
#define PROCORD_SERVER_SECURE_H

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "procord/security.h"

typedef struct procord_gate_s procord_gate_t;

/*
 * How a gate ended. Passed: `tls` is the client's TLS connection (now the
 * callee's), or, without TLS, `fd` is its authenticated socket (the
 * callee's). Refused: `reason` says why (static), `fd` is -1 and `tls`
 * NULL; the connection has been closed, after the peer was told why when
 * the protocol allows (a `U` frame), and given a moment to read it.
 */
typedef struct procord_gate_result_s {
  int passed;
  int fd;
  struct bufferevent *tls;
  const char *reason;
  int tls_failed; /* refused by the TLS handshake: `reason` is OpenSSL's */
  int peer_left;  /* not a refusal: the peer went away (a port check, say) */
} procord_gate_result_t;

typedef void (*procord_gate_done_fn)(procord_gate_t *gate, const procord_gate_result_t *result,
                                     void *context);

/*
 * Starts securing the accepted socket `fd` (the gate owns it) within
 * `timeout_ms`. `done` is called once, from the loop, never inside this
 * call, and the gate is freed when it returns. Returns the gate, or NULL
 * when out of memory (the socket is then closed).
 */
procord_gate_t *procord_gate_start(struct event_base *base, procord_security_t *security, int fd,
                                   int timeout_ms, procord_gate_done_fn done, void *context);

/* Closes a gate at once; `done` is never called. */
void procord_gate_abort(procord_gate_t *gate);

typedef struct procord_relay_s procord_relay_t;

/* Called once when the relay is done (its client gone, or the server's side done and
   the rest given to the client or given up on) and has freed itself. */
typedef void (*procord_relay_done_fn)(procord_relay_t *relay, void *context);

/*
 * Starts relaying between the TLS connection `tls` (taken) and a new
 * socketpair, whose other end, blocking and close-on-exec, goes in
 * `*inner_fd` for the server's own reading of the client. When the client goes (an end, an error, a reset), that end is shut down
 * both ways at once, whatever is still queued either way, and the relay
 * ends (the server sees the client gone, as for a plain client); when the
 * server's side closes its end, what is left goes to the client and the
 * TLS connection is closed.
 * Returns NULL (and frees `tls`) when out of descriptors or memory.
 */
procord_relay_t *procord_relay_start(struct bufferevent *tls, int *inner_fd,
                                     procord_relay_done_fn done, void *context);

/* Ends a relay at once (a drain timeout, a server that stops); `done` is not called. */
void procord_relay_free(procord_relay_t *relay);

#endif
