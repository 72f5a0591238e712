/*
 * bandwidth.c: the floor of moving bytes to a child and back, store and
 * forward (a whole request, then a whole answer: the shape of a task).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bench_private.h"

#define MAX_SIZE ((size_t)256 << 20)

/* Sends the length and `sent`, reads the answer into `received`. */
static int exchange(int fd, const unsigned char *sent, unsigned char *received, size_t size) {
  unsigned char header[8];
  for (int i = 0; i < 8; i++) header[i] = (unsigned char)((uint64_t)size >> (8 * i));
  int error = bench_write_full(fd, header, sizeof header);
  if (!error) error = bench_write_full(fd, sent, size);
  if (error) return error;
  ssize_t n = bench_read_full(fd, received, size);
  if (n < 0) return (int)n;
  return (size_t)n == size ? 0 : -EPROTO;
}

/* Outside the timing: the answer must be the request. */
static int exchange_checked(int fd, const unsigned char *sent, unsigned char *received, size_t size,
                            uint64_t *elapsed_ns) {
  memset(received, 0, size);
  uint64_t start = procord_bench_now_ns();
  int error = exchange(fd, sent, received, size);
  if (elapsed_ns) *elapsed_ns = procord_bench_now_ns() - start;
  if (error) return error;
  return memcmp(sent, received, size) == 0 ? 0 : -EPROTO;
}

int procord_bench_store_and_forward(const char *peer_program, const char *const *peer_arguments,
                                    size_t size, int repeats, uint64_t *elapsed_ns) {
  if (size == 0 || size > MAX_SIZE || repeats < 0 || (repeats > 0 && !elapsed_ns)) return -EINVAL;
  unsigned char *sent = malloc(size), *received = malloc(size);
  if (!sent || !received) {
    free(sent);
    free(received);
    return -ENOMEM;
  }
  for (size_t i = 0; i < size; i++) sent[i] = (unsigned char)(i % 251 + 1);
  bench_peer_t peer;
  int error = bench_peer_start(PROCORD_BENCH_PAIR_UNIX_STREAM, peer_program, peer_arguments, &peer);
  if (!error) {
    /* The warm-up also faults in both buffers here and the peer's there. */
    error = exchange_checked(peer.fd, sent, received, size, NULL);
    for (int i = 0; i < repeats && !error; i++)
      error = exchange_checked(peer.fd, sent, received, size, &elapsed_ns[i]);
    error = bench_peer_finish(&peer, error);
  }
  free(sent);
  free(received);
  return error;
}
