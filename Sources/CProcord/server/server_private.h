/*
 * Private to the C core: server/, the worker server, in layers of its own
 * (drawn below).
 * The one header of this folder that others include (docs/ARCHITECTURE.md).
 */
#ifndef PROCORD_SERVER_PRIVATE_H
#define PROCORD_SERVER_PRIVATE_H

#include "base/base_private.h"
#include "io/io_private.h"
#include "procord/connection.h"
#include "procord/security.h"
#include "procord/server.h"
#include "procord/spawn.h"

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdarg.h>
#include <time.h>

/* ---- the server's insides ---- */

/*
 * The insides of a worker server, in files that each
 * call only those below them (scripts/check_layers.py checks it):
 *
 *   server_lifecycle.c  options, limits, starting on a loop, stopping,
 *                       freeing, the end, and procord_server_run
 *   server_drain.c      draining (a signal, procord_server_stop,
 *                       keep_running), stopping now, and when a drain is over
 *   server_accept.c     the listening socket, and each accepted connection
 *                       within the limits (through procord_listener_start)
 *   server_secured.c    peers in the gate (TLS, the secret), TLS clients' relays
 *   server_dispatch.c   ready tasks to idle workers, and what passes between
 *                       a running task's client and its worker
 *   server_clients.c    the client table: each connection's tasks read whole
 *                       under time limits, the next one held, answers written
 *   server_workers.c    the worker table: processes (or the in-process
 *                       thread), their control channel and their sessions
 *   server_in_process.c the in-process worker's thread (dont_fork)
 *   server_gate.c, server_relay.c   the gate and the relay themselves
 *   server_peers.c      counts per client address
 *   server_log.c        the log, the figures, and notes that say each
 *                       refusal without flooding
 *   server_systemd.c    socket activation and Type=notify
 *
 * The client table and the worker table know only the bottom (the state
 * below, the log, the peers), never each other nor the files above: what
 * they have to tell those, they tell through the server's hooks
 * (server_hooks_t), set once at start.
 *
 * A task slot is for a task, never for a connection: the server reads a
 * client's whole task (`T` and `V`) itself, and only then queues it for a
 * worker. Clients between tasks, or half-way through one, hold no worker.
 * Ready clients are served oldest first, one task per connection at a time,
 * so a connection that sends task after task goes behind the others after
 * each one (round robin over ready connections).
 */

#define PEER_SIZE 64

typedef struct procord_server_s server_t;
typedef struct server_client_s server_client_t;
typedef struct server_worker_s server_worker_t;

/* What one client address holds (server_peers.c). */
typedef struct server_peer_s {
  char host[PEER_SIZE];
  int connections;     /* open client connections, and peers in the gate */
  int running;         /* tasks of its clients running in workers */
  procord_list_t node; /* in its bucket of peer_buckets */
} server_peer_t;

typedef enum {
  CLIENT_IDLE,      /* between tasks (or before the first): evictable */
  CLIENT_RECEIVING, /* some of a task has come */
  CLIENT_READY,     /* a whole task, waiting for a worker */
  CLIENT_RUNNING,   /* its task is with a worker */
  CLIENT_ANSWERING, /* its answer is queued; the next task waits until it is taken */
  CLIENT_CLOSING,   /* closing nicely (a drain, an error answered) */
} client_state_t;

/* Which of the server's client queues a client is in (one at most). */
typedef enum {
  CLIENT_QUEUE_NONE,
  CLIENT_QUEUE_READY, /* a whole task, waiting for a worker: oldest first */
  CLIENT_QUEUE_IDLE,  /* between tasks: the longest idle is evicted first */
  CLIENT_QUEUE_ROOM,  /* its task waits for room under max_buffered_task_bytes */
} client_queue_t;

struct server_client_s {
  server_t *server;
  procord_connection_t *connection;
  int fd; /* the socket (the connection's) */
  struct event *timer;
  client_state_t state;
  server_peer_t *peer;
  char name[PEER_SIZE]; /* host:port, for the log */
  /* The task: its name, its input (taken from the connection), and when it
     started arriving. */
  char *task_name;
  size_t task_name_length;
  void *input;
  size_t input_length;
  struct timespec since; /* of the state: idle since, task started, answer queued */
  struct timespec last_input;
  struct timespec queued;    /* the whole task in: for the task's line in the log */
  size_t received;           /* bytes of this task so far */
  size_t answer_bytes;       /* queued for the client when its answer was */
  server_worker_t *worker;   /* while RUNNING (server_dispatch.c binds and unbinds) */
  procord_list_t node;       /* in the server's clients */
  procord_list_t queue_node; /* in the queue `queued_in` says, if any */
  client_queue_t queued_in;
  size_t held;                   /* of its task, in held_bytes */
  size_t owed;                   /* its part of owed_bytes */
  struct timespec waiting_since; /* for room: its time limit stops meanwhile */
};

typedef enum {
  WORKER_STARTING, /* not ready yet */
  WORKER_IDLE,     /* a session open, no task */
  WORKER_BUSY,     /* a task sent, its answer awaited */
  WORKER_ANSWERED, /* the answer forwarded; `0R` (same session) or the session's end awaited */
  WORKER_BETWEEN,  /* the session ended; the worker's report awaited before the next */
  WORKER_RETIRING, /* told to go (its control channel closed); its end awaited */
} server_worker_state_t;

struct server_worker_s {
  server_t *server;
  procord_child_t child; /* a process (pid 0 for the in-process thread) */
  pthread_t thread;      /* the in-process worker (dont_fork) */
  int is_thread;
  int control_fd;                /* owned by `control` */
  procord_connection_t *control; /* `r` and `d` from it; `C` (with a session's socket) to it */
  procord_connection_t *session; /* the task's frames, both ways */
  struct event *exit_event;
  struct event *kill_timer; /* a task whose client went: SIGKILL if it outlives its grace */
  server_worker_state_t state;
  server_client_t *client; /* whose task it runs (server_dispatch.c binds and unbinds) */
  int done_reported;       /* its `d` came before its session's end was read */
  int needs_session;       /* none could be made (no descriptors): tried again later */
  procord_list_t node;     /* in the server's workers */
};

/* Why a connection was refused, or dropped, or timed out: counted, and logged
   at most once a second each. */
typedef enum {
  REASON_MAX_CONNECTIONS,
  REASON_PEER_CONNECTIONS,
  REASON_EVICTED_IDLE,
  REASON_IDLE_TIMEOUT,
  REASON_TASK_TIMEOUT,
  REASON_ANSWER_TIMEOUT,
  REASON_PROTOCOL_ERROR,
  REASON_UNKNOWN_TASK,
  REASON_CLIENT_GONE,
  REASON_WORKER_LOST,
  REASON_HANDSHAKE_REFUSED,
  REASON_OUT_OF_DESCRIPTORS, /* accept or a session's socket: EMFILE and the like (logged only) */
  REASON_COUNT
} server_reason_t;

/*
 * What the client table and the worker table (and the gate's peers) tell
 * the files above them. Set once at start, before the first client or
 * worker, by server_dispatch_hook_up and server_drain_hook_up; each may
 * free what it is given.
 */
typedef struct server_hooks_s {
  /* server_dispatch.c's: */
  void (*task_ready)(server_t *s);            /* a client's task came whole and waits */
  void (*answers_taken)(server_t *s);         /* bytes owed to clients fell back under their bound
                                                 (from inside a client's callback) */
  void (*output_taken)(server_client_t *c);   /* c took what its running task printed */
  void (*client_leaving)(server_client_t *c); /* c is being freed, its task with c->worker */
  void (*workers_changed)(server_t *s);       /* a worker is ready for a task, or gone, or
                                                 starting workers may be tried again */
  void (*worker_output)(
      server_worker_t *w, procord_connection_t *session,
      const procord_frame_t *frame); /* a print or the answer of w->client's task */
  void (*task_lost)(server_worker_t *w, const char *why); /* w->client's task ends unanswered */
  /* server_drain.c's: */
  void (*ask_keep_running)(server_t *s); /* a task was answered, or a client closed */
  void (*maybe_stop)(server_t *s);       /* a client, a worker or a peer in the gate is gone */
} server_hooks_t;

struct procord_server_s {
  const procord_server_options_t *options; /* &copy */
  procord_server_options_t copy;           /* the caller's, without hostname */
  procord_loop_t *loop;
  struct event_base *base;
  server_hooks_t hooks;
  int own_loop;                  /* procord_server_run's: stopped with the server */
  procord_loop_work_t work;      /* on the loop from start to finish (procord_loop_free stops it) */
  procord_log_route_t log_route; /* libevent's messages, meanwhile */
  int listen_fd;                 /* until the listener takes it */
  procord_listener_t *listener;  /* until a drain or the end */
  struct event *drain_timer, *respawn_timer;
  struct event *signals[2];
  struct event *finish_event; /* everything gone: finished from the loop's top */
  int draining;
  int finishing, finished; /* on the loop's thread */
  int stopped;             /* published under the loop's done lock: procord_server_is_stopped */
  int in_on_stopped;       /* atomic: a procord_server_free meanwhile is done after it */
  int free_requested;      /* atomic: by procord_server_free during on_stopped */
  int start_error;
  int start_failures; /* in a row; reset by a worker that gets ready */
  /* Limits, defaults applied. */
  int max, warm, max_connections, max_connections_per_peer, max_tasks_per_peer;
  int idle_timeout_ms, task_timeout_ms, read_timeout_ms, answer_timeout_ms, drain_timeout_ms;
  long min_receive_rate, min_send_rate;
  size_t max_message_size;
  /* Workers, the newest first. */
  procord_list_t workers;
  int total, starting, idle, busy, between;
  /* Clients, the newest first; the queues, each the oldest first. */
  procord_list_t clients;
  int client_count;
  procord_list_t ready_queue;
  int ready;
  procord_list_t idle_queue;
  int receiving;
  /* Bytes of tasks read and not yet handed to a worker, and the clients
     waiting for room under max_held_bytes to read on. */
  size_t held_bytes, max_held_bytes;
  size_t waiting_held; /* of held_bytes, those of clients waiting for room */
  procord_list_t room_queue;
  /* Bytes queued toward clients and not yet taken (as last counted), and
     their bound: past it, no task is handed to a worker, and running
     tasks' prints wait, until clients take theirs (or time out). */
  size_t owed_bytes, max_owed_bytes;
  struct event *dispatch_event; /* server_dispatch from the loop */
  /* Peers in the gate, and TLS relays (server_secured.c), the newest first. */
  procord_list_t secured;
  int securing;
  /* Peers, figures, log (server_peers.c, server_log.c). */
  procord_list_t peer_buckets[256];
  procord_server_stats_t local_stats; /* when the options give none */
  procord_server_stats_t *stats;
  time_t reason_second[REASON_COUNT];
  unsigned reason_unlogged[REASON_COUNT];
  char address[PEER_SIZE + 8];
  int port; /* the one listened on */
};

/* ---- server_lifecycle.c ---- */
/* The rest is public (procord/server.h). The server finishes from the loop's
   top through its finish_event (server_finish_soon). */

/* ---- server_drain.c ---- */
/* Sets ask_keep_running and maybe_stop. */
void server_drain_hook_up(server_hooks_t *hooks);
/* Makes the events of draining and (with handle_signals) the signals; 0 or
   -ENOMEM. Frees them (none may fire any more). */
int server_drain_events_open(server_t *s);
void server_drain_events_free(server_t *s);
/* Drains (procord_server_stop's GRACEFUL, a signal, keep_running): new
   connections refused, tasks read are served; `why` for the log. */
void server_begin_drain(server_t *s, const char *why);
/* Drains, and ends every client and worker at once (STOP_NOW); their ends
   are seen as usual. */
void server_stop_now(server_t *s, const char *why);
/* Everything is gone: the server finishes from the loop's top (its events
   freed, on_stopped called), not inside the callback that saw it. */
void server_finish_soon(server_t *s);

/* ---- server_accept.c ---- */
/* Opens the listening socket (the options', systemd's, or one bound), says
   where in s->address and s->port; 0 or an error, logged. */
int server_listen(server_t *s);
/* Starts accepting on it; 0 or -ENOMEM. */
int server_accept_start(server_t *s);
/* Stops accepting and closes the listening socket (a drain, the end). */
void server_accept_stop(server_t *s);

/* ---- server_secured.c ---- */
/* Takes the accepted socket `fd` of `peer` (counted there meanwhile)
   through the gate; a client once it passes. */
void server_secure(server_t *s, int fd, const char *name, server_peer_t *peer);
/* Drops every peer still in the gate, and (`relays`) TLS clients' relays. */
void server_drop_secured(server_t *s, int relays);

/* ---- server_dispatch.c ---- */
/* Sets the hooks that match clients with workers and pass between them. */
void server_dispatch_hook_up(server_hooks_t *hooks);
/* Hands ready tasks to idle workers, starting workers as needed. */
void server_dispatch(server_t *s);
/* Frees its event (the end). */
void server_dispatch_free(server_t *s);

/* ---- server_clients.c ---- */
/* Takes `fd` (a connected socket, or our end of a TLS relay) as a client. */
void server_client_open(server_t *s, int fd, const char *name, server_peer_t *peer);
/* Its task's answer (or a print) from its worker; `from` is the worker
   session whose body may be lent, when it may be taken. */
void server_client_forward(server_client_t *c, unsigned char kind, procord_connection_t *from,
                           const procord_frame_t *frame);
/* The task is answered (terminal frame forwarded); c->worker is unbound already. */
void server_client_task_done(server_client_t *c, unsigned char answer);
/* The worker running its task is gone (unbound already): the client is dropped. */
void server_client_lost_worker(server_client_t *c, const char *why);
/* Closes the longest-idle client; returns 0 if none is idle. */
int server_client_evict_idle(server_t *s);
/* Draining: idle clients go at once, the others once answered. */
void server_clients_drain(server_t *s);
/* Closes every client at once (a drain timeout, the end). */
void server_clients_close_all(server_t *s);
/* Takes the oldest ready client whose address may run one more task; it is RUNNING from then. */
server_client_t *server_client_next_ready(server_t *s);
/* Whether the client has room for a worker's output (prints); when it does
   not, its answer time limit runs until it has taken it. */
int server_client_has_room(server_client_t *c);

/* ---- server_workers.c ---- */
/* Makes (frees) the worker table's respawn timer; 0 or -ENOMEM. */
int server_workers_open(server_t *s);
/* Starts workers to keep warm and for ready tasks, within the limits. */
void server_workers_keep_warm(server_t *s);
/* An idle worker, or NULL. */
server_worker_t *server_worker_find_idle(server_t *s);
/* Sends an idle worker its task (bound by the caller): `input` is taken. */
void server_worker_run_task(server_worker_t *w, const char *name, size_t name_length, void *input,
                            size_t input_length);
/* Its task is answered (the answer forwarded, its client unbound): `0R` or
   the session's end is awaited. */
void server_worker_answered(server_worker_t *w);
/* Ends a running task whose client went away (unbound already; the worker
   is ended too, after a grace). */
void server_worker_abandon(server_worker_t *w);
/* Pauses (resumes) reading the worker's session: its client has no room
   for more of its output (has taken it). */
void server_worker_pause_output(server_worker_t *w, int paused);
/* Retires idle workers that no task needs (a drain). */
void server_workers_retire_idle(server_t *s);
/* Kills every worker (a drain timeout); their ends are seen as usual. */
void server_workers_kill(server_t *s);
/* Kills, reaps and frees every worker, and the respawn timer (the end). */
void server_workers_release(server_t *s);

/* ---- server_in_process.c ---- */
/* Starts the in-process worker's thread, serving the sessions handed over
   on `control_fd` (taken) with the server's tasks; 0 or -EAGAIN (fd closed then). */
int server_in_process_start(server_t *s, int control_fd, pthread_t *thread);

/* ---- server_peers.c ---- */
/* Makes every bucket empty (at start). */
void server_peers_init(server_t *s);
/* The record of `host`, made if needed; NULL when out of memory. */
server_peer_t *server_peer_find(server_t *s, const char *host);
/* Drops a record nothing counts in any more. */
void server_peer_forget_if_unused(server_t *s, server_peer_t *peer);
void server_peers_free(server_t *s);
/* The host part of `host:port` or `[host]:port`. */
void server_host_of(const char *name, char *host, size_t size);

/* ---- server_log.c ---- */
void server_log(server_t *s, procord_log_level_t level, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
/* Counts a refusal, drop or time-out, and logs it (at most once a second
   per reason, saying how many were not logged). */
void server_note(server_t *s, server_reason_t reason, procord_log_level_t level, const char *peer,
                 const char *format, ...) __attribute__((format(printf, 5, 6)));
/* Adds `delta` to a figure (relaxed atomics: another thread may read them). */
#define SERVER_COUNT(s, field, delta)                                                              \
  __atomic_add_fetch(&(s)->stats->field, (delta), __ATOMIC_RELAXED)
#define SERVER_SET(s, field, value) __atomic_store_n(&(s)->stats->field, (value), __ATOMIC_RELAXED)

/* ---- server_systemd.c ---- */
/* systemd's Type=notify (procord_server_run's only): `state` to NOTIFY_SOCKET. */
void server_notify(server_t *s, const char *state);

/* ---- server_gate.c, server_relay.c: security in the server process ---- */

/*
 * A server's security, in the server process.
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
 * `*inner_fd` for the server's own reading of the client. When the client goes (an end, an error, a
 * reset), that end is shut down both ways at once, whatever is still queued either way, and the
 * relay ends (the server sees the client gone, as for a plain client); when the server's side
 * closes its end, what is left goes to the client and the TLS connection is closed. Returns NULL
 * (and frees `tls`) when out of descriptors or memory.
 */
procord_relay_t *procord_relay_start(struct bufferevent *tls, int *inner_fd,
                                     procord_relay_done_fn done, void *context);

/* Ends a relay at once (a drain timeout, a server that stops); `done` is not called. */
void procord_relay_free(procord_relay_t *relay);

#endif
