/*
 * Private to the C core: shared-secret authentication (docs/PROTOCOL.md,
 * "Shared-secret authentication"). Four `A` frames, the client first:
 *
 *   client -> server  client nonce (32 random bytes)
 *   server -> client  server nonce (32 random bytes)
 *   client -> server  client proof: HMAC-SHA256(secret, "procord-auth-v1 client" || nonces)
 *   server -> client  server proof: HMAC-SHA256(secret, "procord-auth-v1 server" || nonces)
 *
 * with `nonces` the client nonce then the server nonce. The server answers
 * a wrong proof (or any other frame) with a `U` frame saying why, and
 * closes. Proofs are compared in constant time. The labels keep a proof of
 * one side from being replayed as the other's; fresh nonces keep a proof
 * from being replayed on another connection.
 */
#ifndef PROCORD_AUTH_PRIVATE_H
#define PROCORD_AUTH_PRIVATE_H

#include <stddef.h>

#include "procord/frame.h"
#include "procord/security.h"

#define PROCORD_AUTH_NONCE_LENGTH 32
#define PROCORD_AUTH_PROOF_LENGTH 32
/* The largest frame either side reads before authentication is done: room
   for an original client's task name, so that its `T` is recognised. */
#define PROCORD_AUTH_MAX_FRAME 4096

typedef enum procord_auth_side { PROCORD_AUTH_CLIENT, PROCORD_AUTH_SERVER } procord_auth_side_t;

typedef struct procord_auth_s {
  const procord_security_t *security;
  procord_auth_side_t side;
  int step; /* frames received so far */
  unsigned char client_nonce[PROCORD_AUTH_NONCE_LENGTH];
  unsigned char server_nonce[PROCORD_AUTH_NONCE_LENGTH];
} procord_auth_t;

/* What a step produced. */
typedef enum procord_auth_result {
  PROCORD_AUTH_CONTINUE, /* send `reply` (an `A` frame), then wait for the next frame */
  PROCORD_AUTH_DONE,     /* authenticated; send `reply` first if its length is not 0 */
  PROCORD_AUTH_FAILED,   /* `*reason` says why; a server sends it as a `U` frame and closes */
} procord_auth_result_t;

/* Starts. A client gets its first frame's body in `reply` (32 bytes);
   returns -ENOMEM if no random bytes could be had. */
int procord_auth_start(procord_auth_t *auth, const procord_security_t *security,
                       procord_auth_side_t side, unsigned char reply[PROCORD_AUTH_NONCE_LENGTH]);

/*
 * Takes the peer's next frame. `reply` has room for 32 bytes and its
 * length goes in `*reply_length` (0: nothing to send). `*reason` is a
 * static English sentence when it fails.
 */
procord_auth_result_t procord_auth_step(procord_auth_t *auth, const procord_frame_t *frame,
                                        unsigned char reply[PROCORD_AUTH_PROOF_LENGTH],
                                        size_t *reply_length, const char **reason);

#endif
