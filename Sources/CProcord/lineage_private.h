/*
 * Where this process stands in a chain of delegations (lineage.c).
 *
 * procord_spawn gives every worker PROCORD_LINEAGE="DEPTH PARENT CHANNEL":
 * how many workers deep it is (1 for a main program's worker), the pid of
 * the Procord process that started it (0 for a program of its own) and its
 * protocol channel. From that a process knows:
 * - whether it was started as a worker (its parent is that pid): such a
 *   process that delegates before it serves forgot its worker entry point,
 *   and would start copies of itself without end (its main program is told
 *   so with a `U` frame on the channel);
 * - how deep it is, so that even genuinely recursive tasks stop at
 *   PROCORD_MAX_DELEGATION_DEPTH (environment; 16 by default);
 * - which parent to die with, in every mode.
 */
#ifndef PROCORD_LINEAGE_PRIVATE_H
#define PROCORD_LINEAGE_PRIVATE_H

#include <sys/types.h>

#define PROCORD_LINEAGE_VARIABLE "PROCORD_LINEAGE"
#define PROCORD_MAX_DEPTH_VARIABLE "PROCORD_MAX_DELEGATION_DEPTH"
#define PROCORD_DEFAULT_MAX_DELEGATION_DEPTH 16

/* The pid of the Procord process that started this one as a worker, or 0. */
pid_t procord_lineage_parent(void);

/* This process serves tasks (a worker or a server): it may delegate. */
void procord_lineage_mark_serving(void);

/*
 * Whether this process may start a worker: 0, PROCORD_ENOTSERVING (started
 * as a worker, it has not begun to serve) or PROCORD_ENESTED (the worker
 * would be deeper than the maximum).
 */
int procord_lineage_may_spawn(void);

/* What procord_lineage_may_spawn's refusal means and what to do, static. */
const char *procord_lineage_refusal(int error);

/*
 * `base` (NULL-terminated) with PROCORD_LINEAGE set for a child of this
 * process: a worker, or (`main_program`) a program of its own, one level
 * deeper all the same. In one block for procord_free(); NULL when out of memory.
 */
char **procord_lineage_environment(const char *const *base, int main_program, int channel);

#endif
