/*
 * Listening for TCP peers on a loop (procord/listen.h): the one accept loop
 * of the core. A worker server accepts through it too, with the hooks of
 * procord_listener_start (io_private.h): its filter by address, and a word
 * when the process runs out of descriptors.
 */
#define _GNU_SOURCE
#include "procord/listen.h"
#include "io/io_private.h"
#include "base/base_private.h"
#include "procord/error.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ACCEPT_RETRY_MS 100 /* out of descriptors: wait for some, do not spin */
#define ACCEPTS_PER_TURN 64 /* then back to the loop, so that others get their turn too */

struct procord_listener_s {
  int in_callback; /* procord_listener_close inside on_accept frees it after */
  int closed;
  int fd;
  struct event *accept_event;
  struct event *retry_timer;
  int paused;
  procord_accept_cb on_accept;
  procord_listener_hooks_t hooks;
  void *context;
};

/* Accepting while neither paused nor waiting to retry. */
static void listener_update(procord_listener_t *l) {
  if (l->paused || evtimer_pending(l->retry_timer, NULL)) event_del(l->accept_event);
  else
    event_add(l->accept_event, NULL);
}

static void listener_free(procord_listener_t *l) {
  event_free(l->accept_event);
  event_free(l->retry_timer);
  close(l->fd);
  procord_free(l);
}

static int is_out_of_resources(int error) {
  return error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM;
}

static void on_listener_readable(evutil_socket_t listen_fd, short events, void *context) {
  (void)events;
  procord_listener_t *l = context;
  for (int turn = 0; turn < ACCEPTS_PER_TURN && !l->paused; turn++) {
    struct sockaddr_storage address;
    socklen_t length = sizeof address;
    int fd =
        accept4((int)listen_fd, (struct sockaddr *)&address, &length, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      int error = errno;
      if (error == EINTR || error == ECONNABORTED) continue;
      if (error != EAGAIN && error != EWOULDBLOCK) {
        /* Out of descriptors or memory, or a socket gone bad (a policy's
           EPERM): pending peers stay queued; try later rather than spin on
           a listener that stays readable. */
        procord_timer_arm(l->retry_timer, ACCEPT_RETRY_MS);
        listener_update(l);
        if (is_out_of_resources(error) && l->hooks.out_of_descriptors)
          l->hooks.out_of_descriptors(l->context, error, ACCEPT_RETRY_MS);
      }
      return;
    }
    if (l->hooks.admit && !l->hooks.admit(l->context, (struct sockaddr *)&address, length)) {
      close(fd);
      continue;
    }
    procord_socket_set_nodelay(fd);
    char peer[96];
    procord_address_string((struct sockaddr *)&address, length, peer, sizeof peer);
    l->in_callback = 1;
    l->on_accept(l, fd, peer, l->context);
    l->in_callback = 0;
    if (l->closed) {
      listener_free(l);
      return;
    }
  }
}

static void on_listener_retry(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  listener_update(context);
}

void procord_listener_options_init(procord_listener_options_t *options) {
  procord_options_clear(options, sizeof *options);
}

int procord_listener_start(procord_loop_t *loop, int fd, procord_accept_cb on_accept,
                           const procord_listener_hooks_t *hooks, void *context,
                           procord_listener_t **result) {
  procord_listener_t *l = procord_allocate_zeroed(1, sizeof *l);
  if (!l) {
    close(fd);
    return -ENOMEM;
  }
  l->fd = fd;
  l->on_accept = on_accept;
  if (hooks) l->hooks = *hooks;
  l->context = context;
  procord_fd_set_nonblocking(fd, 1);
  procord_fd_set_cloexec(fd);
  struct event_base *base = procord_loop_base(loop);
  l->accept_event = event_new(base, fd, EV_READ | EV_PERSIST, on_listener_readable, l);
  l->retry_timer = evtimer_new(base, on_listener_retry, l);
  if (!l->accept_event || !l->retry_timer || event_add(l->accept_event, NULL) != 0) {
    if (l->accept_event) event_free(l->accept_event);
    if (l->retry_timer) event_free(l->retry_timer);
    close(fd);
    procord_free(l);
    return -ENOMEM;
  }
  *result = l;
  return 0;
}

int procord_listen(procord_loop_t *loop, const procord_listener_options_t *given,
                   procord_listener_t **result) {
  procord_listener_options_t copy = {0};
  const procord_listener_options_t *options = &copy;
  /* A refused size still gives up the listening socket the copy holds. */
  int refused = given ? PROCORD_OPTIONS_COPY(copy, given, PROCORD_FIRST_SIZE_LISTENER_OPTIONS)
                      : PROCORD_EINVAL;
  int fd = options->listen_fd > 0 ? options->listen_fd : -1;
  if (!loop || refused || !options->on_accept || !result) {
    if (fd >= 0) close(fd);
    return PROCORD_EINVAL;
  }
  if (fd < 0) {
    int error =
        procord_listen_socket(options->hostname, options->port, options->reuse_address, &fd);
    if (error) return error;
  }
  return procord_listener_start(loop, fd, options->on_accept, NULL, options->context, result);
}

int procord_listener_port(const procord_listener_t *l) {
  struct sockaddr_storage address;
  socklen_t length = sizeof address;
  if (getsockname(l->fd, (struct sockaddr *)&address, &length) != 0) return -1;
  return procord_address_port(&address);
}

void procord_listener_pause(procord_listener_t *l, int paused) {
  l->paused = paused != 0;
  listener_update(l);
}

void procord_listener_close(procord_listener_t *l) {
  if (!l) return;
  if (l->in_callback) {
    l->closed = 1; /* freed once on_accept returns */
    event_del(l->accept_event);
    return;
  }
  listener_free(l);
}
