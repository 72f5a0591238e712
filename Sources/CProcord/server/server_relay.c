/*
 * A TLS client's relay (server_private.h): plaintext between the client's
 * TLS connection and the server's own reading of that client (a
 * socketpair), with back-pressure both ways.
 */
#define _GNU_SOURCE
#include "io/io_private.h"
#include "server/server_private.h"
#include "base/base_private.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

/* Bytes waiting for a slow side before the other side is read no more:
   small, since the server's own reading of the client bounds the rest (and
   a server holds thousands of clients). */
#define HIGH_WATER (256 * 1024)
/* After the server's side is done: how long the client may take nothing of the
   rest before it is dropped (a slow client that keeps reading is waited for). */
#define FLUSH_LIMIT_MS 10000

struct procord_relay_s {
  struct bufferevent *client; /* TLS */
  struct bufferevent *inner;  /* our end of the socketpair: the server's side is at the other */
  int inner_gone;
  struct event *flush_timer;
  size_t unflushed; /* the client's output at the last look */
  procord_relay_done_fn done;
  void *context;
};

void procord_relay_free(procord_relay_t *r) {
  if (!r) return;
  if (r->client) bufferevent_free(r->client);
  if (r->inner) bufferevent_free(r->inner);
  if (r->flush_timer) event_free(r->flush_timer);
  procord_free(r);
}

static void end_relay(procord_relay_t *r) {
  procord_relay_done_fn done = r->done;
  void *context = r->context;
  procord_relay_free(r);
  done(r, context);
}

static struct bufferevent *other_side(procord_relay_t *r, struct bufferevent *bev) {
  return bev == r->client ? r->inner : r->client;
}

/* Moves what `from` read to the other side; stops reading `from` while the
   other side has HIGH_WATER bytes to write. */
static void on_relay_readable(struct bufferevent *from, void *argument) {
  procord_relay_t *r = argument;
  struct bufferevent *to = other_side(r, from);
  if (to == r->inner && r->inner_gone) {
    evbuffer_drain(bufferevent_get_input(from), evbuffer_get_length(bufferevent_get_input(from)));
    return;
  }
  struct evbuffer *output = bufferevent_get_output(to);
  evbuffer_add_buffer(output, bufferevent_get_input(from));
  if (evbuffer_get_length(output) >= HIGH_WATER) {
    bufferevent_disable(from, EV_READ);
    bufferevent_setwatermark(to, EV_WRITE, HIGH_WATER / 2, 0);
  }
}

/* Both directions at once: the server's side sees its client gone, even
   while it is not reading (it reads ahead, and the end or the reset shows).
   What it still says is for nobody. */
static void hang_up_inside(procord_relay_t *r) { shutdown(bufferevent_getfd(r->inner), SHUT_RDWR); }

static void relay_client_flushed(procord_relay_t *r) {
  procord_tls_goodbye(r->client);
  end_relay(r);
}

static void on_relay_written(struct bufferevent *to, void *argument) {
  procord_relay_t *r = argument;
  size_t left = evbuffer_get_length(bufferevent_get_output(to));
  struct bufferevent *from = other_side(r, to);
  if (left < HIGH_WATER / 2) {
    bufferevent_setwatermark(to, EV_WRITE, 0, 0);
    if (from) bufferevent_enable(from, EV_READ);
  }
  if (left > 0) return;
  /* The server's side is done: the client has all of it. */
  if (to == r->client && r->inner_gone) relay_client_flushed(r);
}

static void arm_flush_timer(procord_relay_t *r) {
  r->unflushed = evbuffer_get_length(bufferevent_get_output(r->client));
  procord_timer_arm(r->flush_timer, FLUSH_LIMIT_MS);
}

static void on_flush_timeout(evutil_socket_t fd, short events, void *argument) {
  (void)fd;
  (void)events;
  procord_relay_t *r = argument;
  if (evbuffer_get_length(bufferevent_get_output(r->client)) < r->unflushed) arm_flush_timer(r);
  else
    end_relay(r);
}

static void on_relay_event(struct bufferevent *bev, short what, void *argument) {
  procord_relay_t *r = argument;
  if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))) return;
  if (bev == r->client) {
    /* The client went (an end, an error, a reset): the server's side is
       hung up on at once, as for a plain client that goes, and what is
       queued either way is dropped. Waiting to hand it the rest of what the
       client sent could be forever (once HIGH_WATER bytes wait for the
       client, the server's side is read no more), and no task would run
       for a client that went anyway. */
    ERR_clear_error();
    if (!r->inner_gone) hang_up_inside(r);
    end_relay(r);
    return;
  }
  r->inner_gone = 1;
  bufferevent_disable(r->inner, EV_READ);
  if (evbuffer_get_length(bufferevent_get_output(r->client)) == 0) relay_client_flushed(r);
  else
    arm_flush_timer(r);
}

procord_relay_t *procord_relay_start(struct bufferevent *tls, int *inner_fd,
                                     procord_relay_done_fn done, void *context) {
  int pair[2] = {-1, -1};
  procord_relay_t *r = procord_allocate_zeroed(1, sizeof *r);
  if (!r || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    procord_free(r);
    bufferevent_free(tls);
    return NULL;
  }
  struct event_base *base = bufferevent_get_base(tls);
  r->client = tls;
  r->done = done;
  r->context = context;
  procord_fd_set_nonblocking(pair[0], 1);
  r->inner = bufferevent_socket_new(base, pair[0], BEV_OPT_CLOSE_ON_FREE);
  r->flush_timer = evtimer_new(base, on_flush_timeout, r);
  if (!r->inner || !r->flush_timer) {
    if (!r->inner) close(pair[0]);
    close(pair[1]);
    procord_relay_free(r);
    return NULL;
  }
  bufferevent_setcb(r->client, on_relay_readable, on_relay_written, on_relay_event, r);
  bufferevent_setcb(r->inner, on_relay_readable, on_relay_written, on_relay_event, r);
  bufferevent_enable(r->client, EV_READ | EV_WRITE);
  bufferevent_enable(r->inner, EV_READ | EV_WRITE);
  /* What the client sent with its last handshake bytes is waiting already. */
  if (evbuffer_get_length(bufferevent_get_input(r->client)) > 0) on_relay_readable(r->client, r);
  *inner_fd = pair[1];
  return r;
}
