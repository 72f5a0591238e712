/*
 * attack.c: hostile clients of a worker server (issue 16), on one epoll
 * loop with the probe (attack_probe.c) and the server's samples
 * (attack_server.c). Each attacker is one connection at a time, opened
 * again when it ends; what it sends and reads depends on the kind.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "attack_private.h"

#define MS 1000000ull
#define SLOW_STEP_MS 1000   /* slowloris writes, and slow readers read, a byte a step */
#define REOPEN_FLOOR_MS 100 /* see procord_bench_attack in procord_bench.h */
#define SAMPLE_MS 100
#define ECHO_SIZE (1u << 20)
#define ECHO_HEADER "4Techo1048576V"
#define STALL_FRAME_PART "32Aaaaaaaaaaa"
#define SLOW_READER_BUFFER 4096

static const char *const names[PROCORD_BENCH_ATTACK_KIND_COUNT] = {
    "none", "slowloris", "idle-flood", "greedy", "handshake-stall", "slow-reader"};
static const int default_attackers[PROCORD_BENCH_ATTACK_KIND_COUNT] = {0, 8, 5000, 200, 8, 8};

const char *procord_bench_attack_name(procord_bench_attack_kind_t kind) {
  return (unsigned)kind < PROCORD_BENCH_ATTACK_KIND_COUNT ? names[kind] : NULL;
}

typedef struct attacker_s {
  int fd;
  int connected;
  int answered;       /* this connection got an answer: reopen at once */
  int awaiting_ready; /* greedy: the answer came, its `0R` not yet */
  uint64_t opened_ns;
  uint64_t wake_ns; /* when its next timed step is due; 0: none */
  size_t sent;      /* of the request (slowloris: bytes so far, cycling) */
  size_t got;
  unsigned char in[16];
  uint64_t answers;
} attacker_t;

typedef struct attack_s {
  procord_bench_attack_kind_t kind;
  int port;
  int count;
  attacker_t *attackers;
  int connected; /* attackers whose connection is established */
  int epoll_fd;
  int counting;           /* the attack runs: answers count */
  unsigned char *request; /* what each attacker sends, whole (slowloris: a byte a step) */
  size_t request_length;
  procord_bench_attack_result_t *result;
} attack_t;

static void watch(attack_t *a, int i, uint32_t events) {
  struct epoll_event event = {.events = events,
                              .data.u64 = ATTACK_EVENT_DATA(ATTACK_TAG_ATTACKER, i)};
  epoll_ctl(a->epoll_fd, EPOLL_CTL_MOD, a->attackers[i].fd, &event);
}

/* Closes attacker `i`'s connection (the server's doing if `by_server`) and
   plans the next one. */
static void hang_up(attack_t *a, int i, uint64_t now, int by_server) {
  attacker_t *t = &a->attackers[i];
  if (t->fd < 0) return;
  close(t->fd);
  t->fd = -1;
  if (t->connected) {
    a->result->server_closes += (uint64_t)by_server;
    t->connected = 0;
    a->connected--;
  }
  uint64_t floor = t->opened_ns + REOPEN_FLOOR_MS * MS;
  t->wake_ns = t->answered || floor <= now ? now : floor;
}

static void open_connection(attack_t *a, int i, uint64_t now) {
  attacker_t *t = &a->attackers[i];
  *t = (attacker_t){.fd = -1, .answers = t->answers, .opened_ns = now};
  a->result->connections++;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd >= 0) {
    int one = 1, buffer = SLOW_READER_BUFFER;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (a->kind == PROCORD_BENCH_ATTACK_SLOW_READER)
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
    struct sockaddr_in address = {.sin_family = AF_INET,
                                  .sin_port = htons((uint16_t)a->port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct epoll_event event = {.events = EPOLLOUT,
                                .data.u64 = ATTACK_EVENT_DATA(ATTACK_TAG_ATTACKER, i)};
    if ((connect(fd, (struct sockaddr *)&address, sizeof address) == 0 || errno == EINPROGRESS) &&
        epoll_ctl(a->epoll_fd, EPOLL_CTL_ADD, fd, &event) == 0) {
      t->fd = fd;
      return;
    }
    close(fd);
  }
  a->result->connect_failures++;
  t->wake_ns = now + REOPEN_FLOOR_MS * MS;
}

/* Sends what is left of the request (a byte for slowloris). Returns 0, or
   -1 if the connection was closed. */
static int send_request(attack_t *a, int i, uint64_t now) {
  attacker_t *t = &a->attackers[i];
  size_t offset = t->sent % a->request_length;
  size_t length = a->kind == PROCORD_BENCH_ATTACK_SLOWLORIS ? 1 : a->request_length - t->sent;
  ssize_t n = send(t->fd, a->request + offset, length, MSG_NOSIGNAL);
  if (n < 0 && errno != EAGAIN && errno != EINTR) {
    hang_up(a, i, now, 1);
    return -1;
  }
  if (n > 0) t->sent += (size_t)n;
  return 0;
}

/* Greedy and slow readers: until the request is sent, the room to send
   more; then the answer (slow readers take it a byte a step, and only a
   close wakes them). */
static void watch_after_sending(attack_t *a, int i, uint64_t now) {
  attacker_t *t = &a->attackers[i];
  int slow_reader = a->kind == PROCORD_BENCH_ATTACK_SLOW_READER;
  if (t->sent < a->request_length) {
    watch(a, i, EPOLLOUT | EPOLLRDHUP);
  } else {
    watch(a, i, slow_reader ? EPOLLRDHUP : EPOLLIN | EPOLLRDHUP);
    if (slow_reader) t->wake_ns = now + SLOW_STEP_MS * MS;
  }
}

/* After the connect: the kind's first step and the events it waits for. */
static void start(attack_t *a, int i, uint64_t now) {
  attacker_t *t = &a->attackers[i];
  int error = 0;
  socklen_t size = sizeof error;
  if (getsockopt(t->fd, SOL_SOCKET, SO_ERROR, &error, &size) < 0 || error) {
    a->result->connect_failures++;
    hang_up(a, i, now, 0);
    t->wake_ns = now + REOPEN_FLOOR_MS * MS;
    return;
  }
  t->connected = 1;
  if (++a->connected > a->result->max_connected) a->result->max_connected = a->connected;
  switch (a->kind) {
  case PROCORD_BENCH_ATTACK_SLOWLORIS:
    t->wake_ns = now;
    watch(a, i, EPOLLIN | EPOLLRDHUP);
    break;
  case PROCORD_BENCH_ATTACK_HANDSHAKE_STALL:
    if (i % 2 && send_request(a, i, now) < 0) return;
    watch(a, i, EPOLLIN | EPOLLRDHUP);
    break;
  case PROCORD_BENCH_ATTACK_NONE:
  case PROCORD_BENCH_ATTACK_IDLE_FLOOD: watch(a, i, EPOLLIN | EPOLLRDHUP); break;
  case PROCORD_BENCH_ATTACK_GREEDY:
  case PROCORD_BENCH_ATTACK_SLOW_READER:
    if (send_request(a, i, now) < 0) return;
    watch_after_sending(a, i, now);
    break;
  }
}

/* Greedy: takes `3V120` then `0R` from what came, sending the next task
   after each `0R`. */
static void take_answers(attack_t *a, int i, uint64_t now) {
  attacker_t *t = &a->attackers[i];
  const size_t answer = sizeof ATTACK_FACT_ANSWER - 1;
  for (;;) {
    const char *expected = t->awaiting_ready ? "0R" : ATTACK_FACT_ANSWER;
    size_t length = t->awaiting_ready ? 2 : answer;
    size_t compared = t->got < length ? t->got : length;
    if (memcmp(t->in, expected, compared) != 0) {
      a->result->wrong_answers += (uint64_t)a->counting;
      hang_up(a, i, now, 0);
      return;
    }
    if (t->got < length) return;
    memmove(t->in, t->in + length, t->got - length);
    t->got -= length;
    if (!t->awaiting_ready) {
      t->answered = 1;
      t->answers += (uint64_t)a->counting;
      a->result->answers += (uint64_t)a->counting;
    } else {
      t->sent = 0;
      if (send_request(a, i, now) < 0) return;
      watch_after_sending(a, i, now);
    }
    t->awaiting_ready = !t->awaiting_ready;
  }
}

/* What the server sent: greedy's answers; the other kinds drop it. */
static void receive(attack_t *a, int i, uint64_t now) {
  attacker_t *t = &a->attackers[i];
  unsigned char dropped[4096];
  int greedy = a->kind == PROCORD_BENCH_ATTACK_GREEDY;
  ssize_t n = greedy ? recv(t->fd, t->in + t->got, sizeof t->in - t->got, 0)
                     : recv(t->fd, dropped, sizeof dropped, 0);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) {
    /* A close right after an answer (an original server's way) is no
       attack on us: the greedy client just opens another. */
    hang_up(a, i, now, !(greedy && t->awaiting_ready && t->got == 0));
    return;
  }
  if (!greedy) return;
  t->got += (size_t)n;
  take_answers(a, i, now);
}

static void attacker_event(attack_t *a, int i, uint32_t events, uint64_t now) {
  attacker_t *t = &a->attackers[i];
  if (t->fd < 0) return;
  if (!t->connected) {
    start(a, i, now);
    return;
  }
  int slow_reader = a->kind == PROCORD_BENCH_ATTACK_SLOW_READER;
  if ((events & EPOLLOUT) && t->sent < a->request_length) {
    if (send_request(a, i, now) < 0) return;
    if (t->sent == a->request_length) watch_after_sending(a, i, now);
  }
  if (slow_reader ? (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0
                  : (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) {
    if (slow_reader) hang_up(a, i, now, 1);
    else
      receive(a, i, now);
  }
}

/* A timed step: a new connection, slowloris's next byte, a slow reader's
   next byte read. */
static void attacker_step(attack_t *a, int i, uint64_t now) {
  attacker_t *t = &a->attackers[i];
  t->wake_ns = 0;
  if (t->fd < 0) {
    open_connection(a, i, now);
    return;
  }
  if (a->kind == PROCORD_BENCH_ATTACK_SLOWLORIS) {
    if (send_request(a, i, now) == 0) t->wake_ns = now + SLOW_STEP_MS * MS;
  } else if (a->kind == PROCORD_BENCH_ATTACK_SLOW_READER) {
    unsigned char byte;
    ssize_t n = recv(t->fd, &byte, 1, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) hang_up(a, i, now, 1);
    else
      t->wake_ns = now + SLOW_STEP_MS * MS;
  }
}

/* The request each attacker sends, whole. */
static int make_request(attack_t *a) {
  const char *text = a->kind == PROCORD_BENCH_ATTACK_HANDSHAKE_STALL ? STALL_FRAME_PART
                     : a->kind == PROCORD_BENCH_ATTACK_SLOW_READER   ? ECHO_HEADER
                                                                     : ATTACK_FACT_TASK;
  size_t header = strlen(text);
  size_t body = a->kind == PROCORD_BENCH_ATTACK_SLOW_READER ? ECHO_SIZE : 0;
  a->request = malloc(header + body);
  if (!a->request) return -ENOMEM;
  memcpy(a->request, text, header);
  for (size_t k = 0; k < body; k++) a->request[header + k] = (unsigned char)('a' + k % 26);
  a->request_length = header + body;
  return 0;
}

static int open_descriptors(void) {
  DIR *directory = opendir("/proc/self/fd");
  if (!directory) return 0;
  int count = 0;
  for (struct dirent *entry; (entry = readdir(directory));)
    if (entry->d_name[0] != '.') count++;
  closedir(directory);
  return count;
}

/* How many attackers fit under the descriptor limit (raised to the hard
   one), beside what is open, the probes in flight and some room. */
static int attackers_that_fit(int wanted, int probe_limit_ms, int probe_interval_ms) {
  struct rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) < 0) return wanted;
  long probes = probe_interval_ms > 0 ? probe_limit_ms / probe_interval_ms + 2 : 0;
  long room = (long)(limit.rlim_cur == RLIM_INFINITY ? 1 << 20 : limit.rlim_cur) -
              open_descriptors() - probes - 64;
  return room < wanted ? (int)(room > 0 ? room : 0) : wanted;
}

static int valid(const procord_bench_attack_options_t *o) {
  if ((unsigned)o->kind >= PROCORD_BENCH_ATTACK_KIND_COUNT || o->port < 1 || o->port > 65535 ||
      o->attackers < 0 || o->duration_ms <= 0 || o->probe_limit_ms < 0 || o->settle_limit_ms < 0)
    return 0;
  if (o->secret && (o->secret_length < PROCORD_SECRET_MIN_LENGTH ||
                    o->secret_length > PROCORD_SECRET_MAX_LENGTH))
    return 0;
  return o->kind != PROCORD_BENCH_ATTACK_HANDSHAKE_STALL || o->secret;
}

/* The loop: until the attack's end and the last probe's. */
static int run(attack_t *a, attack_probes_t *probes, pid_t server, uint64_t start, uint64_t end) {
  struct epoll_event events[256];
  uint64_t next_sample = start;
  for (;;) {
    uint64_t now = procord_bench_now_ns();
    if (a->counting && now >= end) {
      a->counting = 0;
      a->result->elapsed_ns = now - start;
    }
    if (server && now >= next_sample) {
      attack_server_record(server, a->result);
      next_sample = now + SAMPLE_MS * MS;
    }
    for (int i = 0; i < a->count; i++)
      if (a->attackers[i].wake_ns && a->attackers[i].wake_ns <= now) attacker_step(a, i, now);
    uint64_t next = attack_probes_tick(probes, now, a->counting);
    if (!a->counting && probes->pending == 0) return 0;
    if (a->counting && end < next) next = end;
    if (server && next_sample < next) next = next_sample;
    for (int i = 0; i < a->count; i++)
      if (a->attackers[i].wake_ns && a->attackers[i].wake_ns < next) next = a->attackers[i].wake_ns;
    now = procord_bench_now_ns();
    int timeout = next <= now ? 0 : (int)((next - now + MS - 1) / MS);
    int ready = epoll_wait(a->epoll_fd, events, 256, timeout);
    if (ready < 0 && errno != EINTR) return -errno;
    now = procord_bench_now_ns();
    for (int k = 0; k < ready; k++) {
      uint64_t tag = events[k].data.u64 >> 32;
      int index = (int)(uint32_t)events[k].data.u64;
      if (tag == ATTACK_TAG_ATTACKER) attacker_event(a, index, events[k].events, now);
      else
        attack_probes_event(probes, tag == ATTACK_TAG_WAKEUP ? -1 : index, events[k].events, now);
    }
  }
}

static void fill_greedy_figures(const attack_t *a, procord_bench_attack_result_t *result) {
  if (a->kind != PROCORD_BENCH_ATTACK_GREEDY || a->count == 0) return;
  result->min_client_answers = UINT64_MAX;
  for (int i = 0; i < a->count; i++) {
    result->clients_served += a->attackers[i].answers > 0;
    if (a->attackers[i].answers < result->min_client_answers)
      result->min_client_answers = a->attackers[i].answers;
  }
  if (result->elapsed_ns)
    result->answers_per_second = (double)result->answers * 1e9 / (double)result->elapsed_ns;
}

int procord_bench_attack(const procord_bench_attack_options_t *options,
                         procord_bench_attack_result_t *result) {
  if (!options || !result || !valid(options)) return -EINVAL;
  memset(result, 0, sizeof *result);
  struct rlimit saved, raised;
  int have_limit = getrlimit(RLIMIT_NOFILE, &saved) == 0;
  raised = saved;
  raised.rlim_cur = saved.rlim_max;
  if (have_limit) setrlimit(RLIMIT_NOFILE, &raised);

  attack_t a = {.kind = options->kind, .port = options->port, .epoll_fd = -1, .result = result};
  int wanted = options->kind == PROCORD_BENCH_ATTACK_NONE ? 0
               : options->attackers                       ? options->attackers
                                                          : default_attackers[options->kind];
  a.count = attackers_that_fit(wanted, options->probe_limit_ms > 0 ? options->probe_limit_ms : 2000,
                               options->probe_interval_ms == 0 ? 100 : options->probe_interval_ms);
  result->attackers = a.count;
  int error = a.count > 0 || wanted == 0 ? 0 : -EMFILE;
  if (!error) error = make_request(&a);
  if (!error && !(a.attackers = calloc((size_t)a.count + 1, sizeof *a.attackers))) error = -ENOMEM;
  if (!error && (a.epoll_fd = epoll_create1(EPOLL_CLOEXEC)) < 0) error = -errno;

  pid_t server = options->server_pid;
  if (!error && server) {
    attack_server_figures_t before;
    if (attack_server_quiet(server, 5000, &before) == 0) {
      result->server_sampled = 1;
      result->server_rss_before_bytes = result->server_rss_max_bytes = before.rss_bytes;
      result->server_descriptors_before = result->server_descriptors_max = before.descriptors;
      result->server_children_before = result->server_children_max = before.children;
    } else {
      result->server_exited = 1;
      server = 0;
    }
  }
  uint64_t start = procord_bench_now_ns();
  attack_probes_t probes;
  if (!error) error = attack_probes_init(&probes, options, a.epoll_fd, start);
  if (!error) {
    a.counting = 1;
    for (int i = 0; i < a.count; i++) a.attackers[i] = (attacker_t){.fd = -1, .wake_ns = start};
    error = run(&a, &probes, server, start, start + (uint64_t)options->duration_ms * MS);
    for (int i = 0; i < a.count; i++) hang_up(&a, i, start, 0);
    attack_probes_finish(&probes, result);
    fill_greedy_figures(&a, result);
    if (server)
      attack_server_settle(server, options->settle_limit_ms ? options->settle_limit_ms : 5000,
                           result);
  }
  if (a.epoll_fd >= 0) close(a.epoll_fd);
  free(a.attackers);
  free(a.request);
  if (have_limit) setrlimit(RLIMIT_NOFILE, &saved);
  return error;
}
