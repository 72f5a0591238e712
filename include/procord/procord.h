/*
 * procord/procord.h: the whole public C API of Procord.
 *
 * Procord delegates typed tasks to other processes and speaks the wire
 * protocol of the original OCaml Procord byte for byte (docs/PROTOCOL.md).
 * Every public name starts with `procord_`; every function that can fail
 * returns 0 or a negative error code (procord/error.h).
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
#include "procord/pool.h"
#include "procord/security.h"
#include "procord/server.h"
#include "procord/spawn.h"
#include "procord/task.h"
#include "procord/version.h"
#include "procord/worker.h"

#endif
