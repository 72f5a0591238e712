#define _GNU_SOURCE
/*
 * Host names resolved on the loop (procord/connect.h): libevent's evdns on
 * the loop's own thread, never a thread per lookup. A tiny name server of
 * the test's own (UDP on 127.0.0.1, on the same loop) is the one the
 * resolver asks, through PROCORD_RESOLV_CONF: it answers A queries for
 * worker.procord.test, says NXDOMAIN for any other name, or (silent) takes
 * queries without answering, like a name server that is down.
 */
#include "check.h"
#include "server_fixture.h"

#include "io/io_private.h"
#include "procord/connect.h"
#include "procord/delegation.h"
#include "procord/error.h"
#include "procord/loop.h"

#include <dirent.h>
#include <event2/event.h>
#include <poll.h>
#include <strings.h>

static const char known_name[] = "worker.procord.test";

/* ---- The name server ---- */

typedef struct {
  int fd;
  int port;
  struct event *event;
  int silent;                  /* takes queries, never answers */
  struct in_addr addresses[2]; /* the A records of known_name */
  int address_count;
  int queries;                     /* how many came, answered or not */
  void (*on_query)(void *context); /* after each batch of queries, if set */
  void *context;
} name_server_t;

static void name_server_answer(name_server_t *ns, const unsigned char *query, size_t length,
                               const struct sockaddr *from, socklen_t from_length) {
  if (length < 12) return;
  char name[256];
  size_t at = 12, n = 0;
  while (at < length && query[at]) {
    size_t label = query[at++];
    if (label > 63 || at + label > length || n + label + 1 >= sizeof name) return;
    if (n) name[n++] = '.';
    memcpy(name + n, query + at, label);
    n += label;
    at += label;
  }
  name[n] = 0;
  if (at + 5 > length) return;
  unsigned type = (unsigned)query[at + 1] << 8 | query[at + 2];
  at += 5; /* the root label, the type, the class */
  unsigned char reply[512];
  memcpy(reply, query, at); /* the header and the question, its case kept */
  int known = strcasecmp(name, known_name) == 0;
  int answers = known && type == 1 ? ns->address_count : 0;
  reply[2] = (unsigned char)(0x84 | (query[2] & 0x01)); /* an authoritative answer, RD kept */
  reply[3] = known ? 0x80 : 0x83;                       /* NOERROR, or NXDOMAIN */
  reply[4] = 0, reply[5] = 1;
  reply[6] = 0, reply[7] = (unsigned char)answers;
  memset(reply + 8, 0, 4);
  for (int i = 0; i < answers; i++) {
    static const unsigned char record[] = {0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4};
    memcpy(reply + at, record, sizeof record);
    memcpy(reply + at + sizeof record, &ns->addresses[i], 4);
    at += sizeof record + 4;
  }
  sendto(ns->fd, reply, at, 0, from, from_length);
}

static void name_server_on_readable(evutil_socket_t fd, short events, void *argument) {
  (void)events;
  name_server_t *ns = argument;
  for (;;) {
    unsigned char query[512];
    struct sockaddr_storage from;
    socklen_t from_length = sizeof from;
    ssize_t n = recvfrom((int)fd, query, sizeof query, 0, (struct sockaddr *)&from, &from_length);
    if (n < 0) break;
    ns->queries++;
    if (!ns->silent)
      name_server_answer(ns, query, (size_t)n, (struct sockaddr *)&from, from_length);
  }
  if (ns->on_query) ns->on_query(ns->context);
}

/* Starts it on `loop` (before the loop runs anywhere): 0 or -1. It answers
   127.0.0.1 for known_name unless told otherwise. */
static int name_server_start(name_server_t *ns, procord_loop_t *loop) {
  memset(ns, 0, sizeof *ns);
  ns->addresses[0].s_addr = htonl(INADDR_LOOPBACK);
  ns->address_count = 1;
  ns->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t length = sizeof address;
  if (ns->fd < 0 || bind(ns->fd, (struct sockaddr *)&address, sizeof address) != 0 ||
      getsockname(ns->fd, (struct sockaddr *)&address, &length) != 0)
    return -1;
  ns->port = ntohs(address.sin_port);
  ns->event =
      event_new(procord_loop_base(loop), ns->fd, EV_READ | EV_PERSIST, name_server_on_readable, ns);
  return ns->event && event_add(ns->event, NULL) == 0 ? 0 : -1;
}

/* Once the loop no longer runs. */
static void name_server_stop(name_server_t *ns) {
  if (ns->event) event_free(ns->event);
  if (ns->fd >= 0) close(ns->fd);
  ns->event = NULL;
  ns->fd = -1;
}

/* ---- The resolver's configuration: PROCORD_RESOLV_CONF ---- */

static char resolv_directory[64], resolv_path[128];

/* Points PROCORD_RESOLV_CONF at a file of these lines; the resolver of a
   loop reads it at that loop's first lookup. 0 or -1. */
static int use_resolv_conf(const char *lines) {
  snprintf(resolv_directory, sizeof resolv_directory, "/tmp/procord-resolve-XXXXXX");
  if (!mkdtemp(resolv_directory)) return -1;
  snprintf(resolv_path, sizeof resolv_path, "%s/resolv.conf", resolv_directory);
  FILE *file = fopen(resolv_path, "w");
  if (!file) return -1;
  fputs(lines, file);
  fclose(file);
  return setenv("PROCORD_RESOLV_CONF", resolv_path, 1);
}

/* The test's name server, and `more` lines (options). */
static int use_name_server(const name_server_t *ns, const char *more) {
  char lines[512];
  snprintf(lines, sizeof lines, "nameserver 127.0.0.1:%d\n%s", ns->port, more ? more : "");
  return use_resolv_conf(lines);
}

/* A new loop, its name server (silent or not) started on it, and the
   resolver told to ask it, with `more` resolv.conf lines (NULL: none).
   0, or -1 if any of it failed. */
static int loop_asking_name_server(procord_loop_t **loop, name_server_t *ns, int silent,
                                   const char *more) {
  if (procord_loop_new(loop) != 0 || name_server_start(ns, *loop) != 0) return -1;
  ns->silent = silent;
  return use_name_server(ns, more) == 0 ? 0 : -1;
}

static void forget_resolv_conf(void) {
  unsetenv("PROCORD_RESOLV_CONF");
  if (resolv_path[0]) unlink(resolv_path);
  if (resolv_directory[0]) rmdir(resolv_directory);
  resolv_path[0] = resolv_directory[0] = 0;
}

/* ---- Listeners, connects, threads ---- */

/* A TCP socket listening on `address` (IPv4 or IPv6 text) and an ephemeral
   port, stored in `*port`; -1 if none. */
static int listen_on(const char *address, int *port) {
  struct sockaddr_storage storage = {0};
  socklen_t length;
  struct sockaddr_in *in = (struct sockaddr_in *)&storage;
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&storage;
  if (inet_pton(AF_INET, address, &in->sin_addr) == 1) {
    in->sin_family = AF_INET;
    length = sizeof *in;
  } else if (inet_pton(AF_INET6, address, &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    length = sizeof *in6;
  } else {
    return -1;
  }
  int fd = socket(storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (bind(fd, (struct sockaddr *)&storage, length) != 0 || listen(fd, 8) != 0 ||
      getsockname(fd, (struct sockaddr *)&storage, &length) != 0) {
    close(fd);
    return -1;
  }
  *port = ntohs(storage.ss_family == AF_INET ? in->sin_port : in6->sin6_port);
  return fd;
}

/* How many threads this process has now. */
static int count_threads(void) {
  DIR *tasks = opendir("/proc/self/task");
  if (!tasks) return -1;
  int count = 0;
  for (struct dirent *entry; (entry = readdir(tasks));)
    if (entry->d_name[0] != '.') count++;
  closedir(tasks);
  return count;
}

/* What one attempt saw. */
typedef struct {
  procord_loop_t *loop;
  int done; /* times on_done was called */
  int fd;
  int error;
  char call[32];
  char detail[160];
  int threads;   /* counted inside on_done */
  int stop_loop; /* on_done stops the loop run on the test's thread */
} attempt_t;

static void on_done(int fd, int error, const char *call, const char *detail, void *context) {
  attempt_t *seen = context;
  seen->done++;
  seen->fd = fd;
  seen->error = error;
  snprintf(seen->call, sizeof seen->call, "%s", call ? call : "");
  snprintf(seen->detail, sizeof seen->detail, "%s", detail ? detail : "");
  seen->threads = count_threads();
  if (seen->stop_loop) procord_loop_stop(seen->loop);
}

/* Starts connecting to host:port on `loop`, which must not run anywhere
   yet; the attempt stops the loop when done. 0 or the error. */
static int start_connect(procord_loop_t *loop, const char *host, int port, int timeout_ms,
                         attempt_t *seen, procord_connect_t **attempt) {
  memset(seen, 0, sizeof *seen);
  seen->loop = loop;
  seen->fd = -1;
  seen->stop_loop = 1;
  procord_connect_options_t options = {
      .host = host, .port = port, .timeout_ms = timeout_ms, .on_done = on_done, .context = seen};
  return procord_connect(loop, &options, attempt);
}

/* How many of this process's descriptors a child would inherit. */
static int count_inheritable(void) {
  DIR *fds = opendir("/proc/self/fd");
  if (!fds) return -1;
  int count = 0;
  for (struct dirent *entry; (entry = readdir(fds));) {
    int fd = atoi(entry->d_name);
    if (entry->d_name[0] == '.' || fd == dirfd(fds)) continue;
    int flags = fcntl(fd, F_GETFD);
    if (flags >= 0 && !(flags & FD_CLOEXEC)) count++;
  }
  closedir(fds);
  return count;
}

/* The port a connected socket's peer has. */
static int peer_port(int fd) {
  struct sockaddr_storage address;
  socklen_t length = sizeof address;
  if (getpeername(fd, (struct sockaddr *)&address, &length) != 0) return -1;
  return ntohs(address.ss_family == AF_INET ? ((struct sockaddr_in *)&address)->sin_port
                                            : ((struct sockaddr_in6 *)&address)->sin6_port);
}

/* A one-shot timer on the loop that stops it after `milliseconds`. */
static void stop_loop(evutil_socket_t fd, short events, void *argument) {
  (void)fd;
  (void)events;
  procord_loop_stop(argument);
}

static struct event *stop_after(procord_loop_t *loop, int milliseconds) {
  struct event *timer = evtimer_new(procord_loop_base(loop), stop_loop, loop);
  if (timer) procord_timer_arm(timer, milliseconds);
  return timer;
}

/* ---- The tests ---- */

static const procord_worker_task_t server_tasks[] = {{"double", fixture_task_double, NULL}};

/* A delegation to "localhost" reaches a worker server, and asks no name
   server: the one configured never answers, so a query would hang. */
static void a_delegation_to_localhost_reaches_a_server(void) {
  BEGIN();
  thread_server_t s;
  thread_server_prepare(&s, server_tasks, 1);
  int port = thread_server_start(&s);
  CHECK(port > 0);
  procord_loop_t *loop = NULL;
  name_server_t ns;
  CHECK_EQ_INT(loop_asking_name_server(&loop, &ns, 1, NULL), 0);
  CHECK_EQ_INT(procord_loop_start_thread(loop), 0);
  procord_delegation_options_t options = {.task_name = "double",
                                          .input = "21",
                                          .input_length = 2,
                                          .remote_host = "localhost",
                                          .remote_port = port,
                                          .connect_timeout_ms = 5000};
  procord_delegation_t *d = NULL;
  CHECK_EQ_INT(procord_delegate(loop, &options, &d), 0);
  CHECK_EQ_INT(procord_delegation_wait(loop, &d, 1, 1, 10000), 1);
  const procord_outcome_t *o = procord_delegation_outcome(d);
  int answered =
      o->kind == PROCORD_OUTCOME_VALUE && o->length == 2 && memcmp(o->body, "42", 2) == 0;
  if (!answered)
    fprintf(stderr, "    outcome %d, error %d, call %s\n", o->kind, o->error,
            o->call ? o->call : "");
  procord_delegation_release(d);
  procord_loop_free(loop);
  name_server_stop(&ns);
  forget_resolv_conf();
  CHECK(thread_server_stop(&s, port));
  CHECK(answered);
  CHECK_EQ_INT(ns.queries, 0);
  CHECK_NOTHING_LEFT();
}

/* A name the hosts file lists (a loopback one other than localhost, if it
   has any) is answered from it, inside evdns_getaddrinfo: no name server
   is asked (the one configured never answers). */
static void a_name_from_the_hosts_file_asks_no_name_server(void) {
  BEGIN();
  char line[512], name[256] = "", address[64] = "";
  FILE *hosts = fopen("/etc/hosts", "r");
  while (hosts && !name[0] && fgets(line, sizeof line, hosts)) {
    char *hash = strchr(line, '#');
    if (hash) *hash = 0;
    char *state = NULL, *first = strtok_r(line, " \t\n", &state);
    if (!first || (strncmp(first, "127.", 4) != 0 && strcmp(first, "::1") != 0)) continue;
    for (char *alias; !name[0] && (alias = strtok_r(NULL, " \t\n", &state));)
      if (strcasecmp(alias, "localhost") != 0 && !strchr(alias, ':')) {
        snprintf(name, sizeof name, "%s", alias);
        snprintf(address, sizeof address, "%s", first);
      }
  }
  if (hosts) fclose(hosts);
  if (!name[0]) {
    printf("    (skipped: /etc/hosts names no loopback address but localhost)\n");
    return;
  }
  int port = 0, listener = listen_on(address, &port);
  CHECK(listener >= 0);
  procord_loop_t *loop = NULL;
  name_server_t ns;
  CHECK_EQ_INT(loop_asking_name_server(&loop, &ns, 1, NULL), 0);
  attempt_t seen;
  procord_connect_t *attempt = NULL;
  CHECK_EQ_INT(start_connect(loop, name, port, 5000, &seen, &attempt), 0);
  CHECK_EQ_INT(procord_loop_run(loop), 0);
  if (seen.fd >= 0) close(seen.fd);
  procord_loop_free(loop);
  name_server_stop(&ns);
  forget_resolv_conf();
  close(listener);
  CHECK_EQ_INT(seen.done, 1);
  if (seen.error) fprintf(stderr, "    %s (%s): %s %s\n", name, address, seen.call, seen.detail);
  CHECK_EQ_INT(seen.error, 0);
  CHECK_EQ_INT(ns.queries, 0);
  CHECK_NOTHING_LEFT();
}

/* A real query: the resolver asks the test's name server, on the loop,
   and connects to the address it gave. The resolver's socket, kept by the
   loop, is close-on-exec. */
static void a_name_server_answers_on_the_loop(void) {
  BEGIN();
  int inheritable = count_inheritable();
  int port = 0, listener = listen_on("127.0.0.1", &port);
  CHECK(listener >= 0);
  procord_loop_t *loop = NULL;
  name_server_t ns;
  CHECK_EQ_INT(loop_asking_name_server(&loop, &ns, 0, NULL), 0);
  attempt_t seen;
  procord_connect_t *attempt = NULL;
  CHECK_EQ_INT(start_connect(loop, known_name, port, 5000, &seen, &attempt), 0);
  CHECK_EQ_INT(procord_loop_run(loop), 0);
  int peer = seen.fd >= 0 ? peer_port(seen.fd) : -1;
  if (seen.fd >= 0) close(seen.fd);
  int inheritable_with_resolver = count_inheritable();
  procord_loop_free(loop);
  name_server_stop(&ns);
  forget_resolv_conf();
  close(listener);
  CHECK_EQ_INT(seen.done, 1);
  if (seen.error) fprintf(stderr, "    %s: %s %s\n", known_name, seen.call, seen.detail);
  CHECK_EQ_INT(seen.error, 0);
  CHECK_EQ_INT(peer, port);
  CHECK(ns.queries >= 1);
  CHECK_EQ_INT(inheritable_with_resolver, inheritable);
  CHECK_NOTHING_LEFT();
}

/* On a host's libevent base, and through a host's poll() loop, the lookup
   is answered on the host's thread, from the host's dispatch: no thread. */
static void lookups_run_on_a_hosts_loop_with_no_thread(void) {
  BEGIN();
  int port = 0, listener = listen_on("127.0.0.1", &port);
  CHECK(listener >= 0);
  int threads = count_threads();
  for (int polled = 0; polled <= 1; polled++) {
    struct event_base *base = polled ? NULL : event_base_new();
    procord_loop_t *loop = NULL;
    CHECK_EQ_INT(polled ? procord_loop_new_polled(&loop) : procord_loop_new_on_base(base, &loop),
                 0);
    name_server_t ns;
    CHECK_EQ_INT(name_server_start(&ns, loop), 0);
    CHECK_EQ_INT(use_name_server(&ns, NULL), 0);
    attempt_t seen;
    procord_connect_t *attempt = NULL;
    CHECK_EQ_INT(start_connect(loop, known_name, port, 5000, &seen, &attempt), 0);
    seen.stop_loop = 0; /* a hosted loop is its host's to stop */
    long long started = now_ms();
    while (!seen.done && now_ms() - started < 10000) {
      if (polled) {
        struct pollfd watched = {procord_loop_backend_fd(loop), POLLIN, 0};
        poll(&watched, 1, procord_loop_backend_timeout(loop));
        procord_loop_run_nowait(loop);
      } else {
        event_base_loop(base, EVLOOP_ONCE);
      }
    }
    int peer = seen.fd >= 0 ? peer_port(seen.fd) : -1;
    if (seen.fd >= 0) close(seen.fd);
    procord_loop_free(loop);
    name_server_stop(&ns);
    forget_resolv_conf();
    if (base) event_base_free(base);
    CHECK_EQ_INT(seen.done, 1);
    CHECK_EQ_INT(seen.error, 0);
    CHECK_EQ_INT(peer, port);
    CHECK(ns.queries >= 1);
    CHECK_EQ_INT(seen.threads, threads);
  }
  close(listener);
  CHECK_NOTHING_LEFT();
}

/* Every address of the answer is tried in turn: the first refuses. */
static void every_address_is_tried_in_turn(void) {
  BEGIN();
  int port = 0, listener = listen_on("127.0.0.1", &port);
  CHECK(listener >= 0);
  procord_loop_t *loop = NULL;
  name_server_t ns;
  CHECK_EQ_INT(procord_loop_new(&loop), 0);
  CHECK_EQ_INT(name_server_start(&ns, loop), 0);
  inet_pton(AF_INET, "127.0.0.2", &ns.addresses[0]); /* nobody listens there */
  inet_pton(AF_INET, "127.0.0.1", &ns.addresses[1]);
  ns.address_count = 2;
  CHECK_EQ_INT(use_name_server(&ns, NULL), 0);
  attempt_t seen;
  procord_connect_t *attempt = NULL;
  CHECK_EQ_INT(start_connect(loop, known_name, port, 5000, &seen, &attempt), 0);
  CHECK_EQ_INT(procord_loop_run(loop), 0);
  int peer = seen.fd >= 0 ? peer_port(seen.fd) : -1;
  if (seen.fd >= 0) close(seen.fd);
  procord_loop_free(loop);
  name_server_stop(&ns);
  forget_resolv_conf();
  close(listener);
  CHECK_EQ_INT(seen.done, 1);
  if (seen.error) fprintf(stderr, "    %s: %s %s\n", known_name, seen.call, seen.detail);
  CHECK_EQ_INT(seen.error, 0);
  CHECK_EQ_INT(peer, port);
  CHECK_NOTHING_LEFT();
}

/* Counted while the query is with the name server. */
static void count_threads_now(void *context) { *(int *)context = count_threads(); }

/* No thread is started by a lookup: /proc/self/task counted before, while
   the query is out (from the name server's callback), in on_done and
   after, for localhost and for a name a name server gives, on a loop run
   on this very thread. */
static void no_thread_is_started_by_a_lookup(void) {
  BEGIN();
  int before = count_threads();
  CHECK(before >= 1);
  int port = 0, listener = listen_on("127.0.0.1", &port);
  CHECK(listener >= 0);
  procord_loop_t *loop = NULL;
  name_server_t ns;
  CHECK_EQ_INT(procord_loop_new(&loop), 0);
  CHECK_EQ_INT(name_server_start(&ns, loop), 0);
  int during_query = -1;
  ns.on_query = count_threads_now;
  ns.context = &during_query;
  CHECK_EQ_INT(use_name_server(&ns, NULL), 0);
  attempt_t local, named;
  procord_connect_t *attempt = NULL;
  CHECK_EQ_INT(start_connect(loop, "localhost", port, 5000, &local, &attempt), 0);
  int after_start = count_threads();
  CHECK_EQ_INT(procord_loop_run(loop), 0);
  CHECK_EQ_INT(start_connect(loop, known_name, port, 5000, &named, &attempt), 0);
  int after_second_start = count_threads();
  CHECK_EQ_INT(procord_loop_run(loop), 0);
  int after = count_threads();
  if (local.fd >= 0) close(local.fd);
  if (named.fd >= 0) close(named.fd);
  procord_loop_free(loop);
  name_server_stop(&ns);
  forget_resolv_conf();
  close(listener);
  CHECK_EQ_INT(local.error, 0);
  CHECK_EQ_INT(named.error, 0);
  CHECK(ns.queries >= 1);
  CHECK_EQ_INT(after_start, before);
  CHECK_EQ_INT(local.threads, before);
  CHECK_EQ_INT(after_second_start, before);
  CHECK_EQ_INT(during_query, before);
  CHECK_EQ_INT(named.threads, before);
  CHECK_EQ_INT(after, before);
  CHECK_NOTHING_LEFT();
}

/* A numeric address, IPv4 or IPv6, asks no one: not even a resolver is made. */
static void a_numeric_address_asks_no_name_server(void) {
  BEGIN();
  procord_loop_t *loop = NULL;
  name_server_t ns;
  CHECK_EQ_INT(loop_asking_name_server(&loop, &ns, 1, NULL), 0);
  const char *addresses[] = {"127.0.0.1", "::1"};
  int connected = 0, tried = 0;
  for (int i = 0; i < 2; i++) {
    int port = 0, listener = listen_on(addresses[i], &port);
    if (listener < 0 && i == 1) break; /* no IPv6 here */
    CHECK(listener >= 0);
    attempt_t seen;
    procord_connect_t *attempt = NULL;
    CHECK_EQ_INT(start_connect(loop, addresses[i], port, 5000, &seen, &attempt), 0);
    CHECK_EQ_INT(procord_loop_run(loop), 0);
    tried++;
    if (seen.fd >= 0 && peer_port(seen.fd) == port) connected++;
    if (seen.fd >= 0) close(seen.fd);
    close(listener);
  }
  void *resolver = procord_loop_resolver(loop);
  procord_loop_free(loop);
  name_server_stop(&ns);
  forget_resolv_conf();
  CHECK_EQ_INT(connected, tried);
  CHECK_EQ_INT(ns.queries, 0);
  CHECK(resolver == NULL);
  CHECK_NOTHING_LEFT();
}

/* A name the name server does not know fails the delegation with
   PROCORD_ERESOLVE, call "getaddrinfo", at once, and the sentence names
   the host and why. */
static void an_unknown_name_fails_naming_the_host(void) {
  BEGIN();
  procord_loop_t *loop = NULL;
  name_server_t ns;
  CHECK_EQ_INT(loop_asking_name_server(&loop, &ns, 0, NULL), 0);
  CHECK_EQ_INT(procord_loop_start_thread(loop), 0);
  procord_delegation_options_t options = {.task_name = "double",
                                          .input = "21",
                                          .input_length = 2,
                                          .remote_host = "no-such-host.invalid",
                                          .remote_port = 1,
                                          .connect_timeout_ms = 20000};
  procord_delegation_t *d = NULL;
  long long start = now_ms();
  CHECK_EQ_INT(procord_delegate(loop, &options, &d), 0);
  CHECK_EQ_INT(procord_delegation_wait(loop, &d, 1, 1, 20000), 1);
  long long elapsed = now_ms() - start;
  const procord_outcome_t *o = procord_delegation_outcome(d);
  int kind = o->kind, error = o->error;
  char call[32], text[512];
  snprintf(call, sizeof call, "%s", o->call ? o->call : "");
  procord_outcome_describe(o, "double", "no-such-host.invalid:1", text, sizeof text);
  procord_delegation_release(d);
  procord_loop_free(loop);
  name_server_stop(&ns);
  forget_resolv_conf();
  CHECK_EQ_INT(kind, PROCORD_OUTCOME_DISCONNECTED);
  CHECK_EQ_INT(error, PROCORD_ERESOLVE);
  CHECK(strcmp(call, "getaddrinfo") == 0);
  CHECK_CONTAINS(text, "could not resolve no-such-host.invalid:1: Name or service not known");
  CHECK(ns.queries >= 1);
  CHECK(elapsed < 2000);
  CHECK_NOTHING_LEFT();
}

/* With no name server in resolv.conf, evdns asks 127.0.0.1:53, where
   usually nobody answers: the lookup still fails, as PROCORD_ERESOLVE,
   within the resolver's own limits (2 s, twice: about 4 s for each name
   tried), not evdns's 15 s. */
static void without_a_name_server_a_name_fails_in_bounded_time(void) {
  BEGIN();
  procord_loop_t *loop = NULL;
  CHECK_EQ_INT(procord_loop_new(&loop), 0);
  CHECK_EQ_INT(use_resolv_conf("# no name server\n"), 0);
  attempt_t seen;
  procord_connect_t *attempt = NULL;
  long long start = now_ms();
  CHECK_EQ_INT(start_connect(loop, "no-such-host.invalid", 1, 0, &seen, &attempt), 0);
  CHECK_EQ_INT(procord_loop_run(loop), 0);
  long long elapsed = now_ms() - start;
  procord_loop_free(loop);
  forget_resolv_conf();
  CHECK_EQ_INT(seen.done, 1);
  CHECK_EQ_INT(seen.error, PROCORD_ERESOLVE);
  CHECK(strcmp(seen.call, "getaddrinfo") == 0);
  CHECK(seen.detail[0]);
  if (elapsed >= 10000) fprintf(stderr, "    it took %lld ms\n", elapsed);
  CHECK(elapsed < 10000);
  CHECK_NOTHING_LEFT();
}

/* What a test of a lookup given up saw. */
typedef struct {
  procord_loop_t *loop;
  name_server_t *ns;
  procord_connect_t *attempt;
  int cancel; /* cancel the attempt at the first query */
  int queries_when_given_up;
  struct event *stopper;
} giving_up_t;

static void cancel_at_first_query(void *context) {
  giving_up_t *g = context;
  if (g->queries_when_given_up) return;
  g->queries_when_given_up = g->ns->queries;
  if (g->cancel) procord_connect_cancel(g->attempt);
  /* The resolver retries after 1 s (options timeout:1): wait past it. */
  g->stopper = stop_after(g->loop, 1500);
}

/* Cancelled while the query is out: on_done never comes, the query is
   not sent again (the lookup was cancelled, not ignored), and the loop
   then frees with nothing left (ASan counts the memory). */
static void cancelling_during_a_lookup_cancels_the_query(void) {
  BEGIN();
  procord_loop_t *loop = NULL;
  name_server_t ns;
  CHECK_EQ_INT(procord_loop_new(&loop), 0);
  CHECK_EQ_INT(name_server_start(&ns, loop), 0);
  ns.silent = 1;
  giving_up_t g = {.loop = loop, .ns = &ns, .cancel = 1};
  ns.on_query = cancel_at_first_query;
  ns.context = &g;
  CHECK_EQ_INT(use_name_server(&ns, "options timeout:1 attempts:5\n"), 0);
  attempt_t seen;
  CHECK_EQ_INT(start_connect(loop, known_name, 1, 0, &seen, &g.attempt), 0);
  CHECK_EQ_INT(procord_loop_run(loop), 0);
  int queries = ns.queries;
  if (g.stopper) event_free(g.stopper);
  procord_loop_free(loop);
  name_server_stop(&ns);
  forget_resolv_conf();
  CHECK(g.queries_when_given_up >= 1);
  CHECK_EQ_INT(queries, g.queries_when_given_up);
  CHECK_EQ_INT(seen.done, 0);
  CHECK_NOTHING_LEFT();
}

/* The time limit covers the lookup: a name server that never answers ends
   it as PROCORD_ETIMEOUT, call "connect", and the query is cancelled. */
static void the_time_limit_covers_the_lookup(void) {
  BEGIN();
  procord_loop_t *loop = NULL;
  name_server_t ns;
  CHECK_EQ_INT(loop_asking_name_server(&loop, &ns, 1, "options timeout:1 attempts:5\n"), 0);
  attempt_t seen;
  procord_connect_t *attempt = NULL;
  long long start = now_ms();
  CHECK_EQ_INT(start_connect(loop, known_name, 1, 300, &seen, &attempt), 0);
  CHECK_EQ_INT(procord_loop_run(loop), 0);
  long long elapsed = now_ms() - start;
  int queries_when_done = ns.queries;
  /* Past the resolver's retry (1 s): no query may come again. */
  struct event *stopper = stop_after(loop, 1500);
  CHECK_EQ_INT(procord_loop_run(loop), 0);
  int queries = ns.queries;
  if (stopper) event_free(stopper);
  procord_loop_free(loop);
  name_server_stop(&ns);
  forget_resolv_conf();
  CHECK_EQ_INT(seen.done, 1);
  CHECK_EQ_INT(seen.error, PROCORD_ETIMEOUT);
  CHECK(strcmp(seen.call, "connect") == 0);
  CHECK(elapsed >= 250 && elapsed < 1000);
  CHECK(queries_when_done >= 1);
  CHECK_EQ_INT(queries, queries_when_done);
  CHECK_NOTHING_LEFT();
}

/* Cancelled, then the loop freed at once without running again: the free
   waits for the cancelled query's callback; nothing is called, nothing
   leaks (ASan). */
static void freeing_the_loop_right_after_a_cancel(void) {
  BEGIN();
  procord_loop_t *loop = NULL;
  name_server_t ns;
  CHECK_EQ_INT(loop_asking_name_server(&loop, &ns, 1, "options timeout:5 attempts:3\n"), 0);
  attempt_t seen;
  procord_connect_t *attempt = NULL;
  CHECK_EQ_INT(start_connect(loop, known_name, 1, 0, &seen, &attempt), 0);
  procord_connect_cancel(attempt);
  long long start = now_ms();
  procord_loop_free(loop);
  long long elapsed = now_ms() - start;
  name_server_stop(&ns);
  forget_resolv_conf();
  CHECK_EQ_INT(seen.done, 0);
  CHECK(elapsed < 2000);
  CHECK_NOTHING_LEFT();
}

/* The loop freed while an attempt nobody cancelled is resolving (on the
   loop's own thread): the lookup is cancelled at once, not waited for
   (15 s here), and on_done says so, PROCORD_ECLOSED. */
static void freeing_the_loop_during_a_lookup_ends_it(void) {
  BEGIN();
  procord_loop_t *loop = NULL;
  name_server_t ns;
  CHECK_EQ_INT(loop_asking_name_server(&loop, &ns, 1, "options timeout:5 attempts:3\n"), 0);
  attempt_t seen;
  procord_connect_t *attempt = NULL;
  CHECK_EQ_INT(start_connect(loop, known_name, 1, 0, &seen, &attempt), 0);
  seen.stop_loop = 0;
  CHECK_EQ_INT(procord_loop_start_thread(loop), 0);
  long long start = now_ms();
  procord_loop_free(loop);
  long long elapsed = now_ms() - start;
  name_server_stop(&ns);
  forget_resolv_conf();
  CHECK_EQ_INT(seen.done, 1);
  CHECK_EQ_INT(seen.error, PROCORD_ECLOSED);
  CHECK(strcmp(seen.call, "getaddrinfo") == 0);
  CHECK(elapsed < 2000);
  CHECK_NOTHING_LEFT();
}

/* A name evdns refuses inside evdns_getaddrinfo (too long for a query)
   fails after procord_connect has returned, as PROCORD_ERESOLVE. */
static void a_name_refused_at_once_fails_after_the_call(void) {
  BEGIN();
  char name[400];
  memset(name, 'a', sizeof name - 1);
  name[sizeof name - 1] = 0;
  procord_loop_t *loop = NULL;
  name_server_t ns;
  CHECK_EQ_INT(loop_asking_name_server(&loop, &ns, 1, NULL), 0);
  attempt_t seen;
  procord_connect_t *attempt = NULL;
  CHECK_EQ_INT(start_connect(loop, name, 1, 5000, &seen, &attempt), 0);
  int done_inside = seen.done;
  CHECK_EQ_INT(procord_loop_run(loop), 0);
  procord_loop_free(loop);
  name_server_stop(&ns);
  forget_resolv_conf();
  CHECK_EQ_INT(done_inside, 0);
  CHECK_EQ_INT(seen.done, 1);
  CHECK_EQ_INT(seen.error, PROCORD_ERESOLVE);
  CHECK(strcmp(seen.call, "getaddrinfo") == 0);
  CHECK_CONTAINS(seen.detail, "not a name that can be looked up");
  CHECK_EQ_INT(ns.queries, 0);
  CHECK_NOTHING_LEFT();
}

int main(int argc, char **argv) {
  procord_loop_t *unused = fixture_start(argc, argv, server_tasks, 1, self_path, sizeof self_path);
  if (!unused) return 1;
  procord_loop_free(unused); /* each test has a loop of its own, and with it a resolver */
  RUN(a_delegation_to_localhost_reaches_a_server);
  RUN(a_name_from_the_hosts_file_asks_no_name_server);
  RUN(a_name_server_answers_on_the_loop);
  RUN(lookups_run_on_a_hosts_loop_with_no_thread);
  RUN(every_address_is_tried_in_turn);
  RUN(no_thread_is_started_by_a_lookup);
  RUN(a_numeric_address_asks_no_name_server);
  RUN(an_unknown_name_fails_naming_the_host);
  RUN(without_a_name_server_a_name_fails_in_bounded_time);
  RUN(cancelling_during_a_lookup_cancels_the_query);
  RUN(the_time_limit_covers_the_lookup);
  RUN(freeing_the_loop_right_after_a_cancel);
  RUN(freeing_the_loop_during_a_lookup_ends_it);
  RUN(a_name_refused_at_once_fails_after_the_call);
  return CHECK_SUMMARY();
}
