/* Private: routing libevent's messages (log.c, procord/log.h). */
#ifndef PROCORD_LOG_PRIVATE_H
#define PROCORD_LOG_PRIVATE_H

#include "procord/log.h"

/* Takes over libevent's log callback, if not yet (procord_loop_new). */
void procord_log_take_libevent(void);

/* While the server `owner` runs, libevent's messages go to its log (none:
   dropped)... */
void procord_log_route_to_server(const void *owner, procord_log_fn log, void *context);
/* ...until it stops (a no-op if another server took them since). */
void procord_log_unroute_from_server(const void *owner);

/* A line for the process-wide log (procord_set_log), if there is one: for a
   misuse the core can only report, not return. */
void procord_log_write(procord_log_level_t level, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

#endif
