/* Shared-secret authentication: nonces and proofs (wire_private.h). */
#define _GNU_SOURCE
#include "wire/wire_private.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <string.h>

static const char client_label[] = "procord-auth-v1 client";
static const char server_label[] = "procord-auth-v1 server";

static void prove(const procord_auth_t *auth, const char *label,
                  unsigned char proof[PROCORD_AUTH_PROOF_LENGTH]) {
  unsigned char message[sizeof server_label + 2 * PROCORD_AUTH_NONCE_LENGTH];
  size_t n = strlen(label);
  memcpy(message, label, n);
  memcpy(message + n, auth->client_nonce, PROCORD_AUTH_NONCE_LENGTH);
  memcpy(message + n + PROCORD_AUTH_NONCE_LENGTH, auth->server_nonce, PROCORD_AUTH_NONCE_LENGTH);
  unsigned int length = PROCORD_AUTH_PROOF_LENGTH;
  HMAC(EVP_sha256(), auth->secret, (int)auth->secret_length, message,
       n + 2 * PROCORD_AUTH_NONCE_LENGTH, proof, &length);
}

static int proves(const procord_auth_t *auth, const char *label, const procord_frame_t *frame) {
  unsigned char expected[PROCORD_AUTH_PROOF_LENGTH];
  prove(auth, label, expected);
  int same = frame->length == PROCORD_AUTH_PROOF_LENGTH &&
             CRYPTO_memcmp(expected, frame->body, PROCORD_AUTH_PROOF_LENGTH) == 0;
  OPENSSL_cleanse(expected, sizeof expected);
  return same;
}

int procord_auth_begin(procord_auth_t *auth, const unsigned char *secret, size_t secret_length,
                       procord_auth_side_t side, unsigned char reply[PROCORD_AUTH_NONCE_LENGTH]) {
  memset(auth, 0, sizeof *auth);
  auth->secret = secret;
  auth->secret_length = secret_length;
  auth->side = side;
  unsigned char *nonce = side == PROCORD_AUTH_CLIENT ? auth->client_nonce : auth->server_nonce;
  if (RAND_bytes(nonce, PROCORD_AUTH_NONCE_LENGTH) != 1) return -ENOMEM;
  if (side == PROCORD_AUTH_CLIENT) memcpy(reply, nonce, PROCORD_AUTH_NONCE_LENGTH);
  return 0;
}

static procord_auth_result_t failed(const char **reason, const char *why) {
  *reason = why;
  return PROCORD_AUTH_FAILED;
}

static procord_auth_result_t server_step(procord_auth_t *auth, const procord_frame_t *frame,
                                         unsigned char *reply, size_t *reply_length,
                                         const char **reason) {
  if (frame->kind != PROCORD_FRAME_AUTH)
    return failed(
        reason,
        auth->step == 0
            ? "this server requires a shared secret, and the client did not offer to prove it"
            : "the client sent something else than its proof of the shared secret");
  if (auth->step == 0) {
    if (frame->length != PROCORD_AUTH_NONCE_LENGTH)
      return failed(reason, "the client's nonce has the wrong length");
    memcpy(auth->client_nonce, frame->body, PROCORD_AUTH_NONCE_LENGTH);
    memcpy(reply, auth->server_nonce, PROCORD_AUTH_NONCE_LENGTH);
    *reply_length = PROCORD_AUTH_NONCE_LENGTH;
    auth->step = 1;
    return PROCORD_AUTH_CONTINUE;
  }
  if (!proves(auth, client_label, frame)) return failed(reason, "wrong shared secret");
  prove(auth, server_label, reply);
  *reply_length = PROCORD_AUTH_PROOF_LENGTH;
  auth->step = 2;
  return PROCORD_AUTH_DONE;
}

static procord_auth_result_t client_step(procord_auth_t *auth, const procord_frame_t *frame,
                                         unsigned char *reply, size_t *reply_length,
                                         const char **reason) {
  if (frame->kind == PROCORD_FRAME_UNKNOWN_EXCEPTION) {
    /* The server's refusal: a TLS server tells a plaintext client so first. */
    static const char tls[] = "requires TLS";
    int wants_tls = memmem(frame->body, frame->length, tls, sizeof tls - 1) != NULL;
    return failed(reason, wants_tls ? "the server requires TLS, and we spoke plaintext"
                                    : "the server refused our proof of the shared secret");
  }
  if (frame->kind == PROCORD_FRAME_ERROR)
    return failed(reason,
                  "the server does not take a shared secret (it answered with a protocol error)");
  if (frame->kind != PROCORD_FRAME_AUTH)
    return failed(reason,
                  "the server answered something else than the authentication it was asked for");
  if (auth->step == 0) {
    if (frame->length != PROCORD_AUTH_NONCE_LENGTH)
      return failed(reason, "the server's nonce has the wrong length");
    memcpy(auth->server_nonce, frame->body, PROCORD_AUTH_NONCE_LENGTH);
    prove(auth, client_label, reply);
    *reply_length = PROCORD_AUTH_PROOF_LENGTH;
    auth->step = 1;
    return PROCORD_AUTH_CONTINUE;
  }
  if (!proves(auth, server_label, frame))
    return failed(reason, "the server could not prove that it knows the shared secret");
  auth->step = 2;
  return PROCORD_AUTH_DONE;
}

procord_auth_result_t procord_auth_step(procord_auth_t *auth, const procord_frame_t *frame,
                                        unsigned char reply[PROCORD_AUTH_PROOF_LENGTH],
                                        size_t *reply_length, const char **reason) {
  *reply_length = 0;
  *reason = NULL;
  return auth->side == PROCORD_AUTH_SERVER ? server_step(auth, frame, reply, reply_length, reason)
                                           : client_step(auth, frame, reply, reply_length, reason);
}

size_t procord_auth_frame(const unsigned char *body, size_t length,
                          unsigned char frame[PROCORD_AUTH_FRAME_MAX]) {
  PROCORD_ASSERT(length <= PROCORD_AUTH_PROOF_LENGTH);
  size_t header = procord_frame_encode_header(PROCORD_FRAME_AUTH, length, frame);
  memcpy(frame + header, body, length);
  return header + length;
}
