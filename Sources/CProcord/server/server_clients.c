/*
 * A worker server's client table (server_private.h): each connection's task
 * is read whole by the server, under a time limit over the whole task,
 * before it waits for a worker; its answer must be taken at a minimum rate;
 * the next task on the same connection is read only once the answer is out.
 * What the files above must know (a task ready, a client gone...) goes
 * through the server's hooks: this file knows no worker.
 */
#define _GNU_SOURCE
#include "procord/error.h"
#include "procord/frame.h"
#include "server/server_private.h"
#include "base/base_private.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Output of a running task (its prints) a client may leave untaken before
   the worker is read no more (the worker then waits, its slot held, under
   the answer time limit). */
#define HIGH_WATER (4 * 1024 * 1024)
/* A task this small may use the headroom above max_held_bytes. */
#define SMALL_TASK (64 * 1024)
/* Bodies at least this big are lent from the worker's session, not copied. */
#define LEND_FROM 65536

static void enter_idle(server_client_t *c);
static void arm_client_timer(server_client_t *c);

/* ---- Lists: every client; the ready queue, the idle list, the wait for room ---- */

static procord_list_t *queue_of(server_t *s, client_queue_t queue) {
  return queue == CLIENT_QUEUE_READY  ? &s->ready_queue
         : queue == CLIENT_QUEUE_IDLE ? &s->idle_queue
                                      : &s->room_queue;
}

/* The client at the head of `queue` (the oldest there), or NULL. */
static server_client_t *first_in_queue(server_t *s, client_queue_t queue) {
  procord_list_t *node = procord_list_first(queue_of(s, queue));
  return node ? PROCORD_LIST_ENTRY(node, server_client_t, queue_node) : NULL;
}

static void leave_queue(server_client_t *c) {
  server_t *s = c->server;
  PROCORD_ASSERT((c->queued_in != CLIENT_QUEUE_NONE) == procord_list_is_linked(&c->queue_node));
  if (c->queued_in == CLIENT_QUEUE_NONE) return;
  procord_list_remove(&c->queue_node);
  if (c->queued_in == CLIENT_QUEUE_READY) {
    PROCORD_ASSERT(s->ready > 0);
    SERVER_SET(s, tasks_waiting_now, --s->ready);
  }
  if (c->queued_in == CLIENT_QUEUE_ROOM) {
    PROCORD_ASSERT(s->waiting_held >= c->held);
    s->waiting_held -= c->held;
  }
  c->queued_in = CLIENT_QUEUE_NONE;
}

/* Puts the client at the end of `queue`, out of any other (one at a time). */
static void join_queue(server_client_t *c, client_queue_t queue) {
  server_t *s = c->server;
  leave_queue(c);
  procord_list_push_back(queue_of(s, queue), &c->queue_node);
  c->queued_in = queue;
  if (queue == CLIENT_QUEUE_READY) SERVER_SET(s, tasks_waiting_now, ++s->ready);
  if (queue == CLIENT_QUEUE_ROOM) s->waiting_held += c->held;
}

/* The ways a client's state may move: a task's round, IDLE to ANSWERING and
   back, and CLOSING from any but itself, for good (asserted: unused under NDEBUG). */
__attribute__((unused)) static int client_may_move(client_state_t from, client_state_t to) {
  switch (to) {
  case CLIENT_IDLE: return from == CLIENT_ANSWERING || from == CLIENT_IDLE; /* IDLE: just opened */
  case CLIENT_RECEIVING: return from == CLIENT_IDLE;
  case CLIENT_READY: return from == CLIENT_RECEIVING;
  case CLIENT_RUNNING: return from == CLIENT_READY;
  case CLIENT_ANSWERING: return from == CLIENT_RUNNING;
  case CLIENT_CLOSING: return from != CLIENT_CLOSING;
  }
  return 0;
}

static void set_client_state(server_client_t *c, client_state_t state) {
  server_t *s = c->server;
  PROCORD_ASSERT(client_may_move(c->state, state));
  PROCORD_ASSERT(!c->worker); /* bound only while RUNNING, and unbound before it moves on */
  if (c->state == CLIENT_RECEIVING) {
    PROCORD_ASSERT(s->receiving > 0);
    s->receiving--;
  }
  if (state == CLIENT_RECEIVING) s->receiving++;
  c->state = state;
  procord_monotonic_now(&c->since);
}

static void resume_waiting(server_t *s);

/* Counts what the client has not taken yet in owed_bytes; when that falls
   back under its bound, tasks may be handed to workers again. */
static void recount_owed(server_client_t *c, size_t pending) {
  server_t *s = c->server;
  int was_over = s->owed_bytes > s->max_owed_bytes;
  PROCORD_ASSERT(s->owed_bytes >= c->owed);
  s->owed_bytes = s->owed_bytes - c->owed + pending;
  c->owed = pending;
  SERVER_SET(s, answer_bytes_buffered_now, s->owed_bytes);
  if (was_over && s->owed_bytes <= s->max_owed_bytes) s->hooks.answers_taken(s);
}

/* The task's bytes are no longer the server's to hold (handed to a worker,
   or dropped): room for those waiting. */
static void release_held(server_client_t *c) {
  server_t *s = c->server;
  if (!c->held) return;
  PROCORD_ASSERT(s->held_bytes >= c->held);
  s->held_bytes -= c->held;
  c->held = 0;
  SERVER_SET(s, task_bytes_buffered_now, s->held_bytes);
  resume_waiting(s);
}

static void forget_task(server_client_t *c) {
  release_held(c);
  procord_free(c->task_name);
  procord_free(c->input);
  c->task_name = NULL;
  c->input = NULL;
  c->task_name_length = c->input_length = 0;
  c->received = 0;
}

/* Frees the client; its connection too (safe inside its callbacks). */
static void client_free(server_client_t *c) {
  server_t *s = c->server;
  leave_queue(c);
  release_held(c);
  recount_owed(c, 0);
  if (c->state == CLIENT_RECEIVING) {
    PROCORD_ASSERT(s->receiving > 0);
    s->receiving--;
  }
  if (c->worker) {
    PROCORD_ASSERT(c->state == CLIENT_RUNNING);
    s->hooks.client_leaving(c); /* unbound, its worker ended */
  }
  if (c->state == CLIENT_RUNNING && c->peer) {
    PROCORD_ASSERT(c->peer->running > 0);
    c->peer->running--;
  }
  if (c->peer) {
    c->peer->connections--;
    server_peer_forget_if_unused(s, c->peer);
  }
  if (c->timer) event_free(c->timer);
  procord_connection_free(c->connection);
  forget_task(c);
  procord_list_remove(&c->node);
  PROCORD_ASSERT(s->client_count > 0);
  SERVER_SET(s, connections_now, --s->client_count);
  procord_free(c);
  s->hooks.ask_keep_running(s);
  s->hooks.maybe_stop(s);
}

/* Closes at once: with `reset`, the peer learns it even if it is not reading. */
static void client_close(server_client_t *c, int reset) {
  if (reset) {
    struct linger at_once = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &at_once, sizeof at_once);
  }
  client_free(c); /* frees the connection without a callback, closing the socket */
}

/* Closes once what was sent is written, within the answer timeout (1 s
   without one). */
static void close_after_answer(server_client_t *c) {
  set_client_state(c, CLIENT_CLOSING);
  int limit = c->server->answer_timeout_ms > 0 ? c->server->answer_timeout_ms : 1000;
  procord_connection_close_nicely(c->connection, limit);
}

/* Answers `E` (what the client did wrong) and closes once that is written. */
static void answer_error_and_close(server_client_t *c, char digit) {
  procord_connection_send(c->connection, PROCORD_FRAME_ERROR, &digit, 1);
  leave_queue(c);
  event_del(c->timer);
  close_after_answer(c);
}

/* ---- Time limits ---- */

/* Milliseconds left before the state's limit (0 or less: past it), or
   INFINITY for none. */
static double remaining_ms(server_client_t *c) {
  server_t *s = c->server;
  double elapsed = procord_ms_since(&c->since), limit = -1;
  switch (c->state) {
  case CLIENT_IDLE: /* silent since its last answer (or since it came) */
    limit = s->idle_timeout_ms;
    if (s->read_timeout_ms > 0 && (limit < 0 || s->read_timeout_ms < limit))
      limit = s->read_timeout_ms;
    break;
  case CLIENT_RECEIVING:
    if (s->task_timeout_ms >= 0)
      limit = s->task_timeout_ms + (double)c->received * 1000.0 / (double)s->min_receive_rate;
    if (s->read_timeout_ms > 0) {
      double silent = procord_ms_since(&c->last_input);
      double by_silence = elapsed - silent + s->read_timeout_ms;
      if (limit < 0 || by_silence < limit) limit = by_silence;
    }
    break;
  case CLIENT_RUNNING: /* only while its output is not taken (see has_room) */
  case CLIENT_ANSWERING:
  case CLIENT_CLOSING:
    if (s->answer_timeout_ms >= 0)
      limit = s->answer_timeout_ms + (double)c->answer_bytes * 1000.0 / (double)s->min_send_rate;
    break;
  case CLIENT_READY: break;
  }
  if (limit < 0) return INFINITY;
  return limit - elapsed;
}

static void arm_client_timer(server_client_t *c) {
  double left = remaining_ms(c);
  if (isinf(left)) {
    event_del(c->timer);
    return;
  }
  /* A long limit is looked at again a day from now, then moved on. */
  double day = 86400e3;
  procord_timer_arm(c->timer, left <= 0 ? 0 : left >= day ? (int)day : (int)left + 1);
}

static void on_client_timer(evutil_socket_t fd, short events, void *argument) {
  (void)fd;
  (void)events;
  server_client_t *c = argument;
  server_t *s = c->server;
  if (remaining_ms(c) > 0) {
    arm_client_timer(c); /* bytes came since (the limit moved), or no limit now */
    return;
  }
  switch (c->state) {
  case CLIENT_IDLE:
    server_note(s, REASON_IDLE_TIMEOUT, PROCORD_LOG_DEBUG, c->name, "closed: idle for %.0f ms",
                procord_ms_since(&c->since));
    client_close(c, 0);
    return;
  case CLIENT_RECEIVING:
    server_note(
        s, REASON_TASK_TIMEOUT, PROCORD_LOG_WARNING, c->name,
        "dropped: its task did not arrive in time (%zu bytes in %.0f ms; limits: %d ms for a "
        "task, plus 1 s per %ld bytes%s)",
        c->received, procord_ms_since(&c->since), s->task_timeout_ms, s->min_receive_rate,
        s->read_timeout_ms > 0 ? ", and the read timeout" : "");
    client_close(c, 0);
    return;
  default:
    server_note(s, REASON_ANSWER_TIMEOUT, PROCORD_LOG_WARNING, c->name,
                "dropped: it did not take its answer in time (%zu bytes left of %zu after %.0f ms; "
                "limits: %d ms, plus 1 s per %ld bytes)",
                procord_connection_pending_output(c->connection), c->answer_bytes,
                procord_ms_since(&c->since), s->answer_timeout_ms, s->min_send_rate);
    client_close(c, 1);
    return;
  }
}

/* ---- Reading a task ---- */

static void begin_receiving(server_client_t *c) {
  leave_queue(c); /* off the idle list: a client mid-task is not evicted */
  set_client_state(c, CLIENT_RECEIVING);
  c->last_input = c->since;
  arm_client_timer(c);
}

/* Stops reading a big task until there is room (resume_waiting); the time
   it waits is not counted against it. */
static void wait_for_room(server_client_t *c) {
  procord_connection_pause_reading(c->connection, 1);
  procord_monotonic_now(&c->waiting_since);
  event_del(c->timer);
  join_queue(c, CLIENT_QUEUE_ROOM);
}

static void shift_time(struct timespec *t, double ms) {
  long long ns = (long long)t->tv_nsec + (long long)(ms * 1e6);
  t->tv_sec += (time_t)(ns / 1000000000LL);
  t->tv_nsec = (long)(ns % 1000000000LL);
}

/* Resumes those waiting for room, oldest first, while there is room, or
   while every byte held is a waiting one's (none would ever make room). */
static void resume_waiting(server_t *s) {
  server_client_t *c;
  while ((c = first_in_queue(s, CLIENT_QUEUE_ROOM)) &&
         (s->held_bytes < s->max_held_bytes || s->held_bytes == s->waiting_held)) {
    leave_queue(c);
    double waited = procord_ms_since(&c->waiting_since);
    shift_time(&c->since, waited);
    shift_time(&c->last_input, waited);
    arm_client_timer(c);
    procord_connection_pause_reading(c->connection, 0);
  }
}

static void on_client_input(procord_connection_t *connection, size_t count, void *context) {
  (void)connection;
  server_client_t *c = context;
  server_t *s = c->server;
  if (c->state == CLIENT_IDLE) begin_receiving(c);
  if (c->state != CLIENT_RECEIVING) return; /* a next task, read ahead: counted when it begins */
  c->received += count;
  c->held += count;
  s->held_bytes += count;
  SERVER_SET(s, task_bytes_buffered_now, s->held_bytes);
  procord_monotonic_now(&c->last_input);
  /* Past max_held_bytes, a big task waits for room; small ones have an
     eighth more, so that big ones cannot keep them waiting. A task waits
     only while another one, not waiting, holds bytes too: that one ends
     (read whole and handed on, or timed out) and makes room. */
  size_t limit =
      c->held > SMALL_TASK ? s->max_held_bytes : s->max_held_bytes + s->max_held_bytes / 8;
  if (s->held_bytes > limit && s->held_bytes - s->waiting_held > c->held) wait_for_room(c);
}

static int known_task(server_t *s, const procord_frame_t *name) {
  if (s->options->task_count == 0) return 1; /* the workers decide */
  for (size_t i = 0; i < s->options->task_count; i++) {
    const char *candidate = s->options->tasks[i].name;
    if (candidate && strlen(candidate) == name->length &&
        memcmp(candidate, name->body, name->length) == 0)
      return 1;
  }
  return 0;
}

static void become_ready(server_client_t *c) {
  server_t *s = c->server;
  procord_connection_pause_reading(c->connection, 1);
  set_client_state(c, CLIENT_READY);
  c->queued = c->since;
  event_del(c->timer);
  join_queue(c, CLIENT_QUEUE_READY);
  s->hooks.task_ready(s);
}

static void on_client_frame(procord_connection_t *connection, const procord_frame_t *frame,
                            int error, void *context) {
  server_client_t *c = context;
  server_t *s = c->server;
  if (c->state != CLIENT_IDLE && c->state != CLIENT_RECEIVING) return; /* closing */
  if (error) {
    char digit = procord_error_to_frame_digit(error);
    server_note(s, REASON_PROTOCOL_ERROR, PROCORD_LOG_INFO, c->name, "answered E%c: %s",
                digit ? digit : '?', procord_strerror(error));
    if (digit) answer_error_and_close(c, digit);
    else
      client_close(c, 1);
    return;
  }
  if (c->state == CLIENT_IDLE) begin_receiving(c); /* a task read ahead, from the stash */
  if (frame->kind == PROCORD_FRAME_TASK && !c->task_name) {
    if (!known_task(s, frame)) {
      server_note(s, REASON_UNKNOWN_TASK, PROCORD_LOG_INFO, c->name,
                  "answered E0: no task named %.*s",
                  (int)(frame->length < 100 ? frame->length : 100), (const char *)frame->body);
      answer_error_and_close(c, '0');
      return;
    }
    c->task_name = procord_allocate(frame->length + 1);
    if (!c->task_name) {
      client_close(c, 1);
      return;
    }
    memcpy(c->task_name, frame->body, frame->length);
    c->task_name[frame->length] = 0;
    c->task_name_length = frame->length;
    return;
  }
  if (frame->kind == PROCORD_FRAME_VALUE && c->task_name) {
    c->input_length = frame->length;
    c->input = frame->length ? procord_connection_take_body(connection) : NULL;
    if (frame->length && !c->input) { /* not takeable: copy it */
      c->input = procord_allocate(frame->length);
      if (!c->input) {
        client_close(c, 1);
        return;
      }
      memcpy(c->input, frame->body, frame->length);
    }
    become_ready(c);
    return;
  }
  server_note(s, REASON_PROTOCOL_ERROR, PROCORD_LOG_INFO, c->name, "answered E1: a `%c` frame %s",
              frame->kind,
              c->task_name ? "after the task's name" : "where a task's name was expected");
  answer_error_and_close(c, '1');
}

/* ---- Waiting, running, answering ---- */

static void enter_idle(server_client_t *c) {
  server_t *s = c->server;
  forget_task(c);
  c->answer_bytes = 0;
  if (s->draining) { /* served: no next task */
    close_after_answer(c);
    return;
  }
  set_client_state(c, CLIENT_IDLE);
  join_queue(c, CLIENT_QUEUE_IDLE);
  arm_client_timer(c);
  procord_connection_pause_reading(c->connection, 0);
}

static void on_client_drained(procord_connection_t *connection, void *context) {
  (void)connection;
  server_client_t *c = context;
  recount_owed(c, 0);
  if (c->state == CLIENT_ANSWERING) enter_idle(c);
  else if (c->state == CLIENT_RUNNING && c->worker) {
    event_del(c->timer);
    c->answer_bytes = 0;
    c->server->hooks.output_taken(c);
  }
}

server_client_t *server_client_next_ready(server_t *s) {
  procord_list_t *node;
  PROCORD_LIST_FOREACH(node, &s->ready_queue) {
    server_client_t *c = PROCORD_LIST_ENTRY(node, server_client_t, queue_node);
    if (s->max_tasks_per_peer > 0 && c->peer && c->peer->running >= s->max_tasks_per_peer) continue;
    leave_queue(c);
    release_held(c); /* its input goes to the worker now */
    set_client_state(c, CLIENT_RUNNING);
    c->since = c->queued; /* the task's time, for the log */
    if (c->peer) c->peer->running++;
    return c;
  }
  return NULL;
}

static void send_to_client(server_client_t *c, unsigned char kind, procord_connection_t *from,
                           const procord_frame_t *frame) {
  void *body = frame->length >= LEND_FROM && from ? procord_connection_take_body(from) : NULL;
  if (body) procord_connection_send_owned(c->connection, kind, body, frame->length, procord_free);
  else
    procord_connection_send(c->connection, kind, frame->body, frame->length);
}

static void count_forwarded(server_client_t *c);

void server_client_forward(server_client_t *c, unsigned char kind, procord_connection_t *from,
                           const procord_frame_t *frame) {
  send_to_client(c, kind, from, frame);
  if (kind == PROCORD_FRAME_PRINT || kind == PROCORD_FRAME_FLUSH) {
    count_forwarded(c);
    return;
  }
  /* The answer: `0R` with it when another task may follow (not after an `E`,
     which ends a connection as an original worker would, nor in a drain). */
  server_t *s = c->server;
  if (kind != PROCORD_FRAME_ERROR && !s->draining)
    procord_connection_send(c->connection, PROCORD_FRAME_REUSABLE, NULL, 0);
  count_forwarded(c);
}

/* What a frame forwarded left queued for the client counts toward
   max_buffered_answer_bytes (see has_room and server_dispatch). */
static void count_forwarded(server_client_t *c) {
  recount_owed(c, procord_connection_pending_output(c->connection));
}

int server_client_has_room(server_client_t *c) {
  server_t *s = c->server;
  size_t pending = procord_connection_pending_output(c->connection);
  if (pending == 0 || (pending <= HIGH_WATER && s->owed_bytes <= s->max_owed_bytes)) return 1;
  if (!evtimer_pending(c->timer, NULL)) {
    procord_monotonic_now(&c->since);
    c->answer_bytes = pending;
    arm_client_timer(c);
  }
  return 0;
}

void server_client_task_done(server_client_t *c, unsigned char answer) {
  server_t *s = c->server;
  PROCORD_ASSERT(c->state == CLIENT_RUNNING && !c->worker);
  if (c->peer) {
    PROCORD_ASSERT(c->peer->running > 0);
    c->peer->running--;
  }
  SERVER_COUNT(s, tasks_answered, 1);
  server_log(s, PROCORD_LOG_DEBUG, "%s: task %s, %s (%.1f ms)", c->name,
             c->task_name ? c->task_name : "?",
             answer == 'V'   ? "value"
             : answer == 'X' ? "exception"
             : answer == 'U' ? "unknown exception"
                             : "protocol error",
             procord_ms_since(&c->queued));
  if (answer == PROCORD_FRAME_ERROR) {
    close_after_answer(c);
    return;
  }
  set_client_state(c, CLIENT_ANSWERING);
  c->answer_bytes = procord_connection_pending_output(c->connection);
  if (c->answer_bytes == 0) enter_idle(c);
  else
    arm_client_timer(c);
}

void server_client_lost_worker(server_client_t *c, const char *why) {
  PROCORD_ASSERT(!c->worker);
  server_note(c->server, REASON_WORKER_LOST, PROCORD_LOG_WARNING, c->name,
              "the worker running its task %s %s; the connection is closed",
              c->task_name ? c->task_name : "?", why);
  client_close(c, 0);
}

/* ---- Opening, evicting, draining ---- */

static void on_client_state(procord_connection_t *connection, procord_connection_state_t state,
                            void *context) {
  (void)connection;
  server_client_t *c = context;
  if (state != PROCORD_DISCONNECTED) return;
  /* Still read while its task waits or runs (see procord_connection_pause_reading):
     a client that goes is seen at once, and its worker freed. */
  if (c->state == CLIENT_READY || c->state == CLIENT_RUNNING)
    server_note(c->server, REASON_CLIENT_GONE, PROCORD_LOG_DEBUG, c->name,
                "went away while its task %s %s", c->task_name ? c->task_name : "?",
                c->state == CLIENT_RUNNING ? "ran (its worker is killed)" : "waited");
  client_free(c);
}

void server_client_open(server_t *s, int fd, const char *name, server_peer_t *peer) {
  server_client_t *c = procord_allocate_zeroed(1, sizeof *c);
  if (!c) {
    close(fd);
    return;
  }
  c->server = s;
  c->fd = fd;
  c->peer = peer;
  snprintf(c->name, sizeof c->name, "%s", name);
  procord_connection_options_t options = {
      .size = sizeof options,
      .read_fd = fd,
      .write_fd = fd,
      .max_message_size = s->max_message_size,
      .on_frame = on_client_frame,
      .on_state = on_client_state,
      .context = c,
  };
  c->timer = evtimer_new(s->base, on_client_timer, c);
  if (!c->timer) {
    close(fd);
    procord_free(c);
    return;
  }
  if (procord_connection_open(s->loop, &options, &c->connection) != 0) { /* it closed fd */
    event_free(c->timer);
    procord_free(c);
    return;
  }
  procord_connection_set_hooks(c->connection, on_client_input, on_client_drained);
  if (peer) peer->connections++;
  procord_list_push_front(&s->clients, &c->node);
  SERVER_SET(s, connections_now, ++s->client_count);
  c->state = CLIENT_IDLE;
  enter_idle(c);
}

int server_client_evict_idle(server_t *s) {
  server_client_t *c = first_in_queue(s, CLIENT_QUEUE_IDLE);
  if (!c) return 0;
  server_note(
      s, REASON_EVICTED_IDLE, PROCORD_LOG_INFO, c->name,
      "closed after %.0f ms idle, to make way for a new connection (at max_connections, %d)",
      procord_ms_since(&c->since), s->max_connections);
  client_close(c, 0);
  return 1;
}

void server_clients_drain(server_t *s) {
  server_client_t *c;
  while ((c = first_in_queue(s, CLIENT_QUEUE_IDLE))) client_close(c, 0);
}

void server_clients_close_all(server_t *s) {
  procord_list_t *node;
  while ((node = procord_list_first(&s->clients)))
    client_close(PROCORD_LIST_ENTRY(node, server_client_t, node), 1);
}
