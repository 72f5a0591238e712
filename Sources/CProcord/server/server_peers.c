/*
 * A server's counts per client address, its figures, and a log that says
 * each kind of refusal or time-out without letting an attacker flood it.
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

double server_ms_since(const struct timespec *start) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)(now.tv_sec - start->tv_sec) * 1e3 + (double)(now.tv_nsec - start->tv_nsec) / 1e6;
}

static void count_reason(server_t *s, server_reason_t reason) {
  switch (reason) {
  case REASON_MAX_CONNECTIONS: SERVER_COUNT(s, refused_max_connections, 1); break;
  case REASON_PEER_CONNECTIONS: SERVER_COUNT(s, refused_peer_connections, 1); break;
  case REASON_EVICTED_IDLE: SERVER_COUNT(s, evicted_idle, 1); break;
  case REASON_IDLE_TIMEOUT: SERVER_COUNT(s, idle_timeouts, 1); break;
  case REASON_TASK_TIMEOUT: SERVER_COUNT(s, task_timeouts, 1); break;
  case REASON_ANSWER_TIMEOUT: SERVER_COUNT(s, answer_timeouts, 1); break;
  case REASON_PROTOCOL_ERROR: SERVER_COUNT(s, protocol_errors, 1); break;
  case REASON_UNKNOWN_TASK: SERVER_COUNT(s, unknown_tasks, 1); break;
  case REASON_CLIENT_GONE: SERVER_COUNT(s, clients_gone_mid_task, 1); break;
  case REASON_WORKER_LOST: SERVER_COUNT(s, workers_lost_mid_task, 1); break;
  case REASON_HANDSHAKE_REFUSED: SERVER_COUNT(s, handshakes_refused, 1); break;
  case REASON_OUT_OF_DESCRIPTORS:
  case REASON_COUNT: break;
  }
}

void server_note(server_t *s, server_reason_t reason, procord_log_level_t level, const char *peer,
                 const char *format, ...) {
  count_reason(s, reason);
  if (!s->options->log) return;
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  if (s->reason_second[reason] == now.tv_sec) {
    s->reason_unlogged[reason]++;
    return;
  }
  s->reason_second[reason] = now.tv_sec;
  char what[400];
  va_list arguments;
  va_start(arguments, format);
  vsnprintf(what, sizeof what, format, arguments);
  va_end(arguments);
  unsigned unlogged = s->reason_unlogged[reason];
  s->reason_unlogged[reason] = 0;
  if (unlogged)
    server_log(s, level, "%s: %s (and %u more like it since the last such line)", peer, what, unlogged);
  else
    server_log(s, level, "%s: %s", peer, what);
}

void procord_server_stats_read(const procord_server_stats_t *stats, procord_server_stats_t *copy) {
#define READ(field) copy->field = __atomic_load_n(&stats->field, __ATOMIC_RELAXED)
  READ(connections_accepted);
  READ(tasks_answered);
  READ(refused_max_connections);
  READ(refused_peer_connections);
  READ(evicted_idle);
  READ(idle_timeouts);
  READ(task_timeouts);
  READ(answer_timeouts);
  READ(protocol_errors);
  READ(unknown_tasks);
  READ(clients_gone_mid_task);
  READ(workers_lost_mid_task);
  READ(workers_started);
  READ(handshakes_refused);
  READ(connections_now);
  READ(tasks_running_now);
  READ(tasks_waiting_now);
  READ(task_bytes_buffered_now);
  READ(answer_bytes_buffered_now);
#undef READ
}
