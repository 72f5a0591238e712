/*
 * bench_private.h: what the floors share: whole reads and writes, and a
 * peer started on one end of a connected pair.
 */
#ifndef PROCORD_BENCH_PRIVATE_H
#define PROCORD_BENCH_PRIVATE_H

#include <stddef.h>
#include <sys/types.h>

#include "procord_bench.h"

/*
 * Reads until `length` bytes have come, retrying after EINTR. Returns
 * `length`, fewer if the stream ended first (0: it ended at once), or -errno.
 */
ssize_t bench_read_full(int fd, void *buffer, size_t length);

/*
 * Writes all `length` bytes, retrying after EINTR and partial writes; on a
 * socket with MSG_NOSIGNAL, so a closed peer is -EPIPE, not SIGPIPE.
 * Returns 0 or -errno.
 */
int bench_write_full(int fd, const void *buffer, size_t length);

/* Waits for `pid` to end, retrying after EINTR. Returns 0 and its wait
   status in `*status`, or -errno. */
int bench_wait(pid_t pid, int *status);

/* A peer process and the parent's end of its pair. */
typedef struct bench_peer_s {
  pid_t pid;
  int fd;
} bench_peer_t;

/*
 * Makes a connected pair of `kind` and spawns `program` with `arguments`,
 * its end of the pair as descriptor PROCORD_BENCH_PEER_FD. The parent keeps
 * only its own end (close-on-exec). Returns 0 or -errno (nothing left).
 */
int bench_peer_start(procord_bench_pair_kind_t kind, const char *program,
                     const char *const *arguments, bench_peer_t *peer);

/*
 * Closes the parent's end and reaps the peer. With `error` 0 it waits for
 * the peer to see the end of the stream and exit; otherwise it kills it
 * first. Returns `error` if non-zero, else 0, or -ECHILD if the peer did not
 * exit with status 0, or -errno of waitpid.
 */
int bench_peer_finish(bench_peer_t *peer, int error);

#endif
