/*
 * How check.h runs one test: under a time limit, with what it leaves behind
 * blamed on it, and with a failure that cannot spill into the next test.
 *
 * - Time: each test has a limit (PROCORD_TEST_LIMIT seconds, 30 by default;
 *   RUN_WITHIN gives one test another). alarm() enforces it; its handler
 *   names the test, and the program goes on with the next test (below).
 *   A hung test cannot hang the file, whatever thread it is stuck in.
 * - Leftovers: a child process still there when the test returns (running or
 *   unreaped) fails the test and is killed with its group and reaped; so does
 *   a descriptor the test opened and left open (it is named).
 * - Crashes: SIGSEGV, SIGBUS, SIGFPE, SIGILL and SIGABRT (where nothing
 *   else handles them: a sanitizer reports, then aborts) fail the test by
 *   its name, and the program goes on with the next test.
 * - Isolation: after a failed test the program executes itself again and
 *   resumes after that test. A failed CHECK returns early, past the test's
 *   clean-up: its pools, delegations and threads may still be running, and
 *   would otherwise fail the next test. execve ends them all (every
 *   descriptor of the core is close-on-exec), and the new image kills and
 *   reaps the children the old one left. Where to resume and the counts so
 *   far travel in PROCORD_TEST_RESUME, removed from the environment at once.
 *
 * PROCORD_TEST_ONLY=NAME runs that test alone (to repeat a rare failure).
 *
 * Include through check.h, in a file that defines _GNU_SOURCE first.
 */
#ifndef PROCORD_TEST_CHECK_RUNNER_H
#define PROCORD_TEST_CHECK_RUNNER_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

enum { CHECK_DEFAULT_LIMIT_SECONDS = 30, CHECK_MAX_DESCRIPTORS = 4096, CHECK_MAX_ARGUMENTS = 64 };

static int check_passed, check_failed, check_current_failed;

static struct {
  int ready;
  int index;              /* RUNs met so far, skipped ones included */
  int resume_after;       /* a resumed image skips the RUNs up to this one */
  unsigned limit_seconds; /* the default limit */
  sigset_t mask;          /* the main thread's, for the image to come */
  char path[4096];        /* this program, to execute again */
  char arguments[8192];   /* its arguments, NUL-separated, as /proc gave them */
  char *argv[CHECK_MAX_ARGUMENTS + 1];
  char **environment; /* environ at the test's start, plus `resume` */
  char resume[256];   /* PROCORD_TEST_RESUME for the image after this test */
  char name[200];     /* the running test's, for the crash handler */
  int in_test;        /* a test is running (not main around the tests) */
  char timeout_verdict[512], timeout_detail[512]; /* what the alarm's handler writes */
} check_runner;

/* ---- The process's children and descriptors, read from /proc ---- */

typedef struct {
  int pid;
  char name[64]; /* the comm of /proc/PID/stat */
  char state;    /* 'Z' for an unreaped child */
} check_child_t;

/* Every process whose parent is `parent`, up to `capacity`; how many there are. */
static int check_children_of(pid_t parent_pid, check_child_t *children, int capacity) {
  DIR *proc = opendir("/proc");
  if (!proc) return 0;
  int count = 0;
  struct dirent *entry;
  while ((entry = readdir(proc)) != NULL) {
    if (entry->d_name[0] < '1' || entry->d_name[0] > '9') continue;
    char path[300], stat[512];
    snprintf(path, sizeof path, "/proc/%s/stat", entry->d_name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    ssize_t n = read(fd, stat, sizeof stat - 1);
    close(fd);
    if (n <= 0) continue;
    stat[n] = 0;
    /* "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses. */
    char *open_paren = strchr(stat, '('), *close_paren = strrchr(stat, ')');
    char state = 0;
    int parent = 0;
    if (!open_paren || !close_paren || sscanf(close_paren + 1, " %c %d", &state, &parent) != 2)
      continue;
    if (parent != parent_pid) continue;
    if (count < capacity) {
      check_child_t *child = &children[count];
      child->pid = atoi(stat);
      child->state = state;
      size_t length = (size_t)(close_paren - open_paren - 1);
      if (length >= sizeof child->name) length = sizeof child->name - 1;
      memcpy(child->name, open_paren + 1, length);
      child->name[length] = 0;
    }
    count++;
  }
  closedir(proc);
  return count < capacity ? count : capacity;
}

/* Kills every child (and its process group when it leads one), reaps it and
   says so, as left behind by `test`; how many there were. */
static int check_kill_children(const char *test) {
  check_child_t children[64];
  int count = check_children_of(getpid(), children, 64);
  for (int i = 0; i < count; i++) {
    int pid = children[i].pid;
    char path[64], command[256] = "";
    snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, command, sizeof command - 1) : 0;
    if (fd >= 0) close(fd);
    for (ssize_t k = 0; k < n; k++)
      if (command[k] == 0) command[k] = ' ';
    command[n > 0 ? n : 0] = 0;
    fprintf(stderr,
            "    %s left child process %d (%s%s) behind: killed and reaped; its command: %s\n",
            test, pid, children[i].name, children[i].state == 'Z' ? ", exited but unreaped" : "",
            command);
    if (getpgid(pid) == pid) kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
  }
  return count;
}

/* This process's open descriptors, ascending, up to `capacity`; how many. */
static int check_descriptors(int *descriptors, int capacity) {
  DIR *dir = opendir("/proc/self/fd");
  if (!dir) return 0;
  int count = 0, own = dirfd(dir);
  struct dirent *entry;
  while ((entry = readdir(dir)) != NULL && count < capacity) {
    if (entry->d_name[0] == '.') continue;
    int fd = atoi(entry->d_name);
    if (fd == own) continue;
    int at = count++;
    while (at > 0 && descriptors[at - 1] > fd) {
      descriptors[at] = descriptors[at - 1];
      at--;
    }
    descriptors[at] = fd;
  }
  closedir(dir);
  return count;
}

static int check_contains(const int *sorted, int count, int value) {
  for (int i = 0; i < count && sorted[i] <= value; i++)
    if (sorted[i] == value) return 1;
  return 0;
}

/* The descriptors open now that were not in `before`: how many, said as left by `test`. */
static int check_report_new_descriptors(const char *test, const int *before, int before_count,
                                        int say) {
  static int now[CHECK_MAX_DESCRIPTORS];
  int count = check_descriptors(now, CHECK_MAX_DESCRIPTORS), left = 0;
  for (int i = 0; i < count; i++) {
    if (check_contains(before, before_count, now[i])) continue;
    left++;
    if (!say) continue;
    char link[64], target[256] = "?";
    snprintf(link, sizeof link, "/proc/self/fd/%d", now[i]);
    ssize_t n = readlink(link, target, sizeof target - 1);
    target[n > 0 ? n : 1] = 0;
    fprintf(stderr, "    %s left descriptor %d (%s) open\n", test, now[i], target);
  }
  return left;
}

/* ---- Resuming in a new image ---- */

/* Writes `text` whole to `fd`; safe in a signal handler. */
static void check_write(int fd, const char *text) {
  size_t length = strlen(text);
  while (length > 0) {
    ssize_t n = write(fd, text, length);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    text += n;
    length -= (size_t)n;
  }
}

/* Executes this program again, to go on after the test just counted; only
   async-signal-safe calls, for the alarm's handler. */
static void check_execute_again(void) {
  alarm(0); /* a pending alarm would survive execve */
  sigprocmask(SIG_SETMASK, &check_runner.mask, NULL);
  execve(check_runner.path, check_runner.argv, check_runner.environment);
  check_write(2, "    cannot execute this test program again to go on: stopping here\n");
  _exit(1);
}

static void check_on_alarm(int signal) {
  (void)signal;
  check_write(2, check_runner.timeout_detail);
  check_write(1, check_runner.timeout_verdict);
  check_execute_again();
}

/* A test that crashes (a sanitizer's report ends in abort) fails by its
   name, and the tests after it still run. A crash around the tests (main's
   clean-up after the last one) ends the program: running it again would
   only crash there again. */
static void check_on_crash(int signal) {
  char number[16];
  int at = (int)sizeof number, code = 128 + signal;
  number[--at] = 0;
  do number[--at] = (char)('0' + signal % 10);
  while ((signal /= 10) > 0 && at > 0);
  if (!check_runner.in_test) {
    check_write(2, "    crashed outside any test (in main, before or after them): signal ");
    check_write(2, number + at);
    check_write(2, "\n");
    _exit(code);
  }
  check_write(2, "    ");
  check_write(2, check_runner.name);
  check_write(2, " crashed: signal ");
  check_write(2, number + at);
  check_write(2, "; going on with the next test\n");
  check_write(1, "FAIL ");
  check_write(1, check_runner.name);
  check_write(1, " (crashed)\n");
  check_execute_again();
}

/* Keeps what a new image needs: this program's path and arguments. */
static int check_read_own_command(void) {
  ssize_t n = readlink("/proc/self/exe", check_runner.path, sizeof check_runner.path - 1);
  if (n <= 0) return -1;
  check_runner.path[n] = 0;
  int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  n = read(fd, check_runner.arguments, sizeof check_runner.arguments - 1);
  close(fd);
  if (n <= 0) return -1;
  check_runner.arguments[n] = 0;
  int count = 0;
  for (char *at = check_runner.arguments;
       at < check_runner.arguments + n && count < CHECK_MAX_ARGUMENTS; at += strlen(at) + 1)
    check_runner.argv[count++] = at;
  check_runner.argv[count] = NULL;
  return 0;
}

/* Reads PROCORD_TEST_RESUME ("INDEX PASSED FAILED TEST") left by an earlier
   image, takes it out of the environment, and ends what that test left. */
static void check_resume(void) {
  const char *resume = getenv("PROCORD_TEST_RESUME");
  if (!resume) return;
  char test[200] = "";
  if (sscanf(resume, "%d %d %d %199s", &check_runner.resume_after, &check_passed, &check_failed,
             test) < 3)
    check_runner.resume_after = 0;
  unsetenv("PROCORD_TEST_RESUME");
  check_kill_children(test);
}

static void check_start(void) {
  check_runner.ready = 1;
  const char *limit = getenv("PROCORD_TEST_LIMIT");
  check_runner.limit_seconds =
      limit && atoi(limit) > 0 ? (unsigned)atoi(limit) : CHECK_DEFAULT_LIMIT_SECONDS;
  if (check_read_own_command() != 0) {
    fprintf(stderr, "cannot read this program's own command from /proc\n");
    exit(2);
  }
  sigprocmask(SIG_SETMASK, NULL, &check_runner.mask);
  sigset_t alarm_only;
  sigemptyset(&alarm_only);
  sigaddset(&alarm_only, SIGALRM);
  sigprocmask(SIG_UNBLOCK, &alarm_only, NULL); /* execve from a handler keeps it blocked */
  sigdelset(&check_runner.mask, SIGALRM);
  struct sigaction on_alarm = {0};
  on_alarm.sa_handler = check_on_alarm;
  sigaction(SIGALRM, &on_alarm, NULL);
  /* Only where nobody else handles the signal (a sanitizer handles SIGSEGV
     to report it, then aborts). */
  static const int crashes[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
  for (size_t i = 0; i < sizeof crashes / sizeof *crashes; i++) {
    struct sigaction current, on_crash = {0};
    on_crash.sa_handler = check_on_crash;
    on_crash.sa_flags = SA_RESETHAND;
    if (sigaction(crashes[i], NULL, &current) == 0 && current.sa_handler == SIG_DFL)
      sigaction(crashes[i], &on_crash, NULL);
  }
  check_resume();
}

/* The environment and messages the next image gets if this test fails. */
static void check_prepare_failure(const char *test, unsigned limit_seconds) {
  snprintf(check_runner.name, sizeof check_runner.name, "%s", test);
  snprintf(check_runner.resume, sizeof check_runner.resume, "PROCORD_TEST_RESUME=%d %d %d %s",
           check_runner.index, check_passed, check_failed + 1, test);
  size_t count = 0;
  while (environ[count]) count++;
  free(check_runner.environment);
  check_runner.environment = calloc(count + 2, sizeof *check_runner.environment);
  if (!check_runner.environment) {
    fprintf(stderr, "out of memory\n");
    exit(2);
  }
  memcpy(check_runner.environment, environ, count * sizeof *environ);
  check_runner.environment[count] = check_runner.resume;
  snprintf(check_runner.timeout_detail, sizeof check_runner.timeout_detail,
           "    %s did not end within its limit of %u s: stopped; going on with the next test\n",
           test, limit_seconds);
  snprintf(check_runner.timeout_verdict, sizeof check_runner.timeout_verdict,
           "FAIL %s (limit of %u s)\n", test, limit_seconds);
}

static long long check_now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Runs `test` named `name` within `limit_seconds` (0: the default), then
   blames it for what it left; see the top of the file. */
static void check_run(const char *name, void (*test)(void), unsigned limit_seconds) {
  if (!check_runner.ready) check_start();
  check_runner.index++;
  if (check_runner.index <= check_runner.resume_after) return;
  const char *only = getenv("PROCORD_TEST_ONLY"); /* one test, to repeat it */
  if (only && strcmp(only, name) != 0) return;
  if (limit_seconds == 0) limit_seconds = check_runner.limit_seconds;
  static int before[CHECK_MAX_DESCRIPTORS];
  int before_count = check_descriptors(before, CHECK_MAX_DESCRIPTORS);
  check_prepare_failure(name, limit_seconds);
  fflush(NULL); /* the next image starts with empty buffers */
  check_current_failed = 0;
  long long start = check_now_ms();
  alarm(limit_seconds);
  check_runner.in_test = 1;
  test();
  check_runner.in_test = 0;
  alarm(0);
  if (check_kill_children(name) > 0) check_current_failed = 1;
  /* A descriptor may still be on its way to being closed on the loop's
     thread: leftovers are those still open a moment later. */
  for (int wait = 0; wait < 50 && check_report_new_descriptors(name, before, before_count, 0) > 0;
       wait++)
    usleep(10 * 1000);
  if (check_report_new_descriptors(name, before, before_count, 1) > 0) check_current_failed = 1;
  long long took = check_now_ms() - start;
  if (!check_current_failed) {
    check_passed++;
    printf("ok   %s (%lld ms)\n", name, took);
    fflush(stdout);
    return;
  }
  check_failed++;
  printf("FAIL %s (%lld ms)\n", name, took);
  fflush(NULL);
  check_execute_again();
}

#endif
