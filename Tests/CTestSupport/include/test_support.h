/* What the Swift tests need from C that Swift cannot call (prctl is variadic). */
#ifndef PROCORD_TEST_SUPPORT_H
#define PROCORD_TEST_SUPPORT_H

/*
 * Makes this process the reaper of its orphaned descendants, so that a
 * worker's worker left behind becomes our child, where the tests count it.
 * Returns 0 or -errno.
 */
int procord_test_become_subreaper(void);



/*
 * Waits until process `pid` (any process, not only a child) has exited, for
 * at most `timeout_ms` milliseconds, with a pidfd: no polling. Returns 1 if
 * it exited, 0 on timeout, or -errno (-ESRCH: it was already gone).
 */
int procord_test_wait_for_exit(int pid, int timeout_ms);
#endif
