/*
 * procord/security.h: TLS and shared-secret authentication on the
 * connections between main programs and worker servers (docs/SECURITY.md).
 *
 * A procord_security_t says how one side secures its connections:
 *
 * - TLS (1.2 at least, 1.3 preferred; OpenSSL through libevent's
 *   bufferevent_openssl). A client verifies the server's certificate
 *   against its CA file (or the system's store) and the host name it
 *   connected to; a server can require a client certificate signed by its
 *   CA file (mutual TLS).
 * - A shared secret, for deployments that terminate TLS elsewhere (or in
 *   addition to TLS): before any task, each side proves that it knows the
 *   secret with HMAC-SHA256 over a nonce of each side, without sending the
 *   secret (the `A` frames of docs/PROTOCOL.md).
 *
 * A server with security refuses a peer that fails it before reading any
 * task name, logs why, and never hands that peer to a worker process. The
 * same object may be shared by any number of delegations, pools and
 * servers, from any thread: each holds a reference of its own.
 */
#ifndef PROCORD_SECURITY_H
#define PROCORD_SECURITY_H

#include <stddef.h>

#include "procord/worker.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct procord_security_s procord_security_t;

typedef enum procord_security_role {
  PROCORD_SECURITY_CLIENT = 0, /* a main program (delegations, pools) */
  PROCORD_SECURITY_SERVER = 1, /* a worker server */
} procord_security_role_t;

/* Bounds on a shared secret's length, in bytes. 16 bytes is a floor, not a
   goal: make one with `openssl rand -hex 32`. */
#define PROCORD_SECRET_MIN_LENGTH 16
#define PROCORD_SECRET_MAX_LENGTH 1024

/* How long a server gives a peer to finish TLS and authentication when no
   limit is given. */
#define PROCORD_DEFAULT_HANDSHAKE_TIMEOUT_MS 10000

typedef struct procord_security_options_s {
  /* The size of this struct as the calling program was built with: set by
     procord_security_options_init; 0 means the layout of this first
     release. A size larger than this library's struct, with a byte beyond
     it that is not 0 (a program built against a newer Procord than it runs
     with), is refused with PROCORD_EINVAL. */
  size_t size;
  procord_security_role_t role;
  /* Non-zero: TLS. Implied by any of the files below. */
  int tls;
  /* PEM: this side's certificate (then any intermediate CAs). Required for
     a server with TLS; for a client, sent to servers that require one. */
  const char *certificate_file;
  /* PEM: the certificate's private key; NULL: read from certificate_file. */
  const char *private_key_file;
  /* PEM: the CAs whose certificates the peer's must chain to. A client
     verifies the server with it (NULL: the system's trust store). A server
     verifies client certificates with it; required with
     require_client_certificate. */
  const char *ca_file;
  /* Server: refuse a client that presents no certificate signed by ca_file. */
  int require_client_certificate;
  /* Client: the name (DNS name or IP address) the server's certificate must
     carry; NULL: the host the client connects to. Copied. */
  const char *server_name;
  /* The shared secret (binary-safe, PROCORD_SECRET_MIN_LENGTH to
     PROCORD_SECRET_MAX_LENGTH bytes, copied), or NULL for none. */
  const void *secret;
  size_t secret_length;
} procord_security_options_t;

/*
 * Sets every field of `options` to its default (a client, neither TLS nor a
 * secret: set one of them) and `size` to this struct's size. Call it first,
 * then set the fields you need: a field added in a later version then gets
 * its default even in a program built before it.
 */
void procord_security_options_init(procord_security_options_t *options);

/*
 * Makes a security object: loads and checks the certificate, key and CA
 * files now, so that a mistake shows at start rather than at the first
 * connection. Returns 0 with one reference in `*security`, or
 * PROCORD_EINVAL (a missing file, a key that does not match its
 * certificate, a server with TLS and no certificate, a secret of the wrong
 * length, a `size` refused...) or -ENOMEM, with an English message in `error` (of
 * `error_size` bytes, may be NULL) and `*security` untouched.
 */
int procord_security_new(const procord_security_options_t *options, procord_security_t **security,
                         char *error, size_t error_size);

/* Adds a reference and returns `security`. Thread-safe. */
procord_security_t *procord_security_retain(procord_security_t *security);

/* Drops a reference; the last one frees it (the secret is wiped). NULL is
   ignored. Thread-safe. */
void procord_security_release(procord_security_t *security);

/* Returns non-zero if `security` uses TLS, or has a shared secret. */
int procord_security_uses_tls(const procord_security_t *security);
int procord_security_uses_secret(const procord_security_t *security);

/*
 * Reads a shared secret from the file at `path`, or, with `path` NULL,
 * from the environment variable `variable`, which is then removed from the
 * environment so that no process started later (a worker, what a task
 * starts) inherits it. One trailing newline ("\n" or "\r\n") is dropped.
 * Stores the secret in `secret` (of `size` bytes) and its length in
 * `*length`. Returns 0, or PROCORD_EINVAL (no such variable, an unreadable
 * file, a secret shorter than PROCORD_SECRET_MIN_LENGTH or longer than
 * `size`) with a message in `error`. The secret is never read from the
 * command line, where every user of the machine can see it.
 */
int procord_secret_load(const char *path, const char *variable, unsigned char *secret, size_t size,
                        size_t *length, char *error, size_t error_size);

/*
 * Makes the security a command line asks for (procord/worker.h's
 * `--procord-tls*` and `--procord-secret-*` options) for `role`: stores it
 * in `*security` (NULL when the command line asks for none) and returns 0,
 * or returns what procord_security_new or procord_secret_load returns.
 */
int procord_security_from_command(const procord_worker_command_t *command,
                                  procord_security_role_t role, procord_security_t **security,
                                  char *error, size_t error_size);

#ifdef __cplusplus
}
#endif

#endif
