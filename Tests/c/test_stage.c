#define _GNU_SOURCE
/*
 * The stage of a failure (procord_outcome_t.stage, procord/error.h): each
 * kind of failure that is cheap to provoke, each checked for its stage and
 * the call that goes with it. Local workers are `sh -c` fakes that read the
 * request (`4Tfact1V5`, 9 bytes) and then misbehave; remote ones are a
 * socket of this test that listens and never answers, or answers garbage.
 */
#include "check.h"
#include "fixtures.h"
#include "procord/delegation.h"
#include "procord/error.h"
#include "procord/loop.h"
#include "procord/security.h"
#include "procord/worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static procord_loop_t *loop;
static char self_path[4096];

/* ---- Helpers ---- */

/* A finished delegation's outcome (its body dropped: not needed here). */
typedef struct {
  procord_outcome_t outcome;
  int finished;
} seen_t;

/* Options for task "fact" with input "5". */
static procord_delegation_options_t task_options(void) {
  procord_delegation_options_t options;
  procord_delegation_options_init(&options);
  options.task_name = "fact";
  options.input = "5";
  options.input_length = 1;
  return options;
}

/* Waits for the end without a limit; releases the delegation. */
static seen_t wait_and_release(procord_delegation_t *delegation) {
  seen_t seen;
  memset(&seen, 0, sizeof seen);
  procord_delegation_wait(loop, &delegation, 1, 1, -1);
  const procord_outcome_t *outcome = procord_delegation_outcome(delegation);
  if (outcome) {
    seen.finished = 1;
    seen.outcome = *outcome;
    seen.outcome.body = NULL;
  }
  procord_delegation_release(delegation);
  return seen;
}

static seen_t run(procord_delegation_options_t *options) {
  procord_delegation_t *delegation = NULL;
  seen_t seen;
  memset(&seen, 0, sizeof seen);
  if (procord_delegate(loop, options, &delegation) != 0) return seen;
  return wait_and_release(delegation);
}

/* A local fake worker: `sh -c script`. */
static seen_t run_script(const char *script, int deadline_ms) {
  const char *arguments[] = {"sh", "-c", script, NULL};
  procord_delegation_options_t options = task_options();
  options.worker.program = "/bin/sh";
  options.worker.arguments = arguments;
  options.deadline_ms = deadline_ms;
  return run(&options);
}

/* A TCP socket on 127.0.0.1, bound to a port of its own (stored in
   `*port`); listening unless `listening` is 0, when a connect to it is
   refused. -1 on failure. */
static int local_socket(int listening, int *port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t length = sizeof address;
  if (bind(fd, (struct sockaddr *)&address, length) != 0 || (listening && listen(fd, 4) != 0) ||
      getsockname(fd, (struct sockaddr *)&address, &length) != 0) {
    close(fd);
    return -1;
  }
  *port = ntohs(address.sin_port);
  return fd;
}

static procord_delegation_options_t remote_options(const char *host, int port) {
  procord_delegation_options_t options = task_options();
  options.remote_host = host;
  options.remote_port = port;
  return options;
}

/* A client's security with a shared secret only (no TLS). */
static procord_security_t *secret_security(void) {
  procord_security_options_t options;
  procord_security_options_init(&options);
  options.role = PROCORD_SECURITY_CLIENT;
  options.secret = "a secret of the tests, 32 bytes.";
  options.secret_length = 32;
  procord_security_t *security = NULL;
  char error[256];
  return procord_security_new(&options, &security, error, sizeof error) == 0 ? security : NULL;
}

/* The outcome is DISCONNECTED at `stage`, with `error` and the stage's call. */
#define CHECK_STAGE(seen, expected_stage, expected_error, expected_call)                           \
  do {                                                                                             \
    CHECK((seen).finished);                                                                        \
    CHECK_EQ_INT((seen).outcome.kind, PROCORD_OUTCOME_DISCONNECTED);                               \
    CHECK_EQ_INT((seen).outcome.stage, (expected_stage));                                          \
    CHECK_EQ_INT((seen).outcome.error, (expected_error));                                          \
    CHECK((seen).outcome.call &&strcmp((seen).outcome.call, (expected_call)) == 0);                \
    CHECK_EQ_INT(procord_outcome_stage(&(seen).outcome), (expected_stage));                        \
  } while (0)

/* ---- Local workers ---- */

static void an_answer_has_no_stage(void) {
  BEGIN();
  seen_t seen = run_script("head -c 9 >/dev/null; printf 3V120", 0);
  CHECK(seen.finished);
  CHECK_EQ_INT(seen.outcome.kind, PROCORD_OUTCOME_VALUE);
  CHECK_EQ_INT(seen.outcome.stage, PROCORD_STAGE_NONE);
  CHECK(seen.outcome.call == NULL);
  CHECK_NOTHING_LEFT();
}

static void a_missing_program_fails_at_spawn(void) {
  BEGIN();
  const char *arguments[] = {"procord-no-such-worker", NULL};
  procord_delegation_options_t options = task_options();
  options.worker.program = "/nonexistent/procord-no-such-worker";
  options.worker.arguments = arguments;
  seen_t seen = run(&options);
  CHECK_STAGE(seen, PROCORD_STAGE_SPAWN, -ENOENT, "posix_spawn");
  CHECK_NOTHING_LEFT();
}

static void a_worker_that_exits_without_answering_fails_at_read(void) {
  BEGIN();
  seen_t seen = run_script("head -c 9 >/dev/null; exit 3", 0);
  CHECK_STAGE(seen, PROCORD_STAGE_READ, PROCORD_EDISCONNECTED, "read");
  CHECK_EQ_INT(seen.outcome.exit_code, 3);
  CHECK_NOTHING_LEFT();
}

static void a_worker_that_dies_of_a_signal_fails_at_read(void) {
  BEGIN();
  seen_t seen = run_script("head -c 9 >/dev/null; kill -SEGV $$", 0);
  CHECK_STAGE(seen, PROCORD_STAGE_READ, PROCORD_EDISCONNECTED, "read");
  CHECK_EQ_INT(seen.outcome.signal, SIGSEGV);
  CHECK_NOTHING_LEFT();
}

static void a_frame_cut_short_fails_at_read(void) {
  BEGIN();
  seen_t seen = run_script("head -c 9 >/dev/null; printf 2E9", 0);
  CHECK_STAGE(seen, PROCORD_STAGE_READ, PROCORD_EDISCONNECTED, "read");
  CHECK_NOTHING_LEFT();
}

static void an_ill_formed_frame_fails_at_parse(void) {
  BEGIN();
  seen_t seen = run_script("head -c 9 >/dev/null; printf hello", 0);
  CHECK_STAGE(seen, PROCORD_STAGE_PARSE, PROCORD_EILL_FORMED, "parse");
  CHECK_NOTHING_LEFT();
}

static void a_frame_of_an_unexpected_kind_fails_at_receive(void) {
  BEGIN();
  seen_t seen = run_script("head -c 9 >/dev/null; printf 1Tx", 0);
  CHECK_STAGE(seen, PROCORD_STAGE_RECEIVE, PROCORD_EUNEXPECTED, "receive");
  CHECK_NOTHING_LEFT();
}

static void an_error_the_worker_sends_fails_at_peer(void) {
  BEGIN();
  seen_t seen = run_script("head -c 9 >/dev/null; printf 1E3; exit 3", 0);
  CHECK_STAGE(seen, PROCORD_STAGE_PEER, PROCORD_ETOO_LONG, "peer");
  CHECK_EQ_INT(seen.outcome.exit_code, 3);
  CHECK_NOTHING_LEFT();
}

static void a_task_past_its_deadline_is_at_the_deadline(void) {
  BEGIN();
  seen_t seen = run_script("exec sleep 10", 100);
  CHECK(seen.finished);
  CHECK_EQ_INT(seen.outcome.kind, PROCORD_OUTCOME_TIMED_OUT);
  CHECK_EQ_INT(seen.outcome.stage, PROCORD_STAGE_DEADLINE);
  CHECK_EQ_INT(seen.outcome.error, PROCORD_ETIMEOUT);
  CHECK(seen.outcome.call && strcmp(seen.outcome.call, "deadline") == 0);
  CHECK_NOTHING_LEFT();
}

static void a_killed_task_has_no_stage(void) {
  BEGIN();
  const char *arguments[] = {"sh", "-c", "exec sleep 10", NULL};
  procord_delegation_options_t options = task_options();
  options.worker.program = "/bin/sh";
  options.worker.arguments = arguments;
  procord_delegation_t *delegation = NULL;
  CHECK_EQ_INT(procord_delegate(loop, &options, &delegation), 0);
  procord_delegation_kill(delegation);
  seen_t seen = wait_and_release(delegation);
  CHECK(seen.finished);
  CHECK_EQ_INT(seen.outcome.kind, PROCORD_OUTCOME_KILLED);
  CHECK_EQ_INT(seen.outcome.stage, PROCORD_STAGE_NONE);
  CHECK(seen.outcome.call == NULL);
  CHECK_NOTHING_LEFT();
}

/* ---- Worker servers ---- */

static void a_refused_connection_fails_at_connect(void) {
  BEGIN();
  int port = 0;
  int fd = local_socket(0, &port); /* bound, not listening: connects are refused */
  CHECK(fd >= 0);
  procord_delegation_options_t options = remote_options("127.0.0.1", port);
  seen_t seen = run(&options);
  close(fd);
  CHECK_STAGE(seen, PROCORD_STAGE_CONNECT, -ECONNREFUSED, "connect");
  CHECK_NOTHING_LEFT();
}

/* On a loop of its own: the resolver a loop makes keeps its socket until
   the loop is freed. */
static void a_name_that_cannot_be_looked_up_fails_at_resolve(void) {
  BEGIN();
  char name[400]; /* too long for a query: refused before any is sent */
  memset(name, 'a', sizeof name - 1);
  name[sizeof name - 1] = 0;
  procord_delegation_options_t options = remote_options(name, 1);
  options.connect_timeout_ms = 5000;
  procord_loop_t *shared = loop;
  CHECK_EQ_INT(procord_loop_new(&loop), 0);
  seen_t seen = procord_loop_start_thread(loop) == 0 ? run(&options) : (seen_t){0};
  procord_loop_free(loop);
  loop = shared;
  CHECK_STAGE(seen, PROCORD_STAGE_RESOLVE, PROCORD_ERESOLVE, "getaddrinfo");
  CHECK(seen.outcome.detail != NULL);
  CHECK_NOTHING_LEFT();
}

static void a_silent_server_fails_at_idle(void) {
  BEGIN();
  int port = 0;
  int fd = local_socket(1, &port); /* the kernel accepts; nobody answers */
  CHECK(fd >= 0);
  procord_delegation_options_t options = remote_options("127.0.0.1", port);
  options.idle_timeout_ms = 100;
  seen_t seen = run(&options);
  close(fd);
  CHECK_STAGE(seen, PROCORD_STAGE_IDLE, PROCORD_ETIMEOUT, "idle");
  CHECK_NOTHING_LEFT();
}

static void a_server_silent_during_authentication_fails_at_handshake(void) {
  BEGIN();
  int port = 0;
  int fd = local_socket(1, &port);
  CHECK(fd >= 0);
  procord_security_t *security = secret_security();
  procord_delegation_options_t options = remote_options("127.0.0.1", port);
  options.security = security;
  options.connect_timeout_ms = 200;
  seen_t seen = security ? run(&options) : (seen_t){0};
  procord_security_release(security);
  close(fd);
  CHECK(security != NULL);
  CHECK_STAGE(seen, PROCORD_STAGE_HANDSHAKE, PROCORD_ETIMEOUT, "handshake");
  CHECK_NOTHING_LEFT();
}

static void a_server_that_answers_authentication_with_garbage_fails_at_authenticate(void) {
  BEGIN();
  int port = 0;
  int fd = local_socket(1, &port);
  CHECK(fd >= 0);
  procord_security_t *security = secret_security();
  procord_delegation_options_t options = remote_options("127.0.0.1", port);
  options.security = security;
  options.connect_timeout_ms = 5000;
  procord_delegation_t *delegation = NULL;
  int started = security ? procord_delegate(loop, &options, &delegation) : -1;
  int peer = -1;
  struct pollfd incoming = {.fd = fd, .events = POLLIN};
  if (started == 0 && poll(&incoming, 1, 5000) == 1) peer = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
  if (peer >= 0 && write(peer, "hello", 5) != 5) {
    close(peer);
    peer = -1;
  }
  if (started == 0 && peer < 0) procord_delegation_kill(delegation);
  seen_t seen = started == 0 ? wait_and_release(delegation) : (seen_t){0};
  if (peer >= 0) close(peer);
  procord_security_release(security);
  close(fd);
  CHECK(peer >= 0);
  CHECK_STAGE(seen, PROCORD_STAGE_AUTHENTICATE, PROCORD_EAUTH, "authenticate");
  CHECK(seen.outcome.detail != NULL);
  CHECK_NOTHING_LEFT();
}

/* ---- Outcomes built by a program ---- */

/* A DISCONNECTED outcome with this call and stage. */
static procord_outcome_t outcome_with(const char *call, procord_stage_t stage) {
  procord_outcome_t outcome;
  memset(&outcome, 0, sizeof outcome);
  outcome.kind = PROCORD_OUTCOME_DISCONNECTED;
  outcome.call = call;
  outcome.stage = stage;
  outcome.exit_code = -1;
  outcome.worker_pid = -1;
  return outcome;
}

static void an_outcome_with_a_call_only_has_the_stage_the_call_names(void) {
  static const struct {
    const char *call;
    procord_stage_t stage;
  } calls[] = {
      {"posix_spawn", PROCORD_STAGE_SPAWN},
      {"spawn", PROCORD_STAGE_SPAWN},
      {"getaddrinfo", PROCORD_STAGE_RESOLVE},
      {"connect", PROCORD_STAGE_CONNECT},
      {"socket", PROCORD_STAGE_CONNECT},
      {"tls", PROCORD_STAGE_TLS},
      {"authenticate", PROCORD_STAGE_AUTHENTICATE},
      {"handshake", PROCORD_STAGE_HANDSHAKE},
      {"read", PROCORD_STAGE_READ},
      {"write", PROCORD_STAGE_WRITE},
      {"parse", PROCORD_STAGE_PARSE},
      {"receive", PROCORD_STAGE_RECEIVE},
      {"peer", PROCORD_STAGE_PEER},
      {"idle", PROCORD_STAGE_IDLE},
      {"deadline", PROCORD_STAGE_DEADLINE},
      {"close", PROCORD_STAGE_CLOSE},
      {"waitpid", PROCORD_STAGE_REAP},
      {"setup", PROCORD_STAGE_SETUP},
  };
  for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
    procord_outcome_t outcome = outcome_with(calls[i].call, PROCORD_STAGE_NONE);
    if (procord_outcome_stage(&outcome) != calls[i].stage)
      fprintf(stderr, "    call %s\n", calls[i].call);
    CHECK_EQ_INT(procord_outcome_stage(&outcome), calls[i].stage);
  }
  procord_outcome_t unknown = outcome_with("frobnicate", PROCORD_STAGE_NONE);
  CHECK_EQ_INT(procord_outcome_stage(&unknown), PROCORD_STAGE_NONE);
  procord_outcome_t none = outcome_with(NULL, PROCORD_STAGE_NONE);
  CHECK_EQ_INT(procord_outcome_stage(&none), PROCORD_STAGE_NONE);
}

static void an_outcomes_stage_wins_over_its_call(void) {
  procord_outcome_t outcome = outcome_with("read", PROCORD_STAGE_PEER);
  CHECK_EQ_INT(procord_outcome_stage(&outcome), PROCORD_STAGE_PEER);
  outcome = outcome_with(NULL, PROCORD_STAGE_CONNECT);
  CHECK_EQ_INT(procord_outcome_stage(&outcome), PROCORD_STAGE_CONNECT);
}

/* procord_outcome_describe reads the stage, not the call's text. */
static void describe_follows_the_stage(void) {
  char text[512];
  procord_outcome_t outcome = outcome_with("not a call", PROCORD_STAGE_IDLE);
  outcome.error = PROCORD_ETIMEOUT;
  procord_outcome_describe(&outcome, NULL, NULL, text, sizeof text);
  CHECK_CONTAINS(text, "stayed silent longer than the idle timeout");
  outcome = outcome_with("not a call", PROCORD_STAGE_SPAWN);
  outcome.error = -ENOENT;
  procord_outcome_describe(&outcome, NULL, "/nonexistent/app", text, sizeof text);
  CHECK_CONTAINS(text, "could not start /nonexistent/app: ENOENT");
  outcome = outcome_with("read", PROCORD_STAGE_PEER);
  outcome.error = PROCORD_EUNEXPECTED;
  procord_outcome_describe(&outcome, NULL, NULL, text, sizeof text);
  CHECK_CONTAINS(text, "the worker reported a protocol error");
}

/* ---- The worker side of this program ---- */

static const procord_worker_task_t worker_tasks[] = {{"double", fixture_task_double, NULL}};

int main(int argc, char **argv) {
  loop = fixture_start(argc, argv, worker_tasks, 1, self_path, sizeof self_path);
  if (!loop) return 1;

  RUN(an_answer_has_no_stage);
  RUN(a_missing_program_fails_at_spawn);
  RUN(a_worker_that_exits_without_answering_fails_at_read);
  RUN(a_worker_that_dies_of_a_signal_fails_at_read);
  RUN(a_frame_cut_short_fails_at_read);
  RUN(an_ill_formed_frame_fails_at_parse);
  RUN(a_frame_of_an_unexpected_kind_fails_at_receive);
  RUN(an_error_the_worker_sends_fails_at_peer);
  RUN(a_task_past_its_deadline_is_at_the_deadline);
  RUN(a_killed_task_has_no_stage);

  RUN(a_refused_connection_fails_at_connect);
  RUN(a_name_that_cannot_be_looked_up_fails_at_resolve);
  RUN(a_silent_server_fails_at_idle);
  RUN(a_server_silent_during_authentication_fails_at_handshake);
  RUN(a_server_that_answers_authentication_with_garbage_fails_at_authenticate);

  RUN(an_outcome_with_a_call_only_has_the_stage_the_call_names);
  RUN(an_outcomes_stage_wins_over_its_call);
  RUN(describe_follows_the_stage);

  procord_loop_free(loop);
  return CHECK_SUMMARY();
}
