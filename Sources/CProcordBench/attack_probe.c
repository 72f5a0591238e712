/*
 * attack_probe.c: the normal client beside an attack: every interval, a new
 * connection asks `fact 5` and times the answer, never waiting past its
 * limit. Against a server with a shared secret, the probe is a delegation
 * of the library's own client, which speaks the secret exchange.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "attack_private.h"

#define MS 1000000ull
/* How long past its limit a delegation may take to end before it is
   killed: its own deadline_ms should have ended it. */
#define LIBRARY_GRACE_MS 1000

static void end_probe(attack_probes_t *probes, attack_probe_t *probe,
                      attack_probe_verdict_t verdict, uint64_t now) {
  if (probe->verdict != PROBE_PENDING) return;
  if (probe->fd >= 0) close(probe->fd); /* which takes it out of the epoll set */
  probe->fd = -1;
  probe->verdict = verdict;
  probe->end_ns = now;
  probes->pending--;
}

/* ---- A bare connection ---- */

static void start_bare(attack_probes_t *probes, attack_probe_t *probe, int index, uint64_t now) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    end_probe(probes, probe, PROBE_FAILED, now);
    return;
  }
  probe->fd = fd;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in address = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)probes->port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  struct epoll_event event = {.events = EPOLLOUT,
                              .data.u64 = ATTACK_EVENT_DATA(ATTACK_TAG_PROBE, index)};
  if ((connect(fd, (struct sockaddr *)&address, sizeof address) < 0 && errno != EINPROGRESS) ||
      epoll_ctl(probes->epoll_fd, EPOLL_CTL_ADD, fd, &event) < 0)
    end_probe(probes, probe, PROBE_FAILED, now);
}

/* Sends what is left of the task; then waits for the answer. */
static void send_task(attack_probes_t *probes, attack_probe_t *probe, int index, uint64_t now) {
  const size_t length = sizeof ATTACK_FACT_TASK - 1;
  ssize_t n = send(probe->fd, &ATTACK_FACT_TASK[probe->sent], length - probe->sent, MSG_NOSIGNAL);
  if (n < 0 && errno != EAGAIN && errno != EINTR) {
    end_probe(probes, probe, PROBE_FAILED, now);
    return;
  }
  if (n > 0) probe->sent += (size_t)n;
  if (probe->sent < length) return;
  struct epoll_event event = {.events = EPOLLIN,
                              .data.u64 = ATTACK_EVENT_DATA(ATTACK_TAG_PROBE, index)};
  if (epoll_ctl(probes->epoll_fd, EPOLL_CTL_MOD, probe->fd, &event) < 0)
    end_probe(probes, probe, PROBE_FAILED, now);
}

static void read_answer(attack_probes_t *probes, attack_probe_t *probe, uint64_t now) {
  const size_t expected = sizeof ATTACK_FACT_ANSWER - 1;
  ssize_t n = recv(probe->fd, probe->answer + probe->got, sizeof probe->answer - probe->got, 0);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) {
    end_probe(probes, probe, PROBE_FAILED, now);
    return;
  }
  probe->got += (size_t)n;
  for (size_t i = 0; i < probe->got && i < expected; i++)
    if (probe->answer[i] != (unsigned char)ATTACK_FACT_ANSWER[i]) {
      end_probe(probes, probe, PROBE_FAILED, now);
      return;
    }
  if (probe->got < expected) return;
  /* Take the `0R` too if it came, so that the close is not a reset. */
  unsigned char rest[64];
  while (recv(probe->fd, rest, sizeof rest, MSG_DONTWAIT) > 0) {
  }
  end_probe(probes, probe, PROBE_ANSWERED, now);
}

static void bare_event(attack_probes_t *probes, int index, uint32_t events, uint64_t now) {
  attack_probe_t *probe = &probes->probes[index];
  if (probe->verdict != PROBE_PENDING) return;
  if (!probe->connected) {
    int error = 0;
    socklen_t size = sizeof error;
    if (getsockopt(probe->fd, SOL_SOCKET, SO_ERROR, &error, &size) < 0 || error) {
      end_probe(probes, probe, PROBE_FAILED, now);
      return;
    }
    probe->connected = 1;
  }
  if (probe->sent < sizeof ATTACK_FACT_TASK - 1) {
    send_task(probes, probe, index, now);
    return;
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) read_answer(probes, probe, now);
}

/* ---- A delegation of the library's client ---- */

/* On the library loop's thread: notes how it ended and wakes the epoll
   loop. */
static void delegation_done(procord_delegation_t *delegation, const procord_outcome_t *outcome,
                            void *context) {
  (void)delegation;
  attack_probe_t *probe = context;
  int verdict = PROBE_FAILED;
  if (outcome->kind == PROCORD_OUTCOME_VALUE && outcome->length == 3 &&
      memcmp(outcome->body, "120", 3) == 0)
    verdict = PROBE_ANSWERED;
  else if (outcome->kind == PROCORD_OUTCOME_TIMED_OUT)
    verdict = PROBE_TIMED_OUT;
  __atomic_store_n(&probe->done_ns, procord_bench_now_ns(), __ATOMIC_RELAXED);
  __atomic_store_n(&probe->done_verdict, verdict, __ATOMIC_RELEASE);
  uint64_t one = 1;
  ssize_t ignored = write(probe->owner->wakeup_fd, &one, sizeof one);
  (void)ignored;
}

static void start_delegation(attack_probes_t *probes, attack_probe_t *probe, uint64_t now) {
  procord_delegation_options_t options = {
      .task_name = "fact",
      .input = "5",
      .input_length = 1,
      .remote_host = "127.0.0.1",
      .remote_port = probes->port,
      .connect_timeout_ms = probes->limit_ms,
      .deadline_ms = probes->limit_ms,
      .capture_output = 1, /* and no on_print: anything printed is dropped */
      .on_done = delegation_done,
      .context = probe,
      .security = probes->security,
  };
  if (procord_delegate(probes->loop, &options, &probe->delegation) != 0) {
    probe->delegation = NULL;
    end_probe(probes, probe, PROBE_FAILED, now);
  }
}

/* Ends the delegations that have ended. */
static void collect_delegations(attack_probes_t *probes) {
  uint64_t drained;
  ssize_t ignored = read(probes->wakeup_fd, &drained, sizeof drained);
  (void)ignored;
  for (int i = probes->first_pending; i < probes->count; i++) {
    attack_probe_t *probe = &probes->probes[i];
    int verdict = __atomic_load_n(&probe->done_verdict, __ATOMIC_ACQUIRE);
    if (probe->verdict != PROBE_PENDING || verdict == PROBE_PENDING) continue;
    uint64_t done = __atomic_load_n(&probe->done_ns, __ATOMIC_RELAXED);
    if (verdict == PROBE_ANSWERED && done - probe->start_ns > (uint64_t)probes->limit_ms * MS)
      verdict = PROBE_TIMED_OUT;
    end_probe(probes, probe, verdict, done);
  }
}

/* ---- The schedule ---- */

int attack_probes_init(attack_probes_t *probes, const procord_bench_attack_options_t *options,
                       int epoll_fd, uint64_t start_ns) {
  memset(probes, 0, sizeof *probes);
  probes->epoll_fd = epoll_fd;
  probes->wakeup_fd = -1;
  probes->port = options->port;
  probes->interval_ms = options->probe_interval_ms == 0 ? 100 : options->probe_interval_ms;
  probes->limit_ms = options->probe_limit_ms > 0 ? options->probe_limit_ms : 2000;
  if (probes->interval_ms < 0) return 0;
  probes->capacity = options->duration_ms / probes->interval_ms + 1;
  probes->next_ns = start_ns + (uint64_t)probes->interval_ms * MS;
  probes->probes = calloc((size_t)probes->capacity, sizeof *probes->probes);
  if (!probes->probes) return -ENOMEM;
  if (!options->secret) return 0;

  procord_security_options_t security = {.role = PROCORD_SECURITY_CLIENT,
                                         .secret = options->secret,
                                         .secret_length = options->secret_length};
  int error = procord_security_new(&security, &probes->security, NULL, 0);
  if (!error) error = procord_loop_new(&probes->loop);
  if (!error) error = procord_loop_start_thread(probes->loop);
  if (!error) {
    probes->wakeup_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event event = {.events = EPOLLIN,
                                .data.u64 = ATTACK_EVENT_DATA(ATTACK_TAG_WAKEUP, 0)};
    if (probes->wakeup_fd < 0 || epoll_ctl(epoll_fd, EPOLL_CTL_ADD, probes->wakeup_fd, &event) < 0)
      error = -errno;
  }
  if (error) {
    procord_bench_attack_result_t ignored;
    attack_probes_finish(probes, &ignored);
  }
  return error;
}

uint64_t attack_probes_tick(attack_probes_t *probes, uint64_t now, int starting) {
  if (starting && probes->count < probes->capacity && now >= probes->next_ns) {
    int index = probes->count++;
    attack_probe_t *probe = &probes->probes[index];
    *probe = (attack_probe_t){.fd = -1, .start_ns = now, .owner = probes};
    probes->pending++;
    if (probes->loop) start_delegation(probes, probe, now);
    else
      start_bare(probes, probe, index, now);
    probes->next_ns += (uint64_t)probes->interval_ms * MS;
    if (probes->next_ns <= now) probes->next_ns = now + 1; /* late: no burst to catch up */
  }
  uint64_t limit = (uint64_t)(probes->limit_ms + (probes->loop ? LIBRARY_GRACE_MS : 0)) * MS;
  uint64_t next = starting && probes->count < probes->capacity ? probes->next_ns : UINT64_MAX;
  while (probes->first_pending < probes->count &&
         probes->probes[probes->first_pending].verdict != PROBE_PENDING)
    probes->first_pending++;
  for (int i = probes->first_pending; i < probes->count; i++) {
    attack_probe_t *probe = &probes->probes[i];
    if (probe->verdict != PROBE_PENDING) continue;
    if (now >= probe->start_ns + limit) {
      if (probe->delegation) procord_delegation_kill(probe->delegation);
      end_probe(probes, probe, PROBE_TIMED_OUT, now);
    } else if (probe->start_ns + limit < next) {
      next = probe->start_ns + limit;
    }
  }
  return next;
}

void attack_probes_event(attack_probes_t *probes, int index, uint32_t events, uint64_t now) {
  if (index < 0) collect_delegations(probes);
  else if (index < probes->count)
    bare_event(probes, index, events, now);
}

static int compare_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* The nearest-rank percentile `p` of `sorted` (`count` > 0 values). */
static uint64_t percentile(const uint64_t *sorted, int count, int p) {
  int rank = (p * count + 99) / 100;
  return sorted[rank < 1 ? 0 : rank - 1];
}

static void fill_figures(const attack_probes_t *probes, procord_bench_attack_result_t *result) {
  result->probes_sent = probes->count;
  if (probes->count == 0) return;
  uint64_t *latencies = malloc((size_t)probes->count * sizeof *latencies);
  uint64_t limit = (uint64_t)probes->limit_ms * MS;
  for (int i = 0; i < probes->count; i++) {
    const attack_probe_t *probe = &probes->probes[i];
    result->probes_answered += probe->verdict == PROBE_ANSWERED;
    result->probes_failed += probe->verdict == PROBE_FAILED;
    result->probes_timed_out += probe->verdict == PROBE_TIMED_OUT;
    if (latencies)
      latencies[i] = probe->verdict == PROBE_ANSWERED ? probe->end_ns - probe->start_ns : limit;
  }
  if (!latencies) return;
  qsort(latencies, (size_t)probes->count, sizeof *latencies, compare_u64);
  result->probe_p50_ns = percentile(latencies, probes->count, 50);
  result->probe_p99_ns = percentile(latencies, probes->count, 99);
  result->probe_max_ns = latencies[probes->count - 1];
  free(latencies);
}

void attack_probes_finish(attack_probes_t *probes, procord_bench_attack_result_t *result) {
  if (probes->wakeup_fd >= 0) collect_delegations(probes); /* ended, not yet taken */
  uint64_t now = procord_bench_now_ns();
  for (int i = 0; i < probes->count; i++) {
    attack_probe_t *probe = &probes->probes[i];
    if (probe->delegation && !procord_delegation_is_finished(probe->delegation))
      procord_delegation_kill(probe->delegation);
    end_probe(probes, probe, PROBE_TIMED_OUT, now);
  }
  fill_figures(probes, result);
  /* The loop kills and reaps what is left of the delegations, and joins its
     thread, before their last reference goes. */
  if (probes->loop) procord_loop_free(probes->loop);
  for (int i = 0; i < probes->count; i++)
    if (probes->probes[i].delegation) procord_delegation_release(probes->probes[i].delegation);
  procord_security_release(probes->security);
  if (probes->wakeup_fd >= 0) close(probes->wakeup_fd);
  free(probes->probes);
  memset(probes, 0, sizeof *probes);
  probes->wakeup_fd = -1;
}
