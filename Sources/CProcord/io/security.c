/*
 * Security objects (procord/security.h): a TLS context loaded and checked
 * once, and a shared secret, shared by reference between the connections
 * that use them.
 */
#define _GNU_SOURCE
#include "base/base_private.h"
#include "io/io_private.h"
#include "procord/error.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int explain_failure(char *error, size_t size, int code, const char *format, ...) {
  if (error && size) {
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(error, size, format, arguments);
    va_end(arguments);
  }
  return code;
}

/* OpenSSL's reason for the last thing that failed on this thread; the queue is emptied. */
static const char *openssl_reason(void) {
  unsigned long code = ERR_peek_last_error();
  const char *reason = code ? ERR_reason_error_string(code) : NULL;
  ERR_clear_error();
  return reason ? reason : "unknown OpenSSL error";
}

static int load_tls(procord_security_t *s, const procord_security_options_t *o, char *error,
                    size_t size) {
  int server = o->role == PROCORD_SECURITY_SERVER;
  if (server && !o->certificate_file)
    return explain_failure(error, size, PROCORD_EINVAL,
                           "a server with TLS needs a certificate (and its key)");
  if (o->require_client_certificate && !o->ca_file)
    return explain_failure(error, size, PROCORD_EINVAL,
                           "requiring client certificates needs the CA file that signs them");
  if (o->private_key_file && !o->certificate_file)
    return explain_failure(error, size, PROCORD_EINVAL, "a private key needs its certificate");
  SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (!ctx)
    return explain_failure(error, size, -ENOMEM, "cannot make a TLS context: %s", openssl_reason());
  s->tls = ctx;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_IGNORE_UNEXPECTED_EOF);
  /* No session resumption: connections are long-lived, and TLS 1.3 tickets
     would be records sent after the handshake for nothing. */
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  if (server) SSL_CTX_set_num_tickets(ctx, 0);
  if (o->certificate_file) {
    const char *key = o->private_key_file ? o->private_key_file : o->certificate_file;
    if (SSL_CTX_use_certificate_chain_file(ctx, o->certificate_file) != 1)
      return explain_failure(error, size, PROCORD_EINVAL, "cannot load the certificate %s: %s",
                             o->certificate_file, openssl_reason());
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
      return explain_failure(error, size, PROCORD_EINVAL, "cannot load the private key %s: %s", key,
                             openssl_reason());
    if (SSL_CTX_check_private_key(ctx) != 1)
      return explain_failure(error, size, PROCORD_EINVAL,
                             "the private key %s does not match the certificate %s: %s", key,
                             o->certificate_file, openssl_reason());
  }
  if (o->ca_file) {
    if (SSL_CTX_load_verify_locations(ctx, o->ca_file, NULL) != 1)
      return explain_failure(error, size, PROCORD_EINVAL, "cannot load the CA file %s: %s",
                             o->ca_file, openssl_reason());
  } else if (!server && SSL_CTX_set_default_verify_paths(ctx) != 1) {
    return explain_failure(error, size, PROCORD_EINVAL, "cannot load the system's CA store: %s",
                           openssl_reason());
  }
  if (!server) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  } else if (o->ca_file) {
    /* Name the accepted CAs to clients; verify a certificate a client
       sends, and, when required, refuse a client that sends none. */
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->ca_file);
    if (names) SSL_CTX_set_client_CA_list(ctx, names);
    SSL_CTX_set_verify(ctx,
                       SSL_VERIFY_PEER |
                           (o->require_client_certificate ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                       NULL);
  }
  return 0;
}

static void free_security(procord_security_t *s) {
  if (s->tls) SSL_CTX_free(s->tls);
  procord_free(s->server_name);
  OPENSSL_cleanse(s->secret, sizeof s->secret);
  procord_free(s);
}

void procord_security_options_init(procord_security_options_t *options) {
  procord_options_clear(options, sizeof *options);
}

int procord_security_new(const procord_security_options_t *given, procord_security_t **security,
                         char *error, size_t size) {
  procord_security_options_t copy;
  const procord_security_options_t *o = &copy;
  if (given && PROCORD_OPTIONS_COPY(copy, given, PROCORD_FIRST_SIZE_SECURITY_OPTIONS) != 0)
    return explain_failure(
        error, size, PROCORD_EINVAL,
        "security options with a size this library does not know (%zu bytes; it knows %zu): "
        "a program built against a newer Procord",
        procord_options_size(given, PROCORD_FIRST_SIZE_SECURITY_OPTIONS), sizeof copy);
  if (!given || !security ||
      (o->role != PROCORD_SECURITY_CLIENT && o->role != PROCORD_SECURITY_SERVER))
    return explain_failure(error, size, PROCORD_EINVAL, "invalid security options");
  if (o->secret && (o->secret_length < PROCORD_SECRET_MIN_LENGTH ||
                    o->secret_length > PROCORD_SECRET_MAX_LENGTH))
    return explain_failure(error, size, PROCORD_EINVAL,
                           "a shared secret must have %d to %d bytes (it has %zu)",
                           PROCORD_SECRET_MIN_LENGTH, PROCORD_SECRET_MAX_LENGTH, o->secret_length);
  int tls = o->tls || o->certificate_file || o->private_key_file || o->ca_file ||
            o->require_client_certificate || o->server_name;
  if (!tls && !o->secret)
    return explain_failure(error, size, PROCORD_EINVAL,
                           "security options with neither TLS nor a shared secret");
  procord_security_t *s = procord_allocate_zeroed(1, sizeof *s);
  if (!s) return explain_failure(error, size, -ENOMEM, "out of memory");
  s->references = 1;
  s->role = o->role;
  int result = 0;
  if (o->server_name && o->role == PROCORD_SECURITY_CLIENT &&
      !(s->server_name = procord_strdup(o->server_name)))
    result = explain_failure(error, size, -ENOMEM, "out of memory");
  if (!result && tls) result = load_tls(s, o, error, size);
  if (result) {
    free_security(s);
    return result;
  }
  if (o->secret) {
    memcpy(s->secret, o->secret, o->secret_length);
    s->secret_length = o->secret_length;
  }
  *security = s;
  return 0;
}

procord_security_t *procord_security_retain(procord_security_t *s) {
  if (s) __atomic_add_fetch(&s->references, 1, __ATOMIC_RELAXED);
  return s;
}

void procord_security_release(procord_security_t *s) {
  if (s && __atomic_sub_fetch(&s->references, 1, __ATOMIC_ACQ_REL) == 0) free_security(s);
}

int procord_security_uses_tls(const procord_security_t *s) { return s && s->tls; }

int procord_security_uses_secret(const procord_security_t *s) { return s && s->secret_length > 0; }

static int is_ip_literal(const char *host) {
  unsigned char address[16];
  return inet_pton(AF_INET, host, address) == 1 || inet_pton(AF_INET6, host, address) == 1;
}

SSL *procord_security_new_ssl(const procord_security_t *s, const char *host) {
  SSL *ssl = SSL_new(s->tls);
  if (!ssl || s->role == PROCORD_SECURITY_SERVER) return ssl;
  const char *name = s->server_name ? s->server_name : host;
  if (!name) name = "";
  int ok;
  if (is_ip_literal(name)) {
    ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1;
  } else {
    SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    ok = SSL_set1_host(ssl, name) == 1 && SSL_set_tlsext_host_name(ssl, name) == 1;
  }
  if (!ok) {
    SSL_free(ssl);
    return NULL;
  }
  return ssl;
}

const char *procord_tls_failure(struct bufferevent *tls) {
  /* libevent keeps the errors OpenSSL queued during its I/O: take them all. */
  unsigned long code = bufferevent_get_openssl_error(tls);
  while (bufferevent_get_openssl_error(tls)) {
  }
  SSL *ssl = bufferevent_openssl_get_ssl(tls);
  long verdict = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
  if (verdict != X509_V_OK) return X509_verify_cert_error_string(verdict);
  const char *reason = code ? ERR_reason_error_string(code) : NULL;
  if (reason) return reason;
  return ERR_peek_last_error() ? openssl_reason() : NULL;
}

int procord_tls_goodbye(struct bufferevent *tls) {
  SSL *ssl = bufferevent_openssl_get_ssl(tls);
  if (ssl) SSL_shutdown(ssl); /* close_notify, if the socket takes it now */
  ERR_clear_error();
  return ssl != NULL;
}

/* ---- Secrets ---- */

/* Drops one trailing "\n" or "\r\n": the newline an editor or `echo` adds. */
static size_t without_newline(const unsigned char *bytes, size_t length) {
  if (length > 0 && bytes[length - 1] == '\n') {
    length--;
    if (length > 0 && bytes[length - 1] == '\r') length--;
  }
  return length;
}

int procord_secret_load(const char *path, const char *variable, unsigned char *secret, size_t size,
                        size_t *length, char *error, size_t error_size) {
  unsigned char buffer[PROCORD_SECRET_MAX_LENGTH + 3];
  size_t n = 0;
  const char *source = path ? path : variable;
  if (!source || !secret || !length)
    return explain_failure(error, error_size, PROCORD_EINVAL, "no secret named");
  if (path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      return explain_failure(error, error_size, PROCORD_EINVAL,
                             "cannot read the secret file %s: %s", path, strerror(errno));
    ssize_t r;
    while (n < sizeof buffer && (r = procord_read_retrying(fd, buffer + n, sizeof buffer - n)) > 0)
      n += (size_t)r;
    close(fd);
  } else {
    const char *value = getenv(variable);
    if (!value)
      return explain_failure(error, error_size, PROCORD_EINVAL,
                             "the environment variable %s (the secret) is not set", variable);
    n = strlen(value);
    if (n > sizeof buffer) n = sizeof buffer;
    memcpy(buffer, value, n);
    /* Not for processes started later (workers, what tasks start), and not
       in /proc/PID/environ, which shows the strings the process started
       with: glibc never frees those, so they can be wiped after unsetenv. */
    size_t value_length = strlen(value);
    unsetenv(variable);
    OPENSSL_cleanse((char *)value, value_length);
  }
  n = without_newline(buffer, n);
  int result = 0;
  if (n < PROCORD_SECRET_MIN_LENGTH || n > PROCORD_SECRET_MAX_LENGTH || n > size)
    result =
        explain_failure(error, error_size, PROCORD_EINVAL,
                        "the secret in %s must have %d to %zu bytes (it has %s%zu)", source,
                        PROCORD_SECRET_MIN_LENGTH,
                        size < PROCORD_SECRET_MAX_LENGTH ? size : (size_t)PROCORD_SECRET_MAX_LENGTH,
                        n > PROCORD_SECRET_MAX_LENGTH ? "over " : "", n);
  else {
    memcpy(secret, buffer, n);
    *length = n;
  }
  OPENSSL_cleanse(buffer, sizeof buffer);
  return result;
}

int procord_security_from_command(const procord_worker_command_t *c, procord_security_role_t role,
                                  procord_security_t **security, char *error, size_t size) {
  *security = NULL;
  int tls = c->tls || c->tls_certificate_file || c->tls_private_key_file || c->tls_ca_file ||
            c->tls_require_client_certificate || c->tls_server_name;
  int secret = c->secret_file || c->secret_environment;
  if (!tls && !secret) return 0;
  unsigned char bytes[PROCORD_SECRET_MAX_LENGTH];
  size_t length = 0;
  if (secret) {
    int error_code = procord_secret_load(c->secret_file, c->secret_environment, bytes, sizeof bytes,
                                         &length, error, size);
    if (error_code) return error_code;
  }
  procord_security_options_t options = {
      .size = sizeof options,
      .role = role,
      .tls = tls,
      .certificate_file = c->tls_certificate_file,
      .private_key_file = c->tls_private_key_file,
      .ca_file = c->tls_ca_file,
      .require_client_certificate = c->tls_require_client_certificate,
      .server_name = role == PROCORD_SECURITY_CLIENT ? c->tls_server_name : NULL,
      .secret = secret ? bytes : NULL,
      .secret_length = length,
  };
  int result = procord_security_new(&options, security, error, size);
  OPENSSL_cleanse(bytes, sizeof bytes);
  return result;
}

int procord_auth_start(procord_auth_t *auth, const procord_security_t *security,
                       procord_auth_side_t side, unsigned char reply[PROCORD_AUTH_NONCE_LENGTH]) {
  return procord_auth_begin(auth, security->secret, security->secret_length, side, reply);
}
