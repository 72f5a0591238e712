/*
 * A worker server's matching (server_private.h): ready tasks, oldest first,
 * to idle workers, within the bound on answers not yet taken; and, while a
 * task runs, what passes between its client and its worker: the worker's
 * prints and answer to the client, the client's leaving to the worker. A
 * client and a worker are bound here, and only here: c->worker == w exactly
 * when w->client == c.
 */
#define _GNU_SOURCE
#include "procord/frame.h"
#include "server/server_private.h"
#include "base/base_private.h"

/* ---- Binding ---- */

static void bind_client_to_worker(server_worker_t *w, server_client_t *c) {
  PROCORD_ASSERT(!w->client && !c->worker); /* one task per worker, one worker per client */
  PROCORD_ASSERT(w->state == WORKER_IDLE && c->state == CLIENT_RUNNING);
  w->client = c;
  c->worker = w;
  void *input = c->input;
  c->input = NULL;
  server_worker_run_task(w, c->task_name, c->task_name_length, input, c->input_length);
}

static void unbind_client_from_worker(server_worker_t *w, server_client_t *c) {
  PROCORD_ASSERT(w->client == c && c->worker == w);
  w->client = NULL;
  c->worker = NULL;
}

/* ---- Matching ---- */

void server_dispatch(server_t *s) {
  server_worker_t *w;
  server_workers_keep_warm(s); /* sessions that could not be made before, first */
  /* Past max_buffered_answer_bytes, no new answer is made until clients
     take theirs (each within its time limit). */
  while (s->ready > 0 && s->owed_bytes <= s->max_owed_bytes && (w = server_worker_find_idle(s))) {
    server_client_t *c = server_client_next_ready(s);
    if (!c) break; /* each waiting task's address runs its most already */
    bind_client_to_worker(w, c);
  }
  server_workers_keep_warm(s);
  if (s->draining) server_workers_retire_idle(s);
}

static void on_dispatch_event(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  server_t *s = context;
  server_dispatch(s);
  /* Prints held back for want of room may go on too. */
  procord_list_t *node;
  PROCORD_LIST_FOREACH(node, &s->workers) {
    server_worker_t *w = PROCORD_LIST_ENTRY(node, server_worker_t, node);
    if (w->session && w->client && server_client_has_room(w->client))
      server_worker_pause_output(w, 0);
  }
}

/* The same, from the loop (from inside a client's callback). */
static void dispatch_soon(server_t *s) {
  if (!s->dispatch_event) s->dispatch_event = event_new(s->base, -1, 0, on_dispatch_event, s);
  if (s->dispatch_event) event_active(s->dispatch_event, 0, 0);
}

void server_dispatch_free(server_t *s) {
  if (s->dispatch_event) event_free(s->dispatch_event);
  s->dispatch_event = NULL;
}

/* ---- Between a running task's client and its worker ---- */

/* A print goes to the client, the worker paused while the client has no
   room for more; the answer goes to the client, and the task is over. */
static void pass_output_to_client(server_worker_t *w, procord_connection_t *session,
                                  const procord_frame_t *frame) {
  server_client_t *c = w->client;
  server_t *s = w->server;
  if (!c) return; /* abandoned: it is being ended */
  server_client_forward(c, frame->kind, session, frame);
  if (frame->kind == PROCORD_FRAME_PRINT || frame->kind == PROCORD_FRAME_FLUSH) {
    if (!server_client_has_room(c)) server_worker_pause_output(w, 1);
    return;
  }
  unbind_client_from_worker(w, c);
  server_worker_answered(w);
  server_client_task_done(c, frame->kind);
  s->hooks.ask_keep_running(s);
}

/* The worker is done with a task without an answer: its client is dropped. */
static void drop_client_of_lost_task(server_worker_t *w, const char *why) {
  server_client_t *c = w->client;
  if (!c) return;
  unbind_client_from_worker(w, c);
  server_client_lost_worker(c, why);
}

/* The client is going with its task in a worker: the worker is ended. */
static void abandon_task_of_leaving_client(server_client_t *c) {
  server_worker_t *w = c->worker;
  if (!w) return;
  unbind_client_from_worker(w, c);
  server_worker_abandon(w);
}

/* The client took what its task printed: the worker may print on. */
static void resume_worker_output(server_client_t *c) {
  if (c->worker) server_worker_pause_output(c->worker, 0);
}

void server_dispatch_hook_up(server_hooks_t *hooks) {
  hooks->task_ready = server_dispatch;
  hooks->answers_taken = dispatch_soon;
  hooks->output_taken = resume_worker_output;
  hooks->client_leaving = abandon_task_of_leaving_client;
  hooks->workers_changed = server_dispatch;
  hooks->worker_output = pass_output_to_client;
  hooks->task_lost = drop_client_of_lost_task;
}
