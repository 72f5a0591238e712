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

#include "procord/listen.h"
#include "procord/log.h"
#include "procord/loop.h"
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

/* procord_address_string, how the server's log names peers: procord/listen.h. */

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
  unsigned long long tasks_answered;           /* a terminal frame carried back to its client */
  unsigned long long refused_max_connections;  /* at max_connections, none idle to close */
  unsigned long long refused_peer_connections; /* at max_connections_per_peer */
  unsigned long long evicted_idle;             /* idle clients closed to make way for a new one */
  unsigned long long idle_timeouts;            /* idle past idle_timeout_ms */
  /* A task not whole within its time (or silent past read_timeout_ms). */
  unsigned long long task_timeouts;
  unsigned long long answer_timeouts;       /* an answer not taken within its time */
  unsigned long long protocol_errors;       /* ill-formed, unexpected or too long: answered `E` */
  unsigned long long unknown_tasks;         /* answered `E0` */
  unsigned long long clients_gone_mid_task; /* its worker killed */
  unsigned long long workers_lost_mid_task; /* the worker ended during a task */
  unsigned long long workers_started;
  unsigned long long handshakes_refused; /* TLS or the secret failed, or timed out */
  int connections_now;                   /* client connections (not those in the gate) */
  int tasks_running_now;
  int tasks_waiting_now;                        /* whole tasks waiting for a worker */
  unsigned long long task_bytes_buffered_now;   /* see max_buffered_task_bytes */
  unsigned long long answer_bytes_buffered_now; /* see max_buffered_answer_bytes */
} procord_server_stats_t;

/* Copies `stats` into `*copy`, each field read atomically: for a thread
   other than the server's. */
void procord_server_stats_read(const procord_server_stats_t *stats, procord_server_stats_t *copy);

typedef struct procord_server_options_s {
  /* The size of this struct as the calling program was built with: set by
     procord_server_options_init; 0 means the layout of this first release.
     A size larger than this library's struct, with a byte beyond it that is
     not 0 (a program built against a newer Procord than it runs with), is
     refused with PROCORD_EINVAL and a log line. */
  size_t size;
  /* Where to listen: an IPv4 or IPv6 literal or a DNS name; NULL means
     "127.0.0.1", so that a server is never exposed by accident ("0.0.0.0"
     or "::" must be asked for). */
  const char *hostname;
  int port;          /* 0: an ephemeral port (see the log or sd_notify STATUS) */
  int reuse_address; /* SO_REUSEADDR */
  /* A listening socket to serve instead of binding one (above 0; anything
     else fails the start with a log line saying why); 0 or -1: bind, unless
     the process was socket-activated (procord_server_activated_socket). */
  int listen_fd;
  int max_simultaneous_tasks; /* tasks running at once; 0: PROCORD_DEFAULT_MAX_SIMULTANEOUS_TASKS */
  int prestarted_workers;     /* idle workers kept ready; 0: min(2, max) */
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
     then kill what is left and stop (procord_server_run returns 0; a
     started server calls on_stopped). Every server of the process that
     handles signals drains on them. Under socket activation the
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
  void *context; /* passed to the callbacks */
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
  /* Optional: called once, when the server listens (before any client is
     served), on the calling thread of procord_server_run (of
     procord_server_start: the loop's, when it runs on another), with the
     address (numeric `host:port`, `[host]:port` for IPv6) and the port:
     with port 0, the one the system picked (0 for a Unix socket given as
     listen_fd). For a program that embeds a server and must tell its
     clients where it is. */
  void (*on_listening)(void *context, const char *address, int port);
  /* Optional: called once, on the loop's thread, when the server has
     stopped: every client closed, every worker gone and reaped, nothing of
     it left on the loop. procord_server_is_stopped and procord_server_wait
     say so once it has returned, so a thread that waited may free what
     `context` points to. Not called for a server freed while it still ran
     (procord_server_free). For a server of procord_server_start, it may
     free the server (procord_server_free, done once it returns) if no
     other thread uses it; with procord_server_run it is called before the
     run returns. */
  void (*on_stopped)(void *context);
} procord_server_options_t;

/*
 * Sets every field of `options` to its default (zero, for each of them),
 * its size, and its worker's (procord_spawn_options_init). Call it first,
 * then set the fields you need: a field added in a later version of this
 * header then gets its default even in a program built before it.
 * Thread-safe. Returns nothing.
 */
void procord_server_options_init(procord_server_options_t *options);

/*
 * Runs a server on the calling thread until it is stopped (signal or
 * keep_running), then stops its workers, reaps them and returns 0; or
 * returns a negative error code if it could not start (the address could
 * not be resolved or bound, with a log line saying why; PROCORD_EINVAL,
 * logged the same way, without a worker program, or with dont_fork and no
 * tasks). It may raise
 * the process's soft descriptor limit to fit max_connections (see there). When the
 * environment has NOTIFY_SOCKET (systemd's Type=notify), it sends READY=1
 * and a STATUS naming the address once it listens, and STOPPING=1 when it
 * drains. It is procord_server_start on a loop of its own, run on the
 * calling thread until the server has stopped, then freed.
 */
int procord_server_run(const procord_server_options_t *options);

/* ---- A server embedded in a program, on the program's loop ---- */

/* A server started with procord_server_start: opaque, freed with
   procord_server_free. */
typedef struct procord_server_s procord_server_t;

/* Room for a server's address as procord_server_address writes it. */
#define PROCORD_SERVER_ADDRESS_SIZE 64

/*
 * Starts a server on `loop` (procord/loop.h) without running the loop and
 * without blocking: it listens, starts its workers ahead of time, and
 * serves clients whenever the loop runs, on the loop's thread, beside
 * whatever else the loop drives (delegations, pools, other servers), until
 * procord_server_stop, a signal (handle_signals) or keep_running stops it.
 * It stores the server in `*server`; the caller owns it and frees it with
 * procord_server_free.
 *
 * Thread: any. When the loop runs on another thread, the setting up is done
 * there and this call waits for it (it must not be made from a thread the
 * loop's thread waits on); on the loop's own thread (a callback), or
 * before the loop runs, it is done at once. handle_signals unblocks SIGTERM
 * and SIGINT on the calling thread.
 *
 * Ownership: the options are copied; the caller's struct need not outlive
 * the call, nor does `hostname`. What its pointers point to must outlive
 * the server (until on_stopped, or procord_server_free): the tasks, the
 * worker's program, arguments and environment, `security`, `stats`, and
 * whatever `context` the callbacks are given.
 *
 * Unlike procord_server_run, it says nothing to systemd (NOTIFY_SOCKET):
 * the program says when it, as a whole, is ready. The loop is never stopped
 * by the server: a stopped server only leaves it.
 *
 * Returns 0, or a negative error code with nothing started and nothing left
 * open: PROCORD_EINVAL for a NULL argument, no worker program (set
 * options.worker, or dont_fork with tasks), dont_fork without tasks, or a
 * client's security options; an address that cannot be resolved
 * (PROCORD_ERESOLVE) or bound (-EADDRINUSE, -EACCES...); a listen_fd that
 * does not listen; -ENOMEM. Each is said in the options' log at error
 * level, as procord_server_run says it.
 */
int procord_server_start(procord_loop_t *loop, const procord_server_options_t *options,
                         procord_server_t **server);

/*
 * Writes where the server listens, as numeric `host:port` (`[host]:port`
 * for IPv6; for a Unix socket given as listen_fd, "?"), into `buffer` of
 * `size` bytes (PROCORD_SERVER_ADDRESS_SIZE is enough; NULL with 0: none),
 * and its port in `*port` (unless `port` is NULL): with port 0 in the
 * options, the one the system picked; 0 for a Unix socket. The same as
 * on_listening gave. Fixed once started, so it may be called from any
 * thread, after the server stopped too. Returns 0, or -ENOBUFS when the
 * address does not fit (`buffer` then holds as much as fits, terminated;
 * give PROCORD_SERVER_ADDRESS_SIZE bytes), or PROCORD_EINVAL for a NULL server.
 */
int procord_server_address(const procord_server_t *server, char *buffer, size_t size, int *port);

/* How procord_server_stop stops a server. */
typedef enum procord_server_stop_how {
  /* As SIGTERM does: new connections are refused at once, idle clients
     closed, tasks read (or arriving) are served and answered, each client
     closed after its answer; what still runs after drain_timeout_ms is
     killed. */
  PROCORD_SERVER_STOP_GRACEFUL = 0,
  /* At once: new connections refused, every client closed (a running
     task's client sees its connection end), every worker killed (SIGKILL). */
  PROCORD_SERVER_STOP_NOW = 1,
} procord_server_stop_how_t;

/*
 * Stops the server as `how` says. It has stopped once on_stopped is called
 * (or procord_server_is_stopped says so, or procord_server_wait returns
 * 1): workers exit and are reaped on the loop's thread, so the loop must
 * run meanwhile. STOP_NOW after STOP_GRACEFUL hastens a drain; a stop of a
 * stopped server does nothing.
 *
 * Thread: any. From another thread than the loop's, it is queued to the
 * loop (as by procord_loop_call, with nothing to allocate) and this call
 * waits until the loop has taken it in (not until the server has stopped):
 * after it returns, new connections are refused. On the loop's thread, or with the loop not
 * running, it acts at once. Not from the server's own callbacks (its log, accept_filter,
 * keep_running, on_listening), which run in the middle of its work: there,
 * keep_running returning 0 stops it.
 *
 * Returns 0, or PROCORD_EINVAL for a NULL server or an unknown `how`.
 */
int procord_server_stop(procord_server_t *server, procord_server_stop_how_t how);

/*
 * Returns 1 once the server has stopped (every client closed, every worker
 * reaped) and its on_stopped has returned, 0 before. Thread-safe.
 */
int procord_server_is_stopped(const procord_server_t *server);

/*
 * Waits until the server has stopped (as procord_server_is_stopped says),
 * or `timeout_ms` milliseconds have passed (negative: no limit). The loop
 * must be running on another thread meanwhile: on the loop's own thread (a
 * callback, or a hosted loop's thread, procord/loop.h) a wait with a time
 * other than 0 is refused with -EDEADLK (use on_stopped there).
 * Thread-safe. Returns 1 if the server has stopped, 0 if not (yet).
 */
int procord_server_wait(procord_server_t *server, int timeout_ms);

/*
 * Frees a server of procord_server_start. A stopped one only has its memory
 * freed: this may then be called from any thread, even after its loop was
 * freed. One still running is stopped at once, here: clients closed, every
 * worker killed and reaped (waited for) before this returns, without
 * on_stopped; the loop must not have been freed yet then, and this waits for
 * the loop's thread as procord_server_stop does (or does it at once on that
 * thread, or with the loop not running). Freeing the loop
 * (procord_loop_free) first stops a running server at once too. Not from
 * the server's own callbacks but on_stopped. After this call the server
 * must not be used; NULL does nothing. Returns nothing.
 */
void procord_server_free(procord_server_t *server);

/*
 * Returns the listening socket a service manager passed (systemd's socket
 * activation: LISTEN_PID is this process and LISTEN_FDS at least 1), made
 * close-on-exec, with those variables removed from the environment (the
 * caller owns it), or -1.
 */
int procord_server_activated_socket(void);

/* procord_worker_serve_handoffs, the worker side of a server: procord/worker.h. */

#ifdef __cplusplus
}
#endif

#endif
