/* A broken invariant of the core (PROCORD_ASSERT, base_private.h). */
#include "base/base_private.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

_Noreturn void procord_assert_failed(const char *condition, const char *file, int line,
                                     const char *function) {
  /* Straight to stderr, formatted on the stack: the log (procord_log_write)
     takes a lock the failing code may hold. */
  char text[512];
  int length =
      snprintf(text, sizeof text,
               "Procord: internal invariant broken at %s:%d (%s): %s\n"
               "This is a bug in Procord, not in your program: please report it with this line.\n",
               file, line, function, condition);
  if (length > 0) {
    size_t size = (size_t)length < sizeof text ? (size_t)length : sizeof text - 1;
    ssize_t ignored = write(STDERR_FILENO, text, size);
    (void)ignored;
  }
  abort();
}
