/*
 * For the C tests of libevent's log (procord/log.h): a way to make libevent
 * itself say something. Include after check.h, with _GNU_SOURCE defined.
 */
#ifndef PROCORD_TEST_LIBEVENT_FIXTURE_H
#define PROCORD_TEST_LIBEVENT_FIXTURE_H

#include <event2/event.h>
#include <fcntl.h>

static inline void libevent_fixture_ignore(evutil_socket_t fd, short events, void *context) {
  (void)fd, (void)events, (void)context;
}

/* Makes libevent warn: an event added for a descriptor that is not open. A
   number far above any in use, not one just closed: the server's threads
   open descriptors meanwhile, and one could take that number again. */
static inline void make_libevent_warn(void) {
  struct event_base *base = event_base_new();
  enum { NOT_OPEN = 60000 };
  if (!base || fcntl(NOT_OPEN, F_GETFD) != -1) {
    if (base) event_base_free(base);
    return;
  }
  struct event *e = event_new(base, NOT_OPEN, EV_READ, libevent_fixture_ignore, NULL);
  if (e) {
    event_add(e, NULL);
    event_free(e);
  }
  event_base_free(base);
}

#endif
