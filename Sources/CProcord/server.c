/*
 * A worker server (procord/server.h): accept, hand each connection to a
 * worker process over a Unix socket, keep a few workers warm, replace those
 * that die, drain on SIGTERM/SIGINT.
 */
#define _GNU_SOURCE
#include "lineage_private.h"
#include "procord/server.h"
#include "loop_private.h"
#include "procord/connection.h"
#include "procord/listen.h"
#include "procord/error.h"
#include "security_private.h"
#include "server_private.h"
#include "server_secure.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_DRAIN_TIMEOUT_MS 30000
#define ACCEPT_RETRY_MS 100 /* after EMFILE: wait for descriptors, do not spin */
#define PEER_SIZE 64

typedef enum { WORKER_STARTING, WORKER_IDLE, WORKER_BUSY, WORKER_RETIRING } worker_state_t;

typedef struct server_s server_t;

typedef struct server_worker_s {
  server_t *server;
  procord_child_t child;
  int control_fd; /* owned by `connection` */
  procord_connection_t *connection;
  struct event *exit_event;
  worker_state_t state;
  char peer[PEER_SIZE];
  struct timespec busy_since;
  struct server_worker_s *previous, *next;
} server_worker_t;

/* A peer in the gate (TLS, authentication), or a TLS client's relay. */
typedef struct secured_peer_s {
  server_t *server;
  procord_gate_t *gate;   /* until it passes or is refused */
  procord_relay_t *relay; /* then, for a TLS client */
  char peer[PEER_SIZE];
  struct secured_peer_s *previous, *next;
} secured_peer_t;

typedef struct pending_client_s {
  int fd;
  char peer[PEER_SIZE];
  struct timespec since;
  struct pending_client_s *next;
} pending_client_t;

struct server_s {
  const procord_server_options_t *options;
  procord_loop_t *loop;
  struct event_base *base;
  int listen_fd;
  struct event *accept_event, *retry_timer, *drain_timer;
  struct event *signals[2];
  int accepting, accept_paused, draining, failed;
  struct event *respawn_timer; /* backoff after workers that fail to start */
  int start_failures;          /* in a row; reset by a worker that gets ready */
  int max, warm;
  server_worker_t *workers;
  int total, starting, idle, busy;
  pending_client_t *pending_head, *pending_tail;
  int pending;
  secured_peer_t *secured; /* gates and relays */
  int securing;            /* peers in the gate */
  char address[PEER_SIZE + 8];
};

/* ---- Small helpers ---- */

static void log_line(server_t *s, procord_log_level_t level, const char *format, ...) {
  if (!s->options->log) return;
  char line[512];
  va_list arguments;
  va_start(arguments, format);
  vsnprintf(line, sizeof line, format, arguments);
  va_end(arguments);
  s->options->log(s->options->context, level, line);
}

/* libevent has one log for the whole process, which prints on stderr unless
   told otherwise: while a server runs, what libevent says goes to the
   server's log instead (the core never prints). */
static pthread_mutex_t libevent_log_lock = PTHREAD_MUTEX_INITIALIZER;
static server_t *libevent_log_server;

static void on_libevent_log(int severity, const char *message) {
  procord_log_level_t level = severity >= EVENT_LOG_ERR ? PROCORD_LOG_ERROR
                              : severity == EVENT_LOG_WARN ? PROCORD_LOG_WARNING
                                                           : PROCORD_LOG_DEBUG;
  pthread_mutex_lock(&libevent_log_lock);
  if (libevent_log_server) log_line(libevent_log_server, level, "libevent: %s", message);
  pthread_mutex_unlock(&libevent_log_lock);
}

static void route_libevent_log(server_t *s) {
  pthread_mutex_lock(&libevent_log_lock);
  libevent_log_server = s;
  event_set_log_callback(on_libevent_log);
  pthread_mutex_unlock(&libevent_log_lock);
}

/* Back to libevent's own, unless another server took it over since. */
static void unroute_libevent_log(server_t *s) {
  pthread_mutex_lock(&libevent_log_lock);
  if (libevent_log_server == s) {
    libevent_log_server = NULL;
    event_set_log_callback(NULL);
  }
  pthread_mutex_unlock(&libevent_log_lock);
}

void procord_address_string(const struct sockaddr *address, socklen_t length, char *out,
                            size_t size) {
  char host[NI_MAXHOST], port[NI_MAXSERV];
  if (getnameinfo(address, length, host, sizeof host, port, sizeof port,
                  NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    snprintf(out, size, "?");
    return;
  }
  snprintf(out, size, address->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
}

static double milliseconds_since(const struct timespec *start) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)(now.tv_sec - start->tv_sec) * 1e3 + (double)(now.tv_nsec - start->tv_nsec) / 1e6;
}

static const char *answer_name(unsigned char kind) {
  switch (kind) {
  case 'V': return "value";
  case 'X': return "exception";
  case 'U': return "unknown exception";
  case 'E': return "protocol error";
  default: return "no answer";
  }
}

/* ---- Accepting ---- */

static void update_accepting(server_t *s) {
  int want = !s->draining && !s->accept_paused && s->listen_fd >= 0 &&
             s->busy + s->pending + s->securing < s->max;
  if (want && !s->accepting) event_add(s->accept_event, NULL);
  if (!want && s->accepting) event_del(s->accept_event);
  s->accepting = want;
}

static void maybe_stop(server_t *s) {
  if (s->draining && s->busy == 0 && s->pending == 0 && s->total == 0 && !s->secured)
    procord_loop_stop(s->loop);
}

static void begin_drain(server_t *s, const char *why);
static void notify(server_t *s, const char *state);

static void check_keep_running(server_t *s) {
  if (s->options->keep_running && !s->draining && !s->options->keep_running(s->options->context))
    begin_drain(s, "keep-running predicate said stop");
}

/* ---- Workers ---- */

static void on_control_frame(procord_connection_t *c, const procord_frame_t *frame, int error,
                             void *context);
static void on_control_state(procord_connection_t *c, procord_connection_state_t state,
                             void *context);
static void on_worker_exit(evutil_socket_t fd, short events, void *context);
static void dispatch(server_t *s);
static void remove_worker(server_worker_t *w);

static void retire(server_worker_t *w) {
  if (w->state == WORKER_IDLE) w->server->idle--;
  if (w->state == WORKER_STARTING) w->server->starting--;
  w->state = WORKER_RETIRING;
  /* Closing its control socket ends the worker: its next receive sees the end. */
  if (w->connection) procord_connection_close(w->connection);
}

static int start_worker(server_t *s) {
  server_worker_t *w = calloc(1, sizeof *w);
  if (!w) return -ENOMEM;
  procord_spawn_options_t spawn = s->options->worker;
  spawn.channel = PROCORD_CHANNEL_SOCKET;
  int error = procord_spawn(&spawn, &w->child);
  if (error) {
    free(w);
    log_line(s, PROCORD_LOG_ERROR, "could not start a worker (%s): %s",
             spawn.program ? spawn.program : "?", procord_strerror(error));
    return error;
  }
  w->server = s;
  w->control_fd = w->child.read_fd;
  w->state = WORKER_STARTING;
  procord_connection_options_t options = {
      .read_fd = w->child.read_fd,
      .write_fd = w->child.write_fd,
      .on_frame = on_control_frame,
      .on_state = on_control_state,
      .context = w,
  };
  w->exit_event = procord_loop_watch_child(s->loop, w->child.pidfd, on_worker_exit, w);
  if (procord_connection_open(s->loop, &options, &w->connection) != 0) w->connection = NULL;
  w->next = s->workers;
  if (s->workers) s->workers->previous = w;
  s->workers = w;
  s->total++;
  s->starting++;
  if (!w->connection || !w->exit_event) {
    /* Out of memory: end it and reap it here, so its slot is not lost. */
    procord_child_kill(&w->child, SIGKILL);
    int status;
    procord_child_reap(&w->child, &status);
    retire(w);
    remove_worker(w);
    return -ENOMEM;
  }
  return 0;
}

/* Workers that die before they are ready (a broken program, no memory):
   retry later, waiting longer each time, instead of spinning. */
static void schedule_respawn(server_t *s) {
  if (evtimer_pending(s->respawn_timer, NULL)) return;
  int shift = s->start_failures < 6 ? s->start_failures : 6;
  int delay = 100 << shift; /* 100 ms .. 6.4 s */
  struct timeval later = {delay / 1000, (delay % 1000) * 1000};
  evtimer_add(s->respawn_timer, &later);
}

static void keep_warm(server_t *s) {
  if (s->options->dont_fork || evtimer_pending(s->respawn_timer, NULL)) return;
  /* Enough idle (or starting) workers for the warm count (not while
     draining) and for the clients waiting, within the limit. */
  int warm = s->draining ? 0 : s->warm;
  while (s->total < s->max &&
         (s->idle + s->starting < warm || s->idle + s->starting < s->pending)) {
    if (start_worker(s) != 0) {
      s->start_failures++;
      schedule_respawn(s);
      break;
    }
  }
}

static void remove_worker(server_worker_t *w) {
  server_t *s = w->server;
  if (w->previous) w->previous->next = w->next;
  else s->workers = w->next;
  if (w->next) w->next->previous = w->previous;
  if (w->state == WORKER_IDLE) s->idle--;
  if (w->state == WORKER_STARTING) s->starting--;
  if (w->state == WORKER_BUSY) s->busy--;
  s->total--;
  if (w->connection) procord_connection_free(w->connection);
  if (w->exit_event) event_free(w->exit_event);
  free(w);
}

static void on_worker_exit(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  server_worker_t *w = context;
  server_t *s = w->server;
  int status = 0;
  int reaped = procord_child_try_reap(&w->child, &status);
  if (reaped == 0) return;
  char how[64];
  if (reaped != 1) snprintf(how, sizeof how, "ended, reaped elsewhere in this program (status unknown)");
  else if (WIFSIGNALED(status)) snprintf(how, sizeof how, "killed by signal %d", WTERMSIG(status));
  else snprintf(how, sizeof how, "exited with code %d", WEXITSTATUS(status));
  int was_busy = w->state == WORKER_BUSY;
  if (was_busy) {
    log_line(s, PROCORD_LOG_DEBUG, "%s: worker %s during the task (%.1f ms)", w->peer, how,
             milliseconds_since(&w->busy_since));
  } else if (w->state == WORKER_STARTING) {
    s->start_failures++;
    log_line(s, PROCORD_LOG_ERROR, "a worker %s before it was ready (%d in a row)", how,
             s->start_failures);
    schedule_respawn(s);
  } else if (w->state == WORKER_IDLE) {
    log_line(s, PROCORD_LOG_WARNING, "an idle worker %s", how);
  }
  remove_worker(w);
  if (was_busy) check_keep_running(s);
  keep_warm(s);
  dispatch(s);
  update_accepting(s);
  maybe_stop(s);
}

static void on_control_state(procord_connection_t *c, procord_connection_state_t state,
                             void *context) {
  (void)c;
  server_worker_t *w = context;
  if (state != PROCORD_DISCONNECTED) return;
  /* The worker is exiting (or misbehaved): its exit event reaps it. */
  procord_connection_free(w->connection);
  w->connection = NULL;
  w->control_fd = -1; /* closed: its number may be another descriptor's already */
  if (w->state != WORKER_BUSY && w->state != WORKER_RETIRING) retire(w);
}

static void on_control_frame(procord_connection_t *c, const procord_frame_t *frame, int error,
                             void *context) {
  server_worker_t *w = context;
  server_t *s = w->server;
  if (error || (frame->kind != PROCORD_CONTROL_READY && frame->kind != PROCORD_CONTROL_DONE)) {
    procord_child_kill(&w->child, SIGKILL);
    procord_connection_close(c);
    return;
  }
  if (frame->kind == PROCORD_CONTROL_DONE && w->state == WORKER_BUSY) {
    unsigned char answer = frame->length > 0 ? frame->body[0] : 0;
    int name_length = frame->length > 1 ? (int)frame->length - 1 : 0;
    log_line(s, PROCORD_LOG_DEBUG, "%s: task %.*s, %s (%.1f ms)", w->peer, name_length,
             name_length ? (const char *)frame->body + 1 : "(none)", answer_name(answer),
             milliseconds_since(&w->busy_since));
    s->busy--;
    check_keep_running(s);
  } else if (w->state == WORKER_STARTING) {
    s->starting--;
    s->start_failures = 0;
  } else {
    return; /* a retiring worker's last word */
  }
  w->state = WORKER_IDLE;
  s->idle++;
  dispatch(s);
  if (s->draining && w->state == WORKER_IDLE) retire(w);
  update_accepting(s);
  maybe_stop(s);
}

/* ---- Clients ---- */

static pending_client_t *take_pending(server_t *s) {
  pending_client_t *p = s->pending_head;
  if (!p) return NULL;
  s->pending_head = p->next;
  if (!s->pending_head) s->pending_tail = NULL;
  s->pending--;
  return p;
}

static server_worker_t *find_idle(server_t *s) {
  for (server_worker_t *w = s->workers; w; w = w->next)
    if (w->state == WORKER_IDLE && w->connection) return w;
  return NULL;
}

/* Hands waiting clients to idle workers, oldest first; starts workers for the rest. */
static void dispatch(server_t *s) {
  server_worker_t *w;
  while (s->pending_head && (w = find_idle(s))) {
    pending_client_t *p = s->pending_head;
    if (procord_server_hand_over(w->control_fd, p->fd) != 0) {
      /* That worker is gone or going: it will be reaped and replaced. */
      procord_child_kill(&w->child, SIGKILL);
      retire(w);
      continue;
    }
    take_pending(s);
    close(p->fd);
    s->idle--;
    s->busy++;
    w->state = WORKER_BUSY;
    memcpy(w->peer, p->peer, sizeof w->peer);
    w->busy_since = p->since;
    free(p);
    /* Draining: this client gets its task served, and no idle wait after. */
    if (s->draining) procord_server_tell_stop(w->control_fd);
  }
  keep_warm(s);
}

static void serve_here(server_t *s, int fd, const char *peer) {
  procord_worker_report_t report = {0};
  procord_worker_options_t options = {
      .read_fd = fd,
      .write_fd = fd,
      .tasks = s->options->tasks,
      .task_count = s->options->task_count,
      .reusable = 1,
      .read_timeout_ms = s->options->read_timeout_ms,
      /* The task's stdout goes to its client; stderr stays the server's (its log). */
      .capture_output = PROCORD_CAPTURE_STDOUT,
      .report = &report,
  };
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  procord_worker_serve(&options);
  close(fd);
  log_line(s, PROCORD_LOG_DEBUG, "%s: task %s, %s (%.1f ms)", peer,
           report.task_name[0] ? report.task_name : "(none)", answer_name(report.last_answer),
           milliseconds_since(&start));
}

static void enqueue(server_t *s, int fd, const char *peer) {
  pending_client_t *p = calloc(1, sizeof *p);
  if (!p) {
    close(fd);
    return;
  }
  p->fd = fd;
  memcpy(p->peer, peer, sizeof p->peer);
  clock_gettime(CLOCK_MONOTONIC, &p->since);
  if (s->pending_tail) s->pending_tail->next = p;
  else s->pending_head = p;
  s->pending_tail = p;
  s->pending++;
}

/* ---- Secured peers ---- */

static void forget_secured(secured_peer_t *e) {
  server_t *s = e->server;
  if (e->previous) e->previous->next = e->next;
  else s->secured = e->next;
  if (e->next) e->next->previous = e->previous;
  free(e);
}

static void on_relay_done(procord_relay_t *relay, void *context) {
  (void)relay;
  secured_peer_t *e = context;
  server_t *s = e->server;
  forget_secured(e);
  maybe_stop(s);
}

static void on_gate_done(procord_gate_t *gate, const procord_gate_result_t *result, void *context) {
  (void)gate;
  secured_peer_t *e = context;
  server_t *s = e->server;
  e->gate = NULL;
  s->securing--;
  if (!result->passed) {
    log_line(s, result->peer_left ? PROCORD_LOG_DEBUG : PROCORD_LOG_WARNING, "%s: %s: %s%s", e->peer,
             result->peer_left ? "gone" : "refused",
             result->tls_failed ? "TLS handshake failed: " : "", result->reason);
  } else if (result->tls) {
    int worker_fd = -1;
    e->relay = procord_relay_start(result->tls, &worker_fd, on_relay_done, e);
    if (e->relay) enqueue(s, worker_fd, e->peer);
    else log_line(s, PROCORD_LOG_ERROR, "%s: no descriptors or memory for its relay", e->peer);
  } else if (s->options->dont_fork) {
    serve_here(s, result->fd, e->peer);
    check_keep_running(s);
  } else {
    enqueue(s, result->fd, e->peer);
  }
  if (!e->relay) forget_secured(e);
  dispatch(s);
  update_accepting(s);
  maybe_stop(s);
}

static void secure(server_t *s, int fd, const char *peer) {
  secured_peer_t *e = calloc(1, sizeof *e);
  if (!e) {
    close(fd);
    return;
  }
  e->server = s;
  memcpy(e->peer, peer, sizeof e->peer);
  int timeout = s->options->handshake_timeout_ms > 0 ? s->options->handshake_timeout_ms
                                                     : PROCORD_DEFAULT_HANDSHAKE_TIMEOUT_MS;
  e->gate = procord_gate_start(s->base, s->options->security, fd, timeout, on_gate_done, e);
  if (!e->gate) {
    free(e);
    return;
  }
  e->next = s->secured;
  if (s->secured) s->secured->previous = e;
  s->secured = e;
  s->securing++;
}

/* Drops every peer still in the gate (a drain, a stop); with `relays`, the
   relays of clients being served too. */
static void drop_secured(server_t *s, int relays) {
  secured_peer_t *e = s->secured, *next;
  for (; e; e = next) {
    next = e->next;
    if (e->gate) {
      procord_gate_abort(e->gate);
      s->securing--;
    } else if (relays) {
      procord_relay_free(e->relay);
    } else {
      continue;
    }
    forget_secured(e);
  }
}

static void on_accept(evutil_socket_t listen_fd, short events, void *context) {
  (void)events;
  server_t *s = context;
  while (!s->draining && s->busy + s->pending + s->securing < s->max) {
    struct sockaddr_storage address;
    socklen_t length = sizeof address;
    int fd = accept4((int)listen_fd, (struct sockaddr *)&address, &length, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        log_line(s, PROCORD_LOG_WARNING, "accept: %s; retrying in %d ms", strerror(errno),
                 ACCEPT_RETRY_MS);
        s->accept_paused = 1;
        struct timeval later = {0, ACCEPT_RETRY_MS * 1000};
        evtimer_add(s->retry_timer, &later);
      }
      break;
    }
    if (s->options->accept_filter &&
        !s->options->accept_filter(s->options->context, (struct sockaddr *)&address, length)) {
      close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char peer[PEER_SIZE];
    procord_address_string((struct sockaddr *)&address, length, peer, sizeof peer);
    if (s->options->security) {
      secure(s, fd, peer);
      continue;
    }
    if (s->options->dont_fork) {
      serve_here(s, fd, peer);
      check_keep_running(s);
      break; /* back to the loop: a signal may be waiting */
    }
    enqueue(s, fd, peer);
    dispatch(s);
  }
  update_accepting(s);
}

static void on_accept_retry(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  server_t *s = context;
  s->accept_paused = 0;
  update_accepting(s);
}

/* ---- Stopping ---- */

static void on_drain_timeout(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  server_t *s = context;
  log_line(s, PROCORD_LOG_WARNING, "drain timeout: killing %d running tasks", s->busy);
  for (server_worker_t *w = s->workers; w; w = w->next) procord_child_kill(&w->child, SIGKILL);
  pending_client_t *p;
  while ((p = take_pending(s))) {
    close(p->fd);
    free(p);
  }
  for (server_worker_t *w = s->workers; w; w = w->next)
    if (w->state == WORKER_IDLE || w->state == WORKER_STARTING) retire(w);
  drop_secured(s, 1);
  maybe_stop(s);
}

static void begin_drain(server_t *s, const char *why) {
  if (s->draining) return;
  s->draining = 1;
  log_line(s, PROCORD_LOG_INFO, "stopping (%s): %d tasks running", why, s->busy + s->pending);
  update_accepting(s);
  /* Closing the listening socket refuses new connections at once. */
  if (s->listen_fd >= 0) close(s->listen_fd);
  s->listen_fd = -1;
  /* Peers not through the gate yet are not clients yet. */
  drop_secured(s, 0);
  /* Clients already accepted are served: idle workers take them first, and
     starting ones stay for the rest; the others go. */
  dispatch(s);
  int needed = s->pending;
  for (server_worker_t *w = s->workers; w; w = w->next) {
    if (w->state == WORKER_STARTING && needed > 0) needed--;
    else if (w->state == WORKER_IDLE || w->state == WORKER_STARTING) retire(w);
    /* A client that keeps its connection for more tasks (a pool's) is let
       go once its running task is done, not at the drain timeout. */
    else if (w->state == WORKER_BUSY && w->connection) procord_server_tell_stop(w->control_fd);
  }
  notify(s, "STOPPING=1");
  int limit = s->options->drain_timeout_ms > 0 ? s->options->drain_timeout_ms : DEFAULT_DRAIN_TIMEOUT_MS;
  struct timeval later = {limit / 1000, (limit % 1000) * 1000};
  evtimer_add(s->drain_timer, &later);
  maybe_stop(s);
}

static void on_respawn(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  server_t *s = context;
  keep_warm(s);
  dispatch(s);
  update_accepting(s);
}

static void on_signal(evutil_socket_t signal, short events, void *context) {
  (void)events;
  begin_drain(context, signal == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* ---- Setting up ---- */

int procord_server_activated_socket(void) {
  const char *pid = getenv("LISTEN_PID");
  const char *count = getenv("LISTEN_FDS");
  if (!pid || !count || atol(pid) != (long)getpid() || atoi(count) < 1) return -1;
  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDS");
  unsetenv("LISTEN_FDNAMES");
  int fd = 3; /* SD_LISTEN_FDS_START */
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  return fd;
}

static int bind_listener(server_t *s) {
  const procord_server_options_t *o = s->options;
  const char *host = o->hostname ? o->hostname : "127.0.0.1";
  int fd = -1;
  int error = procord_listen_socket(host, o->port, o->reuse_address, &fd);
  if (error == PROCORD_ERESOLVE)
    log_line(s, PROCORD_LOG_ERROR, "cannot resolve %s", host);
  else if (error)
    log_line(s, PROCORD_LOG_ERROR, "cannot listen on %s port %d: %s%s", host, o->port, procord_strerror(error),
             error == -EADDRINUSE && !o->reuse_address
                 ? " (another server has it, or a stopped one's connections still wait out TIME_WAIT: "
                   "reuse_address, --procord-reuse-address, takes it over from those)"
                 : "");
  return error ? error : fd;
}

/* systemd's Type=notify: READY=1 once listening (with the address), STOPPING=1 at a drain. */
static void notify(server_t *s, const char *state) {
  (void)s;
  const char *path = getenv("NOTIFY_SOCKET");
  if (!path || !*path || strlen(path) >= sizeof ((struct sockaddr_un *)0)->sun_path) return;
  struct sockaddr_un address = {.sun_family = AF_UNIX};
  memcpy(address.sun_path, path, strlen(path));
  if (address.sun_path[0] == '@') address.sun_path[0] = 0; /* abstract namespace */
  socklen_t length = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
  char message[256];
  int n = snprintf(message, sizeof message, "%s\nMAINPID=%d", state, (int)getpid());
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  sendto(fd, message, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&address, length);
  close(fd);
}

static int open_listener(server_t *s) {
  /* 0 is "none", as in a zero-initialized struct: never stdin. */
  int fd = s->options->listen_fd > 0 ? s->options->listen_fd : -1;
  if (fd >= 0) {
    int listening = 0;
    socklen_t size = sizeof listening;
    int error = getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &size) != 0 ? -errno
                : listening                                                     ? 0
                                                                                : PROCORD_EINVAL;
    if (error) {
      log_line(s, PROCORD_LOG_ERROR, "cannot serve descriptor %d (listen_fd): %s", fd,
               error == PROCORD_EINVAL ? "a socket that does not listen" : strerror(-error));
      return error;
    }
  }
  if (fd < 0) fd = procord_server_activated_socket();
  if (fd >= 0) {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
  } else {
    fd = bind_listener(s);
    if (fd < 0) return fd;
  }
  struct sockaddr_storage address;
  socklen_t length = sizeof address;
  if (getsockname(fd, (struct sockaddr *)&address, &length) == 0)
    procord_address_string((struct sockaddr *)&address, length, s->address, sizeof s->address);
  s->listen_fd = fd;
  return 0;
}

static int is_loopback(const struct sockaddr_storage *address) {
  if (address->ss_family == AF_INET)
    return (ntohl(((const struct sockaddr_in *)address)->sin_addr.s_addr) >> 24) == 127;
  if (address->ss_family != AF_INET6) return 1; /* a Unix socket, say: not the network */
  const struct in6_addr *a = &((const struct sockaddr_in6 *)address)->sin6_addr;
  return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
}

/* What a server's security options allow; logs why not. */
static int check_security(server_t *s) {
  const procord_security_t *security = s->options->security;
  if (!security) return 0;
  if (security->role != PROCORD_SECURITY_SERVER) {
    log_line(s, PROCORD_LOG_ERROR, "the server's security options were made for a client");
    return PROCORD_EINVAL;
  }
  if (security->tls && s->options->dont_fork) {
    log_line(s, PROCORD_LOG_ERROR, "TLS needs worker processes: it cannot be combined with dont-fork");
    return PROCORD_EINVAL;
  }
  return 0;
}

/* Reachable beyond this machine by clients it cannot tell apart: say so,
   once, at start. TLS alone encrypts, but lets any client in. */
static void warn_if_exposed(server_t *s) {
  const procord_security_t *security = s->options->security;
  if (security && (security->secret_length > 0 || (security->tls && (SSL_CTX_get_verify_mode(security->tls) & SSL_VERIFY_FAIL_IF_NO_PEER_CERT)))) return;
  struct sockaddr_storage address;
  socklen_t length = sizeof address;
  if (getsockname(s->listen_fd, (struct sockaddr *)&address, &length) != 0 || is_loopback(&address)) return;
  log_line(s, PROCORD_LOG_WARNING,
           "listening on %s %s: anyone who can reach this port can run tasks (see docs/SECURITY.md)",
           s->address, security ? "with TLS but without client certificates or a shared secret"
                                : "without TLS or a shared secret");
}

static void release_server(server_t *s) {
  /* Whatever is left: kill, then reap, so no process is left behind. */
  while (s->workers) {
    server_worker_t *w = s->workers;
    procord_child_kill(&w->child, SIGKILL);
    int status;
    procord_child_reap(&w->child, &status);
    w->state = WORKER_RETIRING;
    remove_worker(w);
  }
  pending_client_t *p;
  while ((p = take_pending(s))) {
    close(p->fd);
    free(p);
  }
  drop_secured(s, 1);
  for (int i = 0; i < 2; i++)
    if (s->signals[i]) event_free(s->signals[i]);
  if (s->accept_event) event_free(s->accept_event);
  if (s->retry_timer) event_free(s->retry_timer);
  if (s->drain_timer) event_free(s->drain_timer);
  if (s->respawn_timer) event_free(s->respawn_timer);
  if (s->listen_fd >= 0) close(s->listen_fd);
}

int procord_server_run(const procord_server_options_t *options) {
  procord_lineage_mark_serving(); /* it may delegate from now on */
  if (!options || (!options->dont_fork && !options->worker.program)) return PROCORD_EINVAL;
  server_t server = {0}, *s = &server;
  s->options = options;
  s->listen_fd = -1;
  s->max = options->max_simultaneous_tasks > 0 ? options->max_simultaneous_tasks
                                               : PROCORD_DEFAULT_MAX_SIMULTANEOUS_TASKS;
  s->warm = options->prestarted_workers > 0 ? options->prestarted_workers : 2;
  if (s->warm > s->max) s->warm = s->max;
  int error = procord_loop_new(&s->loop);
  if (error) return error;
  s->base = procord_loop_base(s->loop);
  route_libevent_log(s);
  error = check_security(s);
  if (!error) error = open_listener(s);
  if (!error) warn_if_exposed(s);
  if (!error) {
    s->accept_event = event_new(s->base, s->listen_fd, EV_READ | EV_PERSIST, on_accept, s);
    s->retry_timer = evtimer_new(s->base, on_accept_retry, s);
    s->drain_timer = evtimer_new(s->base, on_drain_timeout, s);
    s->respawn_timer = evtimer_new(s->base, on_respawn, s);
    if (!s->accept_event || !s->retry_timer || !s->drain_timer || !s->respawn_timer) error = -ENOMEM;
  }
  if (!error && options->handle_signals) {
    /* A program inherits its starter's signal mask (a test runner's threads
       block SIGTERM, for one): the signals we drain on must get through. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_UNBLOCK, &stop_signals, NULL);
    s->signals[0] = evsignal_new(s->base, SIGTERM, on_signal, s);
    s->signals[1] = evsignal_new(s->base, SIGINT, on_signal, s);
    for (int i = 0; i < 2; i++)
      if (!s->signals[i] || event_add(s->signals[i], NULL) < 0) error = -ENOMEM;
  }
  if (!error) {
    keep_warm(s);
    update_accepting(s);
    log_line(s, PROCORD_LOG_INFO, "listening on %s (at most %d tasks at once%s)", s->address,
             s->max, options->dont_fork ? ", in this process" : "");
    char ready[200];
    snprintf(ready, sizeof ready, "READY=1\nSTATUS=listening on %s", s->address);
    notify(s, ready);
    procord_loop_run(s->loop);
    log_line(s, PROCORD_LOG_INFO, "stopped");
  }
  release_server(s);
  procord_loop_free(s->loop);
  unroute_libevent_log(s);
  return error;
}
