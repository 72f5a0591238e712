/*
 * A worker server (procord/server.h): listen, accept, take each connection
 * through the gate (TLS, the secret) when asked, bound how many are held,
 * and stop cleanly (drain on SIGTERM/SIGINT). Clients are server_clients.c's,
 * workers server_workers.c's (see server_core.h for the whole).
 */
#define _GNU_SOURCE
#include "lineage_private.h"
#include "loop_private.h"
#include "procord/connection.h"
#include "procord/error.h"
#include "procord/frame.h"
#include "procord/listen.h"
#include "security_private.h"
#include "server_core.h"
#include "server_private.h"
#include "log_private.h"
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
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_DRAIN_TIMEOUT_MS 30000
#define ACCEPT_RETRY_MS 100 /* after EMFILE: wait for descriptors, do not spin */
#define ACCEPTS_PER_TURN 64
#define DEFER_ACCEPT_S 2 /* then back to the loop: the others' bytes wait too */

/* A peer in the gate (TLS, authentication), or a TLS client's relay. */
typedef struct secured_peer_s {
  server_t *server;
  procord_gate_t *gate;   /* until it passes or is refused */
  procord_relay_t *relay; /* then, for a TLS client */
  server_peer_t *peer;    /* counted in its address's connections while in the gate */
  char name[PEER_SIZE];
  struct secured_peer_s *previous, *next;
} secured_peer_t;

/* ---- Small helpers ---- */

void server_log(server_t *s, procord_log_level_t level, const char *format, ...) {
  if (!s->options->log) return;
  char line[512];
  va_list arguments;
  va_start(arguments, format);
  vsnprintf(line, sizeof line, format, arguments);
  va_end(arguments);
  s->options->log(s->options->context, level, line);
}

/* libevent has one log for the whole process: while a server runs, what
   libevent says goes to the server's log (log.c). */
static void route_libevent_log(server_t *s) {
  procord_log_route_to_server(s, s->options->log, s->options->context);
}

static void unroute_libevent_log(server_t *s) { procord_log_unroute_from_server(s); }

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

/* ---- Stopping ---- */

static void begin_drain(server_t *s, const char *why);
static void notify(server_t *s, const char *state);

void server_maybe_stop(server_t *s) {
  if (!s->draining) return;
  server_workers_retire_idle(s);
  if (s->client_count == 0 && s->total == 0 && !s->secured) procord_loop_stop(s->loop);
}

void server_check_keep_running(server_t *s) {
  if (s->options->keep_running && !s->draining && !s->options->keep_running(s->options->context))
    begin_drain(s, "keep-running predicate said stop");
}

/* ---- Accepting ---- */

/* Tells a peer why it is not served, as an original client shows a task's
   error (a `U` frame naming this server), then closes. Best effort: a new
   socket has room. */
static void refuse(server_t *s, int fd, server_peer_t *peer, const char *why) {
  unsigned char frame[PROCORD_FRAME_HEADER_MAX + 256];
  char text[256];
  int length = snprintf(text, sizeof text, "refused by the server at %s: %s", s->address, why);
  if (length < 0) length = 0;
  if ((size_t)length >= sizeof text) length = sizeof text - 1;
  size_t header = procord_frame_encode_header(PROCORD_FRAME_UNKNOWN_EXCEPTION, (size_t)length, frame);
  memcpy(frame + header, text, (size_t)length);
  size_t n = header + (size_t)length;
  /* What the peer sent already is read first (the kernel hands a connection
     over with its first bytes): closed with bytes unread, the socket would
     be reset, and the reset can overtake the refusal. */
  char discard[4096];
  for (int i = 0; i < 16 && recv(fd, discard, sizeof discard, MSG_DONTWAIT) > 0; i++) {
  }
  ssize_t ignored = send(fd, frame, n, MSG_NOSIGNAL | MSG_DONTWAIT);
  (void)ignored;
  close(fd);
  server_peer_forget_if_unused(s, peer);
}

/* Room for one more connection: at max_connections, the client idle longest
   makes way. Returns 0 if there is none to make. */
static int make_room(server_t *s) {
  while (s->client_count + s->securing >= s->max_connections)
    if (!server_client_evict_idle(s)) return 0;
  return 1;
}

/* ---- The gate ---- */

static void forget_secured(secured_peer_t *e) {
  server_t *s = e->server;
  if (e->previous) e->previous->next = e->next;
  else s->secured = e->next;
  if (e->next) e->next->previous = e->previous;
  free(e);
}

/* A peer leaves the gate: it no longer counts as its address's connection
   there (as a client it counts again). */
static void leave_gate(secured_peer_t *e) {
  server_t *s = e->server;
  e->gate = NULL;
  s->securing--;
  if (e->peer) e->peer->connections--;
}

static void on_relay_done(procord_relay_t *relay, void *context) {
  (void)relay;
  secured_peer_t *e = context;
  server_t *s = e->server;
  forget_secured(e);
  server_maybe_stop(s);
}

static void on_gate_done(procord_gate_t *gate, const procord_gate_result_t *result, void *context) {
  (void)gate;
  secured_peer_t *e = context;
  server_t *s = e->server;
  server_peer_t *peer = e->peer;
  leave_gate(e);
  if (result->peer_left) {
    server_log(s, PROCORD_LOG_DEBUG, "%s: gone: %s", e->name, result->reason);
  } else if (!result->passed) {
    server_note(s, REASON_HANDSHAKE_REFUSED, PROCORD_LOG_WARNING, e->name, "refused: %s%s",
                result->tls_failed ? "TLS handshake failed: " : "", result->reason);
  } else if (result->tls) {
    /* The relay carries the client's plaintext to our end of a socketpair,
       which is the client as far as the rest of the server knows. */
    int fd = -1;
    e->relay = procord_relay_start(result->tls, &fd, on_relay_done, e);
    if (e->relay) server_client_open(s, fd, e->name, peer);
    else server_log(s, PROCORD_LOG_ERROR, "%s: no descriptors or memory for its relay", e->name);
  } else {
    server_client_open(s, result->fd, e->name, peer);
  }
  if (!e->relay) forget_secured(e);
  server_peer_forget_if_unused(s, peer);
  server_maybe_stop(s);
}

static void secure(server_t *s, int fd, const char *name, server_peer_t *peer) {
  secured_peer_t *e = calloc(1, sizeof *e);
  if (!e) {
    close(fd);
    return;
  }
  e->server = s;
  e->peer = peer;
  snprintf(e->name, sizeof e->name, "%s", name);
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
  if (peer) peer->connections++;
}

/* Drops every peer still in the gate (a drain, a stop); with `relays`, the
   relays of TLS clients too. */
static void drop_secured(server_t *s, int relays) {
  secured_peer_t *e = s->secured, *next;
  for (; e; e = next) {
    next = e->next;
    if (e->gate) {
      procord_gate_abort(e->gate);
      server_peer_t *peer = e->peer;
      leave_gate(e);
      server_peer_forget_if_unused(s, peer);
    } else if (relays) {
      procord_relay_free(e->relay);
    } else {
      continue;
    }
    forget_secured(e);
  }
}

/* A new connection: within the limits, into the gate or straight in. */
static void admit(server_t *s, int fd, const struct sockaddr_storage *address, socklen_t length) {
  char name[PEER_SIZE], host[PEER_SIZE];
  procord_address_string((const struct sockaddr *)address, length, name, sizeof name);
  server_host_of(name, host, sizeof host);
  server_peer_t *peer = server_peer_find(s, host);
  if (!peer) {
    close(fd);
    return;
  }
  char why[160];
  if (s->max_connections_per_peer > 0 && peer->connections >= s->max_connections_per_peer) {
    server_note(s, REASON_PEER_CONNECTIONS, PROCORD_LOG_WARNING, name,
                "refused: its address has %d connections already (max_connections_per_peer)", peer->connections);
    snprintf(why, sizeof why, "this address has %d connections already (its limit)", peer->connections);
    refuse(s, fd, peer, why);
    return;
  }
  if (!make_room(s)) {
    server_note(s, REASON_MAX_CONNECTIONS, PROCORD_LOG_WARNING, name,
                "refused: %d connections, none idle (max_connections)", s->max_connections);
    snprintf(why, sizeof why, "it holds %d connections, none idle; try again later", s->max_connections);
    refuse(s, fd, peer, why);
    return;
  }
  SERVER_COUNT(s, connections_accepted, 1);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (s->options->security) secure(s, fd, name, peer);
  else server_client_open(s, fd, name, peer);
}

static void on_accept(evutil_socket_t listen_fd, short events, void *context) {
  (void)events;
  server_t *s = context;
  for (int turn = 0; turn < ACCEPTS_PER_TURN && !s->draining; turn++) {
    struct sockaddr_storage address;
    socklen_t length = sizeof address;
    int fd = accept4((int)listen_fd, (struct sockaddr *)&address, &length, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        server_note(s, REASON_OUT_OF_DESCRIPTORS, PROCORD_LOG_WARNING, "server",
                    "accept: %s; retrying in %d ms (%d connections held; lower max_connections, or raise the "
                    "descriptor limit)", strerror(errno), ACCEPT_RETRY_MS, s->client_count);
        s->accept_paused = 1;
        event_del(s->accept_event);
        procord_timer_arm(s->retry_timer, ACCEPT_RETRY_MS);
      }
      return;
    }
    if (s->options->accept_filter &&
        !s->options->accept_filter(s->options->context, (struct sockaddr *)&address, length)) {
      close(fd);
      continue;
    }
    admit(s, fd, &address, length);
  }
}

static void on_accept_retry(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  server_t *s = context;
  s->accept_paused = 0;
  if (!s->draining && s->listen_fd >= 0) event_add(s->accept_event, NULL);
}

/* ---- Draining ---- */

static void on_drain_timeout(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  server_t *s = context;
  server_log(s, PROCORD_LOG_WARNING, "drain timeout: killing %d running tasks, dropping %d waiting", s->busy, s->ready);
  server_clients_close_all(s);
  server_workers_kill(s);
  drop_secured(s, 1);
  server_maybe_stop(s);
}

static void begin_drain(server_t *s, const char *why) {
  if (s->draining) return;
  s->draining = 1;
  server_log(s, PROCORD_LOG_INFO, "stopping (%s): %d tasks running, %d waiting, %d arriving", why, s->busy,
             s->ready, s->receiving);
  event_del(s->accept_event);
  /* Closing the listening socket refuses new connections at once. */
  if (s->listen_fd >= 0) close(s->listen_fd);
  s->listen_fd = -1;
  /* Peers not through the gate yet are not clients yet. */
  drop_secured(s, 0);
  /* Tasks read whole, or arriving, are served; idle connections go, and
     the others once answered (no `0R`). */
  server_clients_drain(s);
  notify(s, "STOPPING=1");
  procord_timer_arm(s->drain_timer, s->drain_timeout_ms);
  server_dispatch(s);
  server_maybe_stop(s);
}

static void on_respawn(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  server_dispatch(context);
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
    server_log(s, PROCORD_LOG_ERROR, "cannot resolve %s", host);
  else if (error)
    server_log(s, PROCORD_LOG_ERROR, "cannot listen on %s port %d: %s%s", host, o->port, procord_strerror(error),
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

static void release_server(server_t *s) {
  /* Whatever is left: kill, then reap, so no process is left behind. */
  server_clients_close_all(s);
  server_workers_release(s);
  drop_secured(s, 1);
  server_peers_free(s);
  for (int i = 0; i < 2; i++)
    if (s->signals[i]) event_free(s->signals[i]);
  if (s->accept_event) event_free(s->accept_event);
  if (s->retry_timer) event_free(s->retry_timer);
  if (s->drain_timer) event_free(s->drain_timer);
  if (s->respawn_timer) event_free(s->respawn_timer);
  if (s->listen_fd >= 0) close(s->listen_fd);
}

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

int procord_server_run(const procord_server_options_t *options) {
  procord_lineage_mark_serving(); /* it may delegate from now on */
  if (!options) return PROCORD_EINVAL;
  const char *mistake = !options->dont_fork && !options->worker.program
                            ? "no worker program: set options.worker (its program and argv, see server.h), "
                              "or dont_fork with tasks"
                        : options->dont_fork && options->task_count == 0
                            ? "dont_fork without tasks: set options.tasks and options.task_count"
                            : NULL;
  if (mistake) {
    if (options->log) options->log(options->context, PROCORD_LOG_ERROR, mistake);
    return PROCORD_EINVAL;
  }
  server_t *s = calloc(1, sizeof *s);
  if (!s) return -ENOMEM;
  s->options = options;
  s->listen_fd = -1;
  apply_limits(s, options);
  int error = procord_loop_new(&s->loop);
  if (error) {
    free(s);
    return error;
  }
  s->base = procord_loop_base(s->loop);
  route_libevent_log(s);
  error = check_security(s);
  if (!error) fit_descriptor_limit(s);
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
    server_workers_keep_warm(s);
    event_add(s->accept_event, NULL);
    server_log(s, PROCORD_LOG_INFO, "listening on %s (at most %d task%s at once%s, %d connections)", s->address,
               s->max, s->max == 1 ? "" : "s", options->dont_fork ? ", in this process" : "", s->max_connections);
    char ready[200];
    snprintf(ready, sizeof ready, "READY=1\nSTATUS=listening on %s", s->address);
    notify(s, ready);
    if (options->on_listening) options->on_listening(options->context, s->address, s->port);
    procord_loop_run(s->loop);
    server_log(s, PROCORD_LOG_INFO, "stopped");
  }
  release_server(s);
  procord_loop_free(s->loop);
  unroute_libevent_log(s);
  free(s);
  return error;
}
