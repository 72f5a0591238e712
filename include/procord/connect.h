/*
 * procord/connect.h: reaching a worker server over TCP.
 *
 * procord_connect resolves a host name without blocking the loop and
 * without a thread: on the loop's own thread, with libevent's evdns (so a
 * program links libevent_extra too; pkg-config's procord module says so).
 * Then it connects to each address found in turn (IPv4 and IPv6 alike, a
 * name server's IPv4 ones first) until one accepts, within an optional
 * time limit, and hands back a connected, non-blocking, close-on-exec
 * socket with TCP_NODELAY set.
 *
 * Which names ask whom:
 * - A numeric IPv4 or IPv6 address asks no one.
 * - "localhost", and any name ending in ".localhost", is the loopback
 *   (127.0.0.1, then ::1) and asks no one, whatever the hosts file says.
 * - Any other name is looked for in /etc/hosts first, then asked of the
 *   name servers of /etc/resolv.conf (its `search`, `domain` and `ndots`
 *   too), UDP, A and AAAA queries together. A file without a name server
 *   (or none at all) means one on 127.0.0.1, as for the C library. Each
 *   query waits 2 s for an answer and is sent twice at most, unless
 *   resolv.conf's `options timeout:N attempts:N` say otherwise: a name
 *   whose servers do not answer fails in about 4 s for each name of the
 *   search list tried. Set timeout_ms to bound the whole.
 * The loop makes its resolver at its first lookup of a name, reading both
 * files then and only then, and keeps it until procord_loop_free: a UDP
 * socket (close-on-exec) for each name server, which no event watches
 * while no lookup is out.
 *
 * PROCORD_RESOLV_CONF, in the environment when a loop makes its resolver,
 * names a file to read instead of /etc/resolv.conf (ignored in a setuid
 * program: secure_getenv). It is read by libevent's parser, which also
 * takes `nameserver ADDRESS:PORT`: tests point it at a name server of
 * their own.
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
 * call "getaddrinfo" (the lookup, whichever resolver made it) and `detail`
 * the resolver's message ("Name or service not known" for a name that does
 * not exist, as the C library says it), PROCORD_ETIMEOUT with call "connect"
 * (the time limit ran out, resolving or connecting), or PROCORD_ECLOSED with
 * call "getaddrinfo" when procord_loop_free ended the lookup. `detail` is a
 * static string or NULL.
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
  int timeout_ms; /* for resolving and connecting together; 0: no limit */
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
 * it from there), or on the thread that will run a loop that runs nowhere
 * yet. Stores a handle in `*attempt`, valid until on_done has been called
 * or procord_connect_cancel has returned. on_done never runs inside this
 * call, even when the answer is known at once. Returns 0, or
 * PROCORD_EINVAL / -ENOMEM without calling on_done. Cancel an attempt
 * before freeing its loop: procord_loop_free ends one whose lookup is
 * still out (on_done: PROCORD_ECLOSED), not one already connecting.
 */
int procord_connect(procord_loop_t *loop, const procord_connect_options_t *options,
                    procord_connect_t **attempt);

/*
 * Gives up an attempt that has not called on_done yet: on_done will never
 * be called, any socket is closed, and a lookup still out is cancelled (no
 * query is sent again). On the loop's thread.
 */
void procord_connect_cancel(procord_connect_t *attempt);

#ifdef __cplusplus
}
#endif

#endif
