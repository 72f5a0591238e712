/*
 * A server's counts per client address (server_private.h): how many
 * connections and running tasks each has, for max_connections_per_peer and
 * max_tasks_per_peer, in a small hash table of records made on first sight
 * and dropped once nothing counts in them.
 */
#define _GNU_SOURCE
#include "server/server_private.h"
#include "base/base_private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned bucket_of(const char *host) {
  unsigned hash = 2166136261u; /* FNV-1a */
  for (const unsigned char *p = (const unsigned char *)host; *p; p++) hash = (hash ^ *p) * 16777619u;
  return hash % (sizeof ((server_t *)0)->peer_buckets / sizeof(server_peer_t *));
}

server_peer_t *server_peer_find(server_t *s, const char *host) {
  server_peer_t **bucket = &s->peer_buckets[bucket_of(host)];
  for (server_peer_t *p = *bucket; p; p = p->next)
    if (strcmp(p->host, host) == 0) return p;
  server_peer_t *p = procord_allocate_zeroed(1, sizeof *p);
  if (!p) return NULL;
  snprintf(p->host, sizeof p->host, "%s", host);
  p->next = *bucket;
  *bucket = p;
  return p;
}

void server_peer_forget_if_unused(server_t *s, server_peer_t *peer) {
  if (!peer || peer->connections > 0 || peer->running > 0) return;
  for (server_peer_t **p = &s->peer_buckets[bucket_of(peer->host)]; *p; p = &(*p)->next) {
    if (*p == peer) {
      *p = peer->next;
      procord_free(peer);
      return;
    }
  }
}

void server_peers_free(server_t *s) {
  for (size_t i = 0; i < sizeof s->peer_buckets / sizeof *s->peer_buckets; i++) {
    while (s->peer_buckets[i]) {
      server_peer_t *p = s->peer_buckets[i];
      s->peer_buckets[i] = p->next;
      procord_free(p);
    }
  }
}

void server_host_of(const char *name, char *host, size_t size) {
  const char *colon = strrchr(name, ':');
  size_t length = colon ? (size_t)(colon - name) : strlen(name);
  if (length >= 2 && name[0] == '[' && name[length - 1] == ']') {
    name++;
    length -= 2;
  }
  snprintf(host, size, "%.*s", (int)length, name);
}
