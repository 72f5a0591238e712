/*
 * procord/server.h: worker servers, which serve tasks to main programs over
 * TCP, speaking exactly the wire protocol of docs/PROTOCOL.md.
 *
 * The server process reads each client's task (its `T` and `V` frames)
 * itself, and only then hands it to a worker process started by exec
 * (posix_spawn; never a fork of the server), over a Unix socket, and
 * carries the answer back. A task slot is for a task, not a connection: a
 * client that is only connected, half-way through a task, or between tasks
 * holds no worker. At most `max_simultaneous_tasks` tasks run at once;
 * whole tasks wait their turn oldest first, one per connection at a time,
 * so a client that sends task after task goes behind the others after each
 * one. A few workers are started ahead of time, so a task does not wait for
 * a process start. A worker that crashes is replaced and affects no one
 * else; a client that goes away mid-task has its task's worker killed.
 *
 * Every client is bounded in time: a task must arrive whole within
 * task_timeout_ms (longer for a big one, at min_receive_rate), an answer
 * must be taken within answer_timeout_ms (at min_send_rate), a connection
 * may wait idle between tasks idle_timeout_ms. And in number: at most
 * max_connections clients (the one idle longest makes way for a new one),
 * optionally per client address. See docs/SERVER.md.
 */
#ifndef PROCORD_SERVER_H
#define PROCORD_SERVER_H

#include <stddef.h>
#include <sys/socket.h>

#include "procord/log.h"
#include "procord/security.h"
#include "procord/spawn.h"
#include "procord/worker.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The port a server listens on when none is given (the original's). */
#define PROCORD_DEFAULT_PORT 1111
/* Tasks run at once when no limit is given. */
#define PROCORD_DEFAULT_MAX_SIMULTANEOUS_TASKS 16
/* Client connections held at once when no limit is given. */
#define PROCORD_DEFAULT_MAX_CONNECTIONS 16384
/* Time limits and rates when none is given (docs/SERVER.md). */
#define PROCORD_DEFAULT_IDLE_TIMEOUT_MS 60000
#define PROCORD_DEFAULT_TASK_TIMEOUT_MS 10000
#define PROCORD_DEFAULT_ANSWER_TIMEOUT_MS 10000
#define PROCORD_DEFAULT_MIN_RATE (64 * 1024) /* bytes per second, both ways */

/* The server's log lines go to its options' `log` (procord/log.h); the C core never prints. */

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

/* Asked after each task and each client connection's end; returning 0
   stops the server as SIGTERM does. */
typedef int (*procord_keep_running_fn)(void *context);

/*
 * A server's figures, kept up to date while it runs (by its thread, with
 * relaxed atomic stores: another thread may read each field with
 * __atomic_load_n, or plainly for an estimate). Counters only grow;
 * the `_now` fields are gauges.
 */
typedef struct procord_server_stats_s {
  unsigned long long connections_accepted;
  unsigned long long tasks_answered;      /* a terminal frame carried back to its client */
  unsigned long long refused_max_connections;  /* at max_connections, none idle to close */
  unsigned long long refused_peer_connections; /* at max_connections_per_peer */
  unsigned long long evicted_idle;        /* idle clients closed to make way for a new one */
  unsigned long long idle_timeouts;       /* idle past idle_timeout_ms */
  unsigned long long task_timeouts;       /* a task not whole within its time (or silent past read_timeout_ms) */
  unsigned long long answer_timeouts;     /* an answer not taken within its time */
  unsigned long long protocol_errors;     /* ill-formed, unexpected or too long: answered `E` */
  unsigned long long unknown_tasks;       /* answered `E0` */
  unsigned long long clients_gone_mid_task; /* its worker killed */
  unsigned long long workers_lost_mid_task; /* the worker ended during a task */
  unsigned long long workers_started;
  unsigned long long handshakes_refused;  /* TLS or the secret failed, or timed out */
  int connections_now;   /* client connections (not those in the gate) */
  int tasks_running_now;
  int tasks_waiting_now; /* whole tasks waiting for a worker */
  unsigned long long task_bytes_buffered_now; /* see max_buffered_task_bytes */
  unsigned long long answer_bytes_buffered_now; /* see max_buffered_answer_bytes */
} procord_server_stats_t;

/* Copies `stats` into `*copy`, each field read atomically: for a thread
   other than the server's. */
void procord_server_stats_read(const procord_server_stats_t *stats, procord_server_stats_t *copy);

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
  int max_simultaneous_tasks;  /* tasks running at once; 0: PROCORD_DEFAULT_MAX_SIMULTANEOUS_TASKS */
  int prestarted_workers;      /* idle workers kept ready; 0: min(2, max) */
  /* Run each task inside the server process (on a thread of its own), one
     at a time, with `tasks`, instead of in worker processes. */
  int dont_fork;
  /* The tasks the workers serve (with dont_fork, the ones run here). When
     given, a task of another name is answered `E0` by the server itself,
     without a worker; NULL with 0: every name goes to a worker. */
  const procord_worker_task_t *tasks;
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
  /* How long a client may stay silent in the middle of a task (on top of
     task_timeout_ms, which bounds the whole); 0: no such limit. Workers get
     theirs from their argv (`--procord-read-timeout MS`), for the server's
     side of their socket. */
  int read_timeout_ms;
  procord_accept_filter_fn accept_filter; /* NULL: serve everyone */
  procord_keep_running_fn keep_running;   /* NULL: run until a signal */
  /* NULL: no log. While the server runs, libevent's own messages (one log
     for the whole process) come here too, as "libevent: ...", possibly from
     another thread of the process. */
  procord_log_fn log;
  void *context;                          /* passed to the callbacks */
  /* Optional, a server's security (procord/security.h): each connection
     goes through TLS and/or shared-secret authentication in the server
     process before anything of a task is read. A peer that fails is told
     why when the protocol allows (a `U` frame), logged at warning level
     ("PEER: refused: REASON") and closed, and never reaches a worker. A TLS
     client's bytes are relayed to the server's side over a socketpair;
     workers never load the key or the secret. Peers in the handshake count
     toward max_connections (and per peer), never toward the task slots. A
     server listening beyond loopback that does not authenticate its
     clients (no shared secret, no required client certificate) logs a
     warning at start. With dont_fork, tasks run in the process that holds
     the key. */
  procord_security_t *security;
  /* How long a peer has to finish TLS and authentication;
     0: PROCORD_DEFAULT_HANDSHAKE_TIMEOUT_MS. */
  int handshake_timeout_ms;
  /* ---- Bounds on clients (docs/SERVER.md) ---- */
  /* Client connections held at once (in the gate too); 0:
     PROCORD_DEFAULT_MAX_CONNECTIONS. At the limit a new connection closes
     the one idle longest; if none is idle it is refused with a `U` frame
     saying so. The soft descriptor limit (RLIMIT_NOFILE) is raised toward
     the hard one to fit them; if it cannot be, this is lowered, with a log
     line. */
  int max_connections;
  /* Per client address (IP): connections, and tasks running at once
     (beyond it, its tasks wait while other addresses' run); 0: no limit. */
  int max_connections_per_peer;
  int max_tasks_per_peer;
  /* Milliseconds; 0: the PROCORD_DEFAULT_* above; negative: no limit.
     idle: between tasks, and before the first. task: from a task's first
     byte to its last, plus one second per min_receive_rate bytes received.
     answer: from the answer queued to its last byte taken, plus one second
     per min_send_rate bytes of it. */
  int idle_timeout_ms;
  int task_timeout_ms;
  int answer_timeout_ms;
  int min_receive_rate; /* bytes per second; 0: PROCORD_DEFAULT_MIN_RATE */
  int min_send_rate;    /* bytes per second; 0: PROCORD_DEFAULT_MIN_RATE */
  /* The largest frame a client may send (`E3` beyond); 0: the process's
     default (procord_default_max_message_size()). */
  size_t max_message_size;
  /* Bytes of tasks read and not yet handed to a worker, all clients
     together. Past it, a task above 64 KiB waits (its time limit stopped)
     until there is room; smaller ones have an eighth more before they
     wait. 0: 256 MiB or twice max_message_size, whichever is more. */
  size_t max_buffered_task_bytes;
  /* Bytes of answers (and prints) queued for clients and not yet taken,
     all clients together. Past it, no task is handed to a worker and
     running tasks' prints wait, until clients take theirs or are dropped
     at their answer time limit. 0: as max_buffered_task_bytes. */
  size_t max_buffered_answer_bytes;
  /* Optional: figures the server keeps up to date while it runs (zeroed
     when it starts; read them from another thread with
     procord_server_stats_read). */
  procord_server_stats_t *stats;
  /* Optional: called once, on the calling thread, when the server listens
     (before any client is served), with the address (numeric `host:port`,
     `[host]:port` for IPv6) and the port: with port 0, the one the system
     picked (0 for a Unix socket given as listen_fd). For a program that embeds a server and must tell its clients
     where it is. */
  void (*on_listening)(void *context, const char *address, int port);
} procord_server_options_t;

/*
 * Runs a server on the calling thread until it is stopped (signal or
 * keep_running), then stops its workers, reaps them and returns 0; or
 * returns a negative error code if it could not start (the address could
 * not be resolved or bound, with a log line saying why; PROCORD_EINVAL,
 * logged the same way, without a worker program, or with dont_fork and no
 * tasks). It may raise
 * the process's soft descriptor limit to fit max_connections (see there). When the
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
 * `control_fd`, then serves each session the server hands over (a socket
 * on which the server sends whole tasks and takes their answers to their
 * clients; reusable, `0R`, watchdog on: closed mid-task, the task is
 * killed) with the options' tasks and limits (not its read timeout: the
 * server bounds its clients itself, and a session may wait idle), and
 * reports back after each.
 * Returns 0 when the server closes `control_fd`, or a negative error code.
 */
int procord_worker_serve_handoffs(const procord_worker_options_t *options, int control_fd);

#ifdef __cplusplus
}
#endif

#endif
