/*
 * TCP connections to worker servers (procord/connect.h): the host name
 * resolved on the loop's own thread by libevent's evdns (the loop keeps the
 * resolver), then a non-blocking connect to each address in turn. No
 * thread is ever started here.
 */
#define _GNU_SOURCE
#include "procord/connect.h"
#include "io/io_private.h"
#include "base/base_private.h"
#include "procord/error.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* The resolver's own limits, unless resolv.conf sets `options timeout:` or
   `attempts:`: each query is sent at most twice, 2 s apart, so a name
   whose name servers do not answer fails within about 4 s (for each name
   of the search list tried), not evdns's 15 s (5 s, 3 times). */
#define RESOLVER_TIMEOUT "2"
#define RESOLVER_ATTEMPTS "2"

struct procord_connect_s {
  /* Registered on the loop while a lookup is outstanding: procord_loop_free
     cancels the lookup and runs the loop until its callback came back. */
  procord_loop_work_t lookup_work;
  procord_loop_t *loop;
  procord_connect_options_t options;
  char *host;
  int references; /* the owner's, and the lookup's until its answer is handled */
  int cancelled;  /* given up, or done: on_done is not called again */
  struct evdns_getaddrinfo_request *request; /* the lookup in flight, if any */
  int lookup_cancelled;                      /* evdns_getaddrinfo_cancel was called on `request` */
  int starting;        /* inside evdns_getaddrinfo: an answer now is handled later */
  int resolve_error;   /* EVUTIL_EAI_* of an answer handled later */
  int refused_at_once; /* evdns could not even make the query: not a name it can ask */
  struct sockaddr_storage *addresses;
  socklen_t *lengths;
  size_t address_count;
  size_t next; /* the next address to try */
  int fd;
  int last_error;
  struct event *writable;
  struct event *timer;
};

static void release_attempt(procord_connect_t *a) {
  if (--a->references != 0) return;
  procord_free(a->addresses);
  procord_free(a->lengths);
  if (a->writable) event_free(a->writable);
  if (a->timer) event_free(a->timer);
  if (a->fd >= 0) close(a->fd);
  procord_free(a->host);
  procord_free(a);
}

/* Copies the addresses of `list` (its own stays the caller's); 0 or -ENOMEM. */
static int keep_addresses(procord_connect_t *a, const struct evutil_addrinfo *list) {
  size_t count = 0;
  for (const struct evutil_addrinfo *i = list; i; i = i->ai_next)
    if (i->ai_addr && i->ai_addrlen <= sizeof(struct sockaddr_storage)) count++;
  if (count == 0) return 0;
  a->addresses = procord_allocate_zeroed(count, sizeof *a->addresses);
  a->lengths = procord_allocate_zeroed(count, sizeof *a->lengths);
  if (!a->addresses || !a->lengths) return -ENOMEM;
  for (const struct evutil_addrinfo *i = list; i; i = i->ai_next) {
    if (!i->ai_addr || i->ai_addrlen > sizeof(struct sockaddr_storage)) continue;
    memcpy(&a->addresses[a->address_count], i->ai_addr, i->ai_addrlen);
    a->lengths[a->address_count++] = (socklen_t)i->ai_addrlen;
  }
  return 0;
}

/* Cancels the lookup in flight, if any: its callback comes on a later
   turn, with EVUTIL_EAI_CANCEL, and drops the lookup's reference. */
static void cancel_lookup(procord_connect_t *a) {
  if (!a->request || a->lookup_cancelled) return;
  a->lookup_cancelled = 1;
  evdns_getaddrinfo_cancel(a->request);
}

static void finish_attempt(procord_connect_t *a, int fd, int error, const char *call,
                           const char *detail) {
  cancel_lookup(a);
  if (a->writable) event_del(a->writable);
  if (a->timer) event_del(a->timer);
  a->fd = -1;
  a->cancelled = 1; /* done: a late cancel is a no-op */
  a->options.on_done(fd, error, call, detail, a->options.context);
  release_attempt(a);
}

static void try_next(procord_connect_t *a);

static void on_connect_writable(evutil_socket_t fd, short events, void *argument) {
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
  procord_socket_set_nodelay((int)fd);
  finish_attempt(a, (int)fd, 0, NULL, NULL);
}

/* Starts a non-blocking connect to the next address, or reports the last error. */
static void try_next(procord_connect_t *a) {
  struct event_base *base = procord_loop_base(a->loop);
  while (a->next < a->address_count) {
    const struct sockaddr *address = (const struct sockaddr *)&a->addresses[a->next];
    socklen_t length = a->lengths[a->next++];
    a->fd = socket(address->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (a->fd < 0) {
      /* A family this machine lacks (no IPv6) says less than a refusal. */
      if (!a->last_error) a->last_error = errno;
      continue;
    }
    if (connect(a->fd, address, length) < 0 && errno != EINPROGRESS) {
      a->last_error = errno;
      close(a->fd);
      a->fd = -1;
      continue;
    }
    if (a->writable) event_free(a->writable);
    a->writable = event_new(base, a->fd, EV_WRITE, on_connect_writable, a);
    if (!a->writable || event_add(a->writable, NULL) < 0) {
      close(a->fd);
      finish_attempt(a, -1, -ENOMEM, "connect", NULL);
      return;
    }
    return;
  }
  finish_attempt(a, -1, -(a->last_error ? a->last_error : ECONNREFUSED), "connect", NULL);
}

static void on_connect_timeout(evutil_socket_t fd, short events, void *argument) {
  (void)fd;
  (void)events;
  procord_connect_t *a = argument;
  if (a->writable) event_del(a->writable);
  if (a->fd >= 0) close(a->fd);
  finish_attempt(a, -1, PROCORD_ETIMEOUT, "connect", NULL); /* and cancels a lookup in flight */
}

/* Why a lookup failed, for `detail`: the C library's words where evdns
   shares its codes (on Linux it does), clearer ones where evdns means more. */
static const char *resolve_reason(int error) {
  switch (error) {
  case EVUTIL_EAI_FAIL:
    /* What evdns makes of a timeout, a refusal or a server failure. */
    return "no usable answer from the name servers (timed out, refused or failed)";
  case EVUTIL_EAI_CANCEL: return "the lookup was cancelled";
  case EVUTIL_EAI_MEMORY: return "out of memory";
  default:
#if EVUTIL_EAI_NONAME == EAI_NONAME
    return gai_strerror(error);
#else
    return evutil_gai_strerror(error);
#endif
  }
}

/* The lookup's answer, on the loop's thread: connect, or say why not. */
static void handle_answer(procord_connect_t *a, int error) {
  if (a->cancelled) return;
  if (error == EVUTIL_EAI_CANCEL) {
    /* Neither the owner nor the time limit: procord_loop_free aborted it. */
    finish_attempt(a, -1, PROCORD_ECLOSED, "getaddrinfo", "the loop was freed during the lookup");
  } else if (error == EVUTIL_EAI_MEMORY) {
    finish_attempt(a, -1, -ENOMEM, "getaddrinfo", resolve_reason(error));
  } else if (a->refused_at_once) {
    finish_attempt(a, -1, PROCORD_ERESOLVE, "getaddrinfo",
                   "not a name that can be looked up (too long, or ill-formed)");
  } else if (error || a->address_count == 0) {
    /* None at all: a hosts file entry of another family, say. */
    finish_attempt(a, -1, PROCORD_ERESOLVE, "getaddrinfo",
                   resolve_reason(error ? error : EVUTIL_EAI_NODATA));
  } else {
    try_next(a);
  }
}

/* An answer given before procord_connect returned, on a later turn (on_done
   never runs inside procord_connect); drops the lookup's reference. */
static void on_answer_later(void *argument) {
  procord_connect_t *a = argument;
  handle_answer(a, a->resolve_error);
  release_attempt(a);
}

/* evdns's callback: inside evdns_getaddrinfo when it answers at once (the
   hosts file, a failure), or on a later turn of the loop. */
static void on_resolved(int result, struct evutil_addrinfo *list, void *argument) {
  procord_connect_t *a = argument;
  if (a->starting) {
    a->resolve_error = result;
    a->refused_at_once = result == EVUTIL_EAI_FAIL;
    if (!result && keep_addresses(a, list) != 0) a->resolve_error = EVUTIL_EAI_MEMORY;
    if (list) evutil_freeaddrinfo(list);
    return;
  }
  a->request = NULL;
  procord_loop_remove_work(a->loop, &a->lookup_work);
  if (!result && !a->cancelled && keep_addresses(a, list) != 0) result = EVUTIL_EAI_MEMORY;
  if (list) evutil_freeaddrinfo(list);
  handle_answer(a, result);
  release_attempt(a);
}

static void abort_lookup(procord_loop_work_t *work) {
  cancel_lookup((procord_connect_t *)((char *)work - offsetof(procord_connect_t, lookup_work)));
}

/* Called by procord_loop_free, the loop stopped for good. Every lookup of
   ours is loop work, so none is left by then (the loop ran until their
   callbacks came back). evdns's own requests (a probe of a name server
   that failed) are dropped without their callbacks: failed instead, their
   callbacks would be queued on a base about to be freed, never to run, and
   what they hold would leak. */
static void free_resolver(void *resolver) { evdns_base_free(resolver, 0); }

/* The loop's resolver, made on its first lookup: resolv.conf (or the file
   PROCORD_RESOLV_CONF names) and the hosts file, read once. NULL when out
   of memory. */
static struct evdns_base *loop_resolver(procord_loop_t *loop) {
  struct evdns_base *resolver = procord_loop_resolver(loop);
  if (resolver) return resolver;
  /* Inactive, it waits on nothing: no read event keeps a socket watched. */
  resolver = evdns_base_new(procord_loop_base(loop), EVDNS_BASE_DISABLE_WHEN_INACTIVE);
  if (!resolver) return NULL;
  /* Before the file, so that its own options win. */
  evdns_base_set_option(resolver, "timeout:", RESOLVER_TIMEOUT);
  evdns_base_set_option(resolver, "attempts:", RESOLVER_ATTEMPTS);
  const char *path = secure_getenv("PROCORD_RESOLV_CONF");
  if (!path || !*path) path = "/etc/resolv.conf";
  /* Missing or unreadable, evdns falls back to a name server on 127.0.0.1
     (as the C library does); with none at all a query would wait forever. */
  evdns_base_resolv_conf_parse(resolver, DNS_OPTIONS_ALL, path);
  if (evdns_base_count_nameservers(resolver) == 0 &&
      evdns_base_nameserver_ip_add(resolver, "127.0.0.1") != 0) {
    evdns_base_free(resolver, 0);
    return NULL;
  }
  procord_loop_set_resolver(loop, resolver, free_resolver);
  return resolver;
}

/* "localhost" and names under it are the loopback (RFC 6761), asked of no
   name server even where the hosts file forgets them. */
static int is_localhost(const char *host) {
  size_t length = strlen(host);
  if (length && host[length - 1] == '.') length--;
  static const char name[] = "localhost";
  size_t n = sizeof name - 1;
  if (length < n || strncasecmp(host + length - n, name, n) != 0) return 0;
  return length == n || host[length - n - 1] == '.';
}

/* Addresses known without asking anyone: a numeric one, or the loopback
   for localhost. 1 if so (kept, or resolve_error set), 0 if not. */
static int answer_at_once(procord_connect_t *a, const char *port) {
  struct addrinfo hints = {0};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  struct addrinfo *list = NULL, *ipv6 = NULL;
  if (getaddrinfo(a->host, port, &hints, &list) == 0) {
    if (keep_addresses(a, list) != 0) a->resolve_error = EVUTIL_EAI_MEMORY;
    freeaddrinfo(list);
    return 1;
  }
  if (!is_localhost(a->host)) return 0;
  if (getaddrinfo("127.0.0.1", port, &hints, &list) != 0 ||
      getaddrinfo("::1", port, &hints, &ipv6) != 0) {
    a->resolve_error = EVUTIL_EAI_MEMORY;
  } else {
    struct addrinfo *last = list;
    while (last->ai_next) last = last->ai_next;
    last->ai_next = ipv6; /* read only, and parted again before each is freed */
    if (keep_addresses(a, list) != 0) a->resolve_error = EVUTIL_EAI_MEMORY;
    last->ai_next = NULL;
  }
  if (list) freeaddrinfo(list);
  if (ipv6) freeaddrinfo(ipv6);
  return 1;
}

/* Starts the lookup of a name on the loop's resolver; 0 or -ENOMEM. */
static int start_lookup(procord_connect_t *a, const char *port) {
  struct evdns_base *resolver = loop_resolver(a->loop);
  if (!resolver) return -ENOMEM;
  struct evutil_addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  hints.ai_flags = EVUTIL_AI_ADDRCONFIG;
  a->references++; /* the lookup's */
  a->lookup_work.abort = abort_lookup;
  procord_loop_add_work(a->loop, &a->lookup_work);
  a->starting = 1;
  a->request = evdns_getaddrinfo(resolver, a->host, port, &hints, on_resolved, a);
  a->starting = 0;
  if (a->request) return 0;
  /* Answered inside the call (the hosts file, or a failure): later. */
  procord_loop_remove_work(a->loop, &a->lookup_work);
  int error = procord_loop_call(a->loop, on_answer_later, a);
  if (error) a->references--;
  return error;
}

int procord_connect(procord_loop_t *loop, const procord_connect_options_t *given,
                    procord_connect_t **result) {
  procord_connect_options_t copy;
  const procord_connect_options_t *options = &copy;
  if (!given || PROCORD_OPTIONS_COPY(copy, given, PROCORD_FIRST_SIZE_CONNECT_OPTIONS) != 0)
    return PROCORD_EINVAL;
  if (!loop || !options->host || !options->on_done || options->port <= 0 || options->port > 65535)
    return PROCORD_EINVAL;
  procord_connect_t *a = procord_allocate_zeroed(1, sizeof *a);
  if (!a) return -ENOMEM;
  a->loop = loop;
  a->options = *options;
  a->references = 1;
  a->fd = -1;
  a->host = procord_strdup(options->host);
  a->timer = evtimer_new(procord_loop_base(loop), on_connect_timeout, a);
  if (!a->host || !a->timer) {
    release_attempt(a);
    return -ENOMEM;
  }
  if (options->timeout_ms > 0) {
    procord_timer_arm(a->timer, options->timeout_ms);
  }
  char port[16];
  snprintf(port, sizeof port, "%d", options->port);
  int error;
  if (answer_at_once(a, port)) {
    /* No lookup at all: on_done still never runs inside this call. */
    a->references++;
    error = procord_loop_call(loop, on_answer_later, a);
    if (error) a->references--;
  } else {
    error = start_lookup(a, port);
  }
  if (error) {
    release_attempt(a);
    return error;
  }
  *result = a;
  return 0;
}

void procord_connect_cancel(procord_connect_t *a) {
  if (!a || a->cancelled) return;
  a->cancelled = 1;
  cancel_lookup(a); /* its callback, on a later turn, drops the lookup's reference */
  if (a->writable) event_del(a->writable);
  if (a->timer) event_del(a->timer);
  if (a->fd >= 0) close(a->fd); /* after event_del: the event must not watch a closed fd */
  a->fd = -1;
  release_attempt(a);
}

void procord_connect_options_init(procord_connect_options_t *options) {
  procord_options_clear(options, sizeof *options);
}
