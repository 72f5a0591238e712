/*
 * libFuzzer harness: the frame parser (procord/frame.h) fed arbitrary bytes.
 *
 * The input is a byte stream. A reference reading, written from the grammar
 * of docs/PROTOCOL.md and independent of frame.c, says which frames it holds
 * and where, if anywhere, it breaks. The parser must agree with it however
 * the stream is cut: all at once, one byte at a time, and in pieces whose
 * sizes come from the input's own bytes, with bodies written through the
 * body window (procord_frame_parser_body_window/advance) at times. Each
 * pass runs with the default maximum message size and with a small one.
 *
 * Checked: a call never consumes more than it was given, and consumes all
 * of it when it returns 0; a frame is returned right after its last byte,
 * with the kind, length (its SIZE) and bytes the reference found; an error
 * is the reference's, at the byte that makes it (never later, as "without
 * waiting for more" asks), and stays until reset; after a reset the parser
 * reads again; take_body hands the body over once; the header the encoder
 * writes for each frame has no leading zero and parses back to that frame.
 */
#define _GNU_SOURCE
#include "fuzz_support.h"
#include "procord/error.h"
#include "procord/frame.h"
#include "procord/memory.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- The reference reading ---- */

typedef struct ref_frame_s {
  unsigned char kind;
  size_t start;  /* offset of the body */
  size_t length; /* the SIZE */
} ref_frame_t;

typedef struct ref_s {
  ref_frame_t *frames;
  size_t count;
  int error;       /* 0, PROCORD_ETOO_LONG or PROCORD_EILL_FORMED */
  size_t error_at; /* the byte that makes the error known */
  int partial;     /* no error, and the stream ends inside a frame */
  size_t missing;  /* the stream ends inside a body: how many body bytes are missing */
} ref_t;

static int digit(uint8_t c) { return c >= '0' && c <= '9'; }

/* The per-kind body rules of procord/frame.h. */
static int body_allowed(unsigned char kind, const uint8_t *body, size_t length) {
  switch (kind) {
  case 'E': return length == 1 && body[0] >= '0' && body[0] <= '5';
  case 'P': return length >= 1;
  case 'F': return length == 1;
  case 'R': return length == 0;
  default: return 1;
  }
}

static void ref_fail(ref_t *ref, int error, size_t at) {
  ref->error = error;
  ref->error_at = at;
}

static void ref_read(ref_t *ref, const uint8_t *data, size_t n, size_t max) {
  memset(ref, 0, sizeof *ref);
  ref->frames = malloc((n / 2 + 1) * sizeof *ref->frames); /* a frame has 2 bytes at least */
  FUZZ_CHECK(ref->frames, "out of memory");
  size_t at = 0;
  while (at < n) {
    /* SIZE: 20 digits or more are too long at once; a value above the
       maximum is too long as soon as its digits show it. */
    uint64_t size = 0;
    int digits = 0;
    size_t i = at;
    for (; i < n && digit(data[i]); i++) {
      if (++digits >= 20) return ref_fail(ref, PROCORD_ETOO_LONG, i);
      size = size * 10 + (uint64_t)(data[i] - '0');
      if (size > max) return ref_fail(ref, PROCORD_ETOO_LONG, i);
    }
    if (i == n) {
      ref->partial = digits > 0;
      return;
    }
    if (digits == 0) return ref_fail(ref, PROCORD_EILL_FORMED, i);
    unsigned char kind = data[i++];
    if (n - i < size) {
      ref->partial = 1;
      ref->missing = (size_t)size - (n - i);
      return;
    }
    if (!body_allowed(kind, data + i, (size_t)size))
      return ref_fail(ref, PROCORD_EILL_FORMED, size ? i + (size_t)size - 1 : i - 1);
    ref->frames[ref->count++] = (ref_frame_t){kind, i, (size_t)size};
    at = i + (size_t)size;
  }
}

/* ---- The header writer ---- */

/* The header of a frame parses back to that frame. */
static void check_round_trip(const procord_frame_t *frame, size_t max) {
  unsigned char header[PROCORD_FRAME_HEADER_MAX];
  size_t n = procord_frame_encode_header(frame->kind, frame->length, header);
  char expected[32];
  int digits = snprintf(expected, sizeof expected, "%zu", frame->length);
  FUZZ_CHECK(n == (size_t)digits + 1 && memcmp(header, expected, (size_t)digits) == 0 &&
                 header[digits] == frame->kind,
             "header of a %zu-byte frame is %zu bytes", frame->length, n);
  procord_frame_parser_t *parser = NULL;
  FUZZ_CHECK(procord_frame_parser_new(max, &parser) == 0, "out of memory");
  procord_frame_t again;
  size_t used = 0;
  int r = procord_frame_parser_feed(parser, header, n, &used, &again);
  FUZZ_CHECK(used == n, "the header was not all consumed (%zu of %zu)", used, n);
  if (frame->length > 0) {
    FUZZ_CHECK(r == 0, "a header alone gave %d", r);
    r = procord_frame_parser_feed(parser, frame->body, frame->length, &used, &again);
    FUZZ_CHECK(used == frame->length, "the body was not all consumed");
  }
  FUZZ_CHECK(r == 1 && again.kind == frame->kind && again.length == frame->length &&
                 (frame->length == 0 || memcmp(again.body, frame->body, frame->length) == 0),
             "an encoded frame parses back as something else (%d)", r);
  procord_frame_parser_free(parser);
}

/* Headers of any length, up to SIZE_MAX (20 digits: too long to read back). */
static void check_encode_any(const uint8_t *data, size_t n) {
  uint64_t length = 0;
  memcpy(&length, data, n < sizeof length ? n : sizeof length);
  unsigned char header[PROCORD_FRAME_HEADER_MAX];
  size_t size = procord_frame_encode_header('V', (size_t)length, header);
  char expected[32];
  int digits = snprintf(expected, sizeof expected, "%zu", (size_t)length);
  FUZZ_CHECK(size == (size_t)digits + 1 && memcmp(header, expected, (size_t)digits) == 0,
             "header of %zu", (size_t)length);
  if (digits >= PROCORD_FRAME_MAX_SIZE_DIGITS) {
    procord_frame_parser_t *parser = NULL;
    FUZZ_CHECK(procord_frame_parser_new(0, &parser) == 0, "out of memory");
    procord_frame_t frame;
    size_t used;
    int r = procord_frame_parser_feed(parser, header, size, &used, &frame);
    FUZZ_CHECK(r == PROCORD_ETOO_LONG, "a 20-digit SIZE gave %d", r);
    procord_frame_parser_free(parser);
  }
}

/* ---- One pass ---- */

enum { WHOLE, BYTE_BY_BYTE, PIECES };

typedef struct pass_s {
  const uint8_t *data;
  size_t n;
  size_t max;
  int cut;
  const ref_t *ref;
  size_t control; /* the next input byte that chooses a piece */
} pass_t;

static uint8_t next_control(pass_t *p) { return p->n ? p->data[p->control++ % p->n] : 0; }

/* After an error: the same error, nothing consumed, no window, until reset;
   after the reset, frames again. */
static void check_sticky(procord_frame_parser_t *parser, pass_t *p, size_t at, int error) {
  procord_frame_t frame;
  size_t used = 1;
  int r = procord_frame_parser_feed(parser, p->data + at, p->n - at, &used, &frame);
  FUZZ_CHECK(r == error && used == 0, "after error %d, feed gave %d and used %zu", error, r, used);
  r = procord_frame_parser_feed(parser, "0V", 2, &used, &frame);
  FUZZ_CHECK(r == error && used == 0, "after error %d, a valid frame gave %d", error, r);
  unsigned char *window = NULL;
  FUZZ_CHECK(procord_frame_parser_body_window(parser, &window) == 0, "a window after an error");
  FUZZ_CHECK(procord_frame_parser_body_advance(parser, 0, &frame) == PROCORD_EINVAL,
             "advance after an error");
  FUZZ_CHECK(!procord_frame_parser_is_idle(parser), "idle after an error");
  procord_frame_parser_reset(parser);
  FUZZ_CHECK(procord_frame_parser_is_idle(parser), "not idle after a reset");
  r = procord_frame_parser_feed(parser, "1Xk", 3, &used, &frame); /* fits any maximum */
  FUZZ_CHECK(r == 1 && used == 3 && frame.kind == 'X' && frame.length == 1 && frame.body[0] == 'k',
             "a reset parser gave %d", r);
}

/* A frame came out, `at` bytes into the stream: the reference's next one? */
static void check_frame(procord_frame_parser_t *parser, pass_t *p, size_t index, size_t at,
                        const procord_frame_t *frame) {
  FUZZ_CHECK(index < p->ref->count, "frame %zu, the reference has %zu", index, p->ref->count);
  const ref_frame_t *expected = &p->ref->frames[index];
  FUZZ_CHECK(frame->kind == expected->kind && frame->length == expected->length &&
                 (frame->length == 0 ||
                  memcmp(frame->body, p->data + expected->start, frame->length) == 0),
             "frame %zu: kind %u length %zu, expected kind %u length %zu", index, frame->kind,
             frame->length, expected->kind, expected->length);
  FUZZ_CHECK(frame->body != NULL, "frame %zu has no body buffer", index);
  FUZZ_CHECK(at == expected->start + expected->length, "frame %zu returned at %zu, ends at %zu",
             index, at, expected->start + expected->length);
  FUZZ_CHECK(procord_frame_parser_is_idle(parser), "not idle after a frame");
  check_round_trip(frame, p->max);
  if (next_control(p) & 1) {
    void *body = procord_frame_parser_take_body(parser);
    FUZZ_CHECK(body == frame->body, "take_body gave another buffer");
    FUZZ_CHECK(procord_frame_parser_take_body(parser) == NULL, "take_body gave the body twice");
    procord_free(body);
  }
}

static void run_pass(pass_t *p) {
  procord_frame_parser_t *parser = NULL;
  FUZZ_CHECK(procord_frame_parser_new(p->max, &parser) == 0, "out of memory");
  size_t at = 0, frames = 0;
  while (at < p->n) {
    size_t piece = p->cut == WHOLE          ? p->n - at
                   : p->cut == BYTE_BY_BYTE ? 1
                                            : 1 + next_control(p) % 24;
    size_t end = at + (piece < p->n - at ? piece : p->n - at);
    while (at < end) {
      procord_frame_t frame;
      unsigned char *window = NULL;
      size_t missing = procord_frame_parser_body_window(parser, &window);
      int r;
      if (p->cut == PIECES && missing && (next_control(p) & 2)) {
        size_t count = end - at < missing ? end - at : missing;
        memcpy(window, p->data + at, count);
        r = procord_frame_parser_body_advance(parser, count, &frame);
        FUZZ_CHECK(r == 1 || r == PROCORD_EILL_FORMED || (r == 0 && count < missing),
                   "advance by %zu of %zu gave %d", count, missing, r);
        at += count;
      } else {
        size_t used = SIZE_MAX;
        r = procord_frame_parser_feed(parser, p->data + at, end - at, &used, &frame);
        FUZZ_CHECK(used <= end - at, "consumed %zu of %zu", used, end - at);
        FUZZ_CHECK(r != 0 || used == end - at, "returned 0 having consumed %zu of %zu", used,
                   end - at);
        FUZZ_CHECK(r == 0 || r == 1 || r == PROCORD_ETOO_LONG || r == PROCORD_EILL_FORMED,
                   "feed gave %d", r);
        at += used;
      }
      if (r == 1) {
        check_frame(parser, p, frames++, at, &frame);
      } else if (r < 0) {
        FUZZ_CHECK(r == p->ref->error, "error %d at %zu, the reference says %d", r, at,
                   p->ref->error);
        FUZZ_CHECK(at == p->ref->error_at + 1, "error after %zu bytes, known at byte %zu", at,
                   p->ref->error_at);
        FUZZ_CHECK(frames == p->ref->count, "error after %zu frames, expected %zu", frames,
                   p->ref->count);
        check_sticky(parser, p, at, r);
        procord_frame_parser_free(parser);
        return;
      }
    }
  }
  FUZZ_CHECK(p->ref->error == 0, "no error, the reference says %d at %zu", p->ref->error,
             p->ref->error_at);
  FUZZ_CHECK(frames == p->ref->count, "%zu frames, expected %zu", frames, p->ref->count);
  FUZZ_CHECK(procord_frame_parser_is_idle(parser) == !p->ref->partial, "idle is %d at the end",
             procord_frame_parser_is_idle(parser));
  unsigned char *window = NULL;
  FUZZ_CHECK(procord_frame_parser_body_window(parser, &window) == p->ref->missing,
             "the window at the end is not the missing part of the body");
  procord_frame_parser_free(parser);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
  /* The default maximum, and a small one that frames of the input can reach. */
  size_t maxima[2] = {0, n ? 1 + data[0] % 40 : 1};
  check_encode_any(data, n);
  for (int m = 0; m < 2; m++) {
    size_t max = maxima[m] ? maxima[m] : procord_default_max_message_size();
    ref_t ref;
    ref_read(&ref, data, n, max);
    for (int cut = WHOLE; cut <= PIECES; cut++) {
      pass_t pass = {data, n, maxima[m], cut, &ref, 0};
      run_pass(&pass);
    }
    free(ref.frames);
  }
  return 0;
}
