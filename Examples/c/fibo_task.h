/*
 * The task the C examples share: fibo, with its input and output as decimal
 * text, as the original library's examples have it.
 */
#ifndef PROCORD_EXAMPLE_FIBO_TASK_H
#define PROCORD_EXAMPLE_FIBO_TASK_H

#include <procord/procord.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* fibo(0) = fibo(1) = 1, fibo(n) = fibo(n-1) + fibo(n-2). */
static inline long long fibonacci(long long n) {
  long long previous = 1, current = 1;
  for (long long i = 1; i < n; i++) {
    long long next = previous + current;
    previous = current;
    current = next;
  }
  return current;
}

/* Reads a decimal number from a task's input; 0 if it is not one. */
static inline int read_decimal(const unsigned char *input, size_t length, long long *value) {
  char text[24];
  if (length == 0 || length >= sizeof text) return 0;
  memcpy(text, input, length);
  text[length] = 0;
  char *end;
  *value = strtoll(text, &end, 10);
  return *end == 0;
}

/* A reply the worker sends and frees: `kind` with `text` as its body. */
static inline void reply_text(procord_reply_t *reply, unsigned char kind, const char *text) {
  reply->kind = kind;
  reply->length = strlen(text);
  reply->body = malloc(reply->length + 1);
  if (reply->body) memcpy(reply->body, text, reply->length);
  else
    reply->length = 0;
}

/* The worker side of fibo: an `X` frame (text) for an input it refuses. */
static inline void fibo_task(void *context, const unsigned char *input, size_t length,
                             procord_reply_t *reply) {
  (void)context;
  long long n;
  if (!read_decimal(input, length, &n) || n < 0 || n > 90) {
    reply_text(reply, PROCORD_FRAME_EXCEPTION, "fibo: the input must be a number from 0 to 90");
    return;
  }
  char text[24];
  snprintf(text, sizeof text, "%lld", fibonacci(n));
  reply_text(reply, PROCORD_FRAME_VALUE, text);
}

/* Prints `fibo(N) = OUTPUT`, or why there is no output: the task's error, or
   procord_outcome_describe's sentence (a crash names its signal). `worker`
   is where the task went: this program, or a server's host:port. Returns 1
   on success. */
static inline int print_outcome(const char *input, const procord_outcome_t *outcome,
                                const char *worker) {
  switch (outcome->kind) {
  case PROCORD_OUTCOME_VALUE:
    printf("fibo(%s) = %.*s\n", input, (int)outcome->length, (const char *)outcome->body);
    return 1;
  case PROCORD_OUTCOME_EXCEPTION:
  case PROCORD_OUTCOME_UNKNOWN_EXCEPTION:
    printf("fibo(%s) raised: %.*s\n", input, (int)outcome->length, (const char *)outcome->body);
    return 0;
  default: {
    char why[1024];
    procord_outcome_describe(outcome, NULL, worker, why, sizeof why);
    printf("fibo(%s) failed: %s\n", input, why);
    return 0;
  }
  }
}

#endif
