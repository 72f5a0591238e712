/*
 * procord_outcome_describe (procord/delegation.h): an outcome in one English
 * sentence, the one the Swift overlay's ProcordError.description gives for
 * the same failure (Sources/Procord/ProcordError.swift, Status.swift, and
 * DisconnectionCause.init in StartDelegation.swift: keep them in step).
 */
#define _GNU_SOURCE
#include "base/base_private.h"
#include "procord/delegation.h"
#include "procord/error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* snprintf-style text: writes what fits, counts everything. */
typedef struct text_s {
  char *buffer;
  size_t size;
  size_t length; /* of the whole text, written or not */
} text_t;

static void add_bytes(text_t *text, const char *bytes, size_t count) {
  if (text->length + 1 < text->size) {
    size_t room = text->size - 1 - text->length;
    memcpy(text->buffer + text->length, bytes, count < room ? count : room);
  }
  text->length += count;
}

static void add(text_t *text, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void add(text_t *text, const char *format, ...) {
  char small[256];
  va_list arguments;
  va_start(arguments, format);
  int needed = vsnprintf(small, sizeof small, format, arguments);
  va_end(arguments);
  if (needed < 0) return;
  if ((size_t)needed < sizeof small) {
    add_bytes(text, small, (size_t)needed);
    return;
  }
  /* Longer than `small` (a long detail): format straight into place. */
  char *end = text->length < text->size ? text->buffer + text->length : NULL;
  size_t room = end ? text->size - text->length : 0;
  va_start(arguments, format);
  vsnprintf(end, room, format, arguments);
  va_end(arguments);
  text->length += (size_t)needed;
}

/* `ENOENT (No such file or directory)`, for a negated errno or a PROCORD_E* code. */
static void add_error(text_t *text, int code) {
  add(text, "%s (%s)", procord_err_name(code), procord_strerror(code));
}

/* `SIGSEGV (Segmentation fault)`, or the bare number. */
static void add_signal(text_t *text, int signal) {
  const char *name = procord_signal_name(signal);
  const char *description = procord_signal_description(signal);
  if (!name) add(text, "%d", signal);
  else if (description && *description)
    add(text, "SIG%s (%s)", name, description);
  else
    add(text, "SIG%s", name);
}

procord_stage_t procord_outcome_stage(const procord_outcome_t *outcome) {
  if (outcome->stage != PROCORD_STAGE_NONE || !outcome->call) return outcome->stage;
  return procord_stage_of_call(outcome->call);
}

static const char *detail_or(const procord_outcome_t *outcome, const char *otherwise) {
  return outcome->detail ? outcome->detail : otherwise;
}

/* The protocol error codes, E0..E5. */
static int is_protocol_error(int error) {
  return error <= PROCORD_ETASK_NOT_SUPPORTED && error >= PROCORD_EINVALID_DESTINATION;
}

/* A cause that the stage alone does not settle: by its error code, then by
   how the worker ended. */
static void add_ending(text_t *text, const procord_outcome_t *outcome, procord_stage_t stage,
                       const char *destination) {
  int error = outcome->error;
  int end_of_stream = (error == PROCORD_EDISCONNECTED && stage == PROCORD_STAGE_READ) ||
                      error == -EPIPE || error == -ECONNRESET;
  int signal = outcome->killed_after_grace ? 0 : outcome->signal;
  int system_error = !end_of_stream && error < 0 && error > PROCORD_ETASK_NOT_SUPPORTED;
  if (error == PROCORD_ETLS) {
    add(text, "worker disconnected: TLS with the server failed: %s",
        detail_or(outcome, "unknown reason"));
  } else if (error == PROCORD_EAUTH) {
    add(text, "worker disconnected: authentication with the server failed: %s",
        detail_or(outcome, "unknown reason"));
  } else if (!end_of_stream && is_protocol_error(error)) {
    add(text,
        "worker disconnected: %s: %s (is the worker a Procord worker of a compatible version?)",
        stage == PROCORD_STAGE_PEER ? "the worker reported a protocol error" : "protocol error",
        procord_strerror(error));
  } else if (signal != 0) {
    add(text, "the worker crashed: killed by signal ");
    add_signal(text, signal);
  } else if (end_of_stream && outcome->exit_code >= 0) {
    add(text, "worker disconnected: the worker exited with code %d without answering",
        outcome->exit_code);
  } else if (system_error && stage == PROCORD_STAGE_CONNECT) {
    add(text, "could not connect to %s: ", destination ? destination : "the server");
    add_error(text, error);
    add(text,
        "; check that a Procord server listens there (--procord-server) and that this machine can "
        "reach it");
  } else if (system_error) {
    add(text,
        "%s on the worker's connection failed: ", outcome->call ? outcome->call : "a system call");
    add_error(text, error);
  } else {
    add(text, "worker disconnected: the worker closed the connection without answering");
  }
}

/* A DISCONNECTED outcome's cause, as DisconnectionCause.init reads it: the
   stages that settle it first; for the others, a protocol error wins over
   how the worker ended; the exit code or signal explains a plain end of
   stream. */
static void add_disconnection(text_t *text, const procord_outcome_t *outcome,
                              const char *destination) {
  int error = outcome->error;
  const char *worker = destination ? destination : "the worker";
  int timed_out = error == PROCORD_ETIMEOUT;
  procord_stage_t stage = procord_outcome_stage(outcome);
  switch (stage) {
  case PROCORD_STAGE_SPAWN:
    if (error == PROCORD_ENOTSERVING || error == PROCORD_ENESTED) {
      add(text, "worker disconnected: did not start %s: %s", worker, detail_or(outcome, ""));
      return;
    }
    add(text, "could not start %s: ", destination ? destination : "the worker program");
    add_error(text, error);
    add(text, "; check the path, and that it is an executable this user may run");
    return;
  case PROCORD_STAGE_RESOLVE:
    add(text,
        "worker disconnected: could not resolve %s: %s; check the host name and this machine's resolver",
        worker, detail_or(outcome, "unknown reason"));
    return;
  case PROCORD_STAGE_REAP:
    if (error != -ECHILD) break;
    add(text,
        "worker disconnected: the worker ended, but another part of this program reaped it first (a "
        "SIGCHLD handler calling waitpid(-1)?), so how it ended is unknown: reap only the children you "
        "started");
    return;
  case PROCORD_STAGE_CONNECT:
    if (!timed_out) break;
    add(text, "worker disconnected: connecting to the server timed out");
    return;
  case PROCORD_STAGE_IDLE:
    if (!timed_out) break;
    add(text, "worker disconnected: the server stayed silent longer than the idle timeout");
    return;
  case PROCORD_STAGE_HANDSHAKE:
    if (!timed_out) break;
    add(text, "worker disconnected: TLS or authentication with the server timed out");
    return;
  default: break; /* the rest, and a stage of a later version, by the error code */
  }
  add_ending(text, outcome, stage, destination);
}

/* The last line of the stderr tail that holds the Swift runtime's
   "Fatal error:", or NULL. */
static const char *fatal_error_line(const procord_outcome_t *outcome, size_t *length) {
  const char *tail = outcome->stderr_tail, *found = NULL;
  size_t size = outcome->stderr_tail_length;
  for (size_t start = 0; tail && start < size;) {
    const char *newline = memchr(tail + start, '\n', size - start);
    size_t end = newline ? (size_t)(newline - tail) : size;
    if (end > start && memmem(tail + start, end - start, "Fatal error:", 12)) {
      found = tail + start;
      *length = end - start;
    }
    start = end + 1;
  }
  return found;
}

/* The worker's last words, or else the end of its stderr. */
static void add_evidence(text_t *text, const procord_outcome_t *outcome) {
  if (outcome->kind != PROCORD_OUTCOME_DISCONNECTED || !outcome->stderr_tail ||
      !outcome->stderr_tail_length)
    return;
  size_t length = 0;
  const char *fatal = fatal_error_line(outcome, &length);
  if (fatal) {
    add(text, "\nthe worker's last words: ");
    add_bytes(text, fatal, length);
  } else {
    add(text, "\nthe end of the worker's stderr:\n");
    add_bytes(text, outcome->stderr_tail, outcome->stderr_tail_length);
  }
}

size_t procord_outcome_describe(const procord_outcome_t *outcome, const char *task_name,
                                const char *destination, char *buffer, size_t size) {
  text_t text = {.buffer = buffer, .size = buffer ? size : 0};
  int has_pid = outcome->worker_pid > 0;
  if (task_name) add(&text, "task \"%s\"", task_name);
  if (has_pid || destination) {
    add(&text, "%s(", task_name ? " " : "");
    if (has_pid) add(&text, "worker pid %d%s", (int)outcome->worker_pid, destination ? ", " : "");
    if (destination) add(&text, "%s", destination);
    add(&text, ")");
  }
  if (text.length) add(&text, ": ");
  const char *body = (const char *)outcome->body;
  size_t body_length = body ? outcome->length : 0;
  switch (outcome->kind) {
  case PROCORD_OUTCOME_VALUE:
    add(&text, "the task answered (%zu byte%s)", body_length, body_length == 1 ? "" : "s");
    break;
  case PROCORD_OUTCOME_EXCEPTION:
    add(&text, "the task raised an error: ");
    add_bytes(&text, body ? body : "", body_length);
    break;
  case PROCORD_OUTCOME_UNKNOWN_EXCEPTION:
    /* A worker that never served says so in words that stand alone (lineage.c). */
    if (!body || !memmem(body, body_length, "was started as a Procord worker", 31))
      add(&text, "the task failed with an error sent as text: ");
    add_bytes(&text, body ? body : "", body_length);
    break;
  case PROCORD_OUTCOME_NO_WORKER:
    add(&text,
        "the worker serves no task named \"%s\": check the name, that the worker program serves it "
        "(procord_worker_main, or Worker.main(tasks:) in Swift), and that the worker is the program "
        "you meant",
        task_name ? task_name : "");
    break;
  case PROCORD_OUTCOME_KILLED: add(&text, "killed by this program"); break;
  case PROCORD_OUTCOME_TIMED_OUT:
    add(&text, "the task ran past its deadline and its worker was stopped");
    break;
  case PROCORD_OUTCOME_DISCONNECTED: add_disconnection(&text, outcome, destination); break;
  default: add(&text, "unknown outcome %d", (int)outcome->kind);
  }
  add_evidence(&text, outcome);
  if (text.size > 0) text.buffer[text.length < text.size ? text.length : text.size - 1] = 0;
  return text.length;
}
