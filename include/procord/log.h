/*
 * Where the C core's messages go. The core never prints: a worker server
 * logs through its options' `log` (procord/server.h), and what the core has
 * to say outside a server (libevent's own messages, such as a failed
 * epoll_ctl) goes to the process-wide log set here, or nowhere.
 */
#ifndef PROCORD_LOG_H
#define PROCORD_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum procord_log_level {
  PROCORD_LOG_ERROR = 0,
  PROCORD_LOG_WARNING = 1,
  PROCORD_LOG_INFO = 2,  /* start and stop */
  PROCORD_LOG_DEBUG = 3, /* one line per connection */
} procord_log_level_t;

/* Receives log lines, one at a time; the message is valid during the call. */
typedef void (*procord_log_fn)(void *context, procord_log_level_t level, const char *message);

/*
 * Sets the process-wide log: `log(context, level, message)` receives
 * libevent's messages (prefixed "libevent: "), on whatever thread libevent
 * says them, except while a worker server runs, whose own log takes them.
 * NULL (the default): they are dropped, never printed on stderr. It takes
 * over libevent's log callback (event_set_log_callback) for the whole
 * process, from this call or the first loop made (procord_loop_new),
 * whichever comes first: a host that sets its own afterwards gets
 * libevent's messages instead. The log is called with a lock held, so that
 * it is never called once replaced: it must not call procord_set_log
 * itself. Thread-safe. Returns nothing.
 */
void procord_set_log(procord_log_fn log, void *context);

#ifdef __cplusplus
}
#endif

#endif
