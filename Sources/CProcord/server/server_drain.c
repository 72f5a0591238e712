/*
 * A worker server's drain (server_private.h): on SIGTERM or SIGINT (with
 * handle_signals), procord_server_stop, or a keep_running predicate that
 * says stop, new connections are refused and the tasks read are served,
 * within drain_timeout_ms; then, or at once for STOP_NOW, everything ends.
 * Whether a drain is over is asked here after each end (the maybe_stop
 * hook), and the server then finishes from the loop's top.
 */
#define _GNU_SOURCE
#include "server/server_private.h"
#include "base/base_private.h"

#include <errno.h>
#include <signal.h>

/* ---- Whether to stop ---- */

static void maybe_stop(server_t *s) {
  if (!s->draining || s->finishing) return;
  server_workers_retire_idle(s);
  if (s->client_count == 0 && s->total == 0 && procord_list_is_empty(&s->secured))
    server_finish_soon(s);
}

/* After each task, and each client closed: the keep_running predicate. */
static void ask_keep_running(server_t *s) {
  if (s->options->keep_running && !s->draining && !s->options->keep_running(s->options->context))
    server_begin_drain(s, "keep-running predicate said stop");
}

void server_drain_hook_up(server_hooks_t *hooks) {
  hooks->ask_keep_running = ask_keep_running;
  hooks->maybe_stop = maybe_stop;
}

void server_finish_soon(server_t *s) {
  if (s->finishing) return;
  s->finishing = 1;
  event_active(s->finish_event, 0, 0);
}

/* ---- Draining ---- */

/* Every client closed, every worker killed, every peer in the gate dropped:
   the kills' ends are seen as usual, and then the server finishes. */
static void end_everything(server_t *s) {
  server_clients_close_all(s);
  server_workers_kill(s);
  server_drop_secured(s, 1);
  maybe_stop(s);
}

static void on_drain_timeout(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  server_t *s = context;
  server_log(s, PROCORD_LOG_WARNING, "drain timeout: killing %d running tasks, dropping %d waiting",
             s->busy, s->ready);
  end_everything(s);
}

void server_begin_drain(server_t *s, const char *why) {
  if (s->draining) return;
  s->draining = 1;
  server_log(s, PROCORD_LOG_INFO, "stopping (%s): %d tasks running, %d waiting, %d arriving", why,
             s->busy, s->ready, s->receiving);
  /* Closing the listening socket refuses new connections at once. */
  server_accept_stop(s);
  /* Peers not through the gate yet are not clients yet. */
  server_drop_secured(s, 0);
  /* Tasks read whole, or arriving, are served; idle connections go, and
     the others once answered (no `0R`). */
  server_clients_drain(s);
  server_notify(s, "STOPPING=1");
  procord_timer_arm(s->drain_timer, s->drain_timeout_ms);
  server_dispatch(s);
  maybe_stop(s);
}

void server_stop_now(server_t *s, const char *why) {
  if (s->finishing) return;
  int running = s->busy, waiting = s->ready;
  server_begin_drain(s, why);
  if (s->finishing) return;
  server_log(s, PROCORD_LOG_INFO, "stopping now: killing %d running tasks, dropping %d waiting",
             running, waiting);
  end_everything(s);
}

static void on_stop_signal(evutil_socket_t signal, short events, void *context) {
  (void)events;
  server_begin_drain(context, signal == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* ---- Its events ---- */

int server_drain_events_open(server_t *s) {
  s->drain_timer = evtimer_new(s->base, on_drain_timeout, s);
  if (!s->drain_timer) return -ENOMEM;
  if (!s->options->handle_signals) return 0;
  /* Every event of a signal on this base gets it: each server that asks
     drains on it. */
  s->signals[0] = evsignal_new(s->base, SIGTERM, on_stop_signal, s);
  s->signals[1] = evsignal_new(s->base, SIGINT, on_stop_signal, s);
  for (int i = 0; i < 2; i++)
    if (!s->signals[i] || event_add(s->signals[i], NULL) < 0) return -ENOMEM;
  return 0;
}

void server_drain_events_free(server_t *s) {
  struct event **events[] = {&s->signals[0], &s->signals[1], &s->drain_timer};
  for (size_t i = 0; i < sizeof events / sizeof events[0]; i++) {
    if (*events[i]) event_free(*events[i]);
    *events[i] = NULL;
  }
}
