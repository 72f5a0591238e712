/*
 * TCP connections to worker servers (procord/connect.h): name lookup off the
 * loop thread, then a non-blocking connect to each address in turn.
 */
#define _GNU_SOURCE
#include "procord/connect.h"
#include "loop_private.h"
#include "options_private.h"
#include "procord/error.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct procord_connect_s {
  /* Registered on the loop while a lookup thread runs, so that
     procord_loop_free waits for the thread's call back into it. */
  procord_loop_work_t lookup_work;
  procord_loop_t *loop;
  procord_connect_options_t options;
  char *host;
  int references;           /* atomic: the loop side and a resolver thread */
  int cancelled;            /* loop thread only */
  int resolve_error;        /* EAI_* from the resolver thread */
  struct addrinfo *addresses;
  struct addrinfo *next;    /* the next address to try */
  int fd;
  int last_error;
  struct event *writable;
  struct event *timer;
};

static void release(procord_connect_t *a) {
  if (__atomic_sub_fetch(&a->references, 1, __ATOMIC_ACQ_REL) != 0) return;
  if (a->addresses) freeaddrinfo(a->addresses);
  if (a->writable) event_free(a->writable);
  if (a->timer) event_free(a->timer);
  if (a->fd >= 0) close(a->fd);
  free(a->host);
  free(a);
}

static void finish(procord_connect_t *a, int fd, int error, const char *call, const char *detail) {
  if (a->writable) event_del(a->writable);
  if (a->timer) event_del(a->timer);
  a->fd = -1;
  a->cancelled = 1; /* done: a late cancel is a no-op */
  a->options.on_done(fd, error, call, detail, a->options.context);
  release(a);
}

static void try_next(procord_connect_t *a);

static void on_writable(evutil_socket_t fd, short events, void *argument) {
  (void)events;
  procord_connect_t *a = argument;
  int error = 0;
  socklen_t length = sizeof error;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) < 0) error = errno;
  if (error) {
    a->last_error = error;
    close(a->fd);
    a->fd = -1;
    try_next(a);
    return;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  finish(a, (int)fd, 0, NULL, NULL);
}

/* Starts a non-blocking connect to the next address, or reports the last error. */
static void try_next(procord_connect_t *a) {
  struct event_base *base = procord_loop_base(a->loop);
  while (a->next) {
    struct addrinfo *address = a->next;
    a->next = address->ai_next;
    a->fd = socket(address->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (a->fd < 0) {
      a->last_error = errno;
      continue;
    }
    if (connect(a->fd, address->ai_addr, address->ai_addrlen) < 0 && errno != EINPROGRESS) {
      a->last_error = errno;
      close(a->fd);
      a->fd = -1;
      continue;
    }
    if (a->writable) event_free(a->writable);
    a->writable = event_new(base, a->fd, EV_WRITE, on_writable, a);
    if (!a->writable || event_add(a->writable, NULL) < 0) {
      close(a->fd);
      finish(a, -1, -ENOMEM, "connect", NULL);
      return;
    }
    return;
  }
  finish(a, -1, -(a->last_error ? a->last_error : ECONNREFUSED), "connect", NULL);
}

static void on_timeout(evutil_socket_t fd, short events, void *argument) {
  (void)fd;
  (void)events;
  procord_connect_t *a = argument;
  if (a->writable) event_del(a->writable);
  if (a->fd >= 0) close(a->fd);
  finish(a, -1, PROCORD_ETIMEOUT, "connect", NULL);
}

/* On the loop thread, once the addresses are known; drops the lookup's reference. */
static void on_resolved(void *argument) {
  procord_connect_t *a = argument;
  if (a->lookup_work.next) procord_loop_remove_work(a->loop, &a->lookup_work);
  a->lookup_work.next = NULL;
  if (!a->cancelled && a->resolve_error) {
    finish(a, -1, PROCORD_ERESOLVE, "getaddrinfo", gai_strerror(a->resolve_error));
  } else if (!a->cancelled) {
    a->next = a->addresses;
    try_next(a);
  }
  release(a);
}

static int lookup(procord_connect_t *a, int flags) {
  char port[16];
  snprintf(port, sizeof port, "%d", a->options.port);
  struct addrinfo hints = {0};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = flags;
  return getaddrinfo(a->host, port, &hints, &a->addresses);
}

static void *resolve(void *argument) {
  procord_connect_t *a = argument;
  a->resolve_error = lookup(a, AI_ADDRCONFIG);
  /* Out of memory here, the attempt is left as it is (leaked, never
     answered): freeing it would touch loop state from this thread. */
  procord_loop_call(a->loop, on_resolved, a);
  return NULL;
}

/* The owner cancels the attempt itself; the lookup just has to come back. */
static void ignore_abort(procord_loop_work_t *work) { (void)work; }

static int start_resolver(procord_connect_t *a) {
  pthread_attr_t attributes;
  pthread_attr_init(&attributes);
  pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
  /* The thread must not take the program's signals. */
  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &previous);
  pthread_t thread;
  __atomic_add_fetch(&a->references, 1, __ATOMIC_RELAXED);
  a->lookup_work.abort = ignore_abort;
  procord_loop_add_work(a->loop, &a->lookup_work);
  int error = pthread_create(&thread, &attributes, resolve, a);
  pthread_sigmask(SIG_SETMASK, &previous, NULL);
  pthread_attr_destroy(&attributes);
  if (error) {
    procord_loop_remove_work(a->loop, &a->lookup_work);
    a->lookup_work.next = NULL;
    __atomic_sub_fetch(&a->references, 1, __ATOMIC_RELAXED);
  }
  return -error;
}

int procord_connect(procord_loop_t *loop, const procord_connect_options_t *given,
                    procord_connect_t **result) {
  procord_connect_options_t copy;
  const procord_connect_options_t *options = &copy;
  if (!given || PROCORD_OPTIONS_COPY(copy, given, PROCORD_FIRST_SIZE_CONNECT_OPTIONS) != 0) return PROCORD_EINVAL;
  if (!loop || !options->host || !options->on_done || options->port <= 0 ||
      options->port > 65535)
    return PROCORD_EINVAL;
  procord_connect_t *a = calloc(1, sizeof *a);
  if (!a) return -ENOMEM;
  a->loop = loop;
  a->options = *options;
  a->references = 1;
  a->fd = -1;
  a->host = strdup(options->host);
  a->timer = evtimer_new(procord_loop_base(loop), on_timeout, a);
  if (!a->host || !a->timer) {
    release(a);
    return -ENOMEM;
  }
  if (options->timeout_ms > 0) {
    struct timeval limit = {options->timeout_ms / 1000, (options->timeout_ms % 1000) * 1000};
    evtimer_add(a->timer, &limit);
  }
  /* Numeric addresses need no lookup, so no thread either; on_done still
     never runs inside this call. */
  int error;
  if (lookup(a, AI_NUMERICHOST) == 0) {
    __atomic_add_fetch(&a->references, 1, __ATOMIC_RELAXED);
    error = procord_loop_call(loop, on_resolved, a);
    if (error) __atomic_sub_fetch(&a->references, 1, __ATOMIC_RELAXED);
  } else {
    a->addresses = NULL;
    error = start_resolver(a);
  }
  if (error) {
    release(a);
    return error;
  }
  *result = a;
  return 0;
}

void procord_connect_cancel(procord_connect_t *a) {
  if (!a || a->cancelled) return;
  a->cancelled = 1;
  if (a->writable) event_del(a->writable);
  if (a->timer) event_del(a->timer);
  if (a->fd >= 0) close(a->fd); /* after event_del: the event must not watch a closed fd */
  a->fd = -1;
  release(a); /* a resolver still running holds its own reference */
}

void procord_connect_options_init(procord_connect_options_t *options) {
  memset(options, 0, sizeof *options);
  options->size = sizeof *options;
}
