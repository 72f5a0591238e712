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

#define BUCKETS (sizeof((server_t *)0)->peer_buckets / sizeof(procord_list_t))

static unsigned bucket_of(const char *host) {
  unsigned hash = 2166136261u; /* FNV-1a */
  for (const unsigned char *p = (const unsigned char *)host; *p; p++)
    hash = (hash ^ *p) * 16777619u;
  return hash % BUCKETS;
}

void server_peers_init(server_t *s) {
  for (size_t i = 0; i < BUCKETS; i++) procord_list_init(&s->peer_buckets[i]);
}

server_peer_t *server_peer_find(server_t *s, const char *host) {
  procord_list_t *bucket = &s->peer_buckets[bucket_of(host)], *node;
  PROCORD_LIST_FOREACH(node, bucket) {
    server_peer_t *p = PROCORD_LIST_ENTRY(node, server_peer_t, node);
    if (strcmp(p->host, host) == 0) return p;
  }
  server_peer_t *p = procord_allocate_zeroed(1, sizeof *p);
  if (!p) return NULL;
  snprintf(p->host, sizeof p->host, "%s", host);
  procord_list_push_front(bucket, &p->node);
  return p;
}

void server_peer_forget_if_unused(server_t *s, server_peer_t *peer) {
  (void)s;
  if (!peer || peer->connections > 0 || peer->running > 0) return;
  PROCORD_ASSERT(peer->connections == 0 && peer->running == 0); /* never below */
  procord_list_remove(&peer->node);
  procord_free(peer);
}

void server_peers_free(server_t *s) {
  for (size_t i = 0; i < BUCKETS; i++) {
    procord_list_t *node;
    while ((node = procord_list_pop_front(&s->peer_buckets[i])))
      procord_free(PROCORD_LIST_ENTRY(node, server_peer_t, node));
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
