/*
 * A secured worker server's peers before they are clients (server_private.h):
 * each accepted connection goes through the gate (server_gate.c: TLS, the
 * secret), counted in its address's connections meanwhile; one that passes
 * becomes a client (server_clients.c), a TLS one through a relay
 * (server_relay.c) that lives as long as it does.
 */
#define _GNU_SOURCE
#include "server/server_private.h"
#include "base/base_private.h"

#include <stdio.h>
#include <unistd.h>

/* A peer in the gate (TLS, authentication), or a TLS client's relay. */
typedef struct secured_peer_s {
  server_t *server;
  procord_gate_t *gate;   /* until it passes or is refused */
  procord_relay_t *relay; /* then, for a TLS client */
  server_peer_t *peer;    /* counted in its address's connections while in the gate */
  char name[PEER_SIZE];
  procord_list_t node; /* in the server's secured */
} secured_peer_t;

static void forget_secured(secured_peer_t *e) {
  procord_list_remove(&e->node);
  procord_free(e);
}

/* A peer leaves the gate: it no longer counts as its address's connection
   there (as a client it counts again). */
static void leave_gate(secured_peer_t *e) {
  server_t *s = e->server;
  e->gate = NULL;
  PROCORD_ASSERT(s->securing > 0 && (!e->peer || e->peer->connections > 0));
  s->securing--;
  if (e->peer) e->peer->connections--;
}

static void on_relay_done(procord_relay_t *relay, void *context) {
  (void)relay;
  secured_peer_t *e = context;
  server_t *s = e->server;
  forget_secured(e);
  s->hooks.maybe_stop(s);
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
    else
      server_log(s, PROCORD_LOG_ERROR, "%s: no descriptors or memory for its relay", e->name);
  } else {
    server_client_open(s, result->fd, e->name, peer);
  }
  if (!e->relay) forget_secured(e);
  server_peer_forget_if_unused(s, peer);
  s->hooks.maybe_stop(s);
}

void server_secure(server_t *s, int fd, const char *name, server_peer_t *peer) {
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
  procord_list_push_front(&s->secured, &e->node);
  s->securing++;
  if (peer) peer->connections++;
}

void server_drop_secured(server_t *s, int relays) {
  procord_list_t *node, *following;
  PROCORD_LIST_FOREACH_SAFE(node, following, &s->secured) {
    secured_peer_t *e = PROCORD_LIST_ENTRY(node, secured_peer_t, node);
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
