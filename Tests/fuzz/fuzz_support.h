/*
 * What the libFuzzer harnesses of Tests/fuzz share: a check that aborts with
 * a message (libFuzzer then saves the input), the optional configuration
 * letter at the start of an input, and a count of this process's open
 * descriptors.
 */
#ifndef PROCORD_FUZZ_SUPPORT_H
#define PROCORD_FUZZ_SUPPORT_H

#include <dirent.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A broken invariant is a finding: say which, then abort so that libFuzzer
   saves the input and prints the stack. */
#define FUZZ_CHECK(condition, ...)                                                                 \
  do {                                                                                             \
    if (!(condition)) {                                                                            \
      fprintf(stderr, "\n%s:%d: FUZZ_CHECK(%s) failed: ", __FILE__, __LINE__, #condition);         \
      fprintf(stderr, __VA_ARGS__);                                                                \
      fprintf(stderr, "\n");                                                                       \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

/*
 * An input may start with a letter 'a'..'p' that chooses the harness's
 * options (4 bits, the letter minus 'a'); the rest is the peer's bytes. A
 * frame stream starts with a digit, so a seed such as `5Thello` is used as
 * it is, with the options of 'a' (0), and `d4Techo...` names its options in
 * one readable letter.
 */
static inline unsigned fuzz_options(const uint8_t **data, size_t *size) {
  if (*size > 0 && (*data)[0] >= 'a' && (*data)[0] <= 'p') {
    unsigned options = (unsigned)((*data)[0] - 'a');
    (*data)++;
    (*size)--;
    return options;
  }
  return 0;
}

/* A growing byte buffer: what a peer or a callback received. */
typedef struct bytes_s {
  unsigned char *data;
  size_t length, capacity;
} bytes_t;

static inline void append(bytes_t *b, const void *data, size_t length) {
  if (b->length + length > b->capacity) {
    size_t capacity = b->capacity ? b->capacity : 256;
    while (capacity < b->length + length) capacity *= 2;
    b->data = realloc(b->data, capacity);
    FUZZ_CHECK(b->data, "out of memory");
    b->capacity = capacity;
  }
  if (length) memcpy(b->data + b->length, data, length);
  b->length += length;
}

/* How many descriptors this process has open (those of the directory
   stream it reads are not counted). */
static inline int fuzz_count_descriptors(void) {
  DIR *directory = opendir("/proc/self/fd");
  if (!directory) return -1;
  int count = 0;
  while (readdir(directory)) count++;
  closedir(directory);
  return count;
}

/* Lists the open descriptors and what they are, on stderr. */
static inline void fuzz_list_descriptors(void) {
  DIR *directory = opendir("/proc/self/fd");
  if (!directory) return;
  struct dirent *entry;
  while ((entry = readdir(directory))) {
    if (entry->d_name[0] == '.') continue;
    char path[300], target[256];
    snprintf(path, sizeof path, "/proc/self/fd/%s", entry->d_name);
    ssize_t n = readlink(path, target, sizeof target - 1);
    target[n > 0 ? n : 0] = 0;
    fprintf(stderr, "  fd %s -> %s\n", entry->d_name, target);
  }
  closedir(directory);
}

/*
 * Checks that the process has as many descriptors open as `before`, counted
 * when the input started: a harness calls it at the end of each input, once
 * everything of that input is closed. (Counted per input, not against the
 * first: libFuzzer itself opens some between inputs, for the symbolizer
 * that names newly covered functions.)
 */
static inline void fuzz_check_descriptors(int before) {
  int now = fuzz_count_descriptors();
  if (now != before) fuzz_list_descriptors();
  FUZZ_CHECK(now == before, "%d descriptors open, %d when the input started", now, before);
}

#endif
