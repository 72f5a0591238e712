/*
 * A frame connection over one or two non-blocking descriptors, on a libevent
 * base (procord/connection.h). Reads go straight into the frame parser, and
 * big bodies straight into their final buffer; writes go through an evbuffer.
 * With TLS, the bytes go through a TLS transport (tls_transport.c) that this
 * file drives; the shared-secret exchange (wire/auth.c) runs here, before
 * the owner's first frame.
 */
#define _GNU_SOURCE
#include "io/io_private.h"
#include "base/base_private.h"
#include "procord/error.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Bytes read per read(2) outside of a body, and per readiness callback. */
#define READ_CHUNK 65536
#define READ_BUDGET (4 * 1024 * 1024)
/* Bytes read ahead while paused (see read_ahead). */
#define PAUSED_READ_AHEAD (16 * 1024)

static void release_connection(procord_connection_t *c) {
  PROCORD_ASSERT(c->in_callback == 0);
  procord_frame_parser_reset(&c->parser);
  if (c->read_event) event_free(c->read_event);
  if (c->write_event) event_free(c->write_event);
  if (c->close_timer) event_free(c->close_timer);
  if (c->watch_timer) event_free(c->watch_timer);
  if (c->output) evbuffer_free(c->output);
  if (c->urgent) evbuffer_free(c->urgent);
  if (c->stash) evbuffer_free(c->stash);
  procord_tls_transport_close(&c->tls);
  procord_security_release(c->security);
  procord_free(c->peer_name);
  procord_free(c);
}

static void close_descriptors(procord_connection_t *c) {
  if (c->read_event) event_del(c->read_event);
  if (c->write_event) event_del(c->write_event);
  if (c->close_timer) event_del(c->close_timer);
  if (c->watch_timer) event_del(c->watch_timer);
  if (procord_tls_transport_close(&c->tls)) /* it closed the socket */
    c->options.read_fd = c->options.write_fd = -1;
  if (c->options.read_fd >= 0) close(c->options.read_fd);
  if (c->options.write_fd >= 0 && c->options.write_fd != c->options.read_fd)
    close(c->options.write_fd);
  c->options.read_fd = c->options.write_fd = -1;
}

/* With TLS, every byte goes through the TLS transport; else through the
   descriptors, with read_event and write_event. */
static int over_tls(const procord_connection_t *c) {
  return procord_tls_transport_running(&c->tls);
}

/* Ends a callback to the owner (entered with c->in_callback++): frees the
   connection if the owner asked for it in there and no callback further
   out still runs. Returns 0 if the owner asked to free it. */
static int leave_callback(procord_connection_t *c) {
  PROCORD_ASSERT(c->in_callback > 0);
  c->in_callback--;
  if (c->free_requested && !c->in_callback) {
    release_connection(c);
    return 0;
  }
  return !c->free_requested;
}

/* Calls the owner's state callback; returns 0 if the connection was freed in it. */
static int notify_state(procord_connection_t *c) {
  if (!c->options.on_state) return 1;
  c->in_callback++;
  c->options.on_state(c, c->state, c->options.context);
  return leave_callback(c);
}

/* A connection's state only moves forward: CONNECTING, CONNECTED,
   DISCONNECTING, DISCONNECTED (any of them may be skipped). */
static void move_to(procord_connection_t *c, procord_connection_state_t state) {
  PROCORD_ASSERT(state > c->state);
  c->state = state;
}

/* Closes the descriptors and reports DISCONNECTED once; returns 0 if the
   connection was freed in the owner's callback. */
static int disconnect_because(procord_connection_t *c, int error, procord_stage_t stage,
                              const char *detail) {
  if (c->state == PROCORD_DISCONNECTED) return 1;
  PROCORD_ASSERT(!c->securing || c->state == PROCORD_CONNECTING);
  close_descriptors(c);
  PROCORD_ASSERT(!over_tls(c) && c->options.read_fd < 0 && c->options.write_fd < 0);
  evbuffer_drain(c->output, evbuffer_get_length(c->output));
  move_to(c, PROCORD_DISCONNECTED);
  c->securing = 0;
  c->cause.error = error;
  c->cause.call = procord_stage_call(stage);
  c->stage = stage;
  c->detail = detail;
  return notify_state(c);
}

static int disconnect(procord_connection_t *c, int error, procord_stage_t stage) {
  return disconnect_because(c, error, stage, NULL);
}

/* Reads from now on (securing, or connected): the descriptor's event; the
   TLS layer reads on its own from its start. */
static void start_reading(procord_connection_t *c) {
  if (!over_tls(c)) event_add(c->read_event, NULL);
}

/* Takes nothing more from the descriptor or the TLS layer for now. */
static void hold_reading(procord_connection_t *c) {
  event_del(c->read_event);
  procord_tls_transport_set_reading(&c->tls, 0);
}

/* Takes again what comes, after hold_reading. */
static void resume_reading(procord_connection_t *c) {
  if (over_tls(c)) procord_tls_transport_set_reading(&c->tls, 1);
  else
    event_add(c->read_event, NULL);
}

/* Reads no more, ever. */
static void stop_reading(procord_connection_t *c) {
  c->reading_stopped = 1;
  hold_reading(c);
}

static int authenticate_frame(procord_connection_t *c, const procord_frame_t *frame, int error);

/* Delivers a frame or a parser error; returns 0 if the connection was freed. */
static int deliver(procord_connection_t *c, const procord_frame_t *frame, int error) {
  if (c->securing) return authenticate_frame(c, frame, error);
  if (error) stop_reading(c);
  c->in_callback++;
  c->delivering = frame != NULL;
  c->options.on_frame(c, frame, error, c->options.context);
  c->delivering = 0;
  return leave_callback(c);
}

/* The peer was heard from (it sent, or took some of ours): the idle
   timeout starts again. */
static void restart_idle_timer(procord_connection_t *c) {
  if (c->options.idle_timeout_ms > 0 && c->state == PROCORD_CONNECTED)
    procord_timer_arm(c->watch_timer, c->options.idle_timeout_ms);
}

static void on_watch_timeout(evutil_socket_t fd, short events, void *argument) {
  (void)fd;
  (void)events;
  procord_connection_t *c = argument;
  disconnect(c, PROCORD_ETIMEOUT,
             c->securing                      ? PROCORD_STAGE_HANDSHAKE
             : c->state == PROCORD_CONNECTING ? PROCORD_STAGE_CONNECT
                                              : PROCORD_STAGE_IDLE);
}

static int still_reading(procord_connection_t *c) {
  return (c->state == PROCORD_CONNECTED || c->securing) && !c->reading_stopped && !c->paused;
}

/* Feeds bytes to the parser, delivering every frame, until they are used up
   or reading stops or pauses; stores in `*used` how many it took. Returns 0
   if the connection was freed. */
static int feed_some(procord_connection_t *c, const unsigned char *bytes, size_t length,
                     size_t *used) {
  *used = 0;
  while (*used < length && still_reading(c)) {
    procord_frame_t frame;
    size_t taken = 0;
    int r = procord_frame_parser_feed(&c->parser, bytes + *used, length - *used, &taken, &frame);
    *used += taken;
    if (r == 0) continue;
    if (!deliver(c, r > 0 ? &frame : NULL, r > 0 ? 0 : r)) return 0;
  }
  return 1;
}

/* Feeds a chunk just read; what a pause leaves of it waits in the stash.
   Returns 0 if freed or no longer reading. */
static int feed(procord_connection_t *c, const unsigned char *bytes, size_t length) {
  size_t used;
  if (!feed_some(c, bytes, length, &used)) return 0;
  if (used < length && c->paused && c->state == PROCORD_CONNECTED && !c->reading_stopped) {
    if (!c->stash) c->stash = evbuffer_new();
    if (!c->stash || evbuffer_add(c->stash, bytes + used, length - used) < 0) {
      disconnect(c, -ENOMEM, PROCORD_STAGE_READ);
      return 0;
    }
  }
  return still_reading(c);
}

/* Feeds what a pause kept, first; returns 0 if freed or not reading. */
static int feed_stash(procord_connection_t *c) {
  while (c->stash && evbuffer_get_length(c->stash) > 0 && still_reading(c)) {
    size_t length = evbuffer_get_length(c->stash), used;
    const unsigned char *bytes = evbuffer_pullup(c->stash, -1);
    if (!bytes) {
      disconnect(c, -ENOMEM, PROCORD_STAGE_READ);
      return 0;
    }
    struct evbuffer *stash = c->stash;
    if (!feed_some(c, bytes, length, &used)) return 0;
    evbuffer_drain(stash, used);
  }
  return still_reading(c);
}

/*
 * Takes bytes from the descriptor or the TLS layer: how many, 0 for none
 * now, -1 once disconnected (the end of the stream, or an error). Sets
 * `*emptied` when a short read emptied the descriptor: the read that would
 * follow only says EAGAIN, and the loop calls again when more comes. The
 * TLS layer is read until it has nothing: it says only when more arrives.
 */
static ssize_t pull(procord_connection_t *c, void *buffer, size_t size, int *emptied) {
  *emptied = 0;
  if (over_tls(c)) return (ssize_t)procord_tls_transport_read(&c->tls, buffer, size);
  ssize_t n = procord_read_retrying(c->options.read_fd, buffer, size);
  *emptied = n > 0 && (size_t)n < size;
  if (n > 0) return n;
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
  disconnect(c, n == 0 ? PROCORD_EDISCONNECTED : -errno, PROCORD_STAGE_READ);
  return -1;
}

/*
 * While paused: keeps reading into the stash, up to PAUSED_READ_AHEAD bytes,
 * so that the peer's end (or a reset) is still seen; past that, reads no
 * more until unpaused.
 */
static void read_ahead(procord_connection_t *c) {
  unsigned char chunk[READ_CHUNK];
  while (c->paused && c->state == PROCORD_CONNECTED && !c->reading_stopped) {
    size_t held = c->stash ? evbuffer_get_length(c->stash) : 0;
    if (held >= PAUSED_READ_AHEAD) {
      hold_reading(c);
      return;
    }
    size_t want = PAUSED_READ_AHEAD - held < sizeof chunk ? PAUSED_READ_AHEAD - held : sizeof chunk;
    int emptied;
    ssize_t n = pull(c, chunk, want, &emptied);
    if (n <= 0) return; /* none now, or disconnected (and maybe freed) */
    restart_idle_timer(c);
    if (!c->stash) c->stash = evbuffer_new();
    if (!c->stash || evbuffer_add(c->stash, chunk, (size_t)n) < 0) {
      disconnect(c, -ENOMEM, PROCORD_STAGE_READ);
      return;
    }
    if (emptied) return;
  }
}

/* Calls the on_input hook; returns 0 if the connection was freed or closed in it. */
static int report_input(procord_connection_t *c, size_t count) {
  c->in_callback++;
  c->on_input(c, count, c->options.context);
  return leave_callback(c) && c->state != PROCORD_DISCONNECTED;
}

/* Reads what the descriptor or the TLS layer has, delivering frames. */
static void read_frames(procord_connection_t *c) {
  if (c->paused) {
    read_ahead(c);
    return;
  }
  unsigned char chunk[READ_CHUNK];
  /* A descriptor says again when more is there; the TLS layer only when
     more arrives, so all it holds is taken now. */
  size_t budget = over_tls(c) ? SIZE_MAX : READ_BUDGET;
  if (!feed_stash(c)) return;
  while (still_reading(c) && budget > 0) {
    unsigned char *window;
    size_t missing = procord_frame_parser_body_window(&c->parser, &window);
    int emptied;
    ssize_t n =
        missing ? pull(c, window, missing, &emptied) : pull(c, chunk, sizeof chunk, &emptied);
    if (n <= 0) return;
    budget -= (size_t)n < budget ? (size_t)n : budget;
    restart_idle_timer(c);
    if (c->on_input && !report_input(c, (size_t)n)) return;
    if (missing) {
      procord_frame_t frame;
      int r = procord_frame_parser_body_advance(&c->parser, (size_t)n, &frame);
      if (r != 0 && !deliver(c, r > 0 ? &frame : NULL, r > 0 ? 0 : r)) return;
    } else if (!feed(c, chunk, (size_t)n)) {
      return;
    }
    if (emptied) return;
  }
}

void procord_connection_set_hooks(procord_connection_t *c,
                                  void (*on_input)(procord_connection_t *c, size_t count,
                                                   void *context),
                                  void (*on_drained)(procord_connection_t *c, void *context)) {
  c->on_input = on_input;
  c->on_drained = on_drained;
}

void procord_connection_pause_reading(procord_connection_t *c, int paused) {
  if (c->paused == (paused != 0)) return;
  c->paused = paused != 0;
  if (paused || c->state != PROCORD_CONNECTED || c->reading_stopped) return;
  /* Reading may have stopped at the read-ahead limit. */
  resume_reading(c);
  /* What the stash or the TLS layer holds will not make the descriptor
     readable again: look from the loop. */
  if ((c->stash && evbuffer_get_length(c->stash) > 0) || over_tls(c))
    event_active(c->read_event, EV_READ, 0);
}

static void on_descriptor_readable(evutil_socket_t fd, short events, void *argument) {
  (void)fd;
  (void)events;
  read_frames(argument);
}

static void finish_close_nicely(procord_connection_t *c) {
  if (!procord_tls_transport_say_goodbye(&c->tls) && c->options.write_fd >= 0)
    shutdown(c->options.write_fd, SHUT_WR); /* ENOTSOCK on pipes: harmless */
  disconnect(c, 0, PROCORD_STAGE_NONE);
}

/*
 * The peer stopped reading (EPIPE, ECONNRESET...). Its last words may still
 * be on their way, such as an `E` frame saying why it stopped: drop the
 * output and keep reading to the end of the stream, which then decides.
 * Returns 0 if the connection was freed or closed.
 */
static int fail_writing(procord_connection_t *c, int error) {
  c->write_failed = 1;
  evbuffer_drain(c->output, evbuffer_get_length(c->output));
  event_del(c->write_event);
  /* Paused, its last words would not be read anyway. */
  if (c->state == PROCORD_CONNECTED && !c->reading_stopped && !c->paused) return 1;
  disconnect(c, error, PROCORD_STAGE_WRITE);
  return 0;
}

/* What to write next: authentication frames first; the owner's frames
   only once the peer is trusted. */
static struct evbuffer *next_output(procord_connection_t *c) {
  if (evbuffer_get_length(c->urgent) > 0) return c->urgent;
  if (c->securing || evbuffer_get_length(c->output) == 0) return NULL;
  return c->output;
}

/* Calls the on_drained hook once the queue is empty; returns 0 if the
   connection was freed or closed in it. */
static int report_drained(procord_connection_t *c) {
  if (!c->on_drained || c->state != PROCORD_CONNECTED || procord_connection_pending_output(c) > 0)
    return 1;
  c->in_callback++;
  c->on_drained(c, c->options.context);
  return leave_callback(c) && c->state == PROCORD_CONNECTED;
}

/* Writes what it can of `output` to the descriptor (evbuffer_write, again
   after EINTR): how many bytes, or -1 with errno set. */
static int write_to_descriptor(procord_connection_t *c, struct evbuffer *output) {
  int n;
  while ((n = evbuffer_write(output, c->options.write_fd)) < 0 && errno == EINTR) {
  }
  return n;
}

/* Writes what is queued; returns 0 if the connection was freed or closed. */
static int flush_output(procord_connection_t *c) {
  if (over_tls(c)) {
    /* The TLS layer writes on its own, and says when it has (PROCORD_TLS_WRITTEN). */
    if (!c->securing && procord_tls_transport_write_queue(&c->tls, c->output) == 0 &&
        c->state == PROCORD_DISCONNECTING) {
      finish_close_nicely(c);
      return 0;
    }
    return 1;
  }
  struct evbuffer *output;
  while ((output = next_output(c))) {
    if (write_to_descriptor(c, output) < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        event_add(c->write_event, NULL);
        return 1;
      }
      return fail_writing(c, -errno);
    }
    restart_idle_timer(c); /* a peer that reads a long upload is not idle */
  }
  event_del(c->write_event);
  if (c->state == PROCORD_DISCONNECTING) {
    finish_close_nicely(c);
    return 0;
  }
  return report_drained(c);
}

/* ---- Securing: TLS, then the shared-secret exchange ---- */

/* Reports CONNECTED and writes what waits; returns 0 if the connection was
   freed or closed in the owner's callback. */
static int become_connected(procord_connection_t *c) {
  PROCORD_ASSERT(c->state == PROCORD_CONNECTING);
  c->securing = 0;
  move_to(c, PROCORD_CONNECTED);
  event_del(c->watch_timer);
  restart_idle_timer(c);
  start_reading(c);
  if (!notify_state(c)) return 0;
  if (c->state == PROCORD_CONNECTED || c->state == PROCORD_DISCONNECTING) return flush_output(c);
  return 0;
}

/* Sends an authentication frame ahead of the owner's. */
static int send_urgent(procord_connection_t *c, const unsigned char *body, size_t length) {
  unsigned char frame[PROCORD_AUTH_FRAME_MAX];
  size_t n = procord_auth_frame(body, length, frame);
  if (over_tls(c)) return procord_tls_transport_write(&c->tls, frame, n);
  /* Written from the loop, never inside the call that asked for it. */
  if (evbuffer_add(c->urgent, frame, n) < 0) return -ENOMEM;
  event_add(c->write_event, NULL);
  return 0;
}

/* Starts authentication (sends the client's first `A` frame), or reports
   CONNECTED when the security has no secret. */
static int start_authenticating(procord_connection_t *c) {
  PROCORD_ASSERT(c->securing && c->state == PROCORD_CONNECTING);
  if (!procord_security_uses_secret(c->security)) {
    become_connected(c);
    return 0;
  }
  unsigned char nonce[PROCORD_AUTH_NONCE_LENGTH];
  int error = procord_auth_start(&c->auth, c->security, PROCORD_AUTH_CLIENT, nonce);
  /* Small frames only until the server is trusted. */
  if (!error) {
    procord_frame_parser_reset(&c->parser);
    procord_frame_parser_init(&c->parser, PROCORD_AUTH_MAX_FRAME);
  }
  start_reading(c);
  return error ? error : send_urgent(c, nonce, sizeof nonce);
}

/* A frame (or parse error) received while securing; returns 0 if the
   connection was freed or disconnected. */
static int authenticate_frame(procord_connection_t *c, const procord_frame_t *frame, int error) {
  PROCORD_ASSERT(c->securing && c->state == PROCORD_CONNECTING);
  if (error)
    return disconnect_because(c, PROCORD_EAUTH, PROCORD_STAGE_AUTHENTICATE,
                              "the server's answer to authentication is not a valid frame");
  unsigned char reply[PROCORD_AUTH_PROOF_LENGTH];
  size_t length = 0;
  const char *reason = NULL;
  procord_auth_result_t result = procord_auth_step(&c->auth, frame, reply, &length, &reason);
  if (result == PROCORD_AUTH_FAILED)
    return disconnect_because(c, PROCORD_EAUTH, PROCORD_STAGE_AUTHENTICATE, reason);
  if (length && send_urgent(c, reply, length) != 0)
    return disconnect_because(c, -ENOMEM, PROCORD_STAGE_AUTHENTICATE, NULL);
  if (result == PROCORD_AUTH_CONTINUE) return 1;
  memset(&c->auth, 0, sizeof c->auth);
  procord_frame_parser_reset(&c->parser);
  procord_frame_parser_init(&c->parser, c->options.max_message_size);
  return become_connected(c);
}

/* What the TLS transport reports, from the loop. */
static void on_tls_report(void *owner, const procord_tls_report_t *report) {
  procord_connection_t *c = owner;
  switch (report->kind) {
  case PROCORD_TLS_SECURED: {
    int error = start_authenticating(c);
    if (error) disconnect_because(c, error, PROCORD_STAGE_AUTHENTICATE, NULL);
    return;
  }
  case PROCORD_TLS_READABLE: read_frames(c); return;
  case PROCORD_TLS_WRITTEN:
    restart_idle_timer(c); /* a peer that reads a long upload is not idle */
    if (c->state == PROCORD_DISCONNECTING && procord_tls_transport_pending(&c->tls) == 0)
      flush_output(c);
    return;
  case PROCORD_TLS_ENDED:
    if (c->securing)
      disconnect_because(c, PROCORD_ETLS, PROCORD_STAGE_TLS,
                         "the server closed the connection during the TLS handshake");
    else
      disconnect(c, PROCORD_EDISCONNECTED, PROCORD_STAGE_READ);
    return;
  case PROCORD_TLS_FAILED:
    disconnect_because(c, report->error, report->stage, report->detail);
    return;
  }
}

static int start_securing(procord_connection_t *c) {
  PROCORD_ASSERT(c->security && !c->securing && c->state == PROCORD_CONNECTING);
  c->securing = 1;
  if (!procord_security_uses_tls(c->security)) return start_authenticating(c);
  return procord_tls_transport_start(&c->tls, event_get_base(c->read_event), c->options.read_fd,
                                     c->security, c->peer_name, on_tls_report, c);
}

/* The TCP connection (and nothing else) is up: starts TLS or
   authentication, or reports CONNECTED. */
static void begin(procord_connection_t *c) {
  if (!c->security) {
    become_connected(c);
    return;
  }
  int error = start_securing(c);
  if (error) disconnect(c, error, PROCORD_STAGE_HANDSHAKE);
}

static void finish_connect(procord_connection_t *c) {
  int error = 0;
  socklen_t length = sizeof error;
  if (getsockopt(c->options.read_fd, SOL_SOCKET, SO_ERROR, &error, &length) < 0) error = errno;
  if (error) {
    disconnect(c, -error, PROCORD_STAGE_CONNECT);
    return;
  }
  if (c->state == PROCORD_DISCONNECTING) { /* close_nicely while connecting */
    flush_output(c);
    return;
  }
  event_del(c->write_event);
  begin(c);
}

static void on_descriptor_writable(evutil_socket_t fd, short events, void *argument) {
  (void)fd;
  (void)events;
  procord_connection_t *c = argument;
  if (c->state == PROCORD_CONNECTING && !c->securing) finish_connect(c);
  else
    flush_output(c);
}

static void on_close_timeout(evutil_socket_t fd, short events, void *argument) {
  (void)fd;
  (void)events;
  disconnect(argument, PROCORD_ETIMEOUT, PROCORD_STAGE_CLOSE);
}

void procord_connection_options_init(procord_connection_options_t *options) {
  procord_options_clear(options, sizeof *options);
}

int procord_connection_open(procord_loop_t *loop, const procord_connection_options_t *given,
                            procord_connection_t **result) {
  if (!given) return PROCORD_EINVAL;
  procord_connection_options_t copy;
  const procord_connection_options_t *options = &copy;
  int refused = PROCORD_OPTIONS_COPY(copy, given, PROCORD_FIRST_SIZE_CONNECTION_OPTIONS);
  size_t claimed = procord_options_size(given, PROCORD_FIRST_SIZE_CONNECTION_OPTIONS);
  if (refused && (claimed < offsetof(procord_connection_options_t, connecting) ||
                  claimed > PROCORD_OPTIONS_MOST_SIZE))
    copy.read_fd = copy.write_fd = -1; /* the descriptors were not read: close none */
  procord_connection_t *c = refused ? NULL : procord_allocate_zeroed(1, sizeof *c);
  int error = refused ? refused : c ? 0 : -ENOMEM;
  if (!error && (options->read_fd < 0 || options->write_fd < 0 || !options->on_frame))
    error = PROCORD_EINVAL;
  if (error) {
    procord_free(c);
    if (options->read_fd >= 0) close(options->read_fd);
    if (options->write_fd >= 0 && options->write_fd != options->read_fd) close(options->write_fd);
    return error;
  }
  c->options = *options;
  c->loop = loop;
  procord_frame_parser_init(&c->parser, options->max_message_size);
  procord_fd_set_nonblocking(options->read_fd, 1);
  procord_fd_set_nonblocking(options->write_fd, 1);
  struct event_base *base = procord_loop_base(loop);
  c->output = evbuffer_new();
  c->urgent = evbuffer_new();
  c->security = procord_security_retain(options->security);
  if (options->peer_name) c->peer_name = procord_strdup(options->peer_name);
  c->read_event =
      event_new(base, options->read_fd, EV_READ | EV_PERSIST, on_descriptor_readable, c);
  c->write_event =
      event_new(base, options->write_fd, EV_WRITE | EV_PERSIST, on_descriptor_writable, c);
  c->close_timer = evtimer_new(base, on_close_timeout, c);
  c->watch_timer = evtimer_new(base, on_watch_timeout, c);
  if (!c->output || !c->urgent || !c->read_event || !c->write_event || !c->close_timer ||
      !c->watch_timer) {
    close_descriptors(c);
    release_connection(c);
    return -ENOMEM;
  }
  c->state = PROCORD_CONNECTING;
  /* A handshake without a connect limit still ends if the peer stays silent. */
  int limit = options->connect_timeout_ms > 0 ? options->connect_timeout_ms
              : options->security             ? options->idle_timeout_ms
                                              : 0;
  if (limit > 0 && (options->connecting || options->security))
    procord_timer_arm(c->watch_timer, limit);
  *result = c;
  if (options->connecting) {
    event_add(c->write_event, NULL);
    return 0;
  }
  if (!options->security) {
    move_to(c, PROCORD_CONNECTED);
    start_reading(c);
    restart_idle_timer(c);
    return 0;
  }
  /* The handshake starts now; its outcome is reported from the loop. */
  error = start_securing(c);
  if (error) {
    close_descriptors(c);
    release_connection(c);
    *result = NULL;
    return error;
  }
  return 0;
}

static int can_send(const procord_connection_t *c) {
  return c->state == PROCORD_CONNECTED || c->state == PROCORD_CONNECTING;
}

/* After a write failure frames are dropped: the failure surfaces at the end
   of the stream, never inside a send. */
static int dropping(const procord_connection_t *c) { return c->write_failed; }

static int queue_header(procord_connection_t *c, unsigned char kind, size_t length) {
  unsigned char header[PROCORD_FRAME_HEADER_MAX];
  size_t n = procord_frame_encode_header(kind, length, header);
  return evbuffer_add(c->output, header, n) < 0 ? -ENOMEM : 0;
}

/*
 * Writes at once when it can (inside this connection's own callbacks too: a
 * pool hands the next task to a worker from the callback of its `0R`),
 * which saves a trip through the loop, but never reports anything from
 * inside a send: a failure is left to the write callback, so the caller's
 * state cannot change under it.
 */
static void start_writing(procord_connection_t *c) {
  if (c->state != PROCORD_CONNECTED || c->corked) return; /* connecting: finish_connect flushes */
  if (over_tls(c)) {
    procord_tls_transport_write_queue(&c->tls, c->output);
    return;
  }
  if (write_to_descriptor(c, c->output) < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
    event_active(c->write_event, EV_WRITE, 0);
    return;
  }
  if (evbuffer_get_length(c->output) > 0) event_add(c->write_event, NULL);
}

void procord_connection_cork(procord_connection_t *c, int corked) {
  if (corked) {
    c->corked++;
    return;
  }
  if (c->corked > 0) c->corked--;
  if (!c->corked && evbuffer_get_length(c->output) > 0) start_writing(c);
}

int procord_connection_send(procord_connection_t *c, unsigned char kind, const void *body,
                            size_t length) {
  if (!can_send(c)) return PROCORD_ECLOSED;
  if (dropping(c)) return 0;
  if (queue_header(c, kind, length) < 0) return -ENOMEM;
  if (length && evbuffer_add(c->output, body, length) < 0) return -ENOMEM;
  start_writing(c);
  return 0;
}

static void release_owner(const void *data, size_t length, void *owner) {
  (void)data;
  (void)length;
  ((procord_body_owner_t *)owner)->release(owner);
}

static void release_owned(const void *data, size_t length, void *release_fn) {
  (void)length;
  ((void (*)(void *))release_fn)((void *)data);
}

/* Sends a body the connection references rather than copies; `cleanup`
   (evbuffer's signature) gives it back once written or dropped, also when
   this fails. The two public forms differ only in how they give it back. */
static int send_referenced(procord_connection_t *c, unsigned char kind, const void *body,
                           size_t length, evbuffer_ref_cleanup_cb cleanup, void *argument) {
  if (can_send(c) && dropping(c)) {
    cleanup(body, length, argument);
    return 0;
  }
  int error = can_send(c) ? queue_header(c, kind, length) : PROCORD_ECLOSED;
  if (!error && length && evbuffer_add_reference(c->output, body, length, cleanup, argument) < 0)
    error = -ENOMEM;
  if (error || !length) {
    cleanup(body, length, argument);
    if (error) return error;
  }
  start_writing(c);
  return 0;
}

int procord_connection_send_owned_by(procord_connection_t *c, unsigned char kind, const void *body,
                                     size_t length, procord_body_owner_t *owner) {
  return send_referenced(c, kind, body, length, release_owner, owner);
}

int procord_connection_send_owned(procord_connection_t *c, unsigned char kind, void *body,
                                  size_t length, void (*release_body)(void *)) {
  return send_referenced(c, kind, body, length, release_owned, (void *)release_body);
}

void *procord_connection_take_body(procord_connection_t *c) {
  return c->delivering ? procord_frame_parser_take_body(&c->parser) : NULL;
}

void procord_connection_close_nicely(procord_connection_t *c, int timeout_ms) {
  if (c->state == PROCORD_DISCONNECTED || c->state == PROCORD_DISCONNECTING) return;
  if (c->securing || (c->security && c->state == PROCORD_CONNECTING)) {
    /* Nothing the owner queued may go to a peer not trusted yet (or not
       even connected: finish_connect would write it in clear). */
    disconnect(c, 0, PROCORD_STAGE_NONE);
    return;
  }
  int was_connecting = c->state == PROCORD_CONNECTING;
  move_to(c, PROCORD_DISCONNECTING);
  stop_reading(c);
  event_del(c->watch_timer); /* closing: only close_nicely's own limit applies */
  if (timeout_ms >= 0) procord_timer_arm(c->close_timer, timeout_ms);
  if (was_connecting) return; /* finish_connect flushes, then closes */
  if (!c->in_callback || over_tls(c)) {
    /* With TLS this only hands the bytes to the TLS layer, which writes
       from the loop; the raw write event must stay off. */
    flush_output(c);
  } else if (evbuffer_get_length(c->output) == 0) {
    finish_close_nicely(c);
  } else {
    event_add(c->write_event, NULL);
  }
}

void procord_connection_close(procord_connection_t *c) { disconnect(c, 0, PROCORD_STAGE_NONE); }

void procord_connection_abort(procord_connection_t *c) {
  if (c->state == PROCORD_DISCONNECTED) return;
  struct linger reset = {.l_onoff = 1, .l_linger = 0};
  setsockopt(c->options.read_fd, SOL_SOCKET, SO_LINGER, &reset,
             sizeof reset); /* ENOTSOCK: a pipe */
  disconnect(c, 0, PROCORD_STAGE_NONE);
}

procord_connection_state_t procord_connection_state(const procord_connection_t *c) {
  return c->state;
}

procord_cause_t procord_connection_cause(const procord_connection_t *c) { return c->cause; }

procord_stage_t procord_connection_stage(const procord_connection_t *c) { return c->stage; }

size_t procord_connection_pending_output(const procord_connection_t *c) {
  return evbuffer_get_length(c->output) + procord_tls_transport_pending(&c->tls);
}

const char *procord_connection_detail(const procord_connection_t *c) { return c->detail; }

void procord_connection_free(procord_connection_t *c) {
  if (!c) return;
  c->options.on_state = NULL;
  c->options.on_frame = NULL;
  if (c->state != PROCORD_DISCONNECTED) {
    close_descriptors(c);
    move_to(c, PROCORD_DISCONNECTED);
  }
  if (c->in_callback) c->free_requested = 1;
  else
    release_connection(c);
}
