/*
 * A connection's security, client side (connection_private.h): TLS under
 * the frames through libevent's bufferevent_openssl, then shared-secret
 * authentication (auth_private.h) before the owner's first frame.
 */
#define _GNU_SOURCE
#include "io/io_private.h"
#include "procord/error.h"

#include <errno.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <string.h>

/* The TLS layer says it has written down to this many bytes: the peer is
   taking them (not idle), and a close may finish once none are left. */
#define TLS_WRITE_LOW_WATERMARK (256 * 1024)

static int fail(procord_connection_t *c, int error, procord_stage_t stage, const char *detail) {
  return procord_connection_disconnect(c, error, stage, detail);
}

static int send_urgent(procord_connection_t *c, const unsigned char *body, size_t length) {
  unsigned char frame[PROCORD_FRAME_HEADER_MAX + PROCORD_AUTH_PROOF_LENGTH];
  size_t n = procord_frame_encode_header(PROCORD_FRAME_AUTH, length, frame);
  memcpy(frame + n, body, length);
  if (c->tls) return bufferevent_write(c->tls, frame, n + length) == 0 ? 0 : -ENOMEM;
  /* Written from the loop, never inside the call that asked for it. */
  if (evbuffer_add(c->urgent, frame, n + length) < 0) return -ENOMEM;
  event_add(c->write_event, NULL);
  return 0;
}

int procord_connection_start_auth(procord_connection_t *c) {
  if (!procord_security_uses_secret(c->security)) {
    procord_connection_become_connected(c);
    return 0;
  }
  unsigned char nonce[PROCORD_AUTH_NONCE_LENGTH];
  int error = procord_auth_start(&c->auth, c->security, PROCORD_AUTH_CLIENT, nonce);
  /* Small frames only until the server is trusted. */
  if (!error) {
    procord_frame_parser_reset(&c->parser);
    procord_frame_parser_init(&c->parser, PROCORD_AUTH_MAX_FRAME);
  }
  if (!c->tls) event_add(c->read_event, NULL);
  return error ? error : send_urgent(c, nonce, sizeof nonce);
}

int procord_connection_secure_frame(procord_connection_t *c, const procord_frame_t *frame, int error) {
  if (error)
    return fail(c, PROCORD_EAUTH, PROCORD_STAGE_AUTHENTICATE,
                "the server's answer to authentication is not a valid frame");
  unsigned char reply[PROCORD_AUTH_PROOF_LENGTH];
  size_t length = 0;
  const char *reason = NULL;
  procord_auth_result_t result = procord_auth_step(&c->auth, frame, reply, &length, &reason);
  if (result == PROCORD_AUTH_FAILED) return fail(c, PROCORD_EAUTH, PROCORD_STAGE_AUTHENTICATE, reason);
  if (length && send_urgent(c, reply, length) != 0) return fail(c, -ENOMEM, PROCORD_STAGE_AUTHENTICATE, NULL);
  if (result == PROCORD_AUTH_CONTINUE) return 1;
  memset(&c->auth, 0, sizeof c->auth);
  procord_frame_parser_reset(&c->parser);
  procord_frame_parser_init(&c->parser, c->options.max_message_size);
  return procord_connection_become_connected(c);
}

/* ---- TLS ---- */

static void on_tls_readable(struct bufferevent *bev, void *argument) {
  (void)bev;
  procord_connection_receive(argument);
}

static void on_tls_written(struct bufferevent *bev, void *argument) {
  procord_connection_t *c = argument;
  procord_connection_heard(c); /* a peer that reads a long upload is not idle */
  if (c->state == PROCORD_DISCONNECTING && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
    procord_connection_flush(c);
}


static void on_tls_event(struct bufferevent *bev, short what, void *argument) {
  (void)bev;
  procord_connection_t *c = argument;
  if (what & BEV_EVENT_CONNECTED) {
    int error = procord_connection_start_auth(c);
    if (error) fail(c, error, PROCORD_STAGE_AUTHENTICATE, NULL);
    return;
  }
  if (what & BEV_EVENT_EOF) {
    if (c->securing)
      fail(c, PROCORD_ETLS, PROCORD_STAGE_TLS, "the server closed the connection during the TLS handshake");
    else
      fail(c, PROCORD_EDISCONNECTED, PROCORD_STAGE_READ, NULL);
    return;
  }
  if (what & BEV_EVENT_ERROR) {
    int error = errno;
    const char *reason = procord_tls_failure(c->tls);
    if (reason) fail(c, PROCORD_ETLS, PROCORD_STAGE_TLS, reason);
    else fail(c, error ? -error : PROCORD_EDISCONNECTED,
              what & BEV_EVENT_WRITING ? PROCORD_STAGE_WRITE : PROCORD_STAGE_READ, NULL);
  }
}

int procord_connection_start_tls(procord_connection_t *c) {
  SSL *ssl = procord_security_new_ssl(c->security, c->peer_name);
  if (!ssl) return -ENOMEM;
  struct event_base *base = event_get_base(c->read_event);
  /* The TLS layer owns the socket from here: freeing it closes the socket. */
  c->tls = bufferevent_openssl_socket_new(base, c->options.read_fd, ssl, BUFFEREVENT_SSL_CONNECTING,
                                          BEV_OPT_CLOSE_ON_FREE);
  if (!c->tls) {
    SSL_free(ssl);
    return -ENOMEM;
  }
  bufferevent_openssl_set_allow_dirty_shutdown(c->tls, 1);
  bufferevent_setwatermark(c->tls, EV_WRITE, TLS_WRITE_LOW_WATERMARK, 0);
  bufferevent_setcb(c->tls, on_tls_readable, on_tls_written, on_tls_event, c);
  bufferevent_enable(c->tls, EV_READ | EV_WRITE);
  return 0;
}

size_t procord_connection_tls_write(procord_connection_t *c, struct evbuffer *queue) {
  struct evbuffer *output = bufferevent_get_output(c->tls);
  if (evbuffer_get_length(queue) > 0) evbuffer_add_buffer(output, queue);
  return evbuffer_get_length(output);
}

size_t procord_connection_tls_read(procord_connection_t *c, void *buffer, size_t size) {
  int n = evbuffer_remove(bufferevent_get_input(c->tls), buffer, size);
  return n > 0 ? (size_t)n : 0;
}

size_t procord_connection_tls_pending(const procord_connection_t *c) {
  return c->tls ? evbuffer_get_length(bufferevent_get_output(c->tls)) : 0;
}


void procord_connection_tls_free(procord_connection_t *c) {
  if (!c->tls) return;
  bufferevent_free(c->tls);
  c->tls = NULL;
}
