/*
 * libFuzzer harness: the shared-secret exchange (wire_private.h,
 * procord_auth_start/procord_auth_step) of both sides, driven by arbitrary
 * frames.
 *
 * The input is a frame stream, read with the frame parser at the limit
 * either side reads with before authentication (PROCORD_AUTH_MAX_FRAME),
 * after an optional letter 'a'..'p' (fuzz_support.h) whose bits choose:
 *   bits 0-1 0 a server alone, 1 a client alone, both with a random secret
 *            the fuzzer cannot know, fed the input's frames as its peer's;
 *            2 a client and a server with the same secret, whose four frames
 *            pass through the input, which may change, replace or replay
 *            each; 3 the same with secrets that differ (as the input's
 *            first frame says)
 *   bits 2-3 the secret's length in modes 2 and 3: 16, 32, 64 or 1024 bytes
 *
 * In modes 2 and 3, each of the four frames (client nonce, server nonce,
 * client proof, server proof) is handed over as the input's next frame
 * says: kind `=` (or no frame left) as it is; `x` XORed with the frame's
 * body; `r` replaced by an earlier frame of the exchange (body[0] picks
 * which); any other kind replaced by that frame.
 *
 * Checked: neither side is ever DONE without the right proofs: a side
 * alone never is; in a relay, the server is DONE only when the secrets are
 * the same and the first three frames went through unchanged, the client
 * only when all four did; and both are DONE when nothing was changed.
 * Replies have the lengths of docs/PROTOCOL.md, a failure says why.
 */
#define _GNU_SOURCE
#include "io/io_private.h"
#include "fuzz_support.h"
#include "procord/error.h"
#include "procord/frame.h"
#include "procord/memory.h"
#include "procord/security.h"

#include <string.h>

enum { SERVER_ALONE, CLIENT_ALONE, RELAY, RELAY_OTHER_SECRET };

static const size_t secret_lengths[4] = {16, 32, 64, 1024};
static unsigned char known_secret[PROCORD_SECRET_MAX_LENGTH];
static procord_security_t *random_client, *random_server;
static procord_security_t *known_server[4], *known_client[4];

static procord_security_t *make_security(procord_security_role_t role, const unsigned char *secret,
                                         size_t length) {
  procord_security_options_t options = {.role = role, .secret = secret, .secret_length = length};
  procord_security_t *security = NULL;
  char error[256];
  FUZZ_CHECK(procord_security_new(&options, &security, error, sizeof error) == 0, "%s", error);
  return security;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  /* No zero byte: HMAC pads a short key with zeros, so a secret and the
     same secret less its trailing zeros would be one key. */
  for (size_t i = 0; i < sizeof known_secret; i++)
    known_secret[i] = (unsigned char)(1 + (i * 37 + 11) % 255);
  unsigned char secret[32];
  FILE *random = fopen("/dev/urandom", "rbe");
  FUZZ_CHECK(random && fread(secret, 1, sizeof secret, random) == sizeof secret,
             "no random secret");
  fclose(random);
  random_client = make_security(PROCORD_SECURITY_CLIENT, secret, sizeof secret);
  random_server = make_security(PROCORD_SECURITY_SERVER, secret, sizeof secret);
  for (int i = 0; i < 4; i++) {
    known_server[i] = make_security(PROCORD_SECURITY_SERVER, known_secret, secret_lengths[i]);
    known_client[i] = make_security(PROCORD_SECURITY_CLIENT, known_secret, secret_lengths[i]);
  }
  return 0;
}

/* ---- The input's frames ---- */

typedef struct owned_frame_s {
  unsigned char kind;
  unsigned char *body;
  size_t length;
} owned_frame_t;

typedef struct frames_s {
  owned_frame_t items[64];
  size_t count, next;
} frames_t;

/* Reads the input's frames (up to 64, up to the first error). */
static void read_frames(frames_t *frames, const uint8_t *data, size_t size) {
  memset(frames, 0, sizeof *frames);
  procord_frame_parser_t *parser = NULL;
  FUZZ_CHECK(procord_frame_parser_new(PROCORD_AUTH_MAX_FRAME, &parser) == 0, "out of memory");
  size_t at = 0;
  while (at < size && frames->count < sizeof frames->items / sizeof frames->items[0]) {
    procord_frame_t frame;
    size_t used = 0;
    int r = procord_frame_parser_feed(parser, data + at, size - at, &used, &frame);
    at += used;
    if (r < 0) break;
    if (r == 1) {
      owned_frame_t *kept = &frames->items[frames->count++];
      kept->kind = frame.kind;
      kept->length = frame.length;
      kept->body = procord_frame_parser_take_body(parser);
      FUZZ_CHECK(kept->body, "the parser gave no body to take");
    }
  }
  procord_frame_parser_free(parser);
}

static void free_frames(frames_t *frames) {
  for (size_t i = 0; i < frames->count; i++) procord_free(frames->items[i].body);
}

static const owned_frame_t *next_frame(frames_t *frames) {
  return frames->next < frames->count ? &frames->items[frames->next++] : NULL;
}

static procord_frame_t as_frame(const owned_frame_t *owned) {
  return (procord_frame_t){owned->kind, owned->body, owned->length};
}

/* ---- One step of one side, with the checks every step has ---- */

static procord_auth_result_t step(procord_auth_t *auth, const procord_frame_t *frame,
                                  unsigned char reply[PROCORD_AUTH_PROOF_LENGTH],
                                  size_t *reply_length) {
  const char *reason = (const char *)1;
  *reply_length = 99;
  procord_auth_result_t result = procord_auth_step(auth, frame, reply, reply_length, &reason);
  switch (result) {
  case PROCORD_AUTH_CONTINUE:
    FUZZ_CHECK(*reply_length == 32 && !reason, "CONTINUE with a reply of %zu bytes", *reply_length);
    FUZZ_CHECK(frame->kind == 'A' && frame->length == 32, "CONTINUE on a `%c` frame of %zu bytes",
               frame->kind, frame->length);
    break;
  case PROCORD_AUTH_DONE:
    FUZZ_CHECK(*reply_length == (auth->side == PROCORD_AUTH_SERVER ? 32u : 0u) && !reason,
               "DONE with a reply of %zu bytes", *reply_length);
    FUZZ_CHECK(frame->kind == 'A' && frame->length == 32, "DONE on a `%c` frame of %zu bytes",
               frame->kind, frame->length);
    break;
  case PROCORD_AUTH_FAILED:
    FUZZ_CHECK(*reply_length == 0 && reason && reason != (const char *)1 && reason[0],
               "FAILED with a reply of %zu bytes and no reason", *reply_length);
    break;
  default: FUZZ_CHECK(0, "step gave %d", (int)result);
  }
  return result;
}

/* A side with a secret the input cannot know, fed the input's frames. */
static void alone(procord_security_t *security, procord_auth_side_t side, frames_t *frames) {
  procord_auth_t auth;
  unsigned char reply[32];
  FUZZ_CHECK(procord_auth_start(&auth, security, side, reply) == 0, "no start");
  const owned_frame_t *owned;
  int steps = 0;
  while ((owned = next_frame(frames))) {
    procord_frame_t frame = as_frame(owned);
    size_t length;
    procord_auth_result_t result = step(&auth, &frame, reply, &length);
    FUZZ_CHECK(result != PROCORD_AUTH_DONE, "a %s was authenticated by a peer without the secret",
               side == PROCORD_AUTH_SERVER ? "server" : "client");
    FUZZ_CHECK(result != PROCORD_AUTH_CONTINUE || steps == 0, "CONTINUE at step %d", steps);
    if (result == PROCORD_AUTH_FAILED) break;
    steps++;
  }
}

/* ---- A client and a server, their frames passing through the input ---- */

typedef struct exchange_s {
  owned_frame_t sent[4]; /* as each side sent it */
  unsigned char bodies[4][32];
  size_t count;
  frames_t *input;
} exchange_t;

/* What the other side gets for frame `index`, in `body` (room for
   PROCORD_AUTH_MAX_FRAME bytes); returns whether it is the frame as sent. */
static int hand_over(exchange_t *x, size_t index, procord_frame_t *out, unsigned char *body) {
  const owned_frame_t *sent = &x->sent[index];
  const owned_frame_t *how = next_frame(x->input);
  out->kind = sent->kind;
  out->length = sent->length;
  memcpy(body, sent->body, sent->length);
  if (how && how->kind == 'x') {
    for (size_t i = 0; how->length && i < out->length; i++) body[i] ^= how->body[i % how->length];
  } else if (how && how->kind == 'r') {
    const owned_frame_t *earlier = &x->sent[(how->length ? how->body[0] : 0) % (index + 1)];
    out->kind = earlier->kind;
    out->length = earlier->length;
    memcpy(body, earlier->body, earlier->length);
  } else if (how && how->kind != '=') {
    out->kind = how->kind;
    out->length = how->length;
    memcpy(body, how->body, how->length);
  }
  out->body = body;
  return out->kind == sent->kind && out->length == sent->length &&
         memcmp(out->body, sent->body, sent->length) == 0;
}

static void record(exchange_t *x, const unsigned char *body) {
  memcpy(x->bodies[x->count], body, 32);
  x->sent[x->count] = (owned_frame_t){'A', x->bodies[x->count], 32};
  x->count++;
}

/* A client secret unlike the server's, as the input's first frame says. */
static procord_security_t *other_client(size_t length, frames_t *frames) {
  unsigned char secret[PROCORD_SECRET_MAX_LENGTH];
  memcpy(secret, known_secret, sizeof secret);
  const owned_frame_t *how = next_frame(frames);
  if (how && how->kind == 'L') {
    length =
        length > PROCORD_SECRET_MIN_LENGTH ? length - 1 : length + 1; /* never a zero byte added */
  } else {
    for (size_t i = 0; how && how->length && i < length; i++)
      secret[i] ^= how->body[i % how->length];
    if (memcmp(secret, known_secret, length) == 0) secret[length - 1] ^= 0x80;
  }
  return make_security(PROCORD_SECURITY_CLIENT, secret, length);
}

static void relay(size_t secret_index, int same_secret, frames_t *frames) {
  procord_security_t *client_security = same_secret
                                            ? procord_security_retain(known_client[secret_index])
                                            : other_client(secret_lengths[secret_index], frames);
  procord_auth_t client, server;
  exchange_t x = {.input = frames};
  unsigned char reply[32], body[PROCORD_AUTH_MAX_FRAME];
  size_t length;
  procord_frame_t frame;
  int intact[4] = {0};
  procord_auth_result_t server_result = PROCORD_AUTH_FAILED, client_result = PROCORD_AUTH_FAILED;

  FUZZ_CHECK(procord_auth_start(&client, client_security, PROCORD_AUTH_CLIENT, reply) == 0,
             "no start");
  FUZZ_CHECK(procord_auth_start(&server, known_server[secret_index], PROCORD_AUTH_SERVER, body) ==
                 0,
             "no start");
  record(&x, reply); /* 1: the client's nonce */
  intact[0] = hand_over(&x, 0, &frame, body);
  server_result = step(&server, &frame, reply, &length);
  if (server_result != PROCORD_AUTH_CONTINUE) goto done;
  record(&x, reply); /* 2: the server's nonce */
  intact[1] = hand_over(&x, 1, &frame, body);
  client_result = step(&client, &frame, reply, &length);
  if (client_result != PROCORD_AUTH_CONTINUE) goto done;
  record(&x, reply); /* 3: the client's proof */
  intact[2] = hand_over(&x, 2, &frame, body);
  server_result = step(&server, &frame, reply, &length);
  if (server_result != PROCORD_AUTH_DONE) goto done;
  record(&x, reply); /* 4: the server's proof */
  intact[3] = hand_over(&x, 3, &frame, body);
  client_result = step(&client, &frame, reply, &length);

done:;
  int server_should = same_secret && intact[0] && intact[1] && intact[2];
  int client_should = server_should && intact[3];
  FUZZ_CHECK((server_result == PROCORD_AUTH_DONE) == server_should,
             "the server is %sDONE (same secret %d, frames unchanged %d %d %d)",
             server_result == PROCORD_AUTH_DONE ? "" : "not ", same_secret, intact[0], intact[1],
             intact[2]);
  FUZZ_CHECK((client_result == PROCORD_AUTH_DONE) == client_should,
             "the client is %sDONE (same secret %d, frames unchanged %d %d %d %d)",
             client_result == PROCORD_AUTH_DONE ? "" : "not ", same_secret, intact[0], intact[1],
             intact[2], intact[3]);
  procord_security_release(client_security);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  unsigned options = fuzz_options(&data, &size);
  frames_t frames;
  read_frames(&frames, data, size);
  switch (options & 3) {
  case SERVER_ALONE: alone(random_server, PROCORD_AUTH_SERVER, &frames); break;
  case CLIENT_ALONE: alone(random_client, PROCORD_AUTH_CLIENT, &frames); break;
  case RELAY: relay(options >> 2, 1, &frames); break;
  case RELAY_OTHER_SECRET: relay(options >> 2, 0, &frames); break;
  }
  free_frames(&frames);
  return 0;
}
