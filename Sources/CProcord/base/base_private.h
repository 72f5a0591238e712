/*
 * Private to the C core: base/, what every layer uses, in sections:
 * invariants (assert.c), lists, memory (memory.c), the log (log.c),
 * options read by their size, stages of a failure (stage.c), time and
 * timers (time.c), signals (signals.c), descriptors (descriptors.c);
 * error.c, version.c and requirements.c serve the public headers.
 * The one header of this folder that others include (docs/ARCHITECTURE.md).
 */
#ifndef PROCORD_BASE_PRIVATE_H
#define PROCORD_BASE_PRIVATE_H

#include "procord/error.h"
#include "procord/log.h"
#include "procord/memory.h"

#include <stddef.h>
#include <string.h>
#include <sys/types.h>

/* ---- invariants (assert.c) ---- */

/*
 * PROCORD_ASSERT(condition): an invariant of the core, at a state
 * transition (a pool's counts, a delegation's state, a connection's, a
 * server's worker table). Checked unless NDEBUG is defined: in the C tests,
 * the sanitizer and fuzz builds, SwiftPM's debug builds and the Makefile's
 * check-c; not in libprocord or SwiftPM's release builds, where a broken
 * invariant costs nothing to look for. A broken one writes what, where and
 * that it is a bug of Procord's to stderr, then aborts: going on would turn
 * the bug into a wrong answer.
 */
#ifdef NDEBUG
#define PROCORD_ASSERT(condition) ((void)0)
#else
#define PROCORD_ASSERT(condition)                                                                  \
  ((condition) ? (void)0 : procord_assert_failed(#condition, __FILE__, __LINE__, __func__))
#endif
_Noreturn void procord_assert_failed(const char *condition, const char *file, int line,
                                     const char *function);

/* ---- lists: intrusive, doubly linked, circular (in the manner of libuv's queue.h) ---- */

/*
 * A list is a head (procord_list_t, initialized with procord_list_init);
 * each element embeds a procord_list_t node and is found back from it with
 * PROCORD_LIST_ENTRY. A node that is in no list has `next` NULL (a zeroed
 * element is in none), so that whether an element is queued is a question
 * the node answers. Nothing is allocated: adding and removing cannot fail.
 */
typedef struct procord_list_s {
  struct procord_list_s *next, *prev;
} procord_list_t;

#define PROCORD_LIST_ENTRY(node, type, field)                                                      \
  ((type *)(void *)((char *)(node)-offsetof(type, field)))

/* Every node of `head`, first to last; `node` must not be removed meanwhile. */
#define PROCORD_LIST_FOREACH(node, head)                                                           \
  for ((node) = (head)->next; (node) != (head); (node) = (node)->next)
/* Every node of `head`, last to first. */
#define PROCORD_LIST_FOREACH_REVERSE(node, head)                                                   \
  for ((node) = (head)->prev; (node) != (head); (node) = (node)->prev)
/* The same, where the body may remove `node` (and only it). */
#define PROCORD_LIST_FOREACH_SAFE(node, following, head)                                           \
  for ((node) = (head)->next, (following) = (node)->next; (node) != (head);                        \
       (node) = (following), (following) = (node)->next)

static inline void procord_list_init(procord_list_t *head) { head->next = head->prev = head; }

static inline int procord_list_is_empty(const procord_list_t *head) { return head->next == head; }

/* Whether an element's node is in a list. */
static inline int procord_list_is_linked(const procord_list_t *node) { return node->next != NULL; }

static inline void procord_list_link_between(procord_list_t *node, procord_list_t *prev,
                                             procord_list_t *next) {
  PROCORD_ASSERT(!procord_list_is_linked(node)); /* in one list at a time */
  node->prev = prev;
  node->next = next;
  prev->next = node;
  next->prev = node;
}

static inline void procord_list_push_back(procord_list_t *head, procord_list_t *node) {
  procord_list_link_between(node, head->prev, head);
}

static inline void procord_list_push_front(procord_list_t *head, procord_list_t *node) {
  procord_list_link_between(node, head, head->next);
}

/* Takes `node` out of its list; it is then in none. */
static inline void procord_list_remove(procord_list_t *node) {
  PROCORD_ASSERT(procord_list_is_linked(node));
  node->prev->next = node->next;
  node->next->prev = node->prev;
  node->next = node->prev = NULL;
}

/* The first (last) node, or NULL for an empty list. */
static inline procord_list_t *procord_list_first(const procord_list_t *head) {
  return head->next == head ? NULL : head->next;
}
static inline procord_list_t *procord_list_last(const procord_list_t *head) {
  return head->prev == head ? NULL : head->prev;
}

/* The node after `node` in `head`, or NULL after the last. */
static inline procord_list_t *procord_list_next(const procord_list_t *head,
                                                const procord_list_t *node) {
  return node->next == head ? NULL : node->next;
}

/* Moves every node of `from` to the end of `to`; `from` is then empty. */
static inline void procord_list_move_all(procord_list_t *from, procord_list_t *to) {
  if (procord_list_is_empty(from)) return;
  from->next->prev = to->prev;
  to->prev->next = from->next;
  from->prev->next = to;
  to->prev = from->prev;
  procord_list_init(from);
}

/* Takes out and returns the first node, or NULL for an empty list. */
static inline procord_list_t *procord_list_pop_front(procord_list_t *head) {
  procord_list_t *node = procord_list_first(head);
  if (node) procord_list_remove(node);
  return node;
}

/* ---- memory ---- */

/*
 * Every allocation of the core, through the allocator of
 * procord_set_allocator (procord/memory.h) or libc's.
 *
 * The core calls these, never malloc, calloc, realloc, strdup or free, except
 * for memory whose contract says malloc and free (procord/memory.h lists
 * it). Each accepts a size of 0 (asking for 1 byte) and procord_free
 * NULL, so callers keep the habits of libc's.
 */

/* Bodies from this size on are asked to use transparent huge pages. */
#define PROCORD_HUGE_PAGE_THRESHOLD ((size_t)2 * 1024 * 1024)

/* malloc, calloc (NULL when count * size overflows), realloc (`pointer`
   may be NULL), strdup, and free, on the process's allocator. */
void *procord_allocate(size_t size);
void *procord_allocate_zeroed(size_t count, size_t size);
void *procord_reallocate(void *pointer, size_t size);
char *procord_strdup(const char *string);

/*
 * procord_allocate(size), for a body about to be filled. A large one is a
 * fresh mapping whose every 4 KiB page faults and is zeroed when first
 * written: on some machines that costs more than copying the bytes. Such a
 * buffer from malloc is asked to use transparent huge pages (madvise
 * MADV_HUGEPAGE, honoured where /sys/kernel/mm/transparent_hugepage/enabled
 * is `madvise` or `always`), which takes a 256 MiB fill from about 215 to 95
 * ms on the machine of the benchmark's README. A program's own allocator's
 * memory is left as it gives it: its mappings are its own to advise. Freed
 * with procord_free.
 */
void *procord_malloc_body(size_t size);

/* ---- log ---- */

/* Private: routing libevent's messages (log.c, procord/log.h). */

/* Takes over libevent's log callback, if not yet (procord_loop_new). */
void procord_log_take_libevent(void);

/* A server's log while it takes libevent's messages; its storage is the
   server's. */
typedef struct procord_log_route_s {
  procord_log_fn log;
  void *context;
  procord_list_t node; /* in the routes, the newest first */
} procord_log_route_t;

/* While a server runs, libevent's messages go to its log (none: dropped);
   with several, to the one routed last... */
void procord_log_route_to_server(procord_log_route_t *route, procord_log_fn log, void *context);
/* ...until it stops: then to the one before it, or the process's log
   (procord_set_log). A route not routed is left alone. */
void procord_log_unroute_from_server(procord_log_route_t *route);

/* A line for the process-wide log (procord_set_log), if there is one: for a
   misuse the core can only report, not return. */
void procord_log_write(procord_log_level_t level, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- options ---- */

/*
 * Reading a caller's options struct by its `size` (every public
 * procord_*_options_t, procord_pool_source_t and procord_allocator_t start
 * with `size_t size`).
 *
 * Each entry point copies the caller's struct into a zeroed one of its own
 * before reading any field, so that a program built against an older,
 * smaller struct gets the default (0) for every field it does not know, and
 * a program built against a newer, larger one is refused when it sets a
 * field this library does not know (PROCORD_EINVAL).
 *
 * `size` 0 means the struct of the first release (a program that
 * zero-initializes the struct and never calls procord_X_options_init). The
 * PROCORD_FIRST_SIZE_* below say how large that was: today each is its
 * sizeof. When a field is appended to one of these structs, its line here
 * becomes offsetof(type, first_new_field), and stays so: a program built
 * before the field existed keeps being read with the layout it was built
 * with. (A struct embedded by value in another, procord_spawn_options_t,
 * may never grow: scripts/c_api.py check-abi refuses it.) The core's own
 * calls set `.size = sizeof options` too, so that a field appended later is
 * not dropped from them as from an old program's.
 */

/* Macros, so that this header needs only the types of the file using one. */
#define PROCORD_FIRST_SIZE_SPAWN_OPTIONS sizeof(procord_spawn_options_t)
#define PROCORD_FIRST_SIZE_DELEGATION_OPTIONS sizeof(procord_delegation_options_t)
#define PROCORD_FIRST_SIZE_POOL_OPTIONS sizeof(procord_pool_options_t)
#define PROCORD_FIRST_SIZE_POOL_SOURCE sizeof(procord_pool_source_t)
#define PROCORD_FIRST_SIZE_CONNECT_OPTIONS sizeof(procord_connect_options_t)
#define PROCORD_FIRST_SIZE_CONNECTION_OPTIONS sizeof(procord_connection_options_t)
#define PROCORD_FIRST_SIZE_LISTENER_OPTIONS sizeof(procord_listener_options_t)
#define PROCORD_FIRST_SIZE_SECURITY_OPTIONS sizeof(procord_security_options_t)
#define PROCORD_FIRST_SIZE_WORKER_OPTIONS sizeof(procord_worker_options_t)
#define PROCORD_FIRST_SIZE_SERVER_OPTIONS sizeof(procord_server_options_t)
#define PROCORD_FIRST_SIZE_ALLOCATOR sizeof(procord_allocator_t)

/* What every procord_*_options_init does: all zero (every default), and
   `size` (the struct's first field) set to this library's size. */
static inline void procord_options_clear(void *options, size_t size) {
  memset(options, 0, size);
  memcpy(options, &size, sizeof size);
}

/* Larger than any options struct will ever be: a `size` above it is not a
   size but garbage. */
#define PROCORD_OPTIONS_MOST_SIZE 4096

/* The size a struct claims: its first field, 0 read as `first_release_size`. */
static inline size_t procord_options_size(const void *given, size_t first_release_size) {
  size_t size;
  memcpy(&size, given, sizeof size);
  return size ? size : first_release_size;
}

/*
 * Copies `given` (a caller's struct, `size` first) into `local` (ours, of
 * `local_size` bytes): min(size, local_size) bytes, the rest zero, and
 * local's `size` set to local_size. Returns 0, or PROCORD_EINVAL for a size
 * too small to hold the size itself, or larger than ours with a byte beyond
 * ours that is not 0 (a field of a newer Procord, set): `local` then holds
 * what could be copied, so that the caller can still release what the
 * options lend (a delegation's input_release); for a size that cannot be
 * one (below the size field's, above PROCORD_OPTIONS_MOST_SIZE), nothing.
 */
static inline int procord_options_copy(void *local, size_t local_size, const void *given,
                                       size_t first_release_size) {
  size_t size = procord_options_size(given, first_release_size);
  memset(local, 0, local_size);
  /* A size no struct of ours could have (a struct never initialized, its
     bytes whatever the stack held): nothing else in it is read, nor
     anything it would lend (an input_release) called. */
  if (size < sizeof(size_t) || size > PROCORD_OPTIONS_MOST_SIZE) return PROCORD_EINVAL;
  memcpy(local, given, size < local_size ? size : local_size);
  memcpy(local, &local_size, sizeof local_size);
  for (size_t i = local_size; i < size; i++)
    if (((const unsigned char *)given)[i] != 0) return PROCORD_EINVAL;
  return 0;
}

/* procord_options_copy for `local`, a struct variable (not a pointer). */
#define PROCORD_OPTIONS_COPY(local, given, first_release_size)                                     \
  procord_options_copy(&(local), sizeof(local), (given), (first_release_size))

/*
 * A struct embedded by value in options already copied (a delegation's
 * `worker`): it keeps its place, so it cannot be larger than ours (what
 * follows it is the container's), and never grows (check-abi). Zeroes what
 * lies beyond its own size and sets that size to ours. Returns 0, or
 * PROCORD_EINVAL for a size too small, or too large.
 */
static inline int procord_options_nested(void *nested, size_t nested_size,
                                         size_t first_release_size) {
  size_t size = procord_options_size(nested, first_release_size);
  if (size < sizeof(size_t) || size > nested_size) return PROCORD_EINVAL;
  memset((unsigned char *)nested + size, 0, nested_size - size);
  memcpy(nested, &nested_size, sizeof nested_size);
  return 0;
}

/* ---- stages of a failure (stage.c) ---- */

/* The `call` that goes with a stage (procord/error.h lists them: "read"
   for PROCORD_STAGE_READ, "posix_spawn" for _SPAWN...), static; NULL for
   PROCORD_STAGE_NONE. Where a failure is recorded, the stage is given and
   its call follows from it, so the two cannot disagree. */
const char *procord_stage_call(procord_stage_t stage);

/* The stage a call names, for what carries only the call (a connect's
   callback, an outcome a program built itself); PROCORD_STAGE_NONE for
   NULL or a call it does not know. */
procord_stage_t procord_stage_of_call(const char *call);

/* ---- time and timers (time.c) ---- */

struct event;
struct timespec;

/* The monotonic clock, in milliseconds (not since any particular time). */
long long procord_monotonic_ms(void);

/* The monotonic clock now, and the milliseconds since a time it gave. */
void procord_monotonic_now(struct timespec *now);
double procord_ms_since(const struct timespec *start);

/* Arms the libevent timer `timer` (evtimer_new) to fire in `milliseconds`
   (0: on the loop's next turn), replacing any earlier arming (a persistent
   event: every `milliseconds`). Returns 0, or -1 if libevent refused. The
   one place that turns milliseconds into libevent's timeval. */
int procord_timer_arm(struct event *timer, int milliseconds);

/* ---- signals (signals.c) ---- */

/* For a thread of the core's own (a loop's, a watchdog, an output
   forwarder): no signal meant for the program is delivered to it. */
void procord_thread_block_all_signals(void);

/* Blocks SIGPIPE on this thread around writes that may meet a closed pipe
   (the write then fails with EPIPE), and says whether it was blocked
   already; procord_sigpipe_unblock(that, may_be_pending) unblocks it
   unless it was blocked before, first discarding the SIGPIPEs the writes
   raised when `may_be_pending` (a write failed with EPIPE; a loop that
   wrote for long cannot tell). */
int procord_sigpipe_block(void);
void procord_sigpipe_unblock(int was_blocked, int may_be_pending);

/* ---- descriptors (descriptors.c) ---- */

struct iovec;
struct pollfd;

/* Sets or clears O_NONBLOCK; sets FD_CLOEXEC. Return 0 or -errno. */
int procord_fd_set_nonblocking(int fd, int nonblocking);
int procord_fd_set_cloexec(int fd);

/* Whether `fd` is a socket (then written with MSG_NOSIGNAL). */
int procord_fd_is_socket(int fd);

/* read(2), write(2), poll(2), waitpid(2), again after EINTR. */
ssize_t procord_read_retrying(int fd, void *buffer, size_t size);
ssize_t procord_write_retrying(int fd, const void *bytes, size_t size);
int procord_poll_retrying(struct pollfd *descriptors, unsigned long count, int timeout_ms);
pid_t procord_waitpid_retrying(pid_t pid, int *status, int flags);

/* Waits until `fd` is ready for `events` (POLLIN, POLLOUT): 0, or
   PROCORD_ETIMEOUT after `timeout_ms` (0 or less: no limit), or -errno. */
int procord_wait_for(int fd, short events, int timeout_ms);

/*
 * writev of `parts` that never raises SIGPIPE (whose default would kill a
 * worker whose main program has gone): MSG_NOSIGNAL on a socket (and
 * MSG_DONTWAIT, so that a time limit holds on a blocking one); on a pipe,
 * SIGPIPE blocked around the write and a pending one discarded, the
 * process's disposition left as it was (for a task's own children).
 * Returns what writev returns, errno set.
 */
ssize_t procord_write_parts(int fd, int is_socket, struct iovec *parts, int count);

/*
 * Writes every byte of `parts` (their iov_base and iov_len are advanced):
 * again after EINTR and short writes; when `fd` is full (non-blocking), waits
 * for room up to `timeout_ms` (0: no limit; below 0: not at all, -EAGAIN),
 * so that a peer that stops reading cannot hold a writer with a limit
 * forever. Returns 0,
 * PROCORD_ETIMEOUT or -errno; then `*unwritten` (if not NULL) says how many
 * bytes were left. The one write-all of the core.
 */
int procord_write_all_parts(int fd, int is_socket, struct iovec *parts, int count, int timeout_ms,
                            size_t *unwritten);

/* procord_write_all_parts of one buffer. */
int procord_write_all(int fd, int is_socket, const void *bytes, size_t length, int timeout_ms);

#endif
