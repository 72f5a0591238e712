/*
 * attack_private.h: what the parts of procord_bench_attack share: the
 * probe (attack_probe.c) and the server's figures read from /proc
 * (attack_server.c), both driven by the attack's one epoll loop (attack.c).
 */
#ifndef PROCORD_BENCH_ATTACK_PRIVATE_H
#define PROCORD_BENCH_ATTACK_PRIVATE_H

#include <stdint.h>
#include <sys/types.h>

#include "procord/procord.h"
#include "procord_bench.h"

/* What an epoll event's data names, in its high 32 bits; the low 32 bits
   are an index into the attackers or the probes. */
#define ATTACK_TAG_ATTACKER 0ull
#define ATTACK_TAG_PROBE 1ull
#define ATTACK_TAG_WAKEUP 2ull
#define ATTACK_EVENT_DATA(tag, index) (((tag) << 32) | (uint32_t)(index))

/* The bytes of one `fact 5` task, and the start of its answer. */
#define ATTACK_FACT_TASK "4Tfact1V5"
#define ATTACK_FACT_ANSWER "3V120"

typedef enum attack_probe_verdict {
  PROBE_PENDING = 0,
  PROBE_ANSWERED,
  PROBE_FAILED,    /* closed, refused, or answered something else */
  PROBE_TIMED_OUT, /* no answer within the limit */
} attack_probe_verdict_t;

/* One probe: a connection of its own, or a delegation when it must
   authenticate. */
typedef struct attack_probe_s {
  int fd;
  int connected;
  size_t sent;
  size_t got;
  unsigned char answer[16];
  uint64_t start_ns;
  uint64_t end_ns;
  attack_probe_verdict_t verdict;
  procord_delegation_t *delegation;
  /* Set on the library loop's thread by the delegation's end (atomics). */
  uint64_t done_ns;
  int done_verdict;
  struct attack_probes_s *owner;
} attack_probe_t;

/* Every probe of one run, started every interval_ms on the caller's epoll
   loop. With a secret, probes are delegations of the library's C client
   (it alone speaks the secret exchange), on a loop thread of their own
   that wakes the epoll loop through an eventfd when one ends. */
typedef struct attack_probes_s {
  attack_probe_t *probes;
  int capacity;
  int count;
  int pending;
  int first_pending;
  int epoll_fd;
  int port;
  int interval_ms;
  int limit_ms;
  uint64_t next_ns;
  int wakeup_fd;
  procord_loop_t *loop;
  procord_security_t *security;
} attack_probes_t;

/* Readies `probes` for at most `duration_ms / interval_ms + 1` probes, the
   first due at `start_ns + interval_ms` (none with a negative interval).
   Returns 0 or a negated errno / PROCORD_E* code (nothing left). */
int attack_probes_init(attack_probes_t *probes, const procord_bench_attack_options_t *options,
                       int epoll_fd, uint64_t start_ns);

/* Starts the probe that is due at `now` (if one is, and `starting`), and
   ends those past their limit. Returns when the next of these is due. */
uint64_t attack_probes_tick(attack_probes_t *probes, uint64_t now, int starting);

/* Handles an epoll event for probe `index` (or the wakeup: index -1). */
void attack_probes_event(attack_probes_t *probes, int index, uint32_t events, uint64_t now);

/* Ends every probe still pending as timed out, fills the probe figures of
   `result`, and frees everything. */
void attack_probes_finish(attack_probes_t *probes, procord_bench_attack_result_t *result);

/* ---- The server's figures, from /proc ---- */

typedef struct attack_server_figures_s {
  int alive;
  uint64_t rss_bytes;
  int descriptors;
  int children;
} attack_server_figures_t;

/* Reads the resident memory, descriptor count and number of children of
   `pid`. Returns 0, or -ESRCH once the process is gone. */
int attack_server_read(pid_t pid, attack_server_figures_t *figures);

/* Reads the figures once the server has been still (the same descriptors
   and children for 200 ms: its warm workers started and given their
   sessions), or after `limit_ms`; returns like attack_server_read. */
int attack_server_quiet(pid_t pid, int limit_ms, attack_server_figures_t *figures);

/* Adds one sample taken during the attack to `result`'s maxima. */
void attack_server_record(pid_t pid, procord_bench_attack_result_t *result);

/* After the attack: waits (polling every 50 ms, at most `limit_ms`) until
   the server holds no more descriptors than before it, and fills the
   result's `server_*_after` (the TCP connections counted once, at the
   end), `server_descriptors_back` and settle time. */
void attack_server_settle(pid_t pid, int limit_ms, procord_bench_attack_result_t *result);

#endif
