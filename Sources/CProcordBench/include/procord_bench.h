/*
 * procord_bench.h: the physical floors of this machine, measured in C, that
 * the benchmark compares Procord with: a 1-byte round trip between two
 * processes, a store-and-forward exchange of N bytes, a process start, and
 * the library's own C pool round trip. Plus the peer side those floors
 * talk to, and a systemd-style readiness socket for a worker server.
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
 * task: give a warmup of at least 1 to leave its start out. Then shuts the
 * pool down gracefully, waits for it, and frees the loop. Returns 0;
 * -EINVAL for bad arguments; -EPROTO if a task did not answer with a value
 * (PROCORD_OUTCOME_VALUE); or the error of the Procord call that failed
 * (a negated errno or a PROCORD_E* code). Everything is cleaned up on every
 * path.
 */
int procord_bench_c_pool_rtt(const char *worker_program, const char *const *worker_arguments,
                             const char *task_name, const unsigned char *input,
                             size_t input_length, int warmup, int rounds, uint64_t *round_trip_ns);

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

#ifdef __cplusplus
}
#endif

#endif
