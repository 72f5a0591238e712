/* What the Swift tests need from C that Swift cannot call (prctl is variadic),
   or that is much shorter to say with plain sockets in C. */
#ifndef PROCORD_TEST_SUPPORT_H
#define PROCORD_TEST_SUPPORT_H

#include <stddef.h>

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

/*
 * Sets both the soft and the hard RLIMIT_NOFILE of process `pid` (another
 * process: prlimit(2), which Swift's Glibc does not show) to `limit`.
 * Returns 0 or -errno.
 */
int procord_test_limit_descriptors(int pid, unsigned long limit);

/* ---- sd_notify, from the receiving end (a service manager's) ---- */

/*
 * Creates a Unix datagram socket bound at `path` (a stale file there is
 * removed first), close-on-exec, to be named in a child's NOTIFY_SOCKET.
 * Returns the descriptor or -errno.
 */
int procord_test_notify_socket(const char *path);

/*
 * Receives one datagram from `fd`, waiting at most `timeout_ms` ms. Copies
 * at most `size - 1` bytes to `buffer`, NUL-terminated. Returns the number
 * of bytes copied, -ETIMEDOUT if nothing came in time, or -errno.
 */
int procord_test_receive(int fd, char *buffer, size_t size, int timeout_ms);

/* ---- Plain TCP on the loopback address (no Procord involved) ---- */

/*
 * A listening TCP socket on 127.0.0.1, on a port the system picks, stored
 * in `*port`; close-on-exec. Returns the descriptor or -errno.
 */
int procord_test_listen_loopback(int *port);

/*
 * A listening TCP socket on the loopback address of `family` (AF_INET:
 * 127.0.0.1, AF_INET6: ::1) with `backlog`, on a port the system picks,
 * stored in `*port`; close-on-exec. Returns the descriptor or -errno.
 */
int procord_test_listen(int family, int backlog, int *port);

/*
 * Starts a non-blocking TCP connect to 127.0.0.1:`port` and returns the
 * socket at once, connected or still pending (close-on-exec), or -errno.
 */
int procord_test_connect_pending(int port);

/*
 * A port that was free on 127.0.0.1 a moment ago (bound to port 0, read
 * back, closed), for programs that must be given a port number. Returns the
 * port or -errno.
 */
int procord_test_free_port(void);

/*
 * Connects a TCP socket to 127.0.0.1:`port`, blocking, close-on-exec.
 * Returns the descriptor, or -errno (-ECONNREFUSED when nobody listens).
 */
int procord_test_connect_loopback(int port);

/*
 * Accepts one connection on `listen_fd`, waiting at most `timeout_ms` ms.
 * Returns the connection's descriptor (close-on-exec), -ETIMEDOUT, or -errno.
 */
int procord_test_accept(int listen_fd, int timeout_ms);

/* Writes all `length` bytes to socket `fd` (never raises SIGPIPE). Returns 0 or -errno. */
int procord_test_write_all(int fd, const void *bytes, size_t length);

/*
 * Reads from `fd` until `size` bytes have come or the stream ends, whichever
 * is first, for at most `timeout_ms` ms in all. Returns the number of bytes
 * read (less than `size` only at the end of the stream), -ETIMEDOUT if
 * neither happened in time (what was read is then in `buffer` and
 * `*partial`, if not NULL), or -errno.
 */
long procord_test_read(int fd, void *buffer, size_t size, int timeout_ms, size_t *partial);

/* Closes `fd`'s sending direction (shutdown SHUT_WR). Returns 0 or -errno. */
int procord_test_shutdown_write(int fd);

#endif
