/*
 * Socket helpers shared by the files that open, accept and name sockets
 * (in the manner of Redis's anet.c).
 */
#define _GNU_SOURCE
#include "io/io_private.h"
#include "procord/listen.h"

#include <netdb.h>
#include <stdio.h>
#include <sys/socket.h>

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
