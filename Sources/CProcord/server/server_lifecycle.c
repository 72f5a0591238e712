/*
 * A worker server's life (procord/server.h): its options and limits,
 * starting it on a loop (procord_server_start), stopping it
 * (procord_server_stop), its end once every client and worker is gone
 * (on_stopped), freeing it, and procord_server_run, which is all of these on
 * a loop of its own. What it does meanwhile is the other files' (the map is
 * in server_private.h), whose hooks it connects at start.
 */
#define _GNU_SOURCE
#include "base/base_private.h"
#include "io/io_private.h"
#include "procord/error.h"
#include "server/server_private.h"

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define DEFAULT_DRAIN_TIMEOUT_MS 30000

/* What a server's security options allow; logs why not. */
static int check_server_security(server_t *s) {
  const procord_security_t *security = s->options->security;
  if (!security) return 0;
  if (security->role != PROCORD_SECURITY_SERVER) {
    server_log(s, PROCORD_LOG_ERROR, "the server's security options were made for a client");
    return PROCORD_EINVAL;
  }
  return 0;
}

/* ---- Limits ---- */

static int or_default(int value, int fallback) {
  return value > 0 ? value : value < 0 ? -1 : fallback;
}

/* The options' limits, with their defaults. */
static void apply_server_limits(server_t *s, const procord_server_options_t *options) {
  s->max = options->max_simultaneous_tasks > 0 ? options->max_simultaneous_tasks
                                               : PROCORD_DEFAULT_MAX_SIMULTANEOUS_TASKS;
  if (options->dont_fork) s->max = 1; /* one task at a time, in this process */
  s->warm = options->prestarted_workers > 0 ? options->prestarted_workers : 2;
  if (s->warm > s->max) s->warm = s->max;
  s->max_connections =
      options->max_connections > 0 ? options->max_connections : PROCORD_DEFAULT_MAX_CONNECTIONS;
  s->max_connections_per_peer =
      options->max_connections_per_peer > 0 ? options->max_connections_per_peer : 0;
  s->max_tasks_per_peer = options->max_tasks_per_peer > 0 ? options->max_tasks_per_peer : 0;
  s->idle_timeout_ms = or_default(options->idle_timeout_ms, PROCORD_DEFAULT_IDLE_TIMEOUT_MS);
  s->task_timeout_ms = or_default(options->task_timeout_ms, PROCORD_DEFAULT_TASK_TIMEOUT_MS);
  s->answer_timeout_ms = or_default(options->answer_timeout_ms, PROCORD_DEFAULT_ANSWER_TIMEOUT_MS);
  s->read_timeout_ms = options->read_timeout_ms > 0 ? options->read_timeout_ms : 0;
  s->min_receive_rate =
      options->min_receive_rate > 0 ? options->min_receive_rate : PROCORD_DEFAULT_MIN_RATE;
  s->min_send_rate = options->min_send_rate > 0 ? options->min_send_rate : PROCORD_DEFAULT_MIN_RATE;
  s->drain_timeout_ms =
      options->drain_timeout_ms > 0 ? options->drain_timeout_ms : DEFAULT_DRAIN_TIMEOUT_MS;
  s->max_message_size = options->max_message_size > 0 ? options->max_message_size
                                                      : procord_default_max_message_size();
  s->max_held_bytes = options->max_buffered_task_bytes;
  if (s->max_held_bytes == 0) {
    s->max_held_bytes = (size_t)256 << 20;
    if (s->max_message_size <= SIZE_MAX / 2 && 2 * s->max_message_size > s->max_held_bytes)
      s->max_held_bytes = 2 * s->max_message_size;
  }
  s->max_owed_bytes = options->max_buffered_answer_bytes > 0 ? options->max_buffered_answer_bytes
                                                             : s->max_held_bytes;
  s->stats = options->stats ? options->stats : &s->local_stats;
  memset(s->stats, 0, sizeof *s->stats);
}

/*
 * Descriptors for max_connections clients (a TLS client holds three: its
 * socket and its relay's pair) and the workers (their control and session
 * sockets): the soft limit is raised toward the hard one if it is short
 * (Linux starts programs at 1024), and max_connections lowered, saying so,
 * if even that is not enough.
 */
static void fit_descriptor_limit(server_t *s) {
  struct rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  rlim_t per_client =
      s->options->security && procord_security_uses_tls(s->options->security) ? 3 : 1;
  rlim_t reserve = (rlim_t)s->max * 4 + 64;
  rlim_t needed = (rlim_t)s->max_connections * per_client + reserve;
  if (limit.rlim_cur >= needed) return;
  rlim_t raised =
      limit.rlim_max == RLIM_INFINITY || limit.rlim_max >= needed ? needed : limit.rlim_max;
  if (raised > limit.rlim_cur) {
    struct rlimit wanted = {raised, limit.rlim_max};
    if (setrlimit(RLIMIT_NOFILE, &wanted) == 0) limit.rlim_cur = raised;
  }
  if (limit.rlim_cur >= needed) return;
  int fits =
      limit.rlim_cur > reserve + per_client ? (int)((limit.rlim_cur - reserve) / per_client) : 1;
  /* Only a limit asked for is worth a warning: the default fits itself. */
  server_log(
      s, s->options->max_connections > 0 ? PROCORD_LOG_WARNING : PROCORD_LOG_INFO,
      "max_connections lowered from %d to %d: the descriptor limit is %llu (raise it with ulimit -n, "
      "or LimitNOFILE= under systemd)",
      s->max_connections, fits, (unsigned long long)limit.rlim_cur);
  s->max_connections = fits;
}

void procord_server_options_init(procord_server_options_t *options) {
  /* Zero is each field's default: a field a later version appends too. */
  if (!options) return;
  procord_options_clear(options, sizeof *options);
  procord_spawn_options_init(&options->worker);
}

/* ---- The end ---- */

/* Publishes the end for procord_server_is_stopped and procord_server_wait,
   under the loop's done lock (the waits' condition). */
static void publish_stopped(server_t *s) {
  pthread_mutex_lock(procord_loop_done_lock(s->loop));
  __atomic_store_n(&s->stopped, 1, __ATOMIC_RELEASE);
  pthread_cond_broadcast(procord_loop_done_cond(s->loop));
  pthread_mutex_unlock(procord_loop_done_lock(s->loop));
}

/*
 * Every client and worker is gone: what is left of the server on the loop
 * (its events, its listening socket, its place in libevent's log and among
 * the loop's work) goes too, so that only its memory remains, freed by
 * procord_server_free on any thread, even after the loop. Then `tell` calls
 * on_stopped, which may free the server (the free waits for its return),
 * and the end is published: nothing of the server is touched after that.
 */
static void finish_server(server_t *s, int tell) {
  if (s->finished) return;
  s->finished = s->finishing = 1;
  server_log(s, PROCORD_LOG_INFO, "stopped");
  server_drain_events_free(s);
  server_dispatch_free(s);
  server_workers_release(s); /* none left: its respawn timer */
  server_peers_free(s);
  server_accept_stop(s);
  procord_log_unroute_from_server(&s->log_route);
  procord_loop_remove_work(s->loop, &s->work);
  if (s->finish_event) event_free(s->finish_event); /* in its own callback, it may be */
  s->finish_event = NULL;
  procord_loop_t *own_loop = s->own_loop ? s->loop : NULL;
  if (tell && s->options->on_stopped) {
    __atomic_store_n(&s->in_on_stopped, 1, __ATOMIC_RELEASE);
    s->options->on_stopped(s->options->context);
    __atomic_store_n(&s->in_on_stopped, 0, __ATOMIC_RELEASE);
    if (__atomic_load_n(&s->free_requested, __ATOMIC_ACQUIRE)) {
      procord_free(s);
      return;
    }
  }
  publish_stopped(s);
  if (own_loop) procord_loop_stop(own_loop);
}

static void on_finish_event(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  server_t *s = context;
  if (s->client_count != 0 || s->total != 0 || !procord_list_is_empty(&s->secured)) {
    s->finishing = 0; /* something came back meanwhile: its end calls again */
    return;
  }
  finish_server(s, 1);
}

/* procord_loop_free with the server still on its loop: stop now. */
static void on_server_loop_freed(procord_loop_work_t *work) {
  server_t *s = (server_t *)((char *)work - offsetof(server_t, work));
  server_stop_now(s, "its loop is being freed");
}

/* ---- Starting ---- */

/* Says in the log why the options cannot make a server; NULL if they can. */
static const char *options_mistake(const procord_server_options_t *options) {
  return !options->dont_fork && !options->worker.program
             ? "no worker program: set options.worker (its program and argv, see server.h), "
               "or dont_fork with tasks"
         : options->dont_fork && options->task_count == 0
             ? "dont_fork without tasks: set options.tasks and options.task_count"
             : NULL;
}

/* A start that failed half-way: nothing of it is left. */
static void undo_server_start(server_t *s) {
  server_drain_events_free(s);
  if (s->finish_event) event_free(s->finish_event);
  s->finish_event = NULL;
  server_dispatch_free(s);
  server_workers_release(s);
  server_peers_free(s);
  server_accept_stop(s);
  procord_log_unroute_from_server(&s->log_route);
}

/* On the loop's thread (or before it runs): listen, make the events, start
   the workers to keep warm, accept (nothing is accepted before the loop
   runs again). */
static void start_server_on_loop(void *argument) {
  server_t *s = argument;
  const procord_server_options_t *options = s->options;
  /* libevent has one log for the whole process: while a server runs, what
     libevent says goes to the server's log (log.c). */
  procord_log_route_to_server(&s->log_route, options->log, options->context);
  int error = check_server_security(s);
  if (!error) fit_descriptor_limit(s);
  if (!error) error = server_listen(s);
  if (!error) {
    s->finish_event = event_new(s->base, -1, 0, on_finish_event, s);
    error = s->finish_event ? server_drain_events_open(s) : -ENOMEM;
  }
  if (!error) error = server_workers_open(s);
  if (!error) error = server_accept_start(s);
  if (error) {
    undo_server_start(s);
    s->start_error = error;
    return;
  }
  s->work.abort = on_server_loop_freed;
  procord_loop_add_work(s->loop, &s->work);
  server_workers_keep_warm(s);
  server_log(s, PROCORD_LOG_INFO, "listening on %s (at most %d task%s at once%s, %d connections)",
             s->address, s->max, s->max == 1 ? "" : "s",
             options->dont_fork ? ", in this process" : "", s->max_connections);
  char ready[200];
  snprintf(ready, sizeof ready, "READY=1\nSTATUS=listening on %s", s->address);
  server_notify(s, ready);
  if (options->on_listening) options->on_listening(options->context, s->address, s->port);
}

static int start_server(procord_loop_t *loop, const procord_server_options_t *given, int own_loop,
                        server_t **result) {
  procord_lineage_mark_serving(); /* it may delegate from now on */
  if (!given) return PROCORD_EINVAL;
  /* Read by its size, as every options struct (base_private.h, options). */
  procord_server_options_t copy;
  const procord_server_options_t *options = &copy;
  const char *mistake =
      PROCORD_OPTIONS_COPY(copy, given, PROCORD_FIRST_SIZE_SERVER_OPTIONS) != 0
          ? "the server's options are larger than this Procord's and set a field it does not "
            "know (built against a newer procord/server.h?), or their size is wrong"
      : procord_spawn_options_nested(&copy.worker) != 0
          ? "the server's worker options have a size that is not this Procord's"
          : NULL;
  if (!mistake) mistake = options_mistake(options);
  if (!mistake && (!loop || !result))
    mistake = "procord_server_start: no loop, or nowhere to store the server (NULL)";
  if (mistake) {
    if (options->log) options->log(options->context, PROCORD_LOG_ERROR, mistake);
    return PROCORD_EINVAL;
  }
  server_t *s = procord_allocate_zeroed(1, sizeof *s);
  if (!s) return -ENOMEM;
  s->copy = copy;
  s->options = &s->copy;
  s->loop = loop;
  s->base = procord_loop_base(loop);
  s->own_loop = own_loop;
  s->listen_fd = -1;
  procord_list_t *lists[] = {&s->workers,    &s->clients,    &s->ready_queue,
                             &s->idle_queue, &s->room_queue, &s->secured};
  for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) procord_list_init(lists[i]);
  server_peers_init(s);
  server_dispatch_hook_up(&s->hooks);
  server_drain_hook_up(&s->hooks);
  apply_server_limits(s, options);
  if (options->handle_signals) {
    /* A program inherits its starter's signal mask (a test runner's threads
       block SIGTERM, for one): the signals we drain on must get through. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_UNBLOCK, &stop_signals, NULL);
  }
  /* The loop's base is used on its thread only. */
  procord_loop_call_and_wait(loop, start_server_on_loop, s);
  int error = s->start_error;
  s->copy.hostname = NULL; /* the caller's, read while listening only */
  if (error) {
    procord_free(s);
    return error;
  }
  *result = s;
  return 0;
}

int procord_server_start(procord_loop_t *loop, const procord_server_options_t *options,
                         procord_server_t **server) {
  return start_server(loop, options, 0, server);
}

int procord_server_address(const procord_server_t *server, char *buffer, size_t size, int *port) {
  if (!server) return PROCORD_EINVAL;
  if (port) *port = server->port;
  if (!buffer || size == 0) return 0;
  int length = snprintf(buffer, size, "%s", server->address[0] ? server->address : "?");
  return length >= 0 && (size_t)length < size ? 0 : -ENOBUFS;
}

/* ---- Stopping ---- */

typedef struct {
  server_t *server;
  procord_server_stop_how_t how;
} stop_call_t;

static void stop_server_on_loop(void *argument) {
  stop_call_t *call = argument;
  server_t *s = call->server;
  if (s->finishing) return;
  if (call->how == PROCORD_SERVER_STOP_NOW) server_stop_now(s, "procord_server_stop, now");
  else
    server_begin_drain(s, "procord_server_stop");
}

int procord_server_stop(procord_server_t *server, procord_server_stop_how_t how) {
  if (!server || (how != PROCORD_SERVER_STOP_GRACEFUL && how != PROCORD_SERVER_STOP_NOW))
    return PROCORD_EINVAL;
  if (procord_server_is_stopped(server)) return 0;
  stop_call_t call = {server, how};
  procord_loop_call_and_wait(server->loop, stop_server_on_loop, &call);
  return 0;
}

int procord_server_is_stopped(const procord_server_t *server) {
  return server && __atomic_load_n(&server->stopped, __ATOMIC_ACQUIRE);
}

static int holds_stopped(void *argument) { return procord_server_is_stopped(argument); }

int procord_server_wait(procord_server_t *server, int timeout_ms) {
  if (!server) return 0;
  if (procord_server_is_stopped(server)) return 1;
  return procord_loop_wait_until(server->loop, holds_stopped, server, timeout_ms);
}

/* Freed while running: everything ends here and now, every worker killed
   and reaped (waited for) before this returns. */
static void abandon_server_on_loop(void *argument) {
  server_t *s = argument;
  if (s->finished) return;
  if (!s->draining) server_log(s, PROCORD_LOG_INFO, "freed while running: stopping at once");
  s->draining = s->finishing = 1; /* nothing starts, nothing finishes but here */
  server_accept_stop(s);
  server_clients_close_all(s);
  server_workers_release(s);
  server_drop_secured(s, 1);
  finish_server(s, 0);
}

void procord_server_free(procord_server_t *server) {
  if (!server) return;
  /* From on_stopped: freed once it returns. */
  if (__atomic_load_n(&server->in_on_stopped, __ATOMIC_ACQUIRE)) {
    __atomic_store_n(&server->free_requested, 1, __ATOMIC_RELEASE);
    return;
  }
  if (!procord_server_is_stopped(server))
    procord_loop_call_and_wait(server->loop, abandon_server_on_loop, server);
  procord_free(server);
}

/* ---- A server on a loop of its own ---- */

int procord_server_run(const procord_server_options_t *options) {
  procord_loop_t *loop = NULL;
  if (options) { /* start says what is wrong with them, if anything */
    int error = procord_loop_new(&loop);
    if (error) return error;
  }
  server_t *s = NULL;
  int error = start_server(loop, options, 1, &s);
  if (!error) {
    /* Until the server has finished (which stops its loop). */
    procord_loop_run(loop);
    procord_server_free(s);
  }
  procord_loop_free(loop);
  return error;
}
