/*
 * peer.c: the peer side of the floors, run by the benchmark program started
 * again with `--floor-peer MODE`, on descriptor 3.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bench_private.h"

/* 1 byte in, the same byte out, until the end of the stream. */
static int echo_1(int fd) {
  for (;;) {
    unsigned char byte;
    ssize_t n = bench_read_full(fd, &byte, 1);
    if (n <= 0) return (int)n;
    int error = bench_write_full(fd, &byte, 1);
    if (error) return error;
  }
}

/* Reads a message's 8-byte little-endian length. Returns 1, 0 at a clean
   end of stream, or a negative error. */
static int read_length(int fd, uint64_t *length) {
  unsigned char bytes[8];
  ssize_t n = bench_read_full(fd, bytes, sizeof bytes);
  if (n < 0) return (int)n;
  if (n == 0) return 0;
  if (n < (ssize_t)sizeof bytes) return -ECONNRESET;
  *length = 0;
  for (int i = 7; i >= 0; i--) *length = *length << 8 | bytes[i];
  return 1;
}

/* A whole message in, then the whole message out: the shape of a task. */
static int store_and_forward(int fd) {
  unsigned char *buffer = NULL;
  size_t capacity = 0;
  int error;
  for (;;) {
    uint64_t length = 0;
    error = read_length(fd, &length);
    if (error <= 0) break;
    if (length > SIZE_MAX) {
      error = -ENOMEM;
      break;
    }
    if (length > capacity) {
      unsigned char *grown = realloc(buffer, (size_t)length);
      if (!grown) {
        error = -ENOMEM;
        break;
      }
      buffer = grown;
      capacity = (size_t)length;
    }
    ssize_t n = bench_read_full(fd, buffer, (size_t)length);
    if (n < 0 || (uint64_t)n < length) {
      error = n < 0 ? (int)n : -ECONNRESET;
      break;
    }
    if ((error = bench_write_full(fd, buffer, (size_t)length))) break;
  }
  free(buffer);
  return error;
}

int procord_bench_peer_run(const char *mode, int fd) {
  if (!mode) return -EINVAL;
  if (strcmp(mode, "echo-1") == 0) return echo_1(fd);
  if (strcmp(mode, "store-and-forward") == 0) return store_and_forward(fd);
  return -EINVAL;
}
