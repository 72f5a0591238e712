/* pingpong.c: the floor of a round trip, 1 byte there and back. */
#define _GNU_SOURCE
#include <errno.h>

#include "bench_private.h"

/* One round trip of `byte`. Returns 0, -EPROTO if it does not come back
   the same, or -errno. */
static int round_trip(int fd, unsigned char byte) {
  int error = bench_write_full(fd, &byte, 1);
  if (error) return error;
  unsigned char echo;
  ssize_t n = bench_read_full(fd, &echo, 1);
  if (n < 0) return (int)n;
  return n == 1 && echo == byte ? 0 : -EPROTO;
}

int procord_bench_pingpong(procord_bench_pair_kind_t kind, const char *peer_program,
                           const char *const *peer_arguments, int warmup, int rounds,
                           uint64_t *round_trip_ns) {
  if (warmup < 0 || rounds < 0 || (rounds > 0 && !round_trip_ns)) return -EINVAL;
  bench_peer_t peer;
  int error = bench_peer_start(kind, peer_program, peer_arguments, &peer);
  if (error) return error;
  for (int i = 0; i < warmup && !error; i++) error = round_trip(peer.fd, (unsigned char)(i | 1));
  for (int i = 0; i < rounds && !error; i++) {
    uint64_t start = procord_bench_now_ns();
    error = round_trip(peer.fd, (unsigned char)(i | 1));
    round_trip_ns[i] = procord_bench_now_ns() - start;
  }
  return bench_peer_finish(&peer, error);
}
