/*
 * A worker server (procord/server.h): accept, take each connection through
 * the gate (TLS, the secret) when asked, bound how many are held, and drain
 * (SIGTERM/SIGINT, procord_server_stop). Setting up, starting and finishing
 * are server_lifecycle.c's, clients server_clients.c's, workers
 * server_workers.c's (see server_core.h for the whole).
 */
#define _GNU_SOURCE
#include "procord/error.h"
#include "procord/frame.h"
#include "server/server_private.h"
#include "base/base_private.h"

#include <errno.h>
#include <event2/event.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ACCEPT_RETRY_MS 100 /* after EMFILE: wait for descriptors, do not spin */
#define ACCEPTS_PER_TURN 64

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

/* ---- Stopping ---- */

void server_maybe_stop(server_t *s) {
  if (!s->draining || s->finishing) return;
  server_workers_retire_idle(s);
  if (s->client_count == 0 && s->total == 0 && !s->secured) server_finish_soon(s);
}

void server_check_keep_running(server_t *s) {
  if (s->options->keep_running && !s->draining && !s->options->keep_running(s->options->context))
    server_begin_drain(s, "keep-running predicate said stop");
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
  procord_free(e);
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
  secured_peer_t *e = procord_allocate_zeroed(1, sizeof *e);
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
    procord_free(e);
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
void server_drop_secured(server_t *s, int relays) {
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

/* Every client closed, every worker killed, every peer in the gate dropped:
   the kills' ends are seen as usual, and then the server finishes. */
static void end_everything(server_t *s) {
  server_clients_close_all(s);
  server_workers_kill(s);
  server_drop_secured(s, 1);
  server_maybe_stop(s);
}

static void on_drain_timeout(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  server_t *s = context;
  server_log(s, PROCORD_LOG_WARNING, "drain timeout: killing %d running tasks, dropping %d waiting", s->busy, s->ready);
  end_everything(s);
}

void server_begin_drain(server_t *s, const char *why) {
  if (s->draining) return;
  s->draining = 1;
  server_log(s, PROCORD_LOG_INFO, "stopping (%s): %d tasks running, %d waiting, %d arriving", why, s->busy,
             s->ready, s->receiving);
  event_del(s->accept_event);
  /* Closing the listening socket refuses new connections at once. */
  if (s->listen_fd >= 0) close(s->listen_fd);
  s->listen_fd = -1;
  /* Peers not through the gate yet are not clients yet. */
  server_drop_secured(s, 0);
  /* Tasks read whole, or arriving, are served; idle connections go, and
     the others once answered (no `0R`). */
  server_clients_drain(s);
  server_notify(s, "STOPPING=1");
  procord_timer_arm(s->drain_timer, s->drain_timeout_ms);
  server_dispatch(s);
  server_maybe_stop(s);
}

void server_stop_now(server_t *s, const char *why) {
  if (s->finishing) return;
  int running = s->busy, waiting = s->ready;
  server_begin_drain(s, why);
  if (s->finishing) return;
  server_log(s, PROCORD_LOG_INFO, "stopping now: killing %d running tasks, dropping %d waiting", running, waiting);
  end_everything(s);
}

static void on_respawn(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  server_dispatch(context);
}

static void on_signal(evutil_socket_t signal, short events, void *context) {
  (void)events;
  server_begin_drain(context, signal == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* ---- The server's own events ---- */

int server_events_open(server_t *s) {
  s->accept_event = event_new(s->base, s->listen_fd, EV_READ | EV_PERSIST, on_accept, s);
  s->retry_timer = evtimer_new(s->base, on_accept_retry, s);
  s->drain_timer = evtimer_new(s->base, on_drain_timeout, s);
  s->respawn_timer = evtimer_new(s->base, on_respawn, s);
  if (!s->accept_event || !s->retry_timer || !s->drain_timer || !s->respawn_timer) return -ENOMEM;
  if (!s->options->handle_signals) return 0;
  /* Every event of a signal on this base gets it: each server that asks
     drains on it. */
  s->signals[0] = evsignal_new(s->base, SIGTERM, on_signal, s);
  s->signals[1] = evsignal_new(s->base, SIGINT, on_signal, s);
  for (int i = 0; i < 2; i++)
    if (!s->signals[i] || event_add(s->signals[i], NULL) < 0) return -ENOMEM;
  return 0;
}

void server_accept(server_t *s) { event_add(s->accept_event, NULL); }

void server_events_free(server_t *s) {
  struct event **events[] = {&s->signals[0], &s->signals[1], &s->accept_event,
                             &s->retry_timer, &s->drain_timer, &s->respawn_timer};
  for (size_t i = 0; i < sizeof events / sizeof events[0]; i++) {
    if (*events[i]) event_free(*events[i]);
    *events[i] = NULL;
  }
}
