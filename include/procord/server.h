/*
 * procord/server.h: worker servers, which serve tasks to main programs over
 * TCP, speaking exactly the wire protocol of docs/PROTOCOL.md.
 *
 * The server process only accepts connections and hands each to a worker
 * process started by exec (posix_spawn; never a fork of the server), passing
 * the accepted socket over a Unix socket (SCM_RIGHTS). A few workers are
 * started ahead of time, so a client does not wait for a process start, and
 * a worker goes back to the server when its connection ends. At most
 * `max_simultaneous_tasks` connections are served at once; the others wait
 * in the listening socket's backlog, neither refused nor dropped. A worker
 * that crashes is replaced and affects no one else; a client that goes away
 * mid-task makes its worker kill itself (its watchdog).
 */
#ifndef PROCORD_SERVER_H
#define PROCORD_SERVER_H

#include <stddef.h>
#include <sys/socket.h>

#include "procord/security.h"
#include "procord/spawn.h"
#include "procord/worker.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The port a server listens on when none is given (the original's). */
#define PROCORD_DEFAULT_PORT 1111
/* Connections served at once when no limit is given. */
#define PROCORD_DEFAULT_MAX_SIMULTANEOUS_TASKS 16

typedef enum procord_log_level {
  PROCORD_LOG_ERROR = 0,
  PROCORD_LOG_WARNING = 1,
  PROCORD_LOG_INFO = 2,  /* start and stop */
  PROCORD_LOG_DEBUG = 3, /* one line per connection */
} procord_log_level_t;

/* Receives the server's log lines; the C core never prints. */
typedef void (*procord_log_fn)(void *context, procord_log_level_t level, const char *message);

/*
 * Writes `address` as numeric `host:port` (`[host]:port` for IPv6) into
 * `out` of `size` bytes (64 is enough), or "?" if it cannot be read. This is
 * how the server's log names peers.
 */
void procord_address_string(const struct sockaddr *address, socklen_t length, char *out,
                            size_t size);

/* Given a connecting peer's address, returns non-zero to serve it, 0 to close it. */
typedef int (*procord_accept_filter_fn)(void *context, const struct sockaddr *peer,
                                        socklen_t length);

/* Asked after each connection; returning 0 stops the server as SIGTERM does. */
typedef int (*procord_keep_running_fn)(void *context);

typedef struct procord_server_options_s {
  /* Where to listen: an IPv4 or IPv6 literal or a DNS name; NULL means
     "127.0.0.1", so that a server is never exposed by accident ("0.0.0.0"
     or "::" must be asked for). */
  const char *hostname;
  int port;              /* 0: an ephemeral port (see the log or sd_notify STATUS) */
  int reuse_address;     /* SO_REUSEADDR */
  /* A listening socket to serve instead of binding one (above 0; anything
     else fails the start with a log line saying why); 0 or -1: bind, unless
     the process was socket-activated (procord_server_activated_socket). */
  int listen_fd;
  int max_simultaneous_tasks;  /* 0: PROCORD_DEFAULT_MAX_SIMULTANEOUS_TASKS */
  int prestarted_workers;      /* idle workers kept ready; 0: min(2, max) */
  /* Serve each connection inside the server process, one at a time, with
     `tasks`, instead of in worker processes. */
  int dont_fork;
  const procord_worker_task_t *tasks; /* for dont_fork */
  size_t task_count;
  /* How to start a worker: its program and argv, which must make it call
     procord_worker_serve_handoffs on descriptor PROCORD_WORKER_SOCKET_FD
     (a Procord worker does with `--procord-worker --procord-handoff-fd 3`).
     The channel is always PROCORD_CHANNEL_SOCKET. */
  procord_spawn_options_t worker;
  /* On SIGTERM or SIGINT (unblocked on the calling thread if the program
     was started with them blocked): stop accepting (new connections are refused),
     let running tasks finish, for at most drain_timeout_ms (0: 30000),
     then kill what is left and return 0. Under socket activation the
     listening socket belongs to the service manager: connections then wait
     in its queue for the next start instead of being refused. */
  int handle_signals;
  int drain_timeout_ms;
  /* With dont_fork: how long a client may stay silent while a task's frames
     are awaited (procord_worker_options_t's read_timeout_ms); 0: no limit.
     Workers get theirs from their argv (`--procord-read-timeout MS`). */
  int read_timeout_ms;
  procord_accept_filter_fn accept_filter; /* NULL: serve everyone */
  procord_keep_running_fn keep_running;   /* NULL: run until a signal */
  /* NULL: no log. While the server runs, libevent's own messages (one log
     for the whole process) come here too, as "libevent: ...", possibly from
     another thread of the process. */
  procord_log_fn log;
  void *context;                          /* passed to the three callbacks */
  /* Optional, a server's security (procord/security.h): each connection
     goes through TLS and/or shared-secret authentication in the server
     process before anything of a task is read. A peer that fails is told
     why when the protocol allows (a `U` frame), logged at warning level
     ("PEER: refused: REASON") and closed, and never reaches a worker. A TLS
     client's bytes are relayed to its worker over a socketpair; workers
     never load the key or the secret. Peers in the handshake count toward
     max_simultaneous_tasks. A server listening beyond loopback that does
     not authenticate its clients (no shared secret, no required client
     certificate) logs a warning at start. TLS cannot be combined with
     dont_fork. */
  procord_security_t *security;
  /* How long a peer has to finish TLS and authentication;
     0: PROCORD_DEFAULT_HANDSHAKE_TIMEOUT_MS. */
  int handshake_timeout_ms;
} procord_server_options_t;

/*
 * Runs a server on the calling thread until it is stopped (signal or
 * keep_running), then stops its workers, reaps them and returns 0; or
 * returns a negative error code if it could not start (the address could
 * not be resolved or bound, with a log line saying why). When the
 * environment has NOTIFY_SOCKET (systemd's Type=notify), it sends READY=1
 * and a STATUS naming the address once it listens.
 */
int procord_server_run(const procord_server_options_t *options);

/*
 * Returns the listening socket a service manager passed (systemd's socket
 * activation: LISTEN_PID is this process and LISTEN_FDS at least 1), made
 * close-on-exec, with those variables removed from the environment (the
 * caller owns it), or -1.
 */
int procord_server_activated_socket(void);

/*
 * The worker side of a server: tells the server it is ready on
 * `control_fd`, then serves each connection the server hands over (reusable,
 * `0R`, watchdog on) with the options' tasks and limits, and reports back
 * after each. Returns 0 when the server closes `control_fd`, or a negative
 * error code.
 */
int procord_worker_serve_handoffs(const procord_worker_options_t *options, int control_fd);

#ifdef __cplusplus
}
#endif

#endif
