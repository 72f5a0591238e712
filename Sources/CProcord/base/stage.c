/*
 * Stages of a failure (procord_stage_t, procord/error.h) and the `call`
 * text that goes with each: one table, read both ways.
 */
#include "base/base_private.h"

#include <string.h>

typedef struct stage_call_s {
  procord_stage_t stage;
  const char *call;
} stage_call_t;

/* Each stage's own call first; then other calls that name a stage too. */
static const stage_call_t stage_calls[] = {
    {PROCORD_STAGE_SPAWN, "posix_spawn"},
    {PROCORD_STAGE_RESOLVE, "getaddrinfo"},
    {PROCORD_STAGE_CONNECT, "connect"},
    {PROCORD_STAGE_TLS, "tls"},
    {PROCORD_STAGE_AUTHENTICATE, "authenticate"},
    {PROCORD_STAGE_HANDSHAKE, "handshake"},
    {PROCORD_STAGE_READ, "read"},
    {PROCORD_STAGE_WRITE, "write"},
    {PROCORD_STAGE_PARSE, "parse"},
    {PROCORD_STAGE_RECEIVE, "receive"},
    {PROCORD_STAGE_PEER, "peer"},
    {PROCORD_STAGE_IDLE, "idle"},
    {PROCORD_STAGE_DEADLINE, "deadline"},
    {PROCORD_STAGE_CLOSE, "close"},
    {PROCORD_STAGE_REAP, "waitpid"},
    {PROCORD_STAGE_SETUP, "setup"},
    /* A start Procord refused before posix_spawn (io/lineage.c). */
    {PROCORD_STAGE_SPAWN, "spawn"},
    /* What procord/connect.h documents besides "connect". */
    {PROCORD_STAGE_CONNECT, "socket"},
};

#define STAGE_CALL_COUNT (sizeof stage_calls / sizeof stage_calls[0])

const char *procord_stage_call(procord_stage_t stage) {
  for (size_t i = 0; i < STAGE_CALL_COUNT; i++)
    if (stage_calls[i].stage == stage) return stage_calls[i].call;
  return NULL;
}

procord_stage_t procord_stage_of_call(const char *call) {
  for (size_t i = 0; call && i < STAGE_CALL_COUNT; i++)
    if (strcmp(stage_calls[i].call, call) == 0) return stage_calls[i].stage;
  return PROCORD_STAGE_NONE;
}
