/* Private: routing libevent's messages (log.c, procord/log.h). */
#ifndef PROCORD_LOG_PRIVATE_H
#define PROCORD_LOG_PRIVATE_H

#include "procord/log.h"

/* Takes over libevent's log callback, if not yet (procord_loop_new). */
void procord_log_take_libevent(void);

/* A server's log while it takes libevent's messages; its storage is the
   server's. */
typedef struct procord_log_route_s {
  procord_log_fn log;
  void *context;
  struct procord_log_route_s *next;
} procord_log_route_t;

/* While a server runs, libevent's messages go to its log (none: dropped);
   with several, to the one routed last... */
void procord_log_route_to_server(procord_log_route_t *route, procord_log_fn log, void *context);
/* ...until it stops: then to the one before it, or the process's log
   (procord_set_log). A route not routed is left alone. */
void procord_log_unroute_from_server(procord_log_route_t *route);

/* A line for the process-wide log (procord_set_log), if there is one: for a
   misuse the core can only report, not return. */
void procord_log_write(procord_log_level_t level, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

#endif
