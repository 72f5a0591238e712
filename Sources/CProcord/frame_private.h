/*
 * The frame parser's insides (procord/frame.h keeps them opaque): for the
 * core's own readers (a connection, a worker, a server's gate), which hold
 * a parser in their own struct instead of allocating one.
 */
#ifndef PROCORD_FRAME_PRIVATE_H
#define PROCORD_FRAME_PRIVATE_H

#include "procord/frame.h"

#include <stddef.h>
#include <stdint.h>

struct procord_frame_parser_s {
  size_t max_message_size;
  int state;
  int digits;
  uint64_t size;
  unsigned char kind;
  unsigned char *body;
  size_t filled;
  int error;
};

/*
 * Initializes a parser the caller holds with a maximum message size (0: the
 * process-wide default). procord_frame_parser_reset releases the body it
 * may hold, and must be called before the parser's memory goes.
 */
void procord_frame_parser_init(procord_frame_parser_t *parser, size_t max_message_size);

#endif
