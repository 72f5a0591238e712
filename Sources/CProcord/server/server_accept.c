/*
 * A worker server's door (server_private.h): its listening socket (the
 * options', systemd's, or one bound), and each connection accepted on it
 * (through procord_listener_start, the core's one accept loop) within the
 * limits: refused with a word when its address holds too many, or the
 * server too many with none idle to make way; then into the gate
 * (server_secured.c) when the server is secured, or straight in as a client.
 */
#define _GNU_SOURCE
#include "procord/error.h"
#include "procord/frame.h"
#include "server/server_private.h"
#include "base/base_private.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define DEFER_ACCEPT_S 2 /* then back to the loop: the others' bytes wait too */

/* ---- Listening ---- */

static int bind_listening_socket(server_t *s) {
  const procord_server_options_t *o = s->options;
  const char *host = o->hostname ? o->hostname : "127.0.0.1";
  int fd = -1;
  int error = procord_listen_socket(host, o->port, o->reuse_address, &fd);
  if (error == PROCORD_ERESOLVE) server_log(s, PROCORD_LOG_ERROR, "cannot resolve %s", host);
  else if (error)
    server_log(
        s, PROCORD_LOG_ERROR, "cannot listen on %s port %d: %s%s", host, o->port,
        procord_strerror(error),
        error == -EADDRINUSE && !o->reuse_address
            ? " (another server has it, or a stopped one's connections still wait out TIME_WAIT: "
              "reuse_address, --procord-reuse-address, takes it over from those)"
            : "");
  return error ? error : fd;
}

/* Reachable beyond this machine by clients it cannot tell apart: say so,
   once, at start. TLS alone encrypts, but lets any client in. */
static void warn_if_exposed(server_t *s, const struct sockaddr_storage *address) {
  const procord_security_t *security = s->options->security;
  if (security && (security->secret_length > 0 ||
                   (security->tls &&
                    (SSL_CTX_get_verify_mode(security->tls) & SSL_VERIFY_FAIL_IF_NO_PEER_CERT))))
    return;
  if (procord_address_is_loopback(address)) return;
  server_log(
      s, PROCORD_LOG_WARNING,
      "listening on %s %s: anyone who can reach this port can run tasks (see docs/SECURITY.md)",
      s->address,
      security ? "with TLS but without client certificates or a shared secret"
               : "without TLS or a shared secret");
}

int server_listen(server_t *s) {
  /* 0 is "none", as in a zero-initialized struct: never stdin. */
  int fd = s->options->listen_fd > 0 ? s->options->listen_fd : -1;
  if (fd >= 0) {
    int listening = 0;
    socklen_t size = sizeof listening;
    int error = getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &size) != 0 ? -errno
                : listening                                                       ? 0
                                                                                  : PROCORD_EINVAL;
    if (error) {
      server_log(s, PROCORD_LOG_ERROR, "cannot serve descriptor %d (listen_fd): %s", fd,
                 error == PROCORD_EINVAL ? "a socket that does not listen" : strerror(-error));
      return error;
    }
  }
  if (fd < 0) fd = procord_server_activated_socket();
  if (fd >= 0) {
    procord_fd_set_nonblocking(fd, 1);
    procord_fd_set_cloexec(fd);
  } else {
    fd = bind_listening_socket(s);
    if (fd < 0) return fd;
  }
  struct sockaddr_storage address;
  socklen_t length = sizeof address;
  int named = getsockname(fd, (struct sockaddr *)&address, &length) == 0;
  if (named) {
    procord_address_string((struct sockaddr *)&address, length, s->address, sizeof s->address);
    /* A Unix socket (socket activation) has no port: 0. */
    int port = procord_address_port(&address);
    s->port = port < 0 ? 0 : port;
  }
  s->listen_fd = fd;
  /* Every client speaks first (a task, a TLS greeting, a secret's first
     frame): the kernel keeps a connection until its first bytes come, so
     a flood of connections that say nothing costs the server nothing and
     crowds no client out. After DEFER_ACCEPT_S a silent one is accepted
     anyway, and its idle limit applies. */
  int seconds = DEFER_ACCEPT_S;
  setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &seconds, sizeof seconds); /* not TCP: harmless */
  if (named) warn_if_exposed(s, &address);
  return 0;
}

/* ---- Accepting ---- */

/* Tells a peer why it is not served, as an original client shows a task's
   error (a `U` frame naming this server), then closes. Best effort: a new
   socket has room. */
static void refuse_connection(server_t *s, int fd, server_peer_t *peer, const char *why) {
  unsigned char frame[PROCORD_FRAME_HEADER_MAX + 256];
  char text[256];
  int length = snprintf(text, sizeof text, "refused by the server at %s: %s", s->address, why);
  if (length < 0) length = 0;
  if ((size_t)length >= sizeof text) length = sizeof text - 1;
  size_t header =
      procord_frame_encode_header(PROCORD_FRAME_UNKNOWN_EXCEPTION, (size_t)length, frame);
  memcpy(frame + header, text, (size_t)length);
  size_t n = header + (size_t)length;
  /* What the peer sent already is read first (the kernel hands a connection
     over with its first bytes): closed with bytes unread, the socket would
     be reset, and the reset can overtake the refusal. */
  char discard[4096];
  for (int i = 0; i < 16 && recv(fd, discard, sizeof discard, MSG_DONTWAIT) > 0; i++) {
  }
  struct iovec part = {frame, n};
  ssize_t ignored = procord_write_parts(fd, 1, &part, 1);
  (void)ignored;
  close(fd);
  server_peer_forget_if_unused(s, peer);
}

/* Room for one more connection: at max_connections, the client idle longest
   makes way. Returns 0 if there is none to make. */
static int make_room(server_t *s) {
  while (s->client_count + s->securing >= s->max_connections)
    if (!server_client_evict_idle(s)) return 0;
  return 1;
}

/* A new connection: within the limits, into the gate or straight in. */
static void on_connection_accepted(procord_listener_t *listener, int fd, const char *address,
                                   void *context) {
  (void)listener;
  server_t *s = context;
  char name[PEER_SIZE], host[PEER_SIZE];
  snprintf(name, sizeof name, "%s", address);
  server_host_of(name, host, sizeof host);
  server_peer_t *peer = server_peer_find(s, host);
  if (!peer) {
    close(fd);
    return;
  }
  char why[160];
  if (s->max_connections_per_peer > 0 && peer->connections >= s->max_connections_per_peer) {
    server_note(s, REASON_PEER_CONNECTIONS, PROCORD_LOG_WARNING, name,
                "refused: its address has %d connections already (max_connections_per_peer)",
                peer->connections);
    snprintf(why, sizeof why, "this address has %d connections already (its limit)",
             peer->connections);
    refuse_connection(s, fd, peer, why);
    return;
  }
  if (!make_room(s)) {
    server_note(s, REASON_MAX_CONNECTIONS, PROCORD_LOG_WARNING, name,
                "refused: %d connections, none idle (max_connections)", s->max_connections);
    snprintf(why, sizeof why, "it holds %d connections, none idle; try again later",
             s->max_connections);
    refuse_connection(s, fd, peer, why);
    return;
  }
  SERVER_COUNT(s, connections_accepted, 1);
  if (s->options->security) server_secure(s, fd, name, peer);
  else
    server_client_open(s, fd, name, peer);
}

static int admit_address(void *context, const struct sockaddr *peer, socklen_t length) {
  server_t *s = context;
  return !s->options->accept_filter || s->options->accept_filter(s->options->context, peer, length);
}

static void on_out_of_descriptors(void *context, int error, int retry_ms) {
  server_t *s = context;
  server_note(
      s, REASON_OUT_OF_DESCRIPTORS, PROCORD_LOG_WARNING, "server",
      "accept: %s; retrying in %d ms (%d connections held; lower max_connections, or raise the "
      "descriptor limit)",
      strerror(error), retry_ms, s->client_count);
}

int server_accept_start(server_t *s) {
  static const procord_listener_hooks_t hooks = {.admit = admit_address,
                                                 .out_of_descriptors = on_out_of_descriptors};
  int fd = s->listen_fd;
  s->listen_fd = -1; /* the listener's from now on, even if it fails */
  return procord_listener_start(s->loop, fd, on_connection_accepted, &hooks, s, &s->listener);
}

void server_accept_stop(server_t *s) {
  procord_listener_close(s->listener);
  s->listener = NULL;
  if (s->listen_fd >= 0) close(s->listen_fd);
  s->listen_fd = -1;
}
