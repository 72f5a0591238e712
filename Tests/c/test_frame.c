#define _GNU_SOURCE
/*
 * The frame codec (procord/frame.h): the incremental parser, its limits, its
 * zero-copy body window, and the header writer.
 */
#include "check.h"
#include "procord/error.h"
#include "procord/frame.h"
#include "procord/memory.h"

#include <stdint.h>
#include <stdlib.h>

/* ---- Helpers: feed a stream and keep copies of the frames that come out ---- */

#define MAX_FRAMES 32
#define MAX_BODY 512

typedef struct {
  unsigned char kind;
  unsigned char body[MAX_BODY];
  size_t length;
} got_frame_t;

typedef struct {
  got_frame_t frames[MAX_FRAMES];
  int count;
  int error; /* the first negative result of the parser, or 0 */
} got_t;

static void keep(got_t *got, const procord_frame_t *frame) {
  if (got->count >= MAX_FRAMES || frame->length > MAX_BODY) {
    got->error = -1; /* the test asked for more than the helper holds */
    return;
  }
  got_frame_t *kept = &got->frames[got->count++];
  kept->kind = frame->kind;
  kept->length = frame->length;
  if (frame->length) memcpy(kept->body, frame->body, frame->length);
}

/* A new parser of maximum `max`, freed with procord_frame_parser_free. */
static procord_frame_parser_t *new_parser(size_t max) {
  procord_frame_parser_t *parser = NULL;
  if (procord_frame_parser_new(max, &parser) != 0)
    abort(); /* out of memory: the test fails by its name */
  return parser;
}

/* Feeds all of `data` (stopping at the first error) and keeps every frame. */
static void feed_all(procord_frame_parser_t *parser, const void *data, size_t length, got_t *got) {
  const unsigned char *bytes = data;
  while (length > 0 && !got->error) {
    size_t used = 0;
    procord_frame_t frame;
    int r = procord_frame_parser_feed(parser, bytes, length, &used, &frame);
    if (used > length) {
      got->error = -2;
      return;
    }
    bytes += used;
    length -= used;
    if (r < 0) got->error = r;
    else if (r == 1)
      keep(got, &frame);
    else if (used == 0)
      got->error = -3; /* no progress and no frame: a parser bug */
  }
}

/* Parses one whole buffer with a fresh parser of maximum `max`. */
static got_t parse(const void *data, size_t length, size_t max) {
  procord_frame_parser_t *parser = new_parser(max);
  got_t got = {0};
  feed_all(parser, data, length, &got);
  procord_frame_parser_free(parser);
  return got;
}

#define PARSE(literal) parse((literal), sizeof(literal) - 1, 0)

/* The whole of `literal` gives no frame, only PROCORD_EILL_FORMED. */
#define CHECK_ILL_FORMED(literal)                                                                  \
  do {                                                                                             \
    got_t ill_formed = PARSE(literal);                                                             \
    CHECK_EQ_INT(ill_formed.count, 0);                                                             \
    CHECK_EQ_INT(ill_formed.error, PROCORD_EILL_FORMED);                                           \
  } while (0)

static int same_frames(const got_t *a, const got_t *b) {
  if (a->count != b->count || a->error != b->error) return 0;
  for (int i = 0; i < a->count; i++) {
    if (a->frames[i].kind != b->frames[i].kind || a->frames[i].length != b->frames[i].length ||
        memcmp(a->frames[i].body, b->frames[i].body, a->frames[i].length) != 0)
      return 0;
  }
  return 1;
}

/* Feeds one complete frame in one call; returns the result, frame and consumed count. */
static int feed_once(const char *data, size_t length, size_t max, procord_frame_t *frame,
                     size_t *consumed, procord_frame_parser_t **parser) {
  *parser = new_parser(max);
  return procord_frame_parser_feed(*parser, data, length, consumed, frame);
}

/* Feeds `data` in one call to a fresh parser of maximum `max`, then frees it; returns the result.
 */
static int feed_once_then_free(const char *data, size_t length, size_t max, size_t *consumed) {
  procord_frame_parser_t *parser = NULL;
  procord_frame_t frame;
  int result = feed_once(data, length, max, &frame, consumed, &parser);
  procord_frame_parser_free(parser);
  return result;
}

/* One call on a fresh parser fails with `error` after consuming `expected_consumed` bytes. */
#define CHECK_FEED_ONCE_FAILS(literal, max, error, expected_consumed)                              \
  do {                                                                                             \
    size_t consumed = 0;                                                                           \
    CHECK_EQ_INT(feed_once_then_free((literal), sizeof(literal) - 1, (max), &consumed), (error));  \
    CHECK_EQ_INT(consumed, (expected_consumed));                                                   \
  } while (0)

/* A stream of many frames: every kind, binary bodies, empty bodies, leading zeros. */
static const char stream[] = "5Thello"
                             "1V5"
                             "0V"
                             "4X\0a\0b"
                             "7Uit fell"
                             "8POmessage"
                             "1FE"
                             "0R"
                             "1E3"
                             "005Tworld"
                             "2P7x"
                             "12V0123456789ab";
#define STREAM_LENGTH (sizeof stream - 1)
#define STREAM_FRAMES 12

/* ---- Every kind parses ---- */

static void task_frame_parses(void) {
  procord_frame_parser_t *parser = NULL;
  procord_frame_t frame;
  size_t consumed = 99;
  CHECK_EQ_INT(feed_once("5Thello", 7, 0, &frame, &consumed, &parser), 1);
  CHECK_EQ_INT(consumed, 7);
  CHECK_EQ_INT(frame.kind, 'T');
  CHECK_BYTES(frame.body, frame.length, "hello");
  procord_frame_parser_free(parser);
}

static void every_kind_parses(void) {
  got_t got = PARSE("1Ta1Vb1Xc1Ud1E02POa1FO0R");
  CHECK_EQ_INT(got.error, 0);
  CHECK_EQ_INT(got.count, 8);
  const char kinds[] = "TVXUEPFR";
  for (int i = 0; i < 8; i++) CHECK_EQ_INT(got.frames[i].kind, kinds[i]);
  CHECK_BYTES(got.frames[0].body, got.frames[0].length, "a");
  CHECK_BYTES(got.frames[5].body, got.frames[5].length, "Oa");
  CHECK_BYTES(got.frames[6].body, got.frames[6].length, "O");
  CHECK_EQ_INT(got.frames[7].length, 0);
}

static void kinds_outside_the_table_are_left_to_the_caller(void) {
  got_t got = PARSE("3Zabc0\n");
  CHECK_EQ_INT(got.error, 0);
  CHECK_EQ_INT(got.count, 2);
  CHECK_EQ_INT(got.frames[0].kind, 'Z');
  CHECK_BYTES(got.frames[0].body, got.frames[0].length, "abc");
  CHECK_EQ_INT(got.frames[1].kind, '\n');
}

/* ---- Bodies checked per kind ---- */

static void check_error_frame_parses(char code) {
  char text[4] = {'1', 'E', code, 0};
  got_t got = parse(text, 3, 0);
  CHECK_EQ_INT(got.error, 0);
  CHECK_EQ_INT(got.count, 1);
  CHECK_EQ_INT(got.frames[0].kind, 'E');
  CHECK_EQ_INT(got.frames[0].length, 1);
  CHECK_EQ_INT(got.frames[0].body[0], code);
}

static void error_frame_with_code_0_parses(void) { check_error_frame_parses('0'); }
static void error_frame_with_code_1_parses(void) { check_error_frame_parses('1'); }
/* E2 is "ill-formed message", the code the parser itself reports: still a valid frame. */
static void error_frame_with_code_2_parses(void) { check_error_frame_parses('2'); }
static void error_frame_with_code_3_parses(void) { check_error_frame_parses('3'); }
static void error_frame_with_code_4_parses(void) { check_error_frame_parses('4'); }
static void error_frame_with_code_5_parses(void) { check_error_frame_parses('5'); }

static void error_frame_with_code_6_is_ill_formed(void) { CHECK_ILL_FORMED("1E6"); }

static void error_frame_with_two_digits_is_ill_formed(void) { CHECK_ILL_FORMED("2E00"); }

static void error_frame_with_empty_body_is_ill_formed(void) { CHECK_ILL_FORMED("0E"); }

static void error_frame_with_a_letter_is_ill_formed(void) { CHECK_ILL_FORMED("1Ex"); }

static void print_frame_with_empty_body_is_ill_formed(void) { CHECK_ILL_FORMED("0P"); }

static void print_frame_with_destination_only_parses(void) {
  got_t got = PARSE("1PO");
  CHECK_EQ_INT(got.error, 0);
  CHECK_EQ_INT(got.count, 1);
  CHECK_BYTES(got.frames[0].body, got.frames[0].length, "O");
}

static void flush_frame_with_one_byte_parses(void) {
  got_t got = PARSE("1FE1F7");
  CHECK_EQ_INT(got.error, 0);
  CHECK_EQ_INT(got.count, 2);
  CHECK_BYTES(got.frames[1].body, got.frames[1].length, "7");
}

static void flush_frame_with_empty_body_is_ill_formed(void) { CHECK_ILL_FORMED("0F"); }

static void flush_frame_with_two_bytes_is_ill_formed(void) { CHECK_ILL_FORMED("2FOE"); }

static void reusable_frame_with_a_body_is_ill_formed(void) { CHECK_ILL_FORMED("1Rx"); }

static void ill_formed_body_consumes_the_frame(void) {
  CHECK_FEED_ONCE_FAILS("2E00rest", 0, PROCORD_EILL_FORMED, 4);
}

/* ---- The examples of PROTOCOL.md ---- */

static void protocol_example_task_hello(void) {
  got_t got = PARSE("5Thello");
  CHECK_EQ_INT(got.error, 0);
  CHECK_EQ_INT(got.count, 1);
  CHECK_EQ_INT(got.frames[0].kind, PROCORD_FRAME_TASK);
  CHECK_BYTES(got.frames[0].body, got.frames[0].length, "hello");
}

static void protocol_example_error_code_2(void) {
  got_t got = PARSE("1E2");
  CHECK_EQ_INT(got.error, 0);
  CHECK_EQ_INT(got.count, 1);
  CHECK_EQ_INT(got.frames[0].kind, PROCORD_FRAME_ERROR);
  int code = 0;
  CHECK_EQ_INT(procord_error_from_frame_body(got.frames[0].body, got.frames[0].length, &code), 0);
  CHECK_EQ_INT(code, PROCORD_EILL_FORMED);
}

static void protocol_example_print_message(void) {
  got_t got = PARSE("8POmessage");
  CHECK_EQ_INT(got.error, 0);
  CHECK_EQ_INT(got.count, 1);
  CHECK_EQ_INT(got.frames[0].kind, PROCORD_FRAME_PRINT);
  CHECK_BYTES(got.frames[0].body, got.frames[0].length, "Omessage");
}

static void bytes_after_a_frame_are_not_consumed(void) {
  procord_frame_parser_t *parser = NULL;
  procord_frame_t frame;
  size_t consumed = 0;
  CHECK_EQ_INT(feed_once("5Thelloworld", 12, 0, &frame, &consumed, &parser), 1);
  CHECK_EQ_INT(consumed, 7);
  CHECK_BYTES(frame.body, frame.length, "hello");
  procord_frame_parser_free(parser);
}

/* ---- Bodies and sizes ---- */

static void body_may_hold_nul_bytes(void) {
  got_t got = parse("5V\0a\0\0b", 7, 0);
  CHECK_EQ_INT(got.error, 0);
  CHECK_EQ_INT(got.count, 1);
  CHECK_EQ_INT(got.frames[0].length, 5);
  CHECK(memcmp(got.frames[0].body, "\0a\0\0b", 5) == 0);
}

static void body_may_hold_every_byte_value(void) {
  unsigned char data[4 + 256];
  memcpy(data, "256V", 4);
  for (int i = 0; i < 256; i++) data[4 + i] = (unsigned char)i;
  got_t got = parse(data, sizeof data, 0);
  CHECK_EQ_INT(got.error, 0);
  CHECK_EQ_INT(got.count, 1);
  CHECK_EQ_INT(got.frames[0].length, 256);
  CHECK(memcmp(got.frames[0].body, data + 4, 256) == 0);
}

static void empty_value_body_parses(void) {
  procord_frame_parser_t *parser = NULL;
  procord_frame_t frame;
  size_t consumed = 0;
  CHECK_EQ_INT(feed_once("0V", 2, 0, &frame, &consumed, &parser), 1);
  CHECK_EQ_INT(consumed, 2);
  CHECK_EQ_INT(frame.kind, 'V');
  CHECK_EQ_INT(frame.length, 0);
  procord_frame_parser_free(parser);
}

static void leading_zeros_are_accepted(void) {
  got_t got = PARSE("005Thello");
  CHECK_EQ_INT(got.error, 0);
  CHECK_EQ_INT(got.count, 1);
  CHECK_BYTES(got.frames[0].body, got.frames[0].length, "hello");
}

static void partial_frame_is_not_complete(void) {
  procord_frame_parser_t *parser = NULL;
  procord_frame_t frame;
  size_t consumed = 0;
  CHECK_EQ_INT(feed_once("5Thel", 5, 0, &frame, &consumed, &parser), 0);
  CHECK_EQ_INT(consumed, 5);
  CHECK_EQ_INT(procord_frame_parser_feed(parser, "lo", 2, &consumed, &frame), 1);
  CHECK_EQ_INT(consumed, 2);
  CHECK_BYTES(frame.body, frame.length, "hello");
  procord_frame_parser_free(parser);
}

/* ---- Any split of a stream gives the same frames ---- */

static void whole_stream_gives_every_frame(void) {
  got_t got = parse(stream, STREAM_LENGTH, 0);
  CHECK_EQ_INT(got.error, 0);
  CHECK_EQ_INT(got.count, STREAM_FRAMES);
  CHECK_EQ_INT(got.frames[3].kind, 'X');
  CHECK_EQ_INT(got.frames[3].length, 4);
  CHECK(memcmp(got.frames[3].body, "\0a\0b", 4) == 0);
  CHECK_BYTES(got.frames[9].body, got.frames[9].length, "world");
  CHECK_BYTES(got.frames[11].body, got.frames[11].length, "0123456789ab");
}

static void every_split_in_two_gives_the_same_frames(void) {
  got_t whole = parse(stream, STREAM_LENGTH, 0);
  for (size_t at = 0; at <= STREAM_LENGTH; at++) {
    procord_frame_parser_t *parser = new_parser(0);
    got_t got = {0};
    feed_all(parser, stream, at, &got);
    feed_all(parser, stream + at, STREAM_LENGTH - at, &got);
    CHECK(procord_frame_parser_is_idle(parser));
    procord_frame_parser_free(parser);
    if (!same_frames(&whole, &got)) fprintf(stderr, "    split at %zu\n", at);
    CHECK(same_frames(&whole, &got));
  }
}

static void every_split_in_three_gives_the_same_frames(void) {
  got_t whole = parse(stream, STREAM_LENGTH, 0);
  for (size_t a = 0; a <= STREAM_LENGTH; a++) {
    for (size_t b = a; b <= STREAM_LENGTH; b++) {
      procord_frame_parser_t *parser = new_parser(0);
      got_t got = {0};
      feed_all(parser, stream, a, &got);
      feed_all(parser, stream + a, b - a, &got);
      feed_all(parser, stream + b, STREAM_LENGTH - b, &got);
      procord_frame_parser_free(parser);
      if (!same_frames(&whole, &got)) fprintf(stderr, "    splits at %zu, %zu\n", a, b);
      CHECK(same_frames(&whole, &got));
    }
  }
}

static void one_byte_at_a_time_gives_the_same_frames(void) {
  got_t whole = parse(stream, STREAM_LENGTH, 0);
  procord_frame_parser_t *parser = new_parser(0);
  got_t got = {0};
  for (size_t i = 0; i < STREAM_LENGTH; i++) feed_all(parser, stream + i, 1, &got);
  procord_frame_parser_free(parser);
  CHECK(same_frames(&whole, &got));
}

static void each_chunk_size_gives_the_same_frames(void) {
  got_t whole = parse(stream, STREAM_LENGTH, 0);
  for (size_t chunk = 1; chunk <= STREAM_LENGTH; chunk++) {
    procord_frame_parser_t *parser = new_parser(0);
    got_t got = {0};
    for (size_t at = 0; at < STREAM_LENGTH; at += chunk) {
      size_t n = STREAM_LENGTH - at < chunk ? STREAM_LENGTH - at : chunk;
      feed_all(parser, stream + at, n, &got);
    }
    procord_frame_parser_free(parser);
    CHECK(same_frames(&whole, &got));
  }
}

static void parser_is_idle_only_between_frames(void) {
  procord_frame_parser_t *parser = new_parser(0);
  procord_frame_t frame;
  size_t consumed;
  CHECK(procord_frame_parser_is_idle(parser));
  CHECK_EQ_INT(procord_frame_parser_feed(parser, "1", 1, &consumed, &frame), 0);
  CHECK(!procord_frame_parser_is_idle(parser));
  CHECK_EQ_INT(procord_frame_parser_feed(parser, "0V01", 4, &consumed, &frame), 0);
  CHECK(!procord_frame_parser_is_idle(parser));
  CHECK_EQ_INT(procord_frame_parser_feed(parser, "23456789", 8, &consumed, &frame), 1);
  CHECK(procord_frame_parser_is_idle(parser));
  procord_frame_parser_free(parser);
}

/* ---- Limits ---- */

static void size_above_max_is_too_long_at_the_digit_that_exceeds_it(void) {
  /* With a maximum of 100, "10" is fine and "101" is over: stop at the '1'. */
  CHECK_FEED_ONCE_FAILS("101Vxxxxxxxx", 100, PROCORD_ETOO_LONG, 3);
}

static void size_with_more_digits_than_max_is_too_long_before_kind(void) {
  CHECK_FEED_ONCE_FAILS("1000", 100, PROCORD_ETOO_LONG, 4);
}

static void size_above_max_is_too_long_when_fed_digit_by_digit(void) {
  procord_frame_parser_t *parser = new_parser(100);
  procord_frame_t frame;
  size_t consumed = 0;
  CHECK_EQ_INT(procord_frame_parser_feed(parser, "1", 1, &consumed, &frame), 0);
  CHECK_EQ_INT(procord_frame_parser_feed(parser, "0", 1, &consumed, &frame), 0);
  CHECK_EQ_INT(procord_frame_parser_feed(parser, "1", 1, &consumed, &frame), PROCORD_ETOO_LONG);
  CHECK_EQ_INT(consumed, 1);
  procord_frame_parser_free(parser);
}

static void size_equal_to_max_is_accepted(void) {
  unsigned char data[4 + 100];
  memcpy(data, "100V", 4);
  memset(data + 4, 'a', 100);
  got_t got = parse(data, sizeof data, 100);
  CHECK_EQ_INT(got.error, 0);
  CHECK_EQ_INT(got.count, 1);
  CHECK_EQ_INT(got.frames[0].length, 100);
}

static void size_with_leading_zeros_equal_to_max_is_accepted(void) {
  got_t got = PARSE("0000003Vabc");
  CHECK_EQ_INT(got.error, 0);
  got = parse("0003Vabc", 8, 3);
  CHECK_EQ_INT(got.error, 0);
  CHECK_EQ_INT(got.count, 1);
}

static void nineteen_zero_digits_then_kind_is_accepted(void) {
  got_t got = PARSE("0000000000000000000V");
  CHECK_EQ_INT(got.error, 0);
  CHECK_EQ_INT(got.count, 1);
  CHECK_EQ_INT(got.frames[0].kind, 'V');
  CHECK_EQ_INT(got.frames[0].length, 0);
}

static void nineteen_digits_with_a_value_within_max_is_accepted(void) {
  got_t got = PARSE("0000000000000000003Tabc");
  CHECK_EQ_INT(got.error, 0);
  CHECK_EQ_INT(got.count, 1);
  CHECK_BYTES(got.frames[0].body, got.frames[0].length, "abc");
}

static void twentieth_digit_is_too_long_at_once(void) {
  CHECK_FEED_ONCE_FAILS("00000000000000000000", 0, PROCORD_ETOO_LONG, 20);
}

static void twentieth_digit_is_too_long_when_fed_one_by_one(void) {
  procord_frame_parser_t *parser = new_parser(0);
  procord_frame_t frame;
  size_t consumed = 0;
  for (int i = 0; i < 19; i++)
    CHECK_EQ_INT(procord_frame_parser_feed(parser, "0", 1, &consumed, &frame), 0);
  CHECK_EQ_INT(procord_frame_parser_feed(parser, "0", 1, &consumed, &frame), PROCORD_ETOO_LONG);
  CHECK_EQ_INT(consumed, 1);
  procord_frame_parser_free(parser);
}

static void twenty_digits_are_too_long_even_with_no_maximum_in_reach(void) {
  CHECK_FEED_ONCE_FAILS("000000000000000000001V", SIZE_MAX, PROCORD_ETOO_LONG, 20);
}

static void first_byte_not_a_digit_is_ill_formed(void) {
  CHECK_FEED_ONCE_FAILS("Thello", 0, PROCORD_EILL_FORMED, 1);
}

static void sign_before_size_is_ill_formed(void) {
  CHECK_ILL_FORMED("-1Vx");
  CHECK_ILL_FORMED(" 1Vx");
}

static void kind_without_size_after_a_frame_is_ill_formed(void) {
  got_t got = PARSE("5ThelloV");
  CHECK_EQ_INT(got.count, 1);
  CHECK_EQ_INT(got.error, PROCORD_EILL_FORMED);
}

/* ---- Errors are sticky until reset ---- */

static void parser_stays_in_error_until_reset(void) {
  procord_frame_parser_t *parser = NULL;
  procord_frame_t frame;
  size_t consumed = 0;
  CHECK_EQ_INT(feed_once("x", 1, 0, &frame, &consumed, &parser), PROCORD_EILL_FORMED);
  consumed = 99;
  CHECK_EQ_INT(procord_frame_parser_feed(parser, "5Thello", 7, &consumed, &frame),
               PROCORD_EILL_FORMED);
  CHECK_EQ_INT(consumed, 0);
  CHECK_EQ_INT(procord_frame_parser_feed(parser, "5Thello", 7, &consumed, &frame),
               PROCORD_EILL_FORMED);
  procord_frame_parser_reset(parser);
  CHECK_EQ_INT(procord_frame_parser_feed(parser, "5Thello", 7, &consumed, &frame), 1);
  CHECK_BYTES(frame.body, frame.length, "hello");
  procord_frame_parser_free(parser);
}

static void too_long_stays_until_reset(void) {
  procord_frame_parser_t *parser = NULL;
  procord_frame_t frame;
  size_t consumed = 0;
  CHECK_EQ_INT(feed_once("11", 2, 10, &frame, &consumed, &parser), PROCORD_ETOO_LONG);
  CHECK_EQ_INT(procord_frame_parser_feed(parser, "1Va", 3, &consumed, &frame), PROCORD_ETOO_LONG);
  CHECK_EQ_INT(consumed, 0);
  procord_frame_parser_reset(parser);
  CHECK_EQ_INT(procord_frame_parser_feed(parser, "10Vabcdefghij", 13, &consumed, &frame), 1);
  procord_frame_parser_free(parser);
}

static void reset_keeps_the_maximum(void) {
  procord_frame_parser_t *parser = new_parser(5);
  procord_frame_parser_reset(parser);
  procord_frame_t frame;
  size_t consumed = 0;
  CHECK_EQ_INT(procord_frame_parser_feed(parser, "6", 1, &consumed, &frame), PROCORD_ETOO_LONG);
  procord_frame_parser_free(parser);
}

/* ---- The body window: a reader's zero-copy path ---- */

/*
 * Reads `data` like a reader would: `chunk` bytes at a time, straight into the
 * body window when the parser is inside a body, through feed otherwise.
 */
static got_t parse_through_window(const char *data, size_t length, size_t chunk) {
  procord_frame_parser_t *parser = new_parser(0);
  got_t got = {0};
  size_t at = 0;
  while (at < length && !got.error) {
    unsigned char *where = NULL;
    size_t missing = procord_frame_parser_body_window(parser, &where);
    size_t n = length - at < chunk ? length - at : chunk;
    if (missing) {
      if (n > missing) n = missing;
      memcpy(where, data + at, n);
      at += n;
      procord_frame_t frame;
      int r = procord_frame_parser_body_advance(parser, n, &frame);
      if (r < 0) got.error = r;
      else if (r == 1)
        keep(&got, &frame);
    } else {
      feed_all(parser, data + at, n, &got);
      at += n;
    }
  }
  procord_frame_parser_free(parser);
  return got;
}

static void body_window_delivers_the_same_frames_as_feed(void) {
  got_t whole = parse(stream, STREAM_LENGTH, 0);
  for (size_t chunk = 1; chunk <= STREAM_LENGTH; chunk++) {
    got_t got = parse_through_window(stream, STREAM_LENGTH, chunk);
    if (!same_frames(&whole, &got)) fprintf(stderr, "    chunk of %zu\n", chunk);
    CHECK(same_frames(&whole, &got));
  }
}

static void body_window_is_empty_outside_a_body(void) {
  procord_frame_parser_t *parser = new_parser(0);
  unsigned char *where = NULL;
  CHECK_EQ_INT(procord_frame_parser_body_window(parser, &where), 0);
  procord_frame_t frame;
  size_t consumed;
  CHECK_EQ_INT(procord_frame_parser_feed(parser, "12", 2, &consumed, &frame), 0);
  CHECK_EQ_INT(procord_frame_parser_body_window(parser, &where), 0);
  procord_frame_parser_free(parser);
}

static void body_window_covers_the_missing_bytes(void) {
  procord_frame_parser_t *parser = new_parser(0);
  procord_frame_t frame;
  size_t consumed;
  CHECK_EQ_INT(procord_frame_parser_feed(parser, "10Vabc", 6, &consumed, &frame), 0);
  unsigned char *where = NULL;
  CHECK_EQ_INT(procord_frame_parser_body_window(parser, &where), 7);
  memcpy(where, "defg", 4);
  CHECK_EQ_INT(procord_frame_parser_body_advance(parser, 4, &frame), 0);
  CHECK_EQ_INT(procord_frame_parser_body_window(parser, &where), 3);
  memcpy(where, "hij", 3);
  CHECK_EQ_INT(procord_frame_parser_body_advance(parser, 3, &frame), 1);
  CHECK_EQ_INT(frame.kind, 'V');
  CHECK_BYTES(frame.body, frame.length, "abcdefghij");
  CHECK_EQ_INT(procord_frame_parser_body_window(parser, &where), 0);
  procord_frame_parser_free(parser);
}

static void body_advance_checks_the_body(void) {
  procord_frame_parser_t *parser = new_parser(0);
  procord_frame_t frame;
  size_t consumed;
  CHECK_EQ_INT(procord_frame_parser_feed(parser, "1E", 2, &consumed, &frame), 0);
  unsigned char *where = NULL;
  CHECK_EQ_INT(procord_frame_parser_body_window(parser, &where), 1);
  *where = '9';
  CHECK_EQ_INT(procord_frame_parser_body_advance(parser, 1, &frame), PROCORD_EILL_FORMED);
  CHECK_EQ_INT(procord_frame_parser_feed(parser, "0V", 2, &consumed, &frame), PROCORD_EILL_FORMED);
  procord_frame_parser_free(parser);
}

/* ---- Taking a body ---- */

static void take_body_transfers_ownership(void) {
  procord_frame_parser_t *parser = NULL;
  procord_frame_t frame;
  size_t consumed = 0;
  CHECK_EQ_INT(feed_once("5Thello3Vabc", 12, 0, &frame, &consumed, &parser), 1);
  unsigned char *body = procord_frame_parser_take_body(parser);
  CHECK(body != NULL);
  CHECK(body == frame.body);
  CHECK_EQ_INT(procord_frame_parser_take_body(parser) == NULL, 1);
  /* The parser goes on without the body, and must not free it. */
  CHECK_EQ_INT(procord_frame_parser_feed(parser, "3Vabc", 5, &consumed, &frame), 1);
  CHECK_BYTES(frame.body, frame.length, "abc");
  CHECK(memcmp(body, "hello", 5) == 0);
  procord_free(body);
  procord_frame_parser_free(parser);
}

static void take_body_after_body_advance_transfers_ownership(void) {
  procord_frame_parser_t *parser = new_parser(0);
  procord_frame_t frame;
  size_t consumed;
  CHECK_EQ_INT(procord_frame_parser_feed(parser, "3V", 2, &consumed, &frame), 0);
  unsigned char *where = NULL;
  CHECK_EQ_INT(procord_frame_parser_body_window(parser, &where), 3);
  memcpy(where, "xyz", 3);
  CHECK_EQ_INT(procord_frame_parser_body_advance(parser, 3, &frame), 1);
  unsigned char *body = procord_frame_parser_take_body(parser);
  CHECK(body != NULL);
  CHECK(memcmp(body, "xyz", 3) == 0);
  procord_frame_parser_free(parser);
  CHECK(memcmp(body, "xyz", 3) == 0);
  procord_free(body);
}

static void take_body_with_no_frame_is_null(void) {
  procord_frame_parser_t *parser = new_parser(0);
  CHECK(procord_frame_parser_take_body(parser) == NULL);
  procord_frame_t frame;
  size_t consumed;
  CHECK_EQ_INT(procord_frame_parser_feed(parser, "5Thel", 5, &consumed, &frame), 0);
  CHECK(procord_frame_parser_take_body(parser) == NULL);
  procord_frame_parser_free(parser);
}

/* ---- Making and freeing ---- */

/* A parser freed in the middle of a body frees that body too (the
   sanitized run's leak check fails otherwise). */
static void free_in_the_middle_of_a_body_frees_it(void) {
  procord_frame_parser_t *parser = new_parser(0);
  procord_frame_t frame;
  size_t consumed;
  CHECK_EQ_INT(procord_frame_parser_feed(parser, "10Vabc", 6, &consumed, &frame), 0);
  CHECK(!procord_frame_parser_is_idle(parser));
  procord_frame_parser_free(parser);
}

static void free_of_null_is_ignored(void) { procord_frame_parser_free(NULL); }

static void new_parsers_are_apart(void) {
  procord_frame_parser_t *small = new_parser(2), *large = new_parser(0);
  procord_frame_t frame;
  size_t consumed;
  CHECK(small != large);
  CHECK_EQ_INT(procord_frame_parser_feed(small, "3Vabc", 5, &consumed, &frame), PROCORD_ETOO_LONG);
  CHECK_EQ_INT(procord_frame_parser_feed(large, "3Vabc", 5, &consumed, &frame), 1);
  CHECK_BYTES(frame.body, frame.length, "abc");
  procord_frame_parser_free(small);
  procord_frame_parser_free(large);
}

/* ---- The header writer ---- */

static void encode_header_writes_zero_for_an_empty_body(void) {
  unsigned char out[PROCORD_FRAME_HEADER_MAX];
  size_t n = procord_frame_encode_header('R', 0, out);
  CHECK_BYTES(out, n, "0R");
}

static void encode_header_writes_no_leading_zeros(void) {
  unsigned char out[PROCORD_FRAME_HEADER_MAX];
  size_t n = procord_frame_encode_header('T', 5, out);
  CHECK_BYTES(out, n, "5T");
  n = procord_frame_encode_header('V', 10, out);
  CHECK_BYTES(out, n, "10V");
  n = procord_frame_encode_header('V', 65536, out);
  CHECK_BYTES(out, n, "65536V");
}

static void encode_header_of_the_largest_size_fits(void) {
  unsigned char out[PROCORD_FRAME_HEADER_MAX + 1];
  out[PROCORD_FRAME_HEADER_MAX] = 0xAA;
  size_t n = procord_frame_encode_header('V', SIZE_MAX, out);
  CHECK(n <= PROCORD_FRAME_HEADER_MAX);
  CHECK_EQ_INT(out[PROCORD_FRAME_HEADER_MAX], 0xAA);
  if (SIZE_MAX == UINT64_MAX) CHECK_BYTES(out, n, "18446744073709551615V");
}

static void encode_then_parse_round_trips(void) {
  static const size_t lengths[] = {0, 1, 9, 10, 99, 100, 65536};
  for (size_t i = 0; i < sizeof lengths / sizeof lengths[0]; i++) {
    size_t length = lengths[i];
    unsigned char *data = malloc(PROCORD_FRAME_HEADER_MAX + length);
    CHECK(data != NULL);
    size_t n = procord_frame_encode_header('V', length, data);
    CHECK(data[0] != '0' || length == 0);
    for (size_t j = 0; j < length; j++) data[n + j] = (unsigned char)(j * 7);
    procord_frame_parser_t *parser = new_parser(0);
    procord_frame_t frame;
    size_t consumed = 0;
    int r = procord_frame_parser_feed(parser, data, n + length, &consumed, &frame);
    int same = r == 1 && consumed == n + length && frame.kind == 'V' && frame.length == length &&
               memcmp(frame.body, data + n, length) == 0;
    procord_frame_parser_free(parser);
    free(data);
    if (!same) fprintf(stderr, "    length %zu\n", length);
    CHECK(same);
  }
}

/* ---- The process-wide default maximum ---- */

static void default_max_message_size_is_64_mib(void) {
  CHECK_EQ_INT(procord_default_max_message_size(), PROCORD_DEFAULT_MAX_MESSAGE_SIZE);
  CHECK_EQ_INT(PROCORD_DEFAULT_MAX_MESSAGE_SIZE, 64 * 1024 * 1024);
  procord_frame_parser_t *parser = new_parser(0);
  procord_frame_t frame;
  size_t consumed;
  CHECK_EQ_INT(procord_frame_parser_feed(parser, "67108864V", 9, &consumed, &frame), 0);
  procord_frame_parser_reset(parser);
  CHECK_EQ_INT(procord_frame_parser_feed(parser, "67108865", 8, &consumed, &frame),
               PROCORD_ETOO_LONG);
  procord_frame_parser_free(parser);
}

static void set_default_max_message_size_applies_to_parsers_initialized_with_0(void) {
  procord_set_default_max_message_size(10);
  CHECK_EQ_INT(procord_default_max_message_size(), 10);
  got_t got = PARSE("10Vabcdefghij");
  got_t over = PARSE("11Vabcdefghijk");
  procord_set_default_max_message_size(0);
  CHECK_EQ_INT(got.error, 0);
  CHECK_EQ_INT(got.count, 1);
  CHECK_EQ_INT(over.error, PROCORD_ETOO_LONG);
}

static void set_default_max_message_size_leaves_explicit_maximums_alone(void) {
  procord_set_default_max_message_size(10);
  got_t got = parse("11Vabcdefghijk", 14, 20);
  procord_set_default_max_message_size(0);
  CHECK_EQ_INT(got.error, 0);
  CHECK_EQ_INT(got.count, 1);
}

static void set_default_max_message_size_leaves_existing_parsers_alone(void) {
  procord_frame_parser_t *parser = new_parser(0);
  procord_set_default_max_message_size(10);
  procord_frame_t frame;
  size_t consumed;
  int r = procord_frame_parser_feed(parser, "11Vabcdefghijk", 14, &consumed, &frame);
  procord_set_default_max_message_size(0);
  procord_frame_parser_free(parser);
  CHECK_EQ_INT(r, 1);
}

static void set_default_max_message_size_0_restores_64_mib(void) {
  procord_set_default_max_message_size(123);
  procord_set_default_max_message_size(0);
  CHECK_EQ_INT(procord_default_max_message_size(), PROCORD_DEFAULT_MAX_MESSAGE_SIZE);
}

int main(void) {
  RUN(task_frame_parses);
  RUN(every_kind_parses);
  RUN(kinds_outside_the_table_are_left_to_the_caller);

  RUN(error_frame_with_code_0_parses);
  RUN(error_frame_with_code_1_parses);
  RUN(error_frame_with_code_2_parses);
  RUN(error_frame_with_code_3_parses);
  RUN(error_frame_with_code_4_parses);
  RUN(error_frame_with_code_5_parses);
  RUN(error_frame_with_code_6_is_ill_formed);
  RUN(error_frame_with_two_digits_is_ill_formed);
  RUN(error_frame_with_empty_body_is_ill_formed);
  RUN(error_frame_with_a_letter_is_ill_formed);
  RUN(print_frame_with_empty_body_is_ill_formed);
  RUN(print_frame_with_destination_only_parses);
  RUN(flush_frame_with_one_byte_parses);
  RUN(flush_frame_with_empty_body_is_ill_formed);
  RUN(flush_frame_with_two_bytes_is_ill_formed);
  RUN(reusable_frame_with_a_body_is_ill_formed);
  RUN(ill_formed_body_consumes_the_frame);

  RUN(protocol_example_task_hello);
  RUN(protocol_example_error_code_2);
  RUN(protocol_example_print_message);
  RUN(bytes_after_a_frame_are_not_consumed);

  RUN(body_may_hold_nul_bytes);
  RUN(body_may_hold_every_byte_value);
  RUN(empty_value_body_parses);
  RUN(leading_zeros_are_accepted);
  RUN(partial_frame_is_not_complete);

  RUN(whole_stream_gives_every_frame);
  RUN(every_split_in_two_gives_the_same_frames);
  RUN(every_split_in_three_gives_the_same_frames);
  RUN(one_byte_at_a_time_gives_the_same_frames);
  RUN(each_chunk_size_gives_the_same_frames);
  RUN(parser_is_idle_only_between_frames);

  RUN(size_above_max_is_too_long_at_the_digit_that_exceeds_it);
  RUN(size_with_more_digits_than_max_is_too_long_before_kind);
  RUN(size_above_max_is_too_long_when_fed_digit_by_digit);
  RUN(size_equal_to_max_is_accepted);
  RUN(size_with_leading_zeros_equal_to_max_is_accepted);
  RUN(nineteen_zero_digits_then_kind_is_accepted);
  RUN(nineteen_digits_with_a_value_within_max_is_accepted);
  RUN(twentieth_digit_is_too_long_at_once);
  RUN(twentieth_digit_is_too_long_when_fed_one_by_one);
  RUN(twenty_digits_are_too_long_even_with_no_maximum_in_reach);
  RUN(first_byte_not_a_digit_is_ill_formed);
  RUN(sign_before_size_is_ill_formed);
  RUN(kind_without_size_after_a_frame_is_ill_formed);

  RUN(parser_stays_in_error_until_reset);
  RUN(too_long_stays_until_reset);
  RUN(reset_keeps_the_maximum);

  RUN(body_window_delivers_the_same_frames_as_feed);
  RUN(body_window_is_empty_outside_a_body);
  RUN(body_window_covers_the_missing_bytes);
  RUN(body_advance_checks_the_body);

  RUN(take_body_transfers_ownership);
  RUN(take_body_after_body_advance_transfers_ownership);
  RUN(take_body_with_no_frame_is_null);

  RUN(free_in_the_middle_of_a_body_frees_it);
  RUN(free_of_null_is_ignored);
  RUN(new_parsers_are_apart);

  RUN(encode_header_writes_zero_for_an_empty_body);
  RUN(encode_header_writes_no_leading_zeros);
  RUN(encode_header_of_the_largest_size_fits);
  RUN(encode_then_parse_round_trips);

  RUN(default_max_message_size_is_64_mib);
  RUN(set_default_max_message_size_applies_to_parsers_initialized_with_0);
  RUN(set_default_max_message_size_leaves_explicit_maximums_alone);
  RUN(set_default_max_message_size_leaves_existing_parsers_alone);
  RUN(set_default_max_message_size_0_restores_64_mib);
  return CHECK_SUMMARY();
}
