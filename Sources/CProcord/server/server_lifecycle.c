/*
 * A worker server's life (procord/server.h): its options and limits, its
 * listening socket, starting it on a loop (procord_server_start), stopping
 * it (procord_server_stop), its end once every client and worker is gone
 * (on_stopped), freeing it, and procord_server_run, which is all of these on
 * a loop of its own. What it does meanwhile is server.c's (accepting, the
 * gate, draining), server_clients.c's and server_workers.c's.
 */
#define _GNU_SOURCE
#include "base/base_private.h"
#include "io/io_private.h"
#include "procord/error.h"
#include "procord/listen.h"
#include "server/server_private.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_DRAIN_TIMEOUT_MS 30000
#define DEFER_ACCEPT_S 2 /* then back to the loop: the others' bytes wait too */

/* ---- Listening ---- */

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
    server_log(s, PROCORD_LOG_ERROR, "cannot resolve %s", host);
  else if (error)
    server_log(s, PROCORD_LOG_ERROR, "cannot listen on %s port %d: %s%s", host, o->port, procord_strerror(error),
             error == -EADDRINUSE && !o->reuse_address
                 ? " (another server has it, or a stopped one's connections still wait out TIME_WAIT: "
                   "reuse_address, --procord-reuse-address, takes it over from those)"
                 : "");
  return error ? error : fd;
}

/* systemd's Type=notify: READY=1 once listening (with the address),
   STOPPING=1 at a drain. Only procord_server_run's server speaks for the
   process: one embedded in a program leaves that to the program. */
void server_notify(server_t *s, const char *state) {
  if (!s->own_loop) return;
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
      server_log(s, PROCORD_LOG_ERROR, "cannot serve descriptor %d (listen_fd): %s", fd,
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
  if (getsockname(fd, (struct sockaddr *)&address, &length) == 0) {
    procord_address_string((struct sockaddr *)&address, length, s->address, sizeof s->address);
    /* A Unix socket (socket activation) has no port: 0. */
    s->port = address.ss_family == AF_INET6  ? ntohs(((struct sockaddr_in6 *)&address)->sin6_port)
              : address.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&address)->sin_port)
                                             : 0;
  }
  s->listen_fd = fd;
  /* Every client speaks first (a task, a TLS greeting, a secret's first
     frame): the kernel keeps a connection until its first bytes come, so
     a flood of connections that say nothing costs the server nothing and
     crowds no client out. After DEFER_ACCEPT_S a silent one is accepted
     anyway, and its idle limit applies. */
  int seconds = DEFER_ACCEPT_S;
  setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &seconds, sizeof seconds); /* not TCP: harmless */
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
    server_log(s, PROCORD_LOG_ERROR, "the server's security options were made for a client");
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
  server_log(s, PROCORD_LOG_WARNING,
           "listening on %s %s: anyone who can reach this port can run tasks (see docs/SECURITY.md)",
           s->address, security ? "with TLS but without client certificates or a shared secret"
                                : "without TLS or a shared secret");
}

/* ---- Limits ---- */

static int or_default(int value, int fallback) { return value > 0 ? value : value < 0 ? -1 : fallback; }

/* The options' limits, with their defaults. */
static void apply_limits(server_t *s, const procord_server_options_t *options) {
  s->max = options->max_simultaneous_tasks > 0 ? options->max_simultaneous_tasks
                                               : PROCORD_DEFAULT_MAX_SIMULTANEOUS_TASKS;
  if (options->dont_fork) s->max = 1; /* one task at a time, in this process */
  s->warm = options->prestarted_workers > 0 ? options->prestarted_workers : 2;
  if (s->warm > s->max) s->warm = s->max;
  s->max_connections = options->max_connections > 0 ? options->max_connections : PROCORD_DEFAULT_MAX_CONNECTIONS;
  s->max_connections_per_peer = options->max_connections_per_peer > 0 ? options->max_connections_per_peer : 0;
  s->max_tasks_per_peer = options->max_tasks_per_peer > 0 ? options->max_tasks_per_peer : 0;
  s->idle_timeout_ms = or_default(options->idle_timeout_ms, PROCORD_DEFAULT_IDLE_TIMEOUT_MS);
  s->task_timeout_ms = or_default(options->task_timeout_ms, PROCORD_DEFAULT_TASK_TIMEOUT_MS);
  s->answer_timeout_ms = or_default(options->answer_timeout_ms, PROCORD_DEFAULT_ANSWER_TIMEOUT_MS);
  s->read_timeout_ms = options->read_timeout_ms > 0 ? options->read_timeout_ms : 0;
  s->min_receive_rate = options->min_receive_rate > 0 ? options->min_receive_rate : PROCORD_DEFAULT_MIN_RATE;
  s->min_send_rate = options->min_send_rate > 0 ? options->min_send_rate : PROCORD_DEFAULT_MIN_RATE;
  s->drain_timeout_ms = options->drain_timeout_ms > 0 ? options->drain_timeout_ms : DEFAULT_DRAIN_TIMEOUT_MS;
  s->max_message_size = options->max_message_size > 0 ? options->max_message_size : procord_default_max_message_size();
  s->max_held_bytes = options->max_buffered_task_bytes;
  if (s->max_held_bytes == 0) {
    s->max_held_bytes = (size_t)256 << 20;
    if (s->max_message_size <= SIZE_MAX / 2 && 2 * s->max_message_size > s->max_held_bytes)
      s->max_held_bytes = 2 * s->max_message_size;
  }
  s->max_owed_bytes = options->max_buffered_answer_bytes > 0 ? options->max_buffered_answer_bytes : s->max_held_bytes;
  s->stats = options->stats ? options->stats : &s->local_stats;
  memset(s->stats, 0, sizeof *s->stats);
}

/*
 * Descriptors for max_connections clients (a TLS client holds three: its
 * socket and its relay's pair) and the workers (their control and session
 * sockets): the soft limit is raised toward the hard one if it is short
 * (Linux starts programs at 1024), and max_connections lowered, saying so,
 * if even that is not enough.
 */
static void fit_descriptor_limit(server_t *s) {
  struct rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  rlim_t per_client = s->options->security && procord_security_uses_tls(s->options->security) ? 3 : 1;
  rlim_t reserve = (rlim_t)s->max * 4 + 64;
  rlim_t needed = (rlim_t)s->max_connections * per_client + reserve;
  if (limit.rlim_cur >= needed) return;
  rlim_t raised = limit.rlim_max == RLIM_INFINITY || limit.rlim_max >= needed ? needed : limit.rlim_max;
  if (raised > limit.rlim_cur) {
    struct rlimit wanted = {raised, limit.rlim_max};
    if (setrlimit(RLIMIT_NOFILE, &wanted) == 0) limit.rlim_cur = raised;
  }
  if (limit.rlim_cur >= needed) return;
  int fits = limit.rlim_cur > reserve + per_client ? (int)((limit.rlim_cur - reserve) / per_client) : 1;
  /* Only a limit asked for is worth a warning: the default fits itself. */
  server_log(s, s->options->max_connections > 0 ? PROCORD_LOG_WARNING : PROCORD_LOG_INFO,
             "max_connections lowered from %d to %d: the descriptor limit is %llu (raise it with ulimit -n, "
             "or LimitNOFILE= under systemd)", s->max_connections, fits, (unsigned long long)limit.rlim_cur);
  s->max_connections = fits;
}

void procord_server_options_init(procord_server_options_t *options) {
  /* Zero is each field's default: a field a later version appends too. */
  if (!options) return;
  memset(options, 0, sizeof *options);
  options->size = sizeof *options;
  procord_spawn_options_init(&options->worker);
}

/* ---- The end ---- */

/* Publishes the end for procord_server_is_stopped and procord_server_wait,
   under the loop's done lock (the waits' condition). */
static void publish_stopped(server_t *s) {
  pthread_mutex_lock(procord_loop_done_lock(s->loop));
  __atomic_store_n(&s->stopped, 1, __ATOMIC_RELEASE);
  pthread_cond_broadcast(procord_loop_done_cond(s->loop));
  pthread_mutex_unlock(procord_loop_done_lock(s->loop));
}

/*
 * Every client and worker is gone: what is left of the server on the loop
 * (its events, its listening socket, its place in libevent's log and among
 * the loop's work) goes too, so that only its memory remains, freed by
 * procord_server_free on any thread, even after the loop. Then `tell` calls
 * on_stopped, which may free the server (the free waits for its return),
 * and the end is published: nothing of the server is touched after that.
 */
static void finish(server_t *s, int tell) {
  if (s->finished) return;
  s->finished = s->finishing = 1;
  server_log(s, PROCORD_LOG_INFO, "stopped");
  server_events_free(s);
  server_workers_release(s); /* none left: its dispatch event */
  server_peers_free(s);
  if (s->listen_fd >= 0) close(s->listen_fd);
  s->listen_fd = -1;
  procord_log_unroute_from_server(&s->log_route);
  procord_loop_remove_work(s->loop, &s->work);
  if (s->finish_event) event_free(s->finish_event); /* in its own callback, it may be */
  s->finish_event = NULL;
  procord_loop_t *own_loop = s->own_loop ? s->loop : NULL;
  if (tell && s->options->on_stopped) {
    __atomic_store_n(&s->in_on_stopped, 1, __ATOMIC_RELEASE);
    s->options->on_stopped(s->options->context);
    __atomic_store_n(&s->in_on_stopped, 0, __ATOMIC_RELEASE);
    if (__atomic_load_n(&s->free_requested, __ATOMIC_ACQUIRE)) {
      procord_free(s);
      return;
    }
  }
  publish_stopped(s);
  if (own_loop) procord_loop_stop(own_loop);
}

static void on_finish_event(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  server_t *s = context;
  if (s->client_count != 0 || s->total != 0 || s->secured) {
    s->finishing = 0; /* something came back meanwhile: its end calls again */
    return;
  }
  finish(s, 1);
}

void server_finish_soon(server_t *s) {
  if (s->finishing) return;
  s->finishing = 1;
  event_active(s->finish_event, 0, 0);
}

/* procord_loop_free with the server still on its loop: stop now. */
static void on_loop_freed(procord_loop_work_t *work) {
  server_t *s = (server_t *)((char *)work - offsetof(server_t, work));
  server_stop_now(s, "its loop is being freed");
}

/* ---- Starting ---- */

/* Says in the log why the options cannot make a server; NULL if they can. */
static const char *options_mistake(const procord_server_options_t *options) {
  return !options->dont_fork && !options->worker.program
             ? "no worker program: set options.worker (its program and argv, see server.h), "
               "or dont_fork with tasks"
         : options->dont_fork && options->task_count == 0
             ? "dont_fork without tasks: set options.tasks and options.task_count"
             : NULL;
}

/* A start that failed half-way: nothing of it is left. */
static void undo_start(server_t *s) {
  server_events_free(s);
  if (s->finish_event) event_free(s->finish_event);
  s->finish_event = NULL;
  server_workers_release(s);
  server_peers_free(s);
  if (s->listen_fd >= 0) close(s->listen_fd);
  s->listen_fd = -1;
  procord_log_unroute_from_server(&s->log_route);
}

/* On the loop's thread (or before it runs): listen, make the events, start
   the workers to keep warm, accept. */
static void start_on_loop(void *argument) {
  server_t *s = argument;
  const procord_server_options_t *options = s->options;
  /* libevent has one log for the whole process: while a server runs, what
     libevent says goes to the server's log (log.c). */
  procord_log_route_to_server(&s->log_route, options->log, options->context);
  int error = check_security(s);
  if (!error) fit_descriptor_limit(s);
  if (!error) error = open_listener(s);
  if (!error) warn_if_exposed(s);
  if (!error) {
    s->finish_event = event_new(s->base, -1, 0, on_finish_event, s);
    error = s->finish_event ? server_events_open(s) : -ENOMEM;
  }
  if (error) {
    undo_start(s);
    s->start_error = error;
    return;
  }
  s->work.abort = on_loop_freed;
  procord_loop_add_work(s->loop, &s->work);
  server_workers_keep_warm(s);
  server_accept(s);
  server_log(s, PROCORD_LOG_INFO, "listening on %s (at most %d task%s at once%s, %d connections)", s->address,
             s->max, s->max == 1 ? "" : "s", options->dont_fork ? ", in this process" : "", s->max_connections);
  char ready[200];
  snprintf(ready, sizeof ready, "READY=1\nSTATUS=listening on %s", s->address);
  server_notify(s, ready);
  if (options->on_listening) options->on_listening(options->context, s->address, s->port);
}

static int start(procord_loop_t *loop, const procord_server_options_t *given, int own_loop,
                 server_t **result) {
  procord_lineage_mark_serving(); /* it may delegate from now on */
  if (!given) return PROCORD_EINVAL;
  /* Read by its size, as every options struct (options_private.h). */
  procord_server_options_t copy;
  const procord_server_options_t *options = &copy;
  const char *mistake = PROCORD_OPTIONS_COPY(copy, given, PROCORD_FIRST_SIZE_SERVER_OPTIONS) != 0
                            ? "the server's options are larger than this Procord's and set a field it does not "
                              "know (built against a newer procord/server.h?), or their size is wrong"
                        : procord_spawn_options_nested(&copy.worker) != 0
                            ? "the server's worker options have a size that is not this Procord's"
                            : NULL;
  if (!mistake) mistake = options_mistake(options);
  if (!mistake && (!loop || !result))
    mistake = "procord_server_start: no loop, or nowhere to store the server (NULL)";
  if (mistake) {
    if (options->log) options->log(options->context, PROCORD_LOG_ERROR, mistake);
    return PROCORD_EINVAL;
  }
  server_t *s = procord_allocate_zeroed(1, sizeof *s);
  if (!s) return -ENOMEM;
  s->copy = copy;
  s->options = &s->copy;
  s->loop = loop;
  s->base = procord_loop_base(loop);
  s->own_loop = own_loop;
  s->listen_fd = -1;
  apply_limits(s, options);
  if (options->handle_signals) {
    /* A program inherits its starter's signal mask (a test runner's threads
       block SIGTERM, for one): the signals we drain on must get through. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_UNBLOCK, &stop_signals, NULL);
  }
  /* The loop's base is used on its thread only. */
  procord_loop_call_and_wait(loop, start_on_loop, s);
  int error = s->start_error;
  s->copy.hostname = NULL; /* the caller's, read while listening only */
  if (error) {
    procord_free(s);
    return error;
  }
  *result = s;
  return 0;
}

int procord_server_start(procord_loop_t *loop, const procord_server_options_t *options,
                         procord_server_t **server) {
  return start(loop, options, 0, server);
}

int procord_server_address(const procord_server_t *server, char *buffer, size_t size, int *port) {
  if (!server) return PROCORD_EINVAL;
  if (port) *port = server->port;
  if (!buffer || size == 0) return 0;
  int length = snprintf(buffer, size, "%s", server->address[0] ? server->address : "?");
  return length >= 0 && (size_t)length < size ? 0 : -ENOBUFS;
}

/* ---- Stopping ---- */

typedef struct {
  server_t *server;
  procord_server_stop_how_t how;
} stop_call_t;

static void stop_on_loop(void *argument) {
  stop_call_t *call = argument;
  server_t *s = call->server;
  if (s->finishing) return;
  if (call->how == PROCORD_SERVER_STOP_NOW) server_stop_now(s, "procord_server_stop, now");
  else server_begin_drain(s, "procord_server_stop");
}

int procord_server_stop(procord_server_t *server, procord_server_stop_how_t how) {
  if (!server || (how != PROCORD_SERVER_STOP_GRACEFUL && how != PROCORD_SERVER_STOP_NOW)) return PROCORD_EINVAL;
  if (procord_server_is_stopped(server)) return 0;
  stop_call_t call = {server, how};
  procord_loop_call_and_wait(server->loop, stop_on_loop, &call);
  return 0;
}

int procord_server_is_stopped(const procord_server_t *server) {
  return server && __atomic_load_n(&server->stopped, __ATOMIC_ACQUIRE);
}

static int holds_stopped(void *argument) { return procord_server_is_stopped(argument); }

int procord_server_wait(procord_server_t *server, int timeout_ms) {
  if (!server) return 0;
  if (procord_server_is_stopped(server)) return 1;
  return procord_loop_wait_until(server->loop, holds_stopped, server, timeout_ms);
}

/* Freed while running: everything ends here and now, every worker killed
   and reaped (waited for) before this returns. */
static void abandon_on_loop(void *argument) {
  server_t *s = argument;
  if (s->finished) return;
  if (!s->draining) server_log(s, PROCORD_LOG_INFO, "freed while running: stopping at once");
  s->draining = s->finishing = 1; /* nothing starts, nothing finishes but here */
  if (s->accept_event) event_del(s->accept_event);
  server_clients_close_all(s);
  server_workers_release(s);
  server_drop_secured(s, 1);
  finish(s, 0);
}

void procord_server_free(procord_server_t *server) {
  if (!server) return;
  /* From on_stopped: freed once it returns. */
  if (__atomic_load_n(&server->in_on_stopped, __ATOMIC_ACQUIRE)) {
    __atomic_store_n(&server->free_requested, 1, __ATOMIC_RELEASE);
    return;
  }
  if (!procord_server_is_stopped(server)) procord_loop_call_and_wait(server->loop, abandon_on_loop, server);
  procord_free(server);
}

/* ---- A server on a loop of its own ---- */

int procord_server_run(const procord_server_options_t *options) {
  procord_loop_t *loop = NULL;
  if (options) { /* start says what is wrong with them, if anything */
    int error = procord_loop_new(&loop);
    if (error) return error;
  }
  server_t *s = NULL;
  int error = start(loop, options, 1, &s);
  if (!error) {
    /* Until the server has finished (which stops its loop). */
    procord_loop_run(loop);
    procord_server_free(s);
  }
  procord_loop_free(loop);
  return error;
}
