#define _GNU_SOURCE
/*
 * The process-wide log (procord/log.h): libevent's messages go to it, and
 * without one they are dropped, never printed on the host's stderr.
 */
#include "check.h"
#include "libevent_fixture.h"
#include "fixtures.h"
#include "procord/log.h"
#include "procord/loop.h"

#include <event2/event.h>
#include <fcntl.h>
#include <unistd.h>

typedef struct captured_s {
  char text[2048];
  int lines;
  procord_log_level_t level;
} captured_t;

static void capture(void *context, procord_log_level_t level, const char *message) {
  captured_t *captured = context;
  snprintf(captured->text, sizeof captured->text, "%s", message);
  captured->level = level;
  captured->lines++;
}

static void libevent_messages_go_to_the_process_log(void) {
  BEGIN();
  captured_t captured = {0};
  procord_set_log(capture, &captured);
  make_libevent_warn();
  procord_set_log(NULL, NULL);
  CHECK(captured.lines >= 1);
  CHECK(strncmp(captured.text, "libevent: ", 10) == 0);
  CHECK(strstr(captured.text, "Bad file descriptor") != NULL);
  CHECK_EQ_INT(captured.level, PROCORD_LOG_WARNING);
  CHECK_NOTHING_LEFT();
}

/* The first loop takes libevent's log over, so that even a host that never
   set a log does not see libevent print on its stderr. */
static void without_a_log_libevent_prints_nothing(void) {
  BEGIN();
  procord_loop_t *loop = NULL;
  CHECK_EQ_INT(procord_loop_new(&loop), 0);
  int ends[2];
  CHECK_EQ_INT(pipe2(ends, O_CLOEXEC | O_NONBLOCK), 0);
  int saved = dup(2);
  dup2(ends[1], 2);
  make_libevent_warn();
  dup2(saved, 2);
  close(saved);
  char text[256];
  ssize_t got = read(ends[0], text, sizeof text);
  CHECK(got < 0); /* nothing there (EAGAIN) */
  close(ends[0]);
  close(ends[1]);
  /* And libevent did say something, which a log then receives. */
  captured_t captured = {0};
  procord_set_log(capture, &captured);
  make_libevent_warn();
  procord_set_log(NULL, NULL);
  CHECK(captured.lines >= 1);
  procord_loop_free(loop);
  CHECK_NOTHING_LEFT();
}

int main(void) {
  /* First: nothing but a loop may have taken libevent's log over yet. */
  RUN(without_a_log_libevent_prints_nothing);
  RUN(libevent_messages_go_to_the_process_log);
  return CHECK_SUMMARY();
}
