/*
 * procord_bench.h: the physical floors of this machine, measured in C, that
 * the benchmark compares Procord with: a 1-byte round trip between two
 * processes, a store-and-forward exchange of N bytes, a process start, and
 * the library's own C pool round trip. Plus the peer side those floors
 * talk to, a systemd-style readiness socket for a worker server, and
 * hostile clients to run against one (procord_bench_attack).
 *
 * Times are nanoseconds of CLOCK_MONOTONIC. Functions that can fail return
 * 0 (or a non-negative value) on success and a negated errno otherwise
 * (procord_bench_c_pool_rtt may also return a PROCORD_E* code, see
 * procord/error.h); none exits, aborts or prints. Every descriptor they
 * create is close-on-exec, except the peer's end of a pair, which its child
 * gets as descriptor 3; every child they start is reaped before they return.
 * Writes to sockets never raise SIGPIPE (a vanished peer is an -EPIPE).
 *
 * Peers are started with posix_spawn from `peer_program` (a path, typically
 * "/proc/self/exe") with `peer_arguments` (a NULL-terminated argv, argv[0]
 * included, which the caller builds, e.g. {"procord-bench", "--floor-peer",
 * "echo-1", NULL}). The program, seeing those arguments, must call
 * procord_bench_peer_run(mode, 3) and exit 0 when it returns 0.
 *
 * None of these functions keeps state between calls; each is safe to call
 * from any one thread at a time (they block that thread).
 */
#ifndef PROCORD_BENCH_H
#define PROCORD_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The descriptor on which a peer finds its end of the pair. */
#define PROCORD_BENCH_PEER_FD 3

/* Returns the time of CLOCK_MONOTONIC in nanoseconds. */
uint64_t procord_bench_now_ns(void);

/* ---- The peer side (in the spawned child) ---- */

/*
 * Serves the other end of `fd` in `mode` until it closes, without closing
 * `fd`:
 *   "echo-1": reads 1 byte and writes it back, over and over.
 *   "store-and-forward": reads an 8-byte little-endian length N, then N
 *     bytes (into one buffer, grown as needed and freed on return), then
 *     writes those N bytes back, over and over.
 * Returns 0 when the stream ends between two messages; -ECONNRESET when it
 * ends inside one; -EINVAL for an unknown mode or a NULL one; -ENOMEM when
 * a length cannot be allocated; or the negated errno of a failed read or
 * write.
 */
int procord_bench_peer_run(const char *mode, int fd);

/* ---- Ping-pong: 1-byte round trips ---- */

/* The kind of connected pair the ping-pong floor runs on. */
typedef enum procord_bench_pair_kind {
  /* socketpair(AF_UNIX, SOCK_STREAM). */
  PROCORD_BENCH_PAIR_UNIX_STREAM = 0,
  /* A TCP connection over 127.0.0.1 (an ephemeral port, the listener closed
     at once), TCP_NODELAY on both ends; the accepted end is the child's. */
  PROCORD_BENCH_PAIR_TCP_LOOPBACK = 1,
} procord_bench_pair_kind_t;

/*
 * Spawns the peer (whose arguments ask for "echo-1") on a pair of `kind`,
 * makes `warmup` unrecorded 1-byte round trips, then `rounds` recorded ones,
 * storing the nanoseconds of round trip i (write of the byte to its echo
 * read back) in round_trip_ns[i] (`rounds` entries, owned by the caller).
 * Then closes its end and reaps the peer. Returns 0; -EINVAL for bad
 * arguments; -EPROTO if a byte comes back changed or not at all; -ECHILD if
 * the peer did not exit with status 0; or the negated errno of the call that
 * failed (the peer is then killed and reaped).
 */
int procord_bench_pingpong(procord_bench_pair_kind_t kind, const char *peer_program,
                           const char *const *peer_arguments, int warmup, int rounds,
                           uint64_t *round_trip_ns);

/* ---- Bandwidth: store-and-forward over an AF_UNIX stream ---- */

/*
 * Spawns the peer (whose arguments ask for "store-and-forward") on an
 * AF_UNIX SOCK_STREAM socketpair with default buffer sizes, makes one
 * unrecorded warm-up exchange, then `repeats` recorded ones: send the 8-byte
 * length and `size` bytes (one malloc'd buffer of a non-zero pattern, large
 * writes), then read the `size` bytes back into a second buffer. Stores the
 * nanoseconds from the first write to the last byte read of repeat i in
 * elapsed_ns[i] (`repeats` entries, owned by the caller). The bytes are
 * compared after each timing, outside it. One spawn for all; the peer is
 * reaped before returning. Returns 0; -EINVAL for bad arguments (size 0 or
 * above 256 MiB); -ENOMEM; -EPROTO if the bytes come back different or
 * short; -ECHILD if the peer did not exit with status 0; or the negated
 * errno of the call that failed.
 */
int procord_bench_store_and_forward(const char *peer_program, const char *const *peer_arguments,
                                    size_t size, int repeats, uint64_t *elapsed_ns);

/* ---- Process start ---- */

/*
 * Starts `program` (a path) with `arguments` (NULL-terminated argv) with
 * posix_spawn, `count` times one after the other, each reaped before the
 * next starts; stdin, stdout and stderr are inherited. Stores the
 * nanoseconds from posix_spawn to the child's reap in each_ns[i] (`count`
 * entries, owned by the caller). Returns 0; -EINVAL for bad arguments;
 * -ECHILD if a child did not exit with status 0 (after reaping it); or the
 * negated errno of posix_spawn or waitpid.
 */
int procord_bench_spawn_sequential(const char *program, const char *const *arguments, int count,
                                   uint64_t *each_ns);

/*
 * Starts `count` instances of `program` at once (posix_spawn one after the
 * other without waiting), then reaps them all, and stores in `*total_ns` the
 * nanoseconds from the first posix_spawn to the last reap. Returns 0;
 * -EINVAL for bad arguments; -ENOMEM; -ECHILD if any child did not exit with
 * status 0; or the negated errno of posix_spawn (the ones already started
 * are reaped first) or waitpid.
 */
int procord_bench_spawn_concurrent(const char *program, const char *const *arguments, int count,
                                   uint64_t *total_ns);

/* ---- The library's C pool ---- */

/*
 * Measures a Procord pool's round trip through the C API: a loop on a thread
 * of its own, a pool of at most one worker started from `worker_program`
 * with `worker_arguments` (which must include `--procord-worker
 * --procord-socket-fd 3`) in socket mode, stderr inherited. Runs `warmup`
 * unrecorded then `rounds` recorded tasks one after the other, each
 * `task_name` with `input` (`input_length` bytes, may be NULL when 0):
 * procord_pool_delegate, then procord_delegation_wait. Stores the
 * nanoseconds from just before the delegation to just after the wait of
 * recorded task i in round_trip_ns[i]. The worker starts with the first
 * task: give a warmup of at least 1 to leave its start out. With
 * `on_host_base`, the loop is on a libevent base this function runs on the
 * calling thread (procord_loop_new_on_base; each task's on_done ends the
 * dispatch) instead of a thread of its own. Then shuts the pool down
 * gracefully, waits for it, and frees the loop. Returns 0;
 * -EINVAL for bad arguments; -EPROTO if a task did not answer with a value
 * (PROCORD_OUTCOME_VALUE); or the error of the Procord call that failed
 * (a negated errno or a PROCORD_E* code). Everything is cleaned up on every
 * path.
 */
int procord_bench_c_pool_rtt(const char *worker_program, const char *const *worker_arguments,
                             const char *task_name, const unsigned char *input, size_t input_length,
                             int on_host_base, int warmup, int rounds, uint64_t *round_trip_ns);

/* ---- Readiness of a worker server (systemd's NOTIFY_SOCKET) ---- */

/*
 * Creates a close-on-exec AF_UNIX SOCK_DGRAM socket bound to `notify` in a
 * fresh directory under /tmp (made with mkdtemp), and writes that path,
 * NUL-terminated, into `path` (`path_size` bytes). Pass the path to a server
 * as NOTIFY_SOCKET. Returns the descriptor (the caller closes it with
 * procord_bench_notify_close), -ENAMETOOLONG if `path_size` is too small, or
 * the negated errno of the call that failed (nothing is left behind).
 */
int procord_bench_notify_open(char *path, size_t path_size);

/*
 * Reads datagrams from `fd` (from procord_bench_notify_open), ignoring
 * those that do not say where the server listens, until one holds
 * "STATUS=listening on HOST:PORT". Waits at most `timeout_ms` in all
 * (negative: no limit). Returns PORT (1..65535); -ETIMEDOUT when the time
 * runs out; -EPROTO when the datagram names no valid port; or the negated
 * errno of poll or recv.
 */
int procord_bench_notify_wait_port(int fd, int timeout_ms);

/*
 * Closes `fd` (unless negative) and removes `path` (unless NULL) and the
 * directory procord_bench_notify_open made for it. Errors are ignored.
 */
void procord_bench_notify_close(int fd, const char *path);

/*
 * Hands the allocator's free memory back to the system (glibc's
 * malloc_trim(0); nothing elsewhere), so that resident memory read right
 * after counts what is allocated, not what the allocator keeps for later.
 * The soak calls it before each of its quiescent samples.
 */
void procord_bench_trim_memory(void);

/*
 * Bytes the program has allocated with malloc and not freed, in every
 * arena and in its own mappings (glibc's mallinfo2: uordblks + hblkhd);
 * 0 elsewhere. What the allocator keeps free is not counted.
 */
size_t procord_bench_heap_in_use(void);

/* ---- A worker server under attack (issue 16) ---- */

/* Hostile clients of a worker server on 127.0.0.1. */
typedef enum procord_bench_attack_kind {
  /* No attacker: the probe alone, to know what it sees from a server at
     rest (and that it is answered at all). */
  PROCORD_BENCH_ATTACK_NONE = 0,
  /* Connections that each send a valid task (`4Tfact1V5`, then the same
     again) one byte per second, reading and dropping what comes back.
     8 by default. */
  PROCORD_BENCH_ATTACK_SLOWLORIS = 1,
  /* Connections that connect and send nothing. 5000 by default, clamped
     to what the descriptor limit (raised to its hard limit for the run)
     leaves room for. */
  PROCORD_BENCH_ATTACK_IDLE_FLOOD = 2,
  /* Clients that each keep a connection and send `fact 5` back to back:
     the task, its answer `3V120`, the `0R` that follows, the next task (a
     close right after the answer is followed by a new connection). 200 by
     default. */
  PROCORD_BENCH_ATTACK_GREEDY = 3,
  /* Connections to a server started with a shared secret that never
     finish the secret exchange: the even ones send nothing, the odd ones
     the first 13 bytes of the 35 of its first frame (`32A` and 10 bytes of
     the nonce). 8 by default. Needs `secret`. */
  PROCORD_BENCH_ATTACK_HANDSHAKE_STALL = 4,
  /* Connections that each send an `echo` task with 1 MiB of input
     (`4Techo1048576V` and the bytes), then read the answer one byte per
     second, with a receive buffer of 4 KiB (SO_RCVBUF) so that the
     kernel does not read ahead for them. 8 by default. */
  PROCORD_BENCH_ATTACK_SLOW_READER = 5,
} procord_bench_attack_kind_t;

/* How many kinds there are, NONE included: they are numbered from 0. */
#define PROCORD_BENCH_ATTACK_KIND_COUNT 6

/* Returns the kind's name ("none", "slowloris", "idle-flood", "greedy",
   "handshake-stall", "slow-reader"), static, or NULL for no kind. */
const char *procord_bench_attack_name(procord_bench_attack_kind_t kind);

typedef struct procord_bench_attack_options_s {
  procord_bench_attack_kind_t kind;
  /* The server's port on 127.0.0.1. */
  int port;
  /* How many attackers; 0: the kind's default (above; NONE has none). */
  int attackers;
  /* How long the attack runs, in ms (> 0). */
  int duration_ms;
  /* A probe every this many ms while the attack runs; 0: 100; negative: no
     probe (for a baseline: greedy with 8 attackers and no probe measures
     the server's throughput without contention). */
  int probe_interval_ms;
  /* How long a probe may wait for its answer before it counts as
     unanswered; 0: 2000. */
  int probe_limit_ms;
  /* The server's pid, for its figures from /proc; 0: none. */
  pid_t server_pid;
  /* After the attack, how long to wait for the server's descriptors to
     come back to their count before it; 0: 5000 ms. */
  int settle_limit_ms;
  /* The server's shared secret (PROCORD_SECRET_MIN_LENGTH to
     PROCORD_SECRET_MAX_LENGTH bytes, see procord/security.h), or NULL.
     With one, probes authenticate: each is a delegation of the library's
     C client (procord_delegate to 127.0.0.1:port) instead of a bare
     connection. */
  const void *secret;
  size_t secret_length;
} procord_bench_attack_options_t;

typedef struct procord_bench_attack_result_s {
  /* ---- The attackers ---- */
  int attackers;             /* how many ran (after the clamp of idle-flood) */
  uint64_t elapsed_ns;       /* how long the attack ran */
  uint64_t connections;      /* connections they started, reopened ones included */
  uint64_t connect_failures; /* of those, connects that failed (refused, no descriptor...) */
  uint64_t server_closes;    /* established connections that the server closed or reset */
  int max_connected;         /* most connections established at once */
  /* Greedy only, counted while the attack runs (not after): answers
     `3V120`, answers that were not that (or a `0R` that was not there),
     answers per second, how many attackers got at least one answer, and
     the fewest answers that any attacker got. */
  uint64_t answers;
  uint64_t wrong_answers;
  double answers_per_second;
  int clients_served;
  uint64_t min_client_answers;

  /* ---- The probe ---- */
  /* Every interval, a new connection sends `4Tfact1V5` and waits for
     `3V120` (what follows, `0R` or a close, does not matter); its latency
     runs from the start of its connect to that answer. Probes are sent
     while the attack runs, and each is given its full limit, the attack
     going on meanwhile. Failed: the connection was refused, closed or
     answered something else before the limit. */
  int probes_sent;
  int probes_answered;
  int probes_failed;
  int probes_timed_out;
  /* Percentiles (nearest rank) and maximum of the latencies of every probe
     sent, an unanswered one (failed or timed out) counting as the limit:
     with more than 1% of probes unanswered, the p99 is the limit. 0 when
     no probe was sent. */
  uint64_t probe_p50_ns;
  uint64_t probe_p99_ns;
  uint64_t probe_max_ns;

  /* ---- The server, from /proc/PID (when server_pid is given) ---- */
  int server_sampled; /* the figures below were read */
  int server_exited;  /* the process was gone at some sample */
  /* Before the attack, at most during it (sampled every 100 ms), and after
     it: VmRSS, open descriptors (/proc/PID/fd), children (workers). */
  uint64_t server_rss_before_bytes;
  uint64_t server_rss_max_bytes;
  int server_descriptors_before;
  int server_descriptors_max;
  int server_descriptors_after;
  int server_children_before;
  int server_children_max;
  int server_children_after;
  /* Whether, once every attacker and probe had closed, the server held no
     TCP connection and its descriptors came back to their count before the
     attack (measured once the server was still), but for the workers it
     started meanwhile and keeps (three each: control socket, pidfd,
     session), within settle_limit_ms; and how long that took (or the time
     waited). */
  int server_descriptors_back;
  uint64_t server_settle_ns;
  /* Then: the TCP connections (in any state but LISTEN, from
     /proc/PID/net/tcp and tcp6) on sockets that the server or one of its
     children still holds: what it kept of the attack, whatever it keeps of
     its workers. */
  int server_connections_after;
} procord_bench_attack_result_t;

/*
 * Runs one attack of `options->kind` against the worker server at
 * 127.0.0.1:`port` for `duration_ms`, with a probe (a normal client) beside
 * it, and fills `*result` (zeroed first). Everything runs on the calling
 * thread, on one epoll loop, with non-blocking sockets (plus the library's
 * loop thread for probes with a secret): nothing waits for the server
 * without a limit, so the call returns within about duration_ms +
 * probe_limit_ms + settle_limit_ms + 1 s, however the server behaves.
 * Closed attacker connections are opened again at once, but no sooner than
 * 100 ms after the last was opened when the closed one got no answer (a
 * server that closes at once is not met with a busy loop); a failed
 * connect is tried again 100 ms later. RLIMIT_NOFILE's soft limit is
 * raised to the hard one for the call, and put back before it returns.
 *
 * Returns 0 when the attack ran, whatever the server did (its failures are
 * figures); -EINVAL for bad options (handshake-stall without a secret, a
 * secret of the wrong length); -EMFILE when the descriptor limit leaves no
 * room for one attacker; or the negated errno (or PROCORD_E* code) of a
 * call that the harness itself needs (epoll_create1, eventfd, the
 * library's loop). Every descriptor is closed before it returns.
 */
int procord_bench_attack(const procord_bench_attack_options_t *options,
                         procord_bench_attack_result_t *result);

#ifdef __cplusplus
}
#endif

#endif
