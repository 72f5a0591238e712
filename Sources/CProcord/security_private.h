/* Private to the C core: what connections and servers need of a procord_security_t. */
#ifndef PROCORD_SECURITY_PRIVATE_H
#define PROCORD_SECURITY_PRIVATE_H

#include <event2/bufferevent.h>
#include <openssl/ssl.h>

#include "procord/security.h"

struct procord_security_s {
  int references;
  procord_security_role_t role;
  SSL_CTX *tls;        /* NULL: no TLS */
  char *server_name;   /* a client's fixed name for the server's certificate, or NULL */
  size_t secret_length; /* 0: no secret */
  unsigned char secret[PROCORD_SECRET_MAX_LENGTH];
};

/*
 * A new SSL object for one connection. A client's checks the server's
 * certificate against `host` (a DNS name or an IP literal) unless the
 * security names the server itself, and sends it as SNI when it is a name.
 * NULL when out of memory.
 */
SSL *procord_security_new_ssl(const procord_security_t *security, const char *host);

/*
 * Why the TLS connection `tls` (a bufferevent_openssl) failed, as a static
 * English string: the certificate check's verdict if it failed, else the
 * first error OpenSSL reported during its I/O, else NULL (a plain socket
 * error). The errors it kept are emptied.
 */
const char *procord_tls_failure(struct bufferevent *tls);

/* Sends close_notify on `tls` if it is a TLS bufferevent, best effort (the
   socket may not take it now), and empties this thread's OpenSSL errors.
   Returns 0 for a plain bufferevent. */
int procord_tls_goodbye(struct bufferevent *tls);

#endif
