/*
 * A worker server's worker table (server_private.h): processes started by
 * exec (or, with dont_fork, one thread of the server), each given a session
 * (a socketpair end, over its control socket) on which the server sends it
 * whole tasks and reads back what the task prints and its answer. A worker
 * speaks to its session exactly as to a client: `T`, `V` in; `P`, `F`, then
 * `V`/`X`/`U`/`E` and `0R` out. Whose task it runs is server_dispatch.c's
 * business: this file knows no client, and tells the files above what
 * happens through the server's hooks.
 */
#define _GNU_SOURCE
#include "base/base_private.h"
#include "procord/error.h"
#include "procord/frame.h"
#include "server/server_private.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_session_frame(procord_connection_t *c, const procord_frame_t *frame, int error,
                             void *context);
static void on_session_state(procord_connection_t *c, procord_connection_state_t state,
                             void *context);
static void on_control_frame(procord_connection_t *c, const procord_frame_t *frame, int error,
                             void *context);
static void on_control_state(procord_connection_t *c, procord_connection_state_t state,
                             void *context);
static void on_worker_exit(evutil_socket_t fd, short events, void *context);
static void open_session(server_worker_t *w);
static void schedule_respawn(server_t *s);

/* ---- States and counts ---- */

/* The ways a worker's state may move: STARTING only at first, RETIRING for
   good (asserted: unused under NDEBUG). */
__attribute__((unused)) static int server_worker_may_move(server_worker_state_t from,
                                                          server_worker_state_t to) {
  switch (to) {
  case WORKER_STARTING: return 0;
  case WORKER_IDLE: return from == WORKER_BETWEEN || from == WORKER_ANSWERED;
  case WORKER_BUSY: return from == WORKER_IDLE || from == WORKER_BUSY;
  case WORKER_ANSWERED: return from == WORKER_BUSY;
  case WORKER_BETWEEN: return from != WORKER_RETIRING;
  case WORKER_RETIRING: return 1;
  }
  return 0;
}

static void set_server_worker_state(server_worker_t *w, server_worker_state_t state) {
  server_t *s = w->server;
  PROCORD_ASSERT(server_worker_may_move(w->state, state));
  PROCORD_ASSERT(!w->client || state == WORKER_BUSY); /* a task's worker is busy until unbound */
  switch (w->state) {
  case WORKER_STARTING: s->starting--; break;
  case WORKER_IDLE: s->idle--; break;
  case WORKER_BUSY: s->busy--; break;
  case WORKER_BETWEEN: s->between--; break;
  default: break;
  }
  switch (state) {
  case WORKER_STARTING: s->starting++; break;
  case WORKER_IDLE: s->idle++; break;
  case WORKER_BUSY: s->busy++; break;
  case WORKER_BETWEEN: s->between++; break;
  default: break;
  }
  w->state = state;
  PROCORD_ASSERT(s->starting >= 0 && s->idle >= 0 && s->busy >= 0 && s->between >= 0);
  PROCORD_ASSERT(s->starting + s->idle + s->busy + s->between <= s->total);
  SERVER_SET(s, tasks_running_now, s->busy);
}

static void close_session(server_worker_t *w) {
  procord_connection_free(w->session);
  w->session = NULL;
}

/* Stops a worker that misbehaved or is no longer wanted: closing its
   control socket ends it; a process that misbehaved is killed too. */
static void retire_server_worker(server_worker_t *w, int kill_it) {
  if (w->state == WORKER_RETIRING) return;
  set_server_worker_state(w, WORKER_RETIRING);
  close_session(w);
  if (kill_it && !w->is_thread) procord_child_kill(&w->child, SIGKILL);
  if (w->control)
    procord_connection_close(w->control); /* its state callback may free w (a thread) */
}

static void remove_worker(server_worker_t *w) {
  server_t *s = w->server;
  procord_list_remove(&w->node);
  set_server_worker_state(w, WORKER_RETIRING);
  PROCORD_ASSERT(s->total > 0);
  s->total--;
  close_session(w);
  procord_connection_free(w->control);
  if (w->exit_event) event_free(w->exit_event);
  if (w->kill_timer) event_free(w->kill_timer);
  procord_free(w);
}

/* Kills a worker process and waits for its end (an undone start, the end). */
static void kill_and_reap(server_worker_t *w) {
  procord_child_kill(&w->child, SIGKILL);
  int status;
  procord_child_reap(&w->child, &status);
}

/* ---- Starting ---- */

static void link_worker(server_t *s, server_worker_t *w) {
  w->server = s;
  w->state = WORKER_STARTING;
  s->starting++;
  s->total++;
  procord_list_push_front(&s->workers, &w->node);
  SERVER_COUNT(s, workers_started, 1);
}

static int open_control(server_t *s, server_worker_t *w, int fd) {
  w->control_fd = fd;
  procord_connection_options_t options = {.size = sizeof options,
                                          .read_fd = fd,
                                          .write_fd = fd,
                                          .on_frame = on_control_frame,
                                          .on_state = on_control_state,
                                          .context = w};
  return procord_connection_open(s->loop, &options, &w->control);
}

static int start_worker_process(server_t *s) {
  server_worker_t *w = procord_allocate_zeroed(1, sizeof *w);
  if (!w) return -ENOMEM;
  procord_spawn_options_t spawn = s->options->worker;
  spawn.channel = PROCORD_CHANNEL_SOCKET;
  /* Embedded: read by its own size here, never beyond it by procord_spawn. */
  int error = procord_spawn_options_nested(&spawn);
  if (!error) error = procord_spawn(&spawn, &w->child);
  if (error) {
    procord_free(w);
    server_log(s, PROCORD_LOG_ERROR, "could not start a worker (%s): %s",
               spawn.program ? spawn.program : "?", procord_strerror(error));
    return error;
  }
  link_worker(s, w);
  w->exit_event = procord_loop_watch_child(s->loop, w->child.pidfd, on_worker_exit, w);
  if (open_control(s, w, w->child.read_fd) != 0) w->control = NULL;
  if (!w->control || !w->exit_event) {
    /* Out of memory: end it and reap it here, so its place is not lost. */
    kill_and_reap(w);
    remove_worker(w);
    return -ENOMEM;
  }
  return 0;
}

static int start_worker_thread(server_t *s) {
  server_worker_t *w = procord_allocate_zeroed(1, sizeof *w);
  int pair[2];
  if (!w || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    procord_free(w);
    return -ENOMEM;
  }
  w->is_thread = 1;
  int error = server_in_process_start(s, pair[1], &w->thread);
  if (error) {
    close(pair[0]);
    procord_free(w);
    return error;
  }
  link_worker(s, w);
  if (open_control(s, w, pair[0]) != 0) {
    w->control = NULL;
    pthread_join(w->thread, NULL); /* its control socket is closed: it ends */
    remove_worker(w);
    return -ENOMEM;
  }
  return 0;
}

static void on_respawn_timer(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  server_t *s = context;
  s->hooks.workers_changed(s);
}

int server_workers_open(server_t *s) {
  s->respawn_timer = evtimer_new(s->base, on_respawn_timer, s);
  return s->respawn_timer ? 0 : -ENOMEM;
}

/* Workers that die before they are ready (a broken program, no memory):
   retry later, waiting longer each time, instead of spinning. */
static void schedule_respawn(server_t *s) {
  if (evtimer_pending(s->respawn_timer, NULL)) return;
  int shift = s->start_failures < 6 ? s->start_failures : 6;
  procord_timer_arm(s->respawn_timer, 100 << shift); /* 100 ms .. 6.4 s */
}

void server_workers_keep_warm(server_t *s) {
  if (evtimer_pending(s->respawn_timer, NULL)) return;
  procord_list_t *node, *following;
  PROCORD_LIST_FOREACH_SAFE(node, following, &s->workers) {
    server_worker_t *w = PROCORD_LIST_ENTRY(node, server_worker_t, node);
    if (w->needs_session && w->state == WORKER_BETWEEN) open_session(w);
    if (evtimer_pending(s->respawn_timer, NULL)) return;
  }
  /* Enough workers on their way to idle for the warm count (not while
     draining) and for the tasks waiting, within the limit. */
  int warm = s->draining ? 0 : s->warm;
  while (s->total < s->max) {
    int coming = s->idle + s->starting + s->between;
    if (coming >= warm && coming >= s->ready) break;
    if ((s->options->dont_fork ? start_worker_thread(s) : start_worker_process(s)) != 0) {
      s->start_failures++;
      schedule_respawn(s);
      break;
    }
  }
}

/* ---- Sessions ---- */

static void open_session(server_worker_t *w) {
  server_t *s = w->server;
  int pair[2];
  w->needs_session = 0;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    /* Out of descriptors (clients hold them): the worker waits, and the
       respawn timer tries again, rather than spinning or killing it. */
    server_note(s, REASON_OUT_OF_DESCRIPTORS, PROCORD_LOG_WARNING, "server",
                "no socket for a worker's session (%s); trying again shortly", strerror(errno));
    w->needs_session = 1;
    s->start_failures++;
    schedule_respawn(s);
    return;
  }
  int error = procord_control_hand_over(w->control_fd, pair[1]);
  close(pair[1]);
  procord_connection_options_t options = {
      .size = sizeof options,
      .read_fd = pair[0],
      .write_fd = pair[0],
      .max_message_size = s->max_message_size,
      .on_frame = on_session_frame,
      .on_state = on_session_state,
      .context = w,
  };
  if (error || procord_connection_open(s->loop, &options, &w->session) != 0) {
    if (error) close(pair[0]);
    w->session = NULL;
    retire_server_worker(w, 1); /* gone or going: it is reaped and replaced */
    return;
  }
  set_server_worker_state(w, WORKER_IDLE);
}

server_worker_t *server_worker_find_idle(server_t *s) {
  procord_list_t *node;
  PROCORD_LIST_FOREACH(node, &s->workers) {
    server_worker_t *w = PROCORD_LIST_ENTRY(node, server_worker_t, node);
    if (w->state == WORKER_IDLE) return w;
  }
  return NULL;
}

void server_worker_run_task(server_worker_t *w, const char *name, size_t name_length, void *input,
                            size_t input_length) {
  set_server_worker_state(w, WORKER_BUSY);
  procord_connection_cork(w->session, 1);
  procord_connection_send(w->session, PROCORD_FRAME_TASK, name, name_length);
  if (input)
    procord_connection_send_owned(w->session, PROCORD_FRAME_VALUE, input, input_length,
                                  procord_free);
  else
    procord_connection_send(w->session, PROCORD_FRAME_VALUE, NULL, 0);
  procord_connection_cork(w->session, 0);
}

void server_worker_answered(server_worker_t *w) { set_server_worker_state(w, WORKER_ANSWERED); }

/* The worker is done with its task without an answer: its client, if it
   has one still, is dropped (and unbound). */
static void lose_task(server_worker_t *w, const char *why) {
  if (w->client) w->server->hooks.task_lost(w, why);
}

static void on_session_frame(procord_connection_t *session, const procord_frame_t *frame, int error,
                             void *context) {
  server_worker_t *w = context;
  server_t *s = w->server;
  int answer =
      !error &&
      (frame->kind == PROCORD_FRAME_VALUE || frame->kind == PROCORD_FRAME_EXCEPTION ||
       frame->kind == PROCORD_FRAME_UNKNOWN_EXCEPTION || frame->kind == PROCORD_FRAME_ERROR);
  int print = !error && (frame->kind == PROCORD_FRAME_PRINT || frame->kind == PROCORD_FRAME_FLUSH);
  if (w->state == WORKER_BUSY && (answer || print)) {
    s->hooks.worker_output(w, session, frame); /* to its client, if it has one still */
    return;
  }
  if (w->state == WORKER_ANSWERED && !error && frame->kind == PROCORD_FRAME_REUSABLE) {
    set_server_worker_state(w, WORKER_IDLE);
    s->hooks.workers_changed(s);
    return;
  }
  server_log(s, PROCORD_LOG_ERROR, "worker %d broke the protocol (%s); it is killed",
             (int)w->child.pid, error ? procord_strerror(error) : "a frame out of place");
  lose_task(w, "broke the protocol");
  retire_server_worker(w, 1);
}

/* The session is over and the worker said so: a new session. */
static void after_session(server_worker_t *w) {
  server_t *s = w->server;
  /* A task abandoned by its client ended within its grace: the worker
     serves on, and its backstop SIGKILL must not reach its next task. */
  if (w->kill_timer) event_del(w->kill_timer);
  w->done_reported = 0;
  lose_task(w, "ended the task without an answer");
  set_server_worker_state(w, WORKER_BETWEEN);
  open_session(w);
  s->hooks.workers_changed(s);
}

static void on_session_state(procord_connection_t *session, procord_connection_state_t state,
                             void *context) {
  (void)session;
  server_worker_t *w = context;
  if (state != PROCORD_DISCONNECTED) return;
  close_session(w);
  if (w->done_reported) {
    after_session(w);
    return;
  }
  /* Mid-task, the worker crashed, or gave up: its exit (or its report, if
     it lives on) says which, and ends the client then. */
  if (w->state == WORKER_IDLE || w->state == WORKER_ANSWERED || w->state == WORKER_BUSY)
    set_server_worker_state(w, w->state == WORKER_BUSY && w->client ? WORKER_BUSY : WORKER_BETWEEN);
}

static void on_kill_timer(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  server_worker_t *w = context;
  procord_child_kill(&w->child, SIGKILL); /* its exit is seen as usual */
}

void server_worker_abandon(server_worker_t *w) {
  PROCORD_ASSERT(!w->client);
  if (w->state != WORKER_BUSY) return;
  /* A process's watchdog sees the session close: a task that can be
     cancelled (a Swift async body) is, and gets a grace period to return;
     any other task is killed at once. Its exit is seen as usual. This is the
     backstop, should the watchdog not do its part. */
  close_session(w);
  if (!w->is_thread) {
    if (!w->kill_timer) w->kill_timer = evtimer_new(w->server->base, on_kill_timer, w);
    if (!w->kill_timer ||
        procord_timer_arm(w->kill_timer, PROCORD_WORKER_CANCEL_GRACE_MS + 1000) != 0)
      procord_child_kill(&w->child, SIGKILL);
    return;
  }
  set_server_worker_state(
      w, WORKER_BETWEEN); /* the thread finishes the task for nobody, then reports */
}

void server_worker_pause_output(server_worker_t *w, int paused) {
  if (w->session) procord_connection_pause_reading(w->session, paused);
}

/* ---- The control channel ---- */

static void on_control_frame(procord_connection_t *control, const procord_frame_t *frame, int error,
                             void *context) {
  (void)control;
  server_worker_t *w = context;
  server_t *s = w->server;
  if (!error && frame->kind == PROCORD_CONTROL_READY && w->state == WORKER_STARTING) {
    s->start_failures = 0;
    set_server_worker_state(w, WORKER_BETWEEN);
    open_session(w);
    s->hooks.workers_changed(s);
    return;
  }
  if (!error && frame->kind == PROCORD_CONTROL_DONE && w->state != WORKER_STARTING &&
      w->state != WORKER_RETIRING) {
    /* The worker closed the session it served (its read timeout, an `E`,
       a client it gave up on). Its last frames may still be unread in the
       session: the session's own end decides, then comes a new one. */
    if (w->session) w->done_reported = 1;
    else
      after_session(w);
    return;
  }
  if (w->state == WORKER_RETIRING) return;
  server_log(s, PROCORD_LOG_ERROR, "worker %d sent its server something unexpected; it is killed",
             (int)w->child.pid);
  lose_task(w, "broke the protocol");
  retire_server_worker(w, 1);
}

static void on_control_state(procord_connection_t *control, procord_connection_state_t state,
                             void *context) {
  (void)control;
  server_worker_t *w = context;
  if (state != PROCORD_DISCONNECTED) return;
  server_t *s = w->server;
  procord_connection_free(w->control);
  w->control = NULL;
  w->control_fd = -1;
  if (!w->is_thread) {
    if (w->state != WORKER_BUSY) retire_server_worker(w, 0); /* exiting: its exit event reaps it */
    return;
  }
  /* The thread closes its end as it returns. */
  pthread_join(w->thread, NULL);
  lose_task(w, "ended");
  remove_worker(w);
  server_workers_keep_warm(s);
  s->hooks.maybe_stop(s);
}

static void on_worker_exit(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  server_worker_t *w = context;
  server_t *s = w->server;
  int status = 0;
  pid_t pid = w->child.pid; /* the reap forgets it */
  int reaped = procord_child_try_reap(&w->child, &status);
  if (reaped == 0) return;
  char how[96];
  if (reaped != 1)
    snprintf(how, sizeof how, "ended (reaped elsewhere in this program: status unknown)");
  else if (WIFSIGNALED(status))
    snprintf(how, sizeof how, "was killed by signal %d (%s)", WTERMSIG(status),
             strsignal(WTERMSIG(status)));
  else
    snprintf(how, sizeof how, "exited with code %d", WEXITSTATUS(status));
  if (w->state == WORKER_STARTING) {
    s->start_failures++;
    server_log(s, PROCORD_LOG_ERROR, "a worker (pid %d) %s before it was ready (%d in a row)",
               (int)pid, how, s->start_failures);
    schedule_respawn(s);
  } else if (w->state == WORKER_IDLE) {
    server_log(s, PROCORD_LOG_WARNING, "an idle worker (pid %d) %s", (int)pid, how);
  }
  char why[128];
  snprintf(why, sizeof why, "(pid %d) %s", (int)pid, how);
  lose_task(w, why);
  remove_worker(w);
  s->hooks.workers_changed(s);
  s->hooks.maybe_stop(s);
}

/* ---- Draining and the end ---- */

void server_workers_retire_idle(server_t *s) {
  if (s->ready > 0 || s->receiving > 0) return; /* tasks still to serve */
  procord_list_t *node, *following;
  PROCORD_LIST_FOREACH_SAFE(node, following, &s->workers) {
    server_worker_t *w = PROCORD_LIST_ENTRY(node, server_worker_t, node);
    if (w->state == WORKER_IDLE || w->state == WORKER_STARTING || w->state == WORKER_BETWEEN)
      retire_server_worker(w, 0);
  }
}

void server_workers_kill(server_t *s) {
  procord_list_t *node, *following;
  PROCORD_LIST_FOREACH_SAFE(node, following, &s->workers) {
    server_worker_t *w = PROCORD_LIST_ENTRY(node, server_worker_t, node);
    PROCORD_ASSERT(!w->client); /* every client is closed first */
    retire_server_worker(w, 1);
  }
}

void server_workers_release(server_t *s) {
  if (s->respawn_timer) event_free(s->respawn_timer);
  s->respawn_timer = NULL;
  procord_list_t *node;
  while ((node = procord_list_first(&s->workers))) {
    server_worker_t *w = PROCORD_LIST_ENTRY(node, server_worker_t, node);
    close_session(w);
    if (w->is_thread) {
      procord_connection_free(w->control);
      w->control = NULL;
      pthread_join(w->thread, NULL);
    } else {
      kill_and_reap(w);
    }
    remove_worker(w);
  }
}
