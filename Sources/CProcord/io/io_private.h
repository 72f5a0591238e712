/*
 * Private to the C core: io/, descriptors on a loop: the loop (loop.c;
 * loop_backend.c for a polled one), security objects (security.c), the TLS
 * transport (tls_transport.c), connections (connection.c), lineage
 * (lineage.c), spawn (spawn.c), listening (listen.c) and socket helpers
 * (net.c); connect.c's API is public (procord/connect.h).
 * The one header of this folder that others include (docs/ARCHITECTURE.md).
 */
#ifndef PROCORD_IO_PRIVATE_H
#define PROCORD_IO_PRIVATE_H

#include "wire/wire_private.h"
#include "procord/connection.h"
#include "procord/listen.h"
#include "procord/loop.h"
#include "procord/security.h"
#include "procord/spawn.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/types.h>

/* ---- loop ---- */

/* What connections and delegations need of a loop. */

struct event;
struct event_base;

/* The loop's libevent base; use it on the loop's thread only. */
struct event_base *procord_loop_base(procord_loop_t *loop);

/*
 * The name resolver kept on a loop (its owner creates it on first use, on
 * the loop's thread); `free_resolver` is called by procord_loop_free,
 * before the base is freed. NULL until set.
 */
void *procord_loop_resolver(procord_loop_t *loop);
void procord_loop_set_resolver(procord_loop_t *loop, void *resolver, void (*free_resolver)(void *));

/*
 * The lock and condition that guard "finished" flags of the loop's
 * delegations, so that other threads can wait on them.
 */
pthread_mutex_t *procord_loop_done_lock(procord_loop_t *loop);
pthread_cond_t *procord_loop_done_cond(procord_loop_t *loop);

/*
 * Waits on the done condition until `holds(argument)`, called with the done
 * lock held, returns true, or `timeout_ms` milliseconds have passed
 * (negative: no limit). Returns the last answer of `holds`; on the loop's
 * own thread, where nothing could change meanwhile, a wait with a time
 * other than 0 is refused: -EDEADLK. Whatever
 * `holds` looks at must change under the done lock, followed by a
 * broadcast of the done condition.
 */
int procord_loop_wait_until(procord_loop_t *loop, int (*holds)(void *argument), void *argument,
                            int timeout_ms);

/*
 * Work in progress on a loop (a delegation, later a server): procord_loop_free
 * calls each item's abort function on the loop's thread, then keeps running
 * until every item has been removed. Add and remove on the loop's thread.
 */
typedef struct procord_loop_work_s {
  void (*abort)(struct procord_loop_work_s *work);
  procord_list_t node; /* in the loop's work while added */
} procord_loop_work_t;

/*
 * An event that fires once the child behind `pidfd` has exited: the pidfd
 * becoming readable, or, where pidfd_open is missing (Linux before 5.3), a
 * look every 100 ms. Persistent: the callback reaps and frees it. NULL when
 * out of memory.
 */
struct event *procord_loop_watch_child(procord_loop_t *loop, int pidfd,
                                       void (*callback)(int, short, void *), void *argument);

/*
 * A call queued on a loop without allocating (procord_loop_call allocates
 * one for each of its calls): the node lives in what queues it (a pool, a
 * waiting caller's stack), zeroed at first, and is not queued again nor
 * freed before its function has started. Then it may be: the loop reads
 * nothing of it after.
 */
typedef struct procord_queued_call_s {
  procord_loop_fn fn;
  void *argument;
  procord_list_t node; /* in the loop's queue until it runs */
  int allocated;       /* procord_loop_call's own: freed once run */
} procord_queued_call_t;

/* Queues fn(argument) to run on the loop's thread, in `call`. Cannot fail. */
void procord_loop_queue(procord_loop_t *loop, procord_queued_call_t *call, procord_loop_fn fn,
                        void *argument);

/*
 * Runs `fn(argument)` on the loop's thread and waits for it to return; runs
 * it at once on the calling thread when that is the loop's, or when the
 * loop is not running anywhere (it would never come). Cannot fail: the
 * queued call is on the caller's stack.
 */
void procord_loop_call_and_wait(procord_loop_t *loop, procord_loop_fn fn, void *argument);

/* A polled loop's backend (loop_backend.c). */
struct event_config;
/* Asks libevent for its epoll backend, the only one that nests. */
void procord_backend_configure(struct event_config *config);
/* Opens the descriptor a host polls: an epoll instance holding the base's
   (the one that watches `marker_fd`). 0, PROCORD_EINVAL (not epoll) or -errno. */
int procord_backend_open(struct event_base *base, int marker_fd, int *backend_fd);
/* Milliseconds until the base's next timer (0: something is due or
   active already; -1: no timer). */
int procord_backend_timeout(struct event_base *base);

void procord_loop_add_work(procord_loop_t *loop, procord_loop_work_t *work);
void procord_loop_remove_work(procord_loop_t *loop, procord_loop_work_t *work);

/* ---- security ---- */

/* What connections and servers need of a procord_security_t. */

struct procord_security_s {
  int references;
  procord_security_role_t role;
  SSL_CTX *tls;         /* NULL: no TLS */
  char *server_name;    /* a client's fixed name for the server's certificate, or NULL */
  size_t secret_length; /* 0: no secret */
  unsigned char secret[PROCORD_SECRET_MAX_LENGTH];
};

/*
 * A new SSL object for one connection. A client's checks the server's
 * certificate against `host` (a DNS name or an IP literal) unless the
 * security names the server itself, and sends it as SNI when it is a name.
 * NULL when out of memory.
 */
SSL *procord_security_new_ssl(const procord_security_t *security, const char *host);

/*
 * Why the TLS connection `tls` (a bufferevent_openssl) failed, as a static
 * English string: the certificate check's verdict if it failed, else the
 * first error OpenSSL reported during its I/O, else NULL (a plain socket
 * error). The errors it kept are emptied.
 */
const char *procord_tls_failure(struct bufferevent *tls);

/* Sends close_notify on `tls` if it is a TLS bufferevent, best effort (the
   socket may not take it now), and empties this thread's OpenSSL errors.
   Returns 0 for a plain bufferevent. */
int procord_tls_goodbye(struct bufferevent *tls);

/* procord_auth_begin with the secret of `security` (a security object with
   a secret; it outlives the exchange). */
int procord_auth_start(procord_auth_t *auth, const procord_security_t *security,
                       procord_auth_side_t side, unsigned char reply[PROCORD_AUTH_NONCE_LENGTH]);

/* ---- TLS transport ---- */

/*
 * TLS under a connection's frames (tls_transport.c): the bytes of a
 * connection that uses TLS go through it, both ways. It knows nothing of
 * connections: the one that drives it gives it bytes, takes what it
 * decrypted, and acts on what it reports.
 */

typedef enum {
  PROCORD_TLS_SECURED,  /* the handshake is done: the peer is who it should be */
  PROCORD_TLS_READABLE, /* decrypted bytes wait: procord_tls_transport_read */
  PROCORD_TLS_WRITTEN,  /* the layer wrote down to its low watermark (see pending) */
  PROCORD_TLS_ENDED,    /* the peer closed the connection */
  PROCORD_TLS_FAILED,   /* see error, stage and detail */
} procord_tls_report_kind_t;

typedef struct {
  procord_tls_report_kind_t kind;
  /* PROCORD_TLS_FAILED: PROCORD_ETLS at PROCORD_STAGE_TLS with why (static
     English) in detail, or a negated errno (PROCORD_EDISCONNECTED when
     none) at PROCORD_STAGE_READ or _WRITE and no detail. */
  int error;
  procord_stage_t stage;
  const char *detail;
} procord_tls_report_t;

typedef struct {
  struct bufferevent *layer; /* NULL: not started, or closed */
  void (*on_report)(void *owner, const procord_tls_report_t *report);
  void *owner;
} procord_tls_transport_t;

/*
 * Starts the client's handshake over the socket `fd` (zeroed `t`), the
 * server's certificate checked against `peer_name` (procord_security_new_ssl).
 * From here the transport owns the socket; closing it closes the socket.
 * `on_report` is called from the loop; it may close the transport. 0 or
 * -ENOMEM.
 */
int procord_tls_transport_start(procord_tls_transport_t *t, struct event_base *base, int fd,
                                const procord_security_t *security, const char *peer_name,
                                void (*on_report)(void *owner, const procord_tls_report_t *report),
                                void *owner);

/* Whether it was started and not closed. */
int procord_tls_transport_running(const procord_tls_transport_t *t);

/* Reads from the socket, or stops (its input waits in the kernel); nothing
   when not running. */
void procord_tls_transport_set_reading(procord_tls_transport_t *t, int reading);

/* Takes up to `size` decrypted bytes; 0 when there are none now. */
size_t procord_tls_transport_read(procord_tls_transport_t *t, void *buffer, size_t size);

/* Queues `length` bytes to encrypt and send; 0 or -ENOMEM. */
int procord_tls_transport_write(procord_tls_transport_t *t, const void *bytes, size_t length);

/* Moves all of `queue` into the layer; returns how many bytes it holds unsent. */
size_t procord_tls_transport_write_queue(procord_tls_transport_t *t, struct evbuffer *queue);

/* Bytes the layer has not sent yet; 0 when not running. */
size_t procord_tls_transport_pending(const procord_tls_transport_t *t);

/* Sends close_notify, best effort (procord_tls_goodbye); returns 0 when not
   running (nothing sent). */
int procord_tls_transport_say_goodbye(procord_tls_transport_t *t);

/* Frees the layer, which closes the socket; returns 0 if it was not running
   (the socket is the caller's still). */
int procord_tls_transport_close(procord_tls_transport_t *t);

/* ---- connection ---- */

/*
 * A connection's insides (connection.c: frames over
 * a descriptor, or over TLS through tls_transport.c, and the shared-secret
 * exchange before the owner's frames).
 */

struct procord_connection_s {
  procord_connection_options_t options;
  procord_loop_t *loop;
  procord_connection_state_t state; /* only moves forward: CONNECTING .. DISCONNECTED */
  procord_cause_t cause;
  procord_stage_t stage; /* the cause's, its call's stage (procord_connection_stage) */
  const char *detail;    /* static: more about the cause, or NULL */
  procord_frame_parser_t parser;
  struct evbuffer *output;
  struct event *read_event, *write_event, *close_timer;
  struct event *watch_timer; /* connect timeout, then idle timeout */
  int in_callback;           /* depth of callbacks running, so free can be deferred */
  int corked;                /* depth of procord_connection_cork: sends queue without writing */
  int free_requested;
  int reading_stopped;
  int write_failed; /* the peer stopped reading: output is dropped from now on */
  int delivering;   /* a frame is being delivered: its body may be taken */
  /* Security. While `securing`, the state is CONNECTING: the owner's frames
     wait in `output`, and only the handshake's own frames (in `urgent`, or
     written to the TLS layer) are written. */
  procord_security_t *security;
  int securing;
  procord_tls_transport_t
      tls; /* running: every byte goes through it (read_event and write_event stay off) */
  struct evbuffer *urgent; /* authentication frames, written before `output` */
  procord_auth_t auth;
  char *peer_name; /* for the server's certificate check */
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
                                  void (*on_input)(procord_connection_t *c, size_t count,
                                                   void *context),
                                  void (*on_drained)(procord_connection_t *c, void *context));

/* Closes at once like procord_connection_close, but a socket is reset
   (SO_LINGER 0) rather than shut down in order: the peer learns it at once
   even when it is not reading (a worker busy with a task, with tasks sent
   ahead unread in its socket, would never see an orderly end). */
void procord_connection_abort(procord_connection_t *c);

/* The stage of procord_connection_cause: where the connection failed
   (PROCORD_STAGE_NONE before, or after a close the owner asked for). */
procord_stage_t procord_connection_stage(const procord_connection_t *c);

/* ---- listen ---- */

/*
 * What a listener's owner inside the core may ask beyond procord/listen.h's
 * (a worker server's): either may be NULL.
 */
typedef struct procord_listener_hooks_s {
  /* Before on_accept, with the peer's address: 0 closes the connection
     unseen (a server's accept_filter). */
  int (*admit)(void *context, const struct sockaddr *peer, socklen_t length);
  /* accept failed for want of descriptors or memory (`error`, an errno
     value): accepting stops for `retry_ms`, then goes on. */
  void (*out_of_descriptors)(void *context, int error, int retry_ms);
} procord_listener_hooks_t;

/*
 * Starts accepting on `fd`, a listening socket (taken: closed on failure
 * too; made non-blocking and close-on-exec), on the loop's thread. What
 * procord_listen does once it has its socket; with `hooks` (copied; NULL:
 * none). Returns 0 or -ENOMEM.
 */
int procord_listener_start(procord_loop_t *loop, int fd, procord_accept_cb on_accept,
                           const procord_listener_hooks_t *hooks, void *context,
                           procord_listener_t **listener);

/* ---- net: socket helpers (net.c; procord_address_string and
   procord_listen_socket are public, in procord/listen.h) ---- */

struct sockaddr_storage;

/* The port of an IPv4 or IPv6 address, or -1 (a Unix socket's, say). */
int procord_address_port(const struct sockaddr_storage *address);

/* Whether the address is this machine's own (127.0.0.0/8, ::1, or a v4-mapped
   127.x); anything not IP (a Unix socket) counts as not the network: 1. */
int procord_address_is_loopback(const struct sockaddr_storage *address);

/* Sets TCP_NODELAY (frames go out as they are written); harmless on a socket
   that is not TCP. */
void procord_socket_set_nodelay(int fd);

/* ---- lineage ---- */

/*
 * Where this process stands in a chain of delegations (lineage.c).
 *
 * procord_spawn gives every worker PROCORD_LINEAGE="DEPTH PARENT CHANNEL":
 * how many workers deep it is (1 for a main program's worker), the pid of
 * the Procord process that started it (0 for a program of its own) and its
 * protocol channel. From that a process knows:
 * - whether it was started as a worker (its parent is that pid): such a
 *   process that delegates before it serves forgot its worker entry point,
 *   and would start copies of itself without end (its main program is told
 *   so with a `U` frame on the channel);
 * - how deep it is, so that even genuinely recursive tasks stop at
 *   PROCORD_MAX_DELEGATION_DEPTH (environment; 16 by default);
 * - which parent to die with, in every mode.
 */

#define PROCORD_LINEAGE_VARIABLE "PROCORD_LINEAGE"
#define PROCORD_MAX_DEPTH_VARIABLE "PROCORD_MAX_DELEGATION_DEPTH"
#define PROCORD_DEFAULT_MAX_DELEGATION_DEPTH 16

/* The pid of the Procord process that started this one as a worker, or 0. */
pid_t procord_lineage_parent(void);

/* This process serves tasks (a worker or a server): it may delegate. */
void procord_lineage_mark_serving(void);

/*
 * Whether this process may start a worker: 0, PROCORD_ENOTSERVING (started
 * as a worker, it has not begun to serve) or PROCORD_ENESTED (the worker
 * would be deeper than the maximum).
 */
int procord_lineage_may_spawn(void);

/* What procord_lineage_may_spawn's refusal means and what to do, static. */
const char *procord_lineage_refusal(int error);

/*
 * `base` (NULL-terminated) with PROCORD_LINEAGE set for a child of this
 * process: a worker, or (`main_program`) a program of its own, one level
 * deeper all the same. In one block for procord_free(); NULL when out of memory.
 */
char **procord_lineage_environment(const char *const *base, int main_program, int channel);

/* ---- spawn ---- */

/* A delegation's spawn options, embedded (procord_delegation_options_t's
   `worker`, procord_pool_source_t's, procord_server_options_t's). */
static inline int procord_spawn_options_nested(procord_spawn_options_t *worker) {
  return procord_options_nested(worker, sizeof *worker, PROCORD_FIRST_SIZE_SPAWN_OPTIONS);
}

#endif
