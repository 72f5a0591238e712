/*
 * The link to one worker (client_private.h): start it, carry its frames, watch
 * it end, and reap it.
 */
#define _GNU_SOURCE
#include "client/client_private.h"
#include "io/io_private.h"
#include "procord/connect.h"
#include "procord/error.h"
#include "base/base_private.h"

#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEFAULT_EXIT_GRACE_MS 2000

static void close_child_descriptors(procord_child_t *child) {
  if (child->read_fd >= 0) close(child->read_fd);
  if (child->write_fd >= 0 && child->write_fd != child->read_fd) close(child->write_fd);
  child->read_fd = child->write_fd = -1;
}

/* Notes how a reap went (`result` of procord_child_try_reap or _reap). A
   worker that the host program reaped itself has no status: its end says
   so, never a clean exit. That replaces a bare end of stream, whose exit
   status would have said how it ended, but no more precise cause. */
static void record_reap(procord_link_t *link, int result, int status) {
  link->reaped = 1;
  link->status_known = result == 1;
  link->wait_status = result == 1 ? status : 0;
  int bare_end = !link->end.error || link->end.error == PROCORD_EDISCONNECTED;
  if (result == -ECHILD && bare_end) {
    link->end.error = -ECHILD;
    link->end.call = procord_stage_call(PROCORD_STAGE_REAP);
    link->end.stage = PROCORD_STAGE_REAP;
    link->end.detail = "the worker was reaped by another part of this program (a SIGCHLD handler "
                       "calling waitpid(-1)?), so how it ended is unknown";
  }
}

/* Kills and reaps a child the loop does not watch (yet). */
static void end_child_now(procord_link_t *link) {
  close_child_descriptors(&link->child);
  if (link->child.pid <= 0) return;
  procord_child_kill(&link->child, SIGKILL);
  if (link->exit_event) event_del(link->exit_event);
  int status = 0;
  record_reap(link, procord_child_reap(&link->child, &status), status);
}

procord_link_t *procord_link_new(procord_loop_t *loop, const procord_link_options_t *options) {
  procord_link_t *link = procord_allocate_zeroed(1, sizeof *link);
  if (!link) return NULL;
  link->loop = loop;
  link->events = options->events;
  link->context = options->context;
  link->remote = options->remote_host != NULL;
  if (link->remote && !(link->host = procord_strdup(options->remote_host))) {
    procord_free(link);
    return NULL;
  }
  link->port = options->remote_port;
  link->connect_timeout_ms = options->connect_timeout_ms;
  if (link->remote) link->security = procord_security_retain(options->security);
  link->idle_timeout_ms = options->idle_timeout_ms;
  link->max_message_size = options->max_message_size;
  link->exit_grace_ms = options->exit_grace_ms > 0 ? options->exit_grace_ms : DEFAULT_EXIT_GRACE_MS;
  link->end.exit_code = -1;
  link->child.pid = link->pid = -1;
  link->child.pidfd = link->child.read_fd = link->child.write_fd = -1;
  if (!link->remote) {
    link->spawn_error = procord_spawn(options->worker, &link->child);
    if (!link->spawn_error) link->pid = link->child.pid;
  }
  return link;
}

void procord_link_fail_call(procord_link_t *link, int error, procord_stage_t stage,
                            const char *call) {
  if (link->end.error || link->end.call) return;
  link->end.error = error;
  link->end.call = call;
  link->end.stage = stage;
}

void procord_link_fail(procord_link_t *link, int error, procord_stage_t stage) {
  procord_link_fail_call(link, error, stage, procord_stage_call(stage));
}

static void on_end_event(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  procord_link_t *link = context;
  if (link->events.on_ended) link->events.on_ended(link, link->context);
}

/* Once the stream is closed and the child reaped, report on a turn of its own. */
static void end_if_done(procord_link_t *link) {
  if (link->ended) return;
  if (link->connection || link->attempt || !(link->reaped || link->remote)) {
    procord_link_start_grace(link);
    return;
  }
  link->ended = 1;
  if (link->grace_timer) event_del(link->grace_timer);
  if (link->status_known && WIFEXITED(link->wait_status))
    link->end.exit_code = WEXITSTATUS(link->wait_status);
  if (link->status_known && WIFSIGNALED(link->wait_status))
    link->end.signal = WTERMSIG(link->wait_status);
  event_active(link->end_event, EV_TIMEOUT, 0);
}

static void drop_connection(procord_link_t *link) {
  if (!link->connection) return;
  procord_connection_t *connection = link->connection;
  link->connection = NULL;
  procord_connection_free(connection); /* deferred if inside its callback */
}

static void on_connection_state(procord_connection_t *connection, procord_connection_state_t state,
                                void *context) {
  procord_link_t *link = context;
  if (state == PROCORD_CONNECTED) {
    /* A secured connection: TLS and authentication are done. */
    if (link->events.on_ready) link->events.on_ready(link, link->context);
    return;
  }
  if (state != PROCORD_DISCONNECTED) return;
  procord_cause_t cause = procord_connection_cause(connection);
  /* A close the owner asked for records nothing (see procord_link_end_t). */
  if (cause.error && !link->end.error && !link->end.call)
    link->end.detail = procord_connection_detail(connection);
  procord_stage_t stage = procord_connection_stage(connection);
  if (cause.error) procord_link_fail(link, cause.error, stage ? stage : PROCORD_STAGE_READ);
  drop_connection(link);
  end_if_done(link);
}

static void on_connection_frame(procord_connection_t *connection, const procord_frame_t *frame,
                                int error, void *context) {
  (void)connection;
  procord_link_t *link = context;
  link->events.on_frame(link, frame, error, link->context);
}

static void on_exit_event(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  procord_link_t *link = context;
  int status = 0;
  int r = procord_child_try_reap(&link->child, &status);
  if (r == 0) return;
  record_reap(link, r, status);
  event_del(link->exit_event);
  end_if_done(link);
}

static void on_grace_timeout(evutil_socket_t fd, short events, void *context) {
  (void)fd;
  (void)events;
  procord_link_t *link = context;
  /* The worker lingers with its stream open or closed, or died while
     something it started still holds the stream: end both. */
  if (!link->reaped && !link->remote) {
    link->end.killed_after_grace = 1;
    procord_child_kill(&link->child, SIGKILL);
  }
  if (link->connection) procord_connection_close(link->connection);
  else if (!link->reaped && !link->remote)
    procord_link_start_grace(link);
}

/* What is left of the connect limit (resolving and connecting took the
   rest), for the handshake; 0: no limit. */
static int remaining_connect_ms(const procord_link_t *link) {
  if (link->connect_timeout_ms <= 0) return 0;
  double left = link->connect_timeout_ms - procord_ms_since(&link->connect_start);
  return left > 1 ? (int)left : 1;
}

static int open_connection(procord_link_t *link, int read_fd, int write_fd) {
  procord_connection_options_t options = {
      .size = sizeof options,
      .read_fd = read_fd,
      .write_fd = write_fd,
      .security = link->remote ? link->security : NULL,
      .peer_name = link->host,
      .connect_timeout_ms = link->remote ? remaining_connect_ms(link) : 0,
      .max_message_size = link->max_message_size,
      .idle_timeout_ms = link->idle_timeout_ms,
      .on_frame = on_connection_frame,
      .on_state = on_connection_state,
      .context = link,
  };
  int error = procord_connection_open(link->loop, &options, &link->connection);
  if (error) link->connection = NULL; /* it closed the descriptors */
  return error;
}

static void on_connected(int fd, int error, const char *call, const char *detail, void *context) {
  procord_link_t *link = context;
  link->attempt = NULL;
  if (!error) error = open_connection(link, fd, fd);
  if (error) {
    /* The connect names its call only: "getaddrinfo" for the lookup, "connect". */
    if (call) procord_link_fail_call(link, error, procord_stage_of_call(call), call);
    else
      procord_link_fail(link, error, PROCORD_STAGE_SETUP);
    link->end.detail = detail;
    end_if_done(link);
    return;
  }
  /* A secured connection is ready once its handshake is done (on_state). */
  if (procord_link_ready(link) && link->events.on_ready) link->events.on_ready(link, link->context);
}

int procord_link_start(procord_link_t *link) {
  struct event_base *base = procord_loop_base(link->loop);
  link->grace_timer = evtimer_new(base, on_grace_timeout, link);
  link->end_event = evtimer_new(base, on_end_event, link);
  int error = link->grace_timer && link->end_event ? 0 : -ENOMEM;
  if (link->remote) {
    procord_monotonic_now(&link->connect_start);
    procord_connect_options_t options = {
        .size = sizeof options,
        .host = link->host,
        .port = link->port,
        .timeout_ms = link->connect_timeout_ms,
        .on_done = on_connected,
        .context = link,
    };
    if (!error) error = procord_connect(link->loop, &options, &link->attempt);
    if (error) {
      link->attempt = NULL;
      procord_link_fail(link, error, PROCORD_STAGE_CONNECT);
    }
    return error;
  }
  if (link->spawn_error) {
    /* Refused before any posix_spawn: the detail says why and what to do. */
    const char *refusal = procord_lineage_refusal(link->spawn_error);
    procord_link_fail_call(link, link->spawn_error, PROCORD_STAGE_SPAWN,
                           refusal ? "spawn" : procord_stage_call(PROCORD_STAGE_SPAWN));
    link->end.detail = refusal;
    return link->spawn_error;
  }
  if (!error) {
    link->exit_event = procord_loop_watch_child(link->loop, link->child.pidfd, on_exit_event, link);
    if (!link->exit_event) error = -ENOMEM;
  }
  if (!error) {
    int read_fd = link->child.read_fd, write_fd = link->child.write_fd;
    link->child.read_fd = link->child.write_fd = -1; /* the connection owns them now */
    error = open_connection(link, read_fd, write_fd);
  }
  if (error) {
    /* Out of memory setting up: end the worker at once, reaping it here. */
    procord_link_fail(link, error, PROCORD_STAGE_SETUP);
    end_child_now(link);
  }
  return error;
}

int procord_link_ready(const procord_link_t *link) {
  return link->connection && procord_connection_state(link->connection) == PROCORD_CONNECTED;
}

void procord_link_cork(procord_link_t *link, int corked) {
  if (link->connection) procord_connection_cork(link->connection, corked);
}

int procord_link_send(procord_link_t *link, unsigned char kind, const void *body, size_t length) {
  if (!link->connection) return PROCORD_ECLOSED;
  return procord_connection_send(link->connection, kind, body, length);
}

int procord_link_send_owned_by(procord_link_t *link, unsigned char kind, const void *body,
                               size_t length, procord_body_owner_t *owner) {
  if (!link->connection) {
    owner->release(owner);
    return PROCORD_ECLOSED;
  }
  return procord_connection_send_owned_by(link->connection, kind, body, length, owner);
}

void *procord_link_take_body(procord_link_t *link) {
  return link->connection ? procord_connection_take_body(link->connection) : NULL;
}

void procord_link_start_grace(procord_link_t *link) {
  if (!link->grace_timer || link->ended || evtimer_pending(link->grace_timer, NULL)) return;
  procord_timer_arm(link->grace_timer, link->exit_grace_ms);
}

void procord_link_cancel_grace(procord_link_t *link) {
  if (link->grace_timer) event_del(link->grace_timer);
}

void procord_link_close(procord_link_t *link) {
  if (link->attempt) {
    procord_connect_cancel(link->attempt);
    link->attempt = NULL;
    end_if_done(link);
  } else if (link->connection) {
    procord_connection_close(link->connection); /* on_state follows at once */
  } else {
    end_if_done(link);
  }
}

void procord_link_kill(procord_link_t *link, int signal, int close_stream) {
  /* Killing a remote task is resetting its connection: its server kills it
     (an orderly close could wait behind tasks sent ahead that it has not read). */
  if (link->remote && link->connection && !link->attempt) {
    procord_connection_abort(link->connection); /* on_state follows at once */
    return;
  }
  if (link->remote || close_stream) {
    if (!link->remote && !link->reaped) procord_child_kill(&link->child, signal);
    procord_link_close(link);
    return;
  }
  if (!link->reaped) procord_child_kill(&link->child, signal);
  procord_link_start_grace(link);
}

size_t procord_link_resident_bytes(const procord_link_t *link) {
  if (link->remote || link->reaped || link->pid <= 0) return 0;
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/statm", (int)link->pid);
  FILE *file = fopen(path, "re");
  if (!file) return 0;
  unsigned long size = 0, resident = 0;
  int read = fscanf(file, "%lu %lu", &size, &resident);
  fclose(file);
  return read == 2 ? (size_t)resident * (size_t)sysconf(_SC_PAGESIZE) : 0;
}

void procord_link_free(procord_link_t *link) {
  if (!link) return;
  if (link->attempt) procord_connect_cancel(link->attempt);
  drop_connection(link);
  if (!link->reaped && link->child.pid > 0) end_child_now(link);
  close_child_descriptors(&link->child);
  if (link->exit_event) event_free(link->exit_event);
  if (link->grace_timer) event_free(link->grace_timer);
  if (link->end_event) event_free(link->end_event);
  procord_free(link->host);
  procord_security_release(link->security);
  procord_free(link);
}
