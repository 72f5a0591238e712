/* Listening for TCP peers on a loop (procord/listen.h). */
#define _GNU_SOURCE
#include "procord/listen.h"
#include "io/io_private.h"
#include "base/base_private.h"
#include "procord/error.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ACCEPT_RETRY_MS 100

struct procord_listener_s {
  int in_callback; /* procord_listener_close inside on_accept frees it after */
  int closed;
  int fd;
  struct event *accept_event;
  struct event *retry_timer;
  int paused;
  procord_accept_cb on_accept;
  void *context;
};

int procord_listen_socket(const char *hostname, int port, int reuse_address, int *result) {
  if (port < 0 || port > 65535 || !result) return PROCORD_EINVAL;
  const char *host = hostname ? hostname : "127.0.0.1";
  char service[16];
  snprintf(service, sizeof service, "%d", port);
  struct addrinfo hints = {0}, *addresses;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  if (getaddrinfo(host, service, &hints, &addresses) != 0) return PROCORD_ERESOLVE;
  int error = -EADDRNOTAVAIL;
  for (struct addrinfo *a = addresses; a; a = a->ai_next) {
    int fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
      error = -errno;
      continue;
    }
    int one = 1;
    if (reuse_address) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0) {
      *result = fd;
      error = 0;
      break;
    }
    error = -errno;
    close(fd);
  }
  freeaddrinfo(addresses);
  return error;
}

static void update(procord_listener_t *l) {
  if (l->paused || evtimer_pending(l->retry_timer, NULL)) event_del(l->accept_event);
  else event_add(l->accept_event, NULL);
}

static void free_listener(procord_listener_t *l) {
  event_free(l->accept_event);
  event_free(l->retry_timer);
  close(l->fd);
  procord_free(l);
}

static void on_accept(evutil_socket_t listen_fd, short events, void *context) {
  (void)events;
  procord_listener_t *l = context;
  /* A bounded batch per turn, so that other connections get their turn too. */
  for (int batch = 0; batch < 64 && !l->paused; batch++) {
    struct sockaddr_storage address;
    socklen_t length = sizeof address;
    int fd = accept4((int)listen_fd, (struct sockaddr *)&address, &length, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        /* Out of descriptors or memory (or a socket gone bad): pending peers
           stay queued; try later rather than spin. */
        struct timeval later = {0, ACCEPT_RETRY_MS * 1000};
        evtimer_add(l->retry_timer, &later);
        update(l);
      }
      return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char peer[96];
    procord_address_string((struct sockaddr *)&address, length, peer, sizeof peer);
    l->in_callback = 1;
    l->on_accept(l, fd, peer, l->context);
    l->in_callback = 0;
    if (l->closed) {
      free_listener(l);
      return;
    }
  }
}

static void on_retry(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  update(context);
}

void procord_listener_options_init(procord_listener_options_t *options) {
  memset(options, 0, sizeof *options);
  options->size = sizeof *options;
}

int procord_listen(procord_loop_t *loop, const procord_listener_options_t *given,
                   procord_listener_t **result) {
  procord_listener_options_t copy = {0};
  const procord_listener_options_t *options = &copy;
  /* A refused size still gives up the listening socket the copy holds. */
  int refused = given ? PROCORD_OPTIONS_COPY(copy, given, PROCORD_FIRST_SIZE_LISTENER_OPTIONS) : PROCORD_EINVAL;
  int taken = options->listen_fd > 0 ? options->listen_fd : -1;
  if (!loop || refused || !options->on_accept || !result) {
    if (taken >= 0) close(taken);
    return PROCORD_EINVAL;
  }
  procord_listener_t *l = procord_allocate_zeroed(1, sizeof *l);
  if (!l) {
    if (taken >= 0) close(taken);
    return -ENOMEM;
  }
  l->on_accept = options->on_accept;
  l->context = options->context;
  int error = 0;
  if (taken >= 0) {
    l->fd = options->listen_fd;
    fcntl(l->fd, F_SETFL, fcntl(l->fd, F_GETFL) | O_NONBLOCK);
    fcntl(l->fd, F_SETFD, FD_CLOEXEC);
  } else {
    error = procord_listen_socket(options->hostname, options->port, options->reuse_address, &l->fd);
  }
  if (!error) {
    struct event_base *base = procord_loop_base(loop);
    l->accept_event = event_new(base, l->fd, EV_READ | EV_PERSIST, on_accept, l);
    l->retry_timer = evtimer_new(base, on_retry, l);
    if (!l->accept_event || !l->retry_timer || event_add(l->accept_event, NULL) != 0) error = -ENOMEM;
    if (error) close(l->fd);
  }
  if (error) {
    if (l->accept_event) event_free(l->accept_event);
    if (l->retry_timer) event_free(l->retry_timer);
    procord_free(l);
    return error;
  }
  *result = l;
  return 0;
}

int procord_listener_port(const procord_listener_t *l) {
  struct sockaddr_storage address;
  socklen_t length = sizeof address;
  if (getsockname(l->fd, (struct sockaddr *)&address, &length) != 0) return -1;
  if (address.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&address)->sin_port);
  if (address.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&address)->sin6_port);
  return -1;
}

void procord_listener_pause(procord_listener_t *l, int paused) {
  l->paused = paused != 0;
  update(l);
}

void procord_listener_close(procord_listener_t *l) {
  if (!l) return;
  if (l->in_callback) {
    l->closed = 1; /* freed once on_accept returns */
    event_del(l->accept_event);
    return;
  }
  free_listener(l);
}
