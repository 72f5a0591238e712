/*
 * procord/connect.h: reaching a worker server over TCP.
 *
 * procord_connect resolves a host name without blocking the loop (the
 * lookup runs on a short-lived thread of its own; numeric IPv4 and IPv6
 * addresses need none), then connects to each address in turn until one
 * accepts, within an optional time limit, and hands back a connected,
 * non-blocking, close-on-exec socket with TCP_NODELAY set.
 */
#ifndef PROCORD_CONNECT_H
#define PROCORD_CONNECT_H

#include <stddef.h>

#include "procord/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct procord_connect_s procord_connect_t;

/*
 * Called once on the loop's thread: with a connected socket (`fd` >= 0, now
 * owned by the callee, `error` 0), or with `fd` -1 and why: a negated errno
 * of the call named by `call` ("socket", "connect"), PROCORD_ERESOLVE with
 * call "getaddrinfo" and `detail` the resolver's message, or
 * PROCORD_ETIMEOUT with call "connect". `detail` is a static string or NULL.
 */
typedef void (*procord_connect_cb)(int fd, int error, const char *call, const char *detail,
                                   void *context);

typedef struct procord_connect_options_s {
  /* The size of this struct as the calling program was built with: set by
     procord_connect_options_init; 0 means the layout of this first release.
     A size larger than this library's struct, with a byte beyond it that is
     not 0 (a program built against a newer Procord than it runs with), is
     refused with PROCORD_EINVAL. */
  size_t size;
  const char *host; /* a DNS name, or an IPv4 or IPv6 literal (no brackets); copied */
  int port;
  int timeout_ms;   /* for resolving and connecting together; 0: no limit */
  procord_connect_cb on_done;
  void *context;
} procord_connect_options_t;

/*
 * Sets every field of `options` to its default (0, NULL: see each field)
 * and `size` to this struct's size. Call it first, then set the fields you
 * need: a field added in a later version then gets its default even in a
 * program built before it.
 */
void procord_connect_options_init(procord_connect_options_t *options);

/*
 * Starts connecting. Must be called on the loop's thread (a delegation does
 * it from there). Stores a handle in `*attempt`, valid until on_done has
 * been called or procord_connect_cancel has returned. Returns 0, or
 * PROCORD_EINVAL / -ENOMEM without calling on_done.
 */
int procord_connect(procord_loop_t *loop, const procord_connect_options_t *options,
                    procord_connect_t **attempt);

/*
 * Gives up an attempt that has not called on_done yet: on_done will never
 * be called, and any socket is closed. On the loop's thread.
 */
void procord_connect_cancel(procord_connect_t *attempt);

#ifdef __cplusplus
}
#endif

#endif
