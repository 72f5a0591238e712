/*
 * A server's gate (server_private.h): TLS, then the shared secret, for each
 * accepted connection, in the server process, before anything of a task is
 * read. A peer that fails is told why when the protocol lets us (a `U`
 * frame, which an original client shows as the task's error), then closed.
 */
#define _GNU_SOURCE
#include "wire/wire_private.h"
#include "io/io_private.h"
#include "procord/error.h"
#include "server/server_private.h"
#include "base/base_private.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/* How long a refused peer gets to read why before it is closed. */
#define LINGER_MS 1000
/* Bytes looked at per step: auth frames are small, and a peer that sends
   more before it is trusted is refused anyway. */
#define LOOK_AHEAD (PROCORD_AUTH_MAX_FRAME + PROCORD_FRAME_HEADER_MAX)

typedef enum { GATE_PEEKING, GATE_HANDSHAKE, GATE_AUTHENTICATING, GATE_LINGERING } gate_stage_t;

struct procord_gate_s {
  struct event_base *base;
  procord_security_t *security;
  int fd;                  /* until a bufferevent owns it */
  struct bufferevent *bev; /* TLS, or the plain socket (which it does not close) */
  int tls;
  struct event *peek_event, *timer;
  gate_stage_t stage;
  procord_auth_t auth;
  procord_frame_parser_t parser;
  const char *reason; /* refused: why */
  int tls_failed, peer_left;
  procord_gate_done_fn done;
  void *context;
};

/*
 * Frees the gate's bufferevent, its events first. Called from the
 * bufferevent's own callback (the gate ends there), bufferevent_free leaves
 * its events watching the socket until that callback returns; meanwhile the
 * socket is closed, or handed to a worker and closed, and the server opens
 * descriptors (a new worker's) that may take its number. libevent counts
 * such a number as watched already and never adds it to epoll, whose entry
 * is the old socket's: the new worker's reports, or its exit, would never
 * be seen.
 */
static void free_gate_bufferevent(procord_gate_t *g) {
  bufferevent_disable(g->bev, EV_READ | EV_WRITE);
  bufferevent_free(g->bev);
  g->bev = NULL;
}

static void free_gate(procord_gate_t *g) {
  if (g->peek_event) event_free(g->peek_event);
  if (g->timer) event_free(g->timer);
  /* A TLS bufferevent closes the socket; a plain one (a plaintext client
     told to use TLS, or a secret without TLS) never does. */
  int closes_socket = g->bev && bufferevent_openssl_get_ssl(g->bev) != NULL;
  if (g->bev) free_gate_bufferevent(g);
  if (g->fd >= 0 && !closes_socket) close(g->fd);
  procord_frame_parser_reset(&g->parser);
  procord_security_release(g->security);
  procord_free(g);
}

void procord_gate_abort(procord_gate_t *g) {
  if (g) free_gate(g);
}

static void end_gate(procord_gate_t *g, procord_gate_result_t *result) {
  g->done(g, result, g->context);
  free_gate(g);
}

static void pass_peer(procord_gate_t *g) {
  procord_gate_result_t result = {.passed = 1, .fd = -1};
  if (g->tls) {
    result.tls = g->bev;
    bufferevent_setcb(g->bev, NULL, NULL, NULL, NULL);
  } else {
    result.fd = g->fd;
    free_gate_bufferevent(g); /* the socket stays open: the server's client from now on */
  }
  g->bev = NULL;
  g->fd = -1;
  end_gate(g, &result);
}

static void report_refusal(procord_gate_t *g) {
  procord_gate_result_t result = {.passed = 0,
                                  .fd = -1,
                                  .reason = g->reason,
                                  .tls_failed = g->tls_failed,
                                  .peer_left = g->peer_left};
  end_gate(g, &result);
}

/* ---- Refusing ---- */

/* Read and dropped while the peer reads our answer: closing with its bytes
   unread would reset the connection, and the answer could be lost. */
static void on_linger_readable(struct bufferevent *bev, void *argument) {
  (void)argument;
  struct evbuffer *input = bufferevent_get_input(bev);
  evbuffer_drain(input, evbuffer_get_length(input));
}

static void on_linger_written(struct bufferevent *bev, void *argument) {
  procord_gate_t *g = argument;
  if (evbuffer_get_length(bufferevent_get_output(bev)) > 0) return;
  if (!procord_tls_goodbye(bev)) shutdown(g->fd, SHUT_WR);
}

static void on_linger_event(struct bufferevent *bev, short what, void *argument) {
  (void)bev;
  if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) report_refusal(argument);
}

/* After a failed TLS handshake: the socket's bytes are dropped unread by
   TLS, so that the alert OpenSSL sent is read by the peer, not lost to
   the reset that closing with unread bytes would cause. */
static void on_linger_raw(evutil_socket_t fd, short events, void *argument) {
  (void)events;
  unsigned char sink[4096];
  ssize_t n = recv(fd, sink, sizeof sink, 0);
  if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) report_refusal(argument);
}

/* Says why in a `U` frame when `tell`, then lingers until the peer closes or LINGER_MS. */
static void refuse_peer(procord_gate_t *g, const char *reason, int tell) {
  g->reason = reason;
  g->stage = GATE_LINGERING;
  ERR_clear_error();
  if (g->tls_failed && g->bev) {
    bufferevent_disable(g->bev, EV_READ | EV_WRITE);
    shutdown(g->fd, SHUT_WR);
    event_free(g->peek_event);
    g->peek_event = event_new(g->base, g->fd, EV_READ | EV_PERSIST, on_linger_raw, g);
    if (g->peek_event && event_add(g->peek_event, NULL) == 0) {
      procord_timer_arm(g->timer, LINGER_MS);
      return;
    }
  }
  if (!g->bev || !tell) {
    report_refusal(g);
    return;
  }
  unsigned char header[PROCORD_FRAME_HEADER_MAX];
  size_t length = strlen(reason);
  size_t n = procord_frame_encode_header(PROCORD_FRAME_UNKNOWN_EXCEPTION, length, header);
  bufferevent_write(g->bev, header, n);
  bufferevent_write(g->bev, reason, length);
  bufferevent_setwatermark(g->bev, EV_WRITE, 0, 0);
  bufferevent_setcb(g->bev, on_linger_readable, on_linger_written, on_linger_event, g);
  bufferevent_enable(g->bev, EV_READ | EV_WRITE);
  procord_timer_arm(g->timer, LINGER_MS);
}

/* ---- Authenticating ---- */

static void queue_auth_frame(procord_gate_t *g, const unsigned char *body, size_t length) {
  unsigned char frame[PROCORD_AUTH_FRAME_MAX];
  bufferevent_write(g->bev, frame, procord_auth_frame(body, length, frame));
}

static int send_auth_frame_now(procord_gate_t *g, const unsigned char *body, size_t length) {
  unsigned char frame[PROCORD_AUTH_FRAME_MAX];
  size_t n = procord_auth_frame(body, length, frame);
  if (evbuffer_get_length(bufferevent_get_output(g->bev)) > 0) return -EAGAIN;
  /* The socket is non-blocking: the send is never interrupted, and a short
     one is a failure. */
  struct iovec part = {frame, n};
  ssize_t sent = procord_write_parts(g->fd, 1, &part, 1);
  return sent == (ssize_t)n ? 0 : -EIO;
}

static void on_auth_readable(struct bufferevent *bev, void *argument) {
  procord_gate_t *g = argument;
  struct evbuffer *input = bufferevent_get_input(bev);
  size_t available;
  while (g->stage == GATE_AUTHENTICATING && (available = evbuffer_get_length(input)) > 0) {
    size_t look = available < LOOK_AHEAD ? available : LOOK_AHEAD;
    const unsigned char *bytes = evbuffer_pullup(input, (ssize_t)look);
    size_t used = 0;
    procord_frame_t frame;
    int r = procord_frame_parser_feed(&g->parser, bytes, look, &used, &frame);
    evbuffer_drain(input, used);
    if (r == 0) continue;
    if (r < 0) {
      refuse_peer(g, "the client sent an ill-formed or too long frame before authentication", 1);
      return;
    }
    unsigned char reply[PROCORD_AUTH_PROOF_LENGTH];
    size_t reply_length = 0;
    const char *reason = NULL;
    procord_auth_result_t result =
        procord_auth_step(&g->auth, &frame, reply, &reply_length, &reason);
    if (result == PROCORD_AUTH_FAILED) {
      refuse_peer(g, reason, 1);
      return;
    }
    if (result == PROCORD_AUTH_CONTINUE || g->tls) queue_auth_frame(g, reply, reply_length);
    if (result == PROCORD_AUTH_DONE) {
      /* A client waits for our proof before it sends a task: anything
         already here broke the protocol, and would be lost at the handoff. */
      if (evbuffer_get_length(input) > 0 || !procord_frame_parser_is_idle(&g->parser)) {
        refuse_peer(g, "the client sent more before authentication was done", 1);
        return;
      }
      bufferevent_setcb(g->bev, NULL, NULL, NULL, NULL);
      g->stage = GATE_LINGERING; /* nothing more to read here */
      if (g->tls) {
        pass_peer(g);
        return;
      }
      /* Plain: our proof must be written before the socket changes hands,
         so it is written now. The client has read our nonce (it answered
         it): nothing of ours waits, and the socket takes a few bytes. */
      if (send_auth_frame_now(g, reply, reply_length) != 0) {
        refuse_peer(g, "could not send the server's proof", 0);
        return;
      }
      pass_peer(g);
      return;
    }
  }
}

static void on_gate_event(struct bufferevent *bev, short what, void *argument);

/* Waits for the client's first `A` frame; fails only without random bytes. */
static int begin_gate_auth(procord_gate_t *g) {
  unsigned char unused[PROCORD_AUTH_NONCE_LENGTH];
  if (procord_auth_start(&g->auth, g->security, PROCORD_AUTH_SERVER, unused) != 0) return -ENOMEM;
  procord_frame_parser_reset(&g->parser);
  procord_frame_parser_init(&g->parser, PROCORD_AUTH_MAX_FRAME);
  g->stage = GATE_AUTHENTICATING;
  bufferevent_setcb(g->bev, on_auth_readable, NULL, on_gate_event, g);
  bufferevent_enable(g->bev, EV_READ | EV_WRITE);
  if (evbuffer_get_length(bufferevent_get_input(g->bev)) > 0) on_auth_readable(g->bev, g);
  return 0;
}

/* After TLS: the secret, if any, else the peer is through. */
static void after_gate_tls(procord_gate_t *g) {
  if (!procord_security_uses_secret(g->security)) pass_peer(g);
  else if (begin_gate_auth(g) != 0)
    refuse_peer(g, "no random bytes for a nonce", 0);
}

/* ---- TLS ---- */

static void on_gate_event(struct bufferevent *bev, short what, void *argument) {
  (void)bev;
  procord_gate_t *g = argument;
  if (what & BEV_EVENT_CONNECTED) {
    after_gate_tls(g);
    return;
  }
  if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))) return;
  if (g->stage == GATE_HANDSHAKE) {
    g->tls_failed = 1;
    /* The alert OpenSSL sent is all a TLS peer can be told. */
    const char *reason = procord_tls_failure(g->bev);
    refuse_peer(g, reason ? reason : "the connection ended", 0);
  } else {
    g->peer_left = 1;
    refuse_peer(g, "the client went away during authentication", 0);
  }
}

static void start_gate_tls(procord_gate_t *g) {
  SSL *ssl = procord_security_new_ssl(g->security, NULL);
  g->bev = ssl ? bufferevent_openssl_socket_new(g->base, g->fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                BEV_OPT_CLOSE_ON_FREE)
               : NULL;
  if (!g->bev) {
    if (ssl) SSL_free(ssl);
    refuse_peer(g, "out of memory for TLS", 0);
    return;
  }
  g->stage = GATE_HANDSHAKE;
  bufferevent_openssl_set_allow_dirty_shutdown(g->bev, 1);
  bufferevent_setcb(g->bev, NULL, NULL, on_gate_event, g);
  bufferevent_enable(g->bev, EV_READ | EV_WRITE);
}

/* The first byte tells a TLS client (a handshake record, 0x16) from a
   plaintext Procord client (a frame starts with a digit), who is told in
   plaintext what this server wants instead of getting TLS garbage. */
static void on_first_byte(evutil_socket_t fd, short events, void *argument) {
  (void)events;
  procord_gate_t *g = argument;
  unsigned char first;
  ssize_t n = recv(fd, &first, 1, MSG_PEEK);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
  event_del(g->peek_event);
  if (n <= 0) {
    g->peer_left = 1;
    refuse_peer(g, "the client went away before the TLS handshake", 0);
    return;
  }
  if (first >= '0' && first <= '9') {
    g->bev = bufferevent_socket_new(g->base, g->fd, 0);
    refuse_peer(g, "this server requires TLS, and the client spoke plaintext", 1);
    return;
  }
  start_gate_tls(g);
}

static void on_gate_timeout(evutil_socket_t fd, short events, void *argument) {
  (void)fd;
  (void)events;
  procord_gate_t *g = argument;
  if (g->stage == GATE_LINGERING) report_refusal(g);
  else
    refuse_peer(g,
                g->stage == GATE_AUTHENTICATING ? "authentication timed out"
                                                : "the TLS handshake timed out",
                0);
}

procord_gate_t *procord_gate_start(struct event_base *base, procord_security_t *security, int fd,
                                   int timeout_ms, procord_gate_done_fn done, void *context) {
  procord_gate_t *g = procord_allocate_zeroed(1, sizeof *g);
  if (!g) {
    close(fd);
    return NULL;
  }
  g->base = base;
  g->security = procord_security_retain(security);
  g->fd = fd;
  g->tls = procord_security_uses_tls(security);
  g->done = done;
  g->context = context;
  procord_frame_parser_init(&g->parser, PROCORD_AUTH_MAX_FRAME);
  procord_fd_set_nonblocking(fd, 1);
  g->timer = evtimer_new(base, on_gate_timeout, g);
  if (g->tls) g->peek_event = event_new(base, fd, EV_READ | EV_PERSIST, on_first_byte, g);
  else
    g->bev = bufferevent_socket_new(base, fd, 0);
  if (!g->timer || (g->tls ? !g->peek_event : !g->bev)) {
    free_gate(g);
    return NULL;
  }
  procord_timer_arm(g->timer, timeout_ms);
  if (g->tls) {
    g->stage = GATE_PEEKING;
    event_add(g->peek_event, NULL);
  } else if (begin_gate_auth(g) != 0) {
    free_gate(g); /* `done` is never called from here */
    return NULL;
  }
  return g;
}
