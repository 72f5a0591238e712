/* Frame codec: the incremental parser and the header writer (procord/frame.h). */
#define _GNU_SOURCE
#include "wire/wire_private.h"
#include "procord/error.h"
#include "base/base_private.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

enum { STATE_SIZE, STATE_BODY, STATE_ERROR };

static _Atomic size_t default_max_message_size = PROCORD_DEFAULT_MAX_MESSAGE_SIZE;

void procord_set_default_max_message_size(size_t size) {
  atomic_store(&default_max_message_size, size ? size : PROCORD_DEFAULT_MAX_MESSAGE_SIZE);
}

size_t procord_default_max_message_size(void) { return atomic_load(&default_max_message_size); }

void procord_frame_parser_init(procord_frame_parser_t *parser, size_t max_message_size) {
  memset(parser, 0, sizeof *parser);
  parser->max_message_size =
      max_message_size ? max_message_size : procord_default_max_message_size();
  parser->state = STATE_SIZE;
}

int procord_frame_parser_new(size_t max_message_size, procord_frame_parser_t **parser) {
  procord_frame_parser_t *made = procord_allocate(sizeof *made);
  if (!made) return -ENOMEM;
  procord_frame_parser_init(made, max_message_size);
  *parser = made;
  return 0;
}

void procord_frame_parser_free(procord_frame_parser_t *parser) {
  if (!parser) return;
  procord_free(parser->body);
  procord_free(parser);
}

void procord_frame_parser_reset(procord_frame_parser_t *parser) {
  procord_free(parser->body);
  procord_frame_parser_init(parser, parser->max_message_size);
}

int procord_frame_parser_is_idle(const procord_frame_parser_t *parser) {
  return parser->state == STATE_SIZE && parser->digits == 0;
}

static int fail_parser(procord_frame_parser_t *parser, int error) {
  parser->state = STATE_ERROR;
  parser->error = error;
  return error;
}

/* Body rules of PROTOCOL.md that a receiver checks whatever the context. */
static int body_is_well_formed(unsigned char kind, const unsigned char *body, size_t length) {
  switch (kind) {
  case PROCORD_FRAME_ERROR: {
    int code;
    return procord_error_from_frame_body(body, length, &code) == 0;
  }
  case PROCORD_FRAME_PRINT: return length >= 1;
  case PROCORD_FRAME_FLUSH: return length == 1;
  case PROCORD_FRAME_REUSABLE: return length == 0;
  default: return 1;
  }
}

static int complete(procord_frame_parser_t *parser, procord_frame_t *frame) {
  if (!body_is_well_formed(parser->kind, parser->body, parser->filled))
    return fail_parser(parser, PROCORD_EILL_FORMED);
  frame->kind = parser->kind;
  frame->body = parser->body;
  frame->length = parser->filled;
  /* The body buffer is handed out until the next feed, which frees it. */
  parser->state = STATE_SIZE;
  parser->digits = 0;
  parser->size = 0;
  return 1;
}

/* Reads SIZE digits and the KIND byte; returns 1 once the header is whole. */
static int parse_header(procord_frame_parser_t *parser, const unsigned char *bytes, size_t length,
                        size_t *used) {
  size_t i = 0;
  for (; i < length; i++) {
    unsigned char c = bytes[i];
    if (c >= '0' && c <= '9') {
      if (parser->digits + 1 >= PROCORD_FRAME_MAX_SIZE_DIGITS) {
        *used = i + 1;
        return fail_parser(parser, PROCORD_ETOO_LONG);
      }
      parser->digits++;
      parser->size = parser->size * 10 + (uint64_t)(c - '0');
      if (parser->size > parser->max_message_size) {
        *used = i + 1;
        return fail_parser(parser, PROCORD_ETOO_LONG);
      }
      continue;
    }
    *used = i + 1;
    if (parser->digits == 0) return fail_parser(parser, PROCORD_EILL_FORMED);
    parser->kind = c;
    return 1;
  }
  *used = i;
  return 0;
}

int procord_frame_parser_feed(procord_frame_parser_t *parser, const void *data, size_t length,
                              size_t *consumed, procord_frame_t *frame) {
  const unsigned char *bytes = data;
  size_t at = 0;
  *consumed = 0;
  if (parser->state == STATE_ERROR) return parser->error;
  if (parser->state == STATE_SIZE && parser->body) {
    procord_free(parser->body); /* the previous frame's body, handed out last call */
    parser->body = NULL;
    parser->filled = 0;
  }
  if (parser->state == STATE_SIZE) {
    size_t used = 0;
    int r = parse_header(parser, bytes, length, &used);
    at += used;
    *consumed = at;
    if (r <= 0) return r;
    /* One allocation of the exact size, known to be within the maximum. */
    parser->body = procord_malloc_body((size_t)parser->size);
    if (!parser->body) return fail_parser(parser, -ENOMEM);
    parser->filled = 0;
    parser->state = STATE_BODY;
  }
  size_t want = (size_t)parser->size - parser->filled;
  size_t take = length - at < want ? length - at : want;
  memcpy(parser->body + parser->filled, bytes + at, take);
  parser->filled += take;
  at += take;
  *consumed = at;
  if (parser->filled < parser->size) return 0;
  return complete(parser, frame);
}

size_t procord_frame_parser_body_window(procord_frame_parser_t *parser, unsigned char **where) {
  if (parser->state != STATE_BODY) return 0;
  *where = parser->body + parser->filled;
  return (size_t)parser->size - parser->filled;
}

int procord_frame_parser_body_advance(procord_frame_parser_t *parser, size_t count,
                                      procord_frame_t *frame) {
  if (parser->state != STATE_BODY || count > (size_t)parser->size - parser->filled)
    return PROCORD_EINVAL;
  parser->filled += count;
  if (parser->filled < parser->size) return 0;
  return complete(parser, frame);
}

void *procord_frame_parser_take_body(procord_frame_parser_t *parser) {
  if (parser->state != STATE_SIZE) return NULL;
  void *body = parser->body;
  parser->body = NULL;
  parser->filled = 0;
  return body;
}

size_t procord_frame_encode_header(unsigned char kind, size_t body_length,
                                   unsigned char out[PROCORD_FRAME_HEADER_MAX]) {
  unsigned char digits[PROCORD_FRAME_MAX_SIZE_DIGITS];
  size_t n = 0;
  do {
    digits[n++] = (unsigned char)('0' + body_length % 10);
    body_length /= 10;
  } while (body_length);
  for (size_t i = 0; i < n; i++) out[i] = digits[n - 1 - i];
  out[n] = kind;
  return n + 1;
}
