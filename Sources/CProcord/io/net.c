/*
 * Socket helpers shared by the files that open, accept and name sockets
 * (in the manner of Redis's anet.c): each once, for all callers.
 */
#define _GNU_SOURCE
#include "io/io_private.h"
#include "procord/error.h"
#include "procord/listen.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

void procord_address_string(const struct sockaddr *address, socklen_t length, char *out,
                            size_t size) {
  char host[NI_MAXHOST], port[NI_MAXSERV];
  if (getnameinfo(address, length, host, sizeof host, port, sizeof port,
                  NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    snprintf(out, size, "?");
    return;
  }
  snprintf(out, size, address->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
}

int procord_address_port(const struct sockaddr_storage *address) {
  if (address->ss_family == AF_INET) return ntohs(((const struct sockaddr_in *)address)->sin_port);
  if (address->ss_family == AF_INET6)
    return ntohs(((const struct sockaddr_in6 *)address)->sin6_port);
  return -1;
}

int procord_address_is_loopback(const struct sockaddr_storage *address) {
  if (address->ss_family == AF_INET)
    return (ntohl(((const struct sockaddr_in *)address)->sin_addr.s_addr) >> 24) == 127;
  if (address->ss_family != AF_INET6) return 1; /* a Unix socket, say: not the network */
  const struct in6_addr *a = &((const struct sockaddr_in6 *)address)->sin6_addr;
  return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
}

void procord_socket_set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* not TCP: harmless */
}

int procord_listen_socket(const char *hostname, int port, int reuse_address, int *result) {
  if (port < 0 || port > 65535 || !result) return PROCORD_EINVAL;
  const char *host = hostname ? hostname : "127.0.0.1";
  char service[16];
  snprintf(service, sizeof service, "%d", port);
  struct addrinfo hints = {0}, *addresses;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  if (getaddrinfo(host, service, &hints, &addresses) != 0) return PROCORD_ERESOLVE;
  int error = -EADDRNOTAVAIL;
  for (struct addrinfo *a = addresses; a; a = a->ai_next) {
    int fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
      error = -errno;
      continue;
    }
    int one = 1;
    if (reuse_address) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0) {
      *result = fd;
      error = 0;
      break;
    }
    error = -errno;
    close(fd);
  }
  freeaddrinfo(addresses);
  return error;
}
