/*
 * A worker server's log (server_private.h): its lines, its figures
 * (procord_server_stats_t), and notes that say each kind of refusal or
 * time-out without letting an attacker flood the log.
 */
#define _GNU_SOURCE
#include "server/server_private.h"
#include "base/base_private.h"

#include <stdarg.h>
#include <stdio.h>

void server_log(server_t *s, procord_log_level_t level, const char *format, ...) {
  if (!s->options->log) return;
  char line[512];
  va_list arguments;
  va_start(arguments, format);
  vsnprintf(line, sizeof line, format, arguments);
  va_end(arguments);
  s->options->log(s->options->context, level, line);
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
  procord_monotonic_now(&now);
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
    server_log(s, level, "%s: %s (and %u more like it since the last such line)", peer, what,
               unlogged);
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
