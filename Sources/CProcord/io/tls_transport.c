/*
 * TLS as a connection's transport (io_private.h): libevent's
 * bufferevent_openssl over the connection's socket. It knows bytes, not
 * frames nor connections: it takes what the connection gives it to write,
 * hands over what it decrypted, and tells its owner through one hook what
 * happened (the handshake is done, bytes came, bytes went, the peer left,
 * it failed and why). The connection decides what each means.
 */
#define _GNU_SOURCE
#include "io/io_private.h"
#include "procord/error.h"

#include <errno.h>
#include <event2/bufferevent_ssl.h>

/* The TLS layer says it has written down to this many bytes: the peer is
   taking them (not idle), and a close may finish once none are left. */
#define TLS_WRITE_LOW_WATERMARK (256 * 1024)

static void report_to_owner(procord_tls_transport_t *t, procord_tls_report_kind_t kind, int error,
                            procord_stage_t stage, const char *detail) {
  procord_tls_report_t report = {.kind = kind, .error = error, .stage = stage, .detail = detail};
  t->on_report(t->owner, &report); /* may close `t`: nothing of it is read after */
}

static void on_tls_readable(struct bufferevent *bev, void *argument) {
  (void)bev;
  report_to_owner(argument, PROCORD_TLS_READABLE, 0, PROCORD_STAGE_NONE, NULL);
}

static void on_tls_written(struct bufferevent *bev, void *argument) {
  (void)bev;
  report_to_owner(argument, PROCORD_TLS_WRITTEN, 0, PROCORD_STAGE_NONE, NULL);
}

static void on_tls_event(struct bufferevent *bev, short what, void *argument) {
  procord_tls_transport_t *t = argument;
  if (what & BEV_EVENT_CONNECTED) {
    report_to_owner(t, PROCORD_TLS_SECURED, 0, PROCORD_STAGE_NONE, NULL);
    return;
  }
  if (what & BEV_EVENT_EOF) {
    report_to_owner(t, PROCORD_TLS_ENDED, 0, PROCORD_STAGE_NONE, NULL);
    return;
  }
  if (what & BEV_EVENT_ERROR) {
    int error = errno;
    const char *reason = procord_tls_failure(bev);
    if (reason) report_to_owner(t, PROCORD_TLS_FAILED, PROCORD_ETLS, PROCORD_STAGE_TLS, reason);
    else
      report_to_owner(t, PROCORD_TLS_FAILED, error ? -error : PROCORD_EDISCONNECTED,
                      what & BEV_EVENT_WRITING ? PROCORD_STAGE_WRITE : PROCORD_STAGE_READ, NULL);
  }
}

int procord_tls_transport_start(procord_tls_transport_t *t, struct event_base *base, int fd,
                                const procord_security_t *security, const char *peer_name,
                                void (*on_report)(void *owner, const procord_tls_report_t *report),
                                void *owner) {
  PROCORD_ASSERT(!t->layer);
  SSL *ssl = procord_security_new_ssl(security, peer_name);
  if (!ssl) return -ENOMEM;
  /* The TLS layer owns the socket from here: freeing it closes the socket. */
  t->layer = bufferevent_openssl_socket_new(base, fd, ssl, BUFFEREVENT_SSL_CONNECTING,
                                            BEV_OPT_CLOSE_ON_FREE);
  if (!t->layer) {
    SSL_free(ssl);
    return -ENOMEM;
  }
  t->on_report = on_report;
  t->owner = owner;
  bufferevent_openssl_set_allow_dirty_shutdown(t->layer, 1);
  bufferevent_setwatermark(t->layer, EV_WRITE, TLS_WRITE_LOW_WATERMARK, 0);
  bufferevent_setcb(t->layer, on_tls_readable, on_tls_written, on_tls_event, t);
  bufferevent_enable(t->layer, EV_READ | EV_WRITE);
  return 0;
}

int procord_tls_transport_running(const procord_tls_transport_t *t) { return t->layer != NULL; }

void procord_tls_transport_set_reading(procord_tls_transport_t *t, int reading) {
  if (!t->layer) return;
  if (reading) bufferevent_enable(t->layer, EV_READ);
  else
    bufferevent_disable(t->layer, EV_READ);
}

size_t procord_tls_transport_read(procord_tls_transport_t *t, void *buffer, size_t size) {
  int n = evbuffer_remove(bufferevent_get_input(t->layer), buffer, size);
  return n > 0 ? (size_t)n : 0;
}

int procord_tls_transport_write(procord_tls_transport_t *t, const void *bytes, size_t length) {
  return bufferevent_write(t->layer, bytes, length) == 0 ? 0 : -ENOMEM;
}

size_t procord_tls_transport_write_queue(procord_tls_transport_t *t, struct evbuffer *queue) {
  struct evbuffer *output = bufferevent_get_output(t->layer);
  if (evbuffer_get_length(queue) > 0) evbuffer_add_buffer(output, queue);
  return evbuffer_get_length(output);
}

size_t procord_tls_transport_pending(const procord_tls_transport_t *t) {
  return t->layer ? evbuffer_get_length(bufferevent_get_output(t->layer)) : 0;
}

int procord_tls_transport_say_goodbye(procord_tls_transport_t *t) {
  if (!t->layer) return 0;
  procord_tls_goodbye(t->layer);
  return 1;
}

int procord_tls_transport_close(procord_tls_transport_t *t) {
  if (!t->layer) return 0;
  bufferevent_free(t->layer);
  t->layer = NULL;
  return 1;
}
