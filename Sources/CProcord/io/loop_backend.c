/*
 * A polled loop's backend (procord_loop_new_polled): what a host's own poll
 * loop waits on, in the manner of libuv's uv_backend_fd and
 * uv_backend_timeout.
 *
 * The base is an epoll one, and libevent keeps every descriptor of the
 * core's events in its epoll instance, added and removed as events are (no
 * change list: libevent's default). The backend descriptor is an epoll
 * instance of its own holding libevent's: it is readable exactly when
 * libevent's has something ready. libevent does not say which descriptor is
 * its epoll instance: it is the one, among the process's epoll instances,
 * whose /proc/self/fdinfo lists the loop's wake eventfd, which nothing else
 * holds. Nesting (rather than handing libevent's descriptor out) keeps the
 * host's descriptor stable and the host's poll from touching libevent's.
 *
 * Timers have no descriptor: the host learns the next one from
 * procord_backend_timeout, and an event made active without I/O (a call
 * queued from the loop's thread) makes it 0.
 */
#define _GNU_SOURCE
#include "io/io_private.h"
#include "procord/error.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/time.h>
#include <unistd.h>

void procord_backend_configure(struct event_config *config) {
  /* Only epoll can be nested in the backend's epoll instance. */
  event_config_avoid_method(config, "poll");
  event_config_avoid_method(config, "select");
}

/* Whether /proc/self/fdinfo/`fd` lists `watched` among its epoll targets. */
static int epoll_watches(int fd, int watched) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
  FILE *info = fopen(path, "re");
  if (!info) return 0;
  char line[256];
  int found = 0;
  while (!found && fgets(line, sizeof line, info)) {
    int target;
    if (sscanf(line, "tfd: %d", &target) == 1 && target == watched) found = 1;
  }
  fclose(info);
  return found;
}

/* The epoll instance that holds `marker`, or -1. */
static int find_epoll_holding(int marker) {
  DIR *descriptors = opendir("/proc/self/fd");
  if (!descriptors) return -1;
  int found = -1;
  struct dirent *entry;
  while (found < 0 && (entry = readdir(descriptors))) {
    if (entry->d_name[0] == '.') continue;
    char path[300], target[64];
    snprintf(path, sizeof path, "/proc/self/fd/%s", entry->d_name);
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n <= 0) continue;
    target[n] = 0;
    if (strcmp(target, "anon_inode:[eventpoll]") != 0) continue;
    int fd = atoi(entry->d_name);
    if (epoll_watches(fd, marker)) found = fd;
  }
  closedir(descriptors);
  return found;
}

int procord_backend_open(struct event_base *base, int marker_fd, int *backend_fd) {
  if (strcmp(event_base_get_method(base), "epoll") != 0) return PROCORD_EINVAL;
  int inner = find_epoll_holding(marker_fd);
  if (inner < 0) return -ENOENT; /* no /proc, or libevent changed its ways */
  int outer = epoll_create1(EPOLL_CLOEXEC);
  if (outer < 0) return -errno;
  struct epoll_event readable = {.events = EPOLLIN, .data.fd = inner};
  if (epoll_ctl(outer, EPOLL_CTL_ADD, inner, &readable) != 0) {
    int error = -errno;
    close(outer);
    return error;
  }
  *backend_fd = outer;
  return 0;
}

/* The soonest timeout among the base's events, as an absolute time. */
typedef struct {
  struct timeval soonest;
  int any;
} soonest_timer_t;

static int note_timer(const struct event_base *base, const struct event *event, void *argument) {
  (void)base;
  soonest_timer_t *timer = argument;
  struct timeval expires;
  if (!event_pending(event, EV_TIMEOUT, &expires)) return 0;
  if (!timer->any || timercmp(&expires, &timer->soonest, <)) timer->soonest = expires;
  timer->any = 1;
  return 0;
}

int procord_backend_timeout(struct event_base *base) {
  if (event_base_get_num_events(base, EVENT_BASE_COUNT_ACTIVE) > 0) return 0;
  soonest_timer_t timer = {{0, 0}, 0};
  event_base_foreach_event(base, note_timer, &timer);
  if (!timer.any) return -1;
  /* event_pending gives the time on the clock gettimeofday reads. */
  struct timeval now, left;
  gettimeofday(&now, NULL);
  if (!timercmp(&timer.soonest, &now, >)) return 0;
  timersub(&timer.soonest, &now, &left);
  long long milliseconds = (long long)left.tv_sec * 1000 + (left.tv_usec + 999) / 1000;
  return milliseconds > INT_MAX ? INT_MAX : (int)milliseconds;
}
