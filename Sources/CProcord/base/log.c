/* The process-wide log, and libevent's messages routed to it (procord/log.h, base_private.h). */
#include "base/base_private.h"
#include "procord/log.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static procord_log_fn process_log;
static void *process_context;
/* Running servers' logs, the newest first: it takes libevent's messages
   meanwhile (the one before it again once it stops). */
static procord_list_t routes = {&routes, &routes};
static int installed;

static void on_libevent_log(int severity, const char *message) {
  procord_log_level_t level = severity >= EVENT_LOG_ERR    ? PROCORD_LOG_ERROR
                              : severity == EVENT_LOG_WARN ? PROCORD_LOG_WARNING
                                                           : PROCORD_LOG_DEBUG;
  char line[1024];
  snprintf(line, sizeof line, "libevent: %s", message);
  /* Held during the call, so that a log is never called after it was
     replaced (its context may be gone). */
  pthread_mutex_lock(&lock);
  procord_list_t *newest = procord_list_first(&routes);
  procord_log_route_t *route =
      newest ? PROCORD_LIST_ENTRY(newest, procord_log_route_t, node) : NULL;
  procord_log_fn log = route ? route->log : process_log;
  void *context = route ? route->context : process_context;
  if (log) log(context, level, line);
  pthread_mutex_unlock(&lock);
}

/* With the lock held. */
static void install(void) {
  if (installed) return;
  installed = 1;
  event_set_log_callback(on_libevent_log);
}

void procord_set_log(procord_log_fn log, void *context) {
  pthread_mutex_lock(&lock);
  process_log = log;
  process_context = context;
  install();
  pthread_mutex_unlock(&lock);
}

void procord_log_take_libevent(void) {
  pthread_mutex_lock(&lock);
  install();
  pthread_mutex_unlock(&lock);
}

void procord_log_route_to_server(procord_log_route_t *route, procord_log_fn log, void *context) {
  pthread_mutex_lock(&lock);
  route->log = log;
  route->context = context;
  procord_list_push_front(&routes, &route->node);
  install();
  pthread_mutex_unlock(&lock);
}

void procord_log_unroute_from_server(procord_log_route_t *route) {
  pthread_mutex_lock(&lock);
  if (procord_list_is_linked(&route->node)) procord_list_remove(&route->node);
  pthread_mutex_unlock(&lock);
}

void procord_log_write(procord_log_level_t level, const char *format, ...) {
  char line[1024];
  va_list arguments;
  va_start(arguments, format);
  vsnprintf(line, sizeof line, format, arguments);
  va_end(arguments);
  pthread_mutex_lock(&lock);
  if (process_log) process_log(process_context, level, line);
  pthread_mutex_unlock(&lock);
}
