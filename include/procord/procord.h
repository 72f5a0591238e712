/*
 * procord/procord.h: the whole public C API of Procord.
 *
 * Procord delegates typed tasks to other processes and speaks the wire
 * protocol of the original OCaml Procord byte for byte (docs/PROTOCOL.md).
 * Every public name starts with `procord_`; every function that can fail
 * returns 0 or a negative error code (procord/error.h).
 *
 * How objects end, one word per idea:
 * - `_free`: the caller owns the object alone (a loop, a connection): it
 *   is stopped at once and its memory given back.
 * - `_release`: the object is shared, counted (a delegation, a pool, a
 *   security configuration): the caller drops its reference, and the
 *   object goes once the last one is dropped and its work is done.
 * - `_close`: the object's socket is closed (a connection's at once, or
 *   after what is queued with `_close_nicely`, and freed later with
 *   `_free`; a listener's, which frees it too); `_shutdown` is a pool's
 *   end, graceful or immediate, before its `_release`.
 * - `_kill`: a worker is stopped at once (SIGKILL to its process group);
 *   `_cancel`: it is asked to stop (SIGTERM, then SIGKILL after its grace
 *   period), or, for a connection attempt, the attempt is given up.
 * - `_stop`: a loop returns from procord_loop_run.
 * Which thread a callback runs on, and what it may call, is in
 * procord/loop.h.
 *
 * Options: a function with many knobs takes a struct of them
 * (procord_spawn_options_t, procord_delegation_options_t, ...). Call its
 * init function first (procord_spawn_options_init and so on), then set the
 * fields you need. Each struct starts with `size_t size`, which the init
 * function sets and the library reads the struct by: a field added in a
 * later version then gets its default in a program built before it, and a
 * program built against a newer header than the library it runs with is
 * refused (PROCORD_EINVAL) only if it sets a field this library does not
 * know. A zero-initialized struct (`size` 0) means every default, laid out
 * as in the first release.
 */
#ifndef PROCORD_PROCORD_H
#define PROCORD_PROCORD_H

#include "procord/connect.h"
#include "procord/connection.h"
#include "procord/delegation.h"
#include "procord/error.h"
#include "procord/frame.h"
#include "procord/listen.h"
#include "procord/log.h"
#include "procord/loop.h"
#include "procord/memory.h"
#include "procord/pool.h"
#include "procord/security.h"
#include "procord/server.h"
#include "procord/spawn.h"
#include "procord/task.h"
#include "procord/version.h"
#include "procord/worker.h"

#endif
