/*
 * procord/memory.h: where the C core's memory comes from.
 *
 * By default the core allocates with malloc, calloc and realloc and gives
 * memory back with free. A program that wants its own allocator (an arena,
 * jemalloc, accounting, a limit) sets it once, first thing in main, before
 * any other Procord call that may allocate (procord_worker_main included:
 * a program that is its own worker sets it before that too). From the
 * first allocation on, the core's allocator is fixed for the rest of the
 * process's life.
 *
 * Which allocator each side of the API uses:
 * - Everything the core allocates for itself (loops, connections,
 *   delegations, pools, servers, frame bodies, outcomes, queued calls)
 *   comes from the allocator set here and goes back to it.
 * - A body the core hands over (procord_frame_parser_take_body,
 *   procord_connection_take_body) comes from it too: give it back with
 *   procord_free. (free() does the same as long as no allocator was set,
 *   which is how programs written before this header did it.)
 * - What the program allocates and the core frees stays with malloc and
 *   free, as those contracts always said: a worker task's reply body
 *   (procord_reply_t, unless it sets `release`), the bytes a task's
 *   serializer writes (procord_serialize_fn), and a task's values when its
 *   free_value is NULL (procord/task.h). The program may allocate them with
 *   anything else only through the release or free function the contract
 *   offers (a reply's `release`, a delegation's `input_release`, a
 *   connection's procord_connection_send_owned, a task's free_value).
 * - libevent and OpenSSL allocate with their own process-wide hooks, which
 *   belong to the program as a whole (another part of it may use those
 *   libraries too), so the core never sets them. A program that wants them
 *   on its allocator too sets them itself, in main before the first
 *   Procord call (they must be set before the library's first allocation,
 *   and take no context pointer):
 *
 *     static void *libevent_allocate(size_t n) { return my_allocate(n ? n : 1, my_arena); }
 *     static void *libevent_reallocate(void *p, size_t n) { ... }  (p may be NULL, as for realloc)
 *     static void libevent_free(void *p) { if (p) my_free(p, my_arena); }
 *     event_set_mem_functions(libevent_allocate, libevent_reallocate, libevent_free);
 *
 *   and OpenSSL's with CRYPTO_set_mem_functions (its functions also take a
 *   file name and a line; it returns 0 once OpenSSL has allocated). libc's
 *   own allocations (inside posix_spawn, getaddrinfo, pthread_create) stay
 *   libc's.
 */
#ifndef PROCORD_MEMORY_H
#define PROCORD_MEMORY_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * An allocator: three functions and the context passed to each. Each may be
 * called from several threads at once (the core allocates on its loops'
 * threads and on the threads that call its functions), so each must be
 * thread-safe, and none may call Procord. They and their
 * context must stay usable until the process exits. The core never calls
 * them with a size of 0, nor with a NULL pointer to reallocate or free.
 */
typedef struct procord_allocator_s {
  /* The size of this struct as the calling program was built with: set by
     procord_allocator_init; 0 means the layout of this first release.
     A size larger than this library's struct, with a byte beyond it that is
     not 0 (a program built against a newer Procord than it runs with), is
     refused with PROCORD_EINVAL. */
  size_t size;
  /* `size` bytes aligned for any type, or NULL when out of memory. */
  void *(*allocate)(size_t size, void *context);
  /* As realloc: `pointer` (from allocate or reallocate) grown or shrunk to
     `size` bytes, its contents kept, or NULL (and `pointer` left as it was). */
  void *(*reallocate)(void *pointer, size_t size, void *context);
  /* Gives back a block of allocate or reallocate. */
  void (*free)(void *pointer, void *context);
  void *context;
} procord_allocator_t;

/* Sets `allocator` to its defaults: its size, and no function (to be set). */
void procord_allocator_init(procord_allocator_t *allocator);

/*
 * Makes the core allocate with `allocator` (its functions and context are
 * copied), for the whole process; NULL: back to malloc, realloc and free.
 * Only before the core's first allocation: once it has allocated anything
 * it keeps the allocator it had, and this returns -EBUSY, changing nothing.
 * With malloc, the core asks the kernel for transparent huge pages on its
 * large message bodies; with an allocator set it does not: that memory is
 * the allocator's to advise. Thread-safe. Returns 0, -EBUSY, or PROCORD_EINVAL for an allocator
 * missing one of its three functions or of a size this library cannot read.
 */
int procord_set_allocator(const procord_allocator_t *allocator);

/*
 * Gives back a block the core handed over (procord_frame_parser_take_body,
 * procord_connection_take_body) to the allocator it came from. NULL does
 * nothing. Thread-safe. Returns nothing.
 */
void procord_free(void *pointer);

#ifdef __cplusplus
}
#endif

#endif
