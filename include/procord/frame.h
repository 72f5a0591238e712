/*
 * procord/frame.h: the frame codec of the Procord wire protocol.
 *
 * A connection carries frames `SIZE KIND BODY` (see docs/PROTOCOL.md): SIZE is
 * the decimal length of BODY, KIND one byte that is not a digit. The parser
 * here is incremental: feed it bytes in any split, one byte at a time
 * included, and it hands back whole frames. It enforces the receiver's limits
 * of the protocol: a SIZE above the maximum message size is "message too long"
 * as soon as the SIZE is known, before any of the body is buffered; 20 or more
 * digits with no KIND yet is "message too long" at once; a frame that starts
 * with a byte that is not a digit is "ill-formed".
 */
#ifndef PROCORD_FRAME_H
#define PROCORD_FRAME_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The frame kinds of PROTOCOL.md. */
enum procord_frame_kind {
  PROCORD_FRAME_TASK = 'T',              /* task name, main program to worker */
  PROCORD_FRAME_VALUE = 'V',             /* serialized input or output */
  PROCORD_FRAME_EXCEPTION = 'X',         /* serialized error, worker to main */
  PROCORD_FRAME_UNKNOWN_EXCEPTION = 'U', /* readable text of an error */
  PROCORD_FRAME_ERROR = 'E',             /* protocol error, one digit */
  PROCORD_FRAME_PRINT = 'P',             /* destination byte, then text */
  PROCORD_FRAME_FLUSH = 'F',             /* destination byte */
  PROCORD_FRAME_REUSABLE = 'R',          /* extension: `0R`, the worker takes another task */
  PROCORD_FRAME_AUTH = 'A', /* extension: shared-secret authentication (procord/security.h) */
};

/*
 * The maximum message size (bytes of one BODY) used when none is given:
 * 64 MiB. The original library had no limit; an unbounded buffer lets any
 * peer exhaust memory, so this project has a finite, configurable one.
 */
#define PROCORD_DEFAULT_MAX_MESSAGE_SIZE ((size_t)64 * 1024 * 1024)

/* A SIZE of this many digits (or more) with no KIND yet is too long. */
#define PROCORD_FRAME_MAX_SIZE_DIGITS 20

/* The longest header a writer emits: 20 digits and a KIND byte. */
#define PROCORD_FRAME_HEADER_MAX 21

/*
 * Sets the process-wide default maximum message size, used by parsers and
 * connections created afterwards with a max_message_size of 0. `size` 0
 * restores PROCORD_DEFAULT_MAX_MESSAGE_SIZE. Thread-safe.
 */
void procord_set_default_max_message_size(size_t size);

/* Returns the process-wide default maximum message size. Thread-safe. */
size_t procord_default_max_message_size(void);

/* A complete frame. `body` stays valid until the next call on its parser. */
typedef struct procord_frame_s {
  unsigned char kind;
  const unsigned char *body;
  size_t length;
} procord_frame_t;

/* An incremental frame parser (opaque: made by procord_frame_parser_new). */
typedef struct procord_frame_parser_s procord_frame_parser_t;

/*
 * Makes a parser with a maximum message size; 0 means the process-wide
 * default (procord_default_max_message_size()). Stores it in `*parser`; the
 * caller frees it with procord_frame_parser_free. Returns 0 or -ENOMEM.
 */
int procord_frame_parser_new(size_t max_message_size, procord_frame_parser_t **parser);

/* Frees the parser and the body buffer it holds (a body taken with
   procord_frame_parser_take_body is the taker's). NULL is ignored. */
void procord_frame_parser_free(procord_frame_parser_t *parser);

/* Frees the buffer the parser holds and returns it to its initial state
   (its maximum message size kept). */
void procord_frame_parser_reset(procord_frame_parser_t *parser);

/*
 * Feeds up to `length` bytes. Stores in `*consumed` how many bytes it used and
 * returns:
 *   1   a frame is complete and stored in `*frame` (bytes after it are not
 *       consumed: call again with the rest);
 *   0   all bytes were consumed and no frame is complete yet;
 *   PROCORD_ETOO_LONG, PROCORD_EILL_FORMED  a protocol error; the parser
 *       stays in that error until reset;
 *   -ENOMEM  the body buffer could not be allocated.
 * Per kind, bodies are checked as PROTOCOL.md says: an `E` body must be one
 * digit '0'..'5', a `P` body must not be empty, an `F` body must be exactly
 * one byte, an `R` body must be empty; anything else is PROCORD_EILL_FORMED.
 * Bodies of other non-digit kinds are accepted as they are: whether a kind is
 * expected is for the caller to decide.
 */
int procord_frame_parser_feed(procord_frame_parser_t *parser, const void *data, size_t length,
                              size_t *consumed, procord_frame_t *frame);

/*
 * Lets a reader read(2) a body straight into its final buffer, with no copy:
 * when the parser is inside a body, stores where the next body bytes go in
 * `*where` and returns how many are still missing; returns 0 otherwise.
 */
size_t procord_frame_parser_body_window(procord_frame_parser_t *parser, unsigned char **where);

/*
 * Records that `count` bytes (at most what procord_frame_parser_body_window
 * returned) were written into the window. Returns 1 when that completed the
 * frame (stored in `*frame`), 0 when more is missing, PROCORD_EILL_FORMED for
 * a body the kind does not allow, or PROCORD_EINVAL (changing nothing) when
 * the parser is not in a body or `count` is larger than the window.
 */
int procord_frame_parser_body_advance(procord_frame_parser_t *parser, size_t count,
                                      procord_frame_t *frame);

/*
 * Takes ownership of the body of the frame the last call returned: the caller
 * gives it back with procord_free (procord/memory.h; free() does the same
 * unless the program set an allocator). Returns NULL if there is none (or it
 * was taken already). Saves a copy of large payloads.
 */
void *procord_frame_parser_take_body(procord_frame_parser_t *parser);

/* Returns true when the parser is between frames (no partial frame held). */
int procord_frame_parser_is_idle(const procord_frame_parser_t *parser);

/*
 * Writes the header of a frame (`SIZE KIND`, no leading zeros) into `out`,
 * which must hold PROCORD_FRAME_HEADER_MAX bytes, and returns its length.
 */
size_t procord_frame_encode_header(unsigned char kind, size_t body_length,
                                   unsigned char out[PROCORD_FRAME_HEADER_MAX]);

#ifdef __cplusplus
}
#endif

#endif
