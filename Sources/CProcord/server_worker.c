/*
 * The worker side of a server (procord/server.h): receive a session (a
 * socket on which the server sends whole tasks and takes their answers for
 * their clients) from the server, serve it, report, and wait for the next.
 *
 * Between a server and its workers (never on a client's connection), on the
 * Unix socket the worker finds as its handoff descriptor:
 *   worker -> server  frames `0r` (ready: started) and, after each session,
 *                     `Nd` + one byte (the last answer's kind, 0 if none) +
 *                     the last task's name;
 *   server -> worker  one byte `C` carrying the session's socket (SCM_RIGHTS),
 *                     or one byte `S` (older servers: end the session once
 *                     idle between tasks), which is skipped.
 */
#define _GNU_SOURCE
#include "lineage_private.h"
#include "options_private.h"
#include "server_private.h"
#include "procord/error.h"
#include "procord/frame.h"
#include "procord/server.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int send_all(int fd, const unsigned char *bytes, size_t length) {
  while (length > 0) {
    ssize_t n = send(fd, bytes, length, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    bytes += n;
    length -= (size_t)n;
  }
  return 0;
}

static int send_control(int fd, unsigned char kind, const void *body, size_t length) {
  unsigned char frame[PROCORD_FRAME_HEADER_MAX + 1 + sizeof ((procord_worker_report_t *)0)->task_name];
  size_t header = procord_frame_encode_header(kind, length, frame);
  if (length) memcpy(frame + header, body, length);
  return send_all(fd, frame, header + length);
}

/* Receives one client socket; returns it, 0-size end (PROCORD_ECLOSED), or -errno. */
static int receive_client(int control_fd) {
  char byte;
  struct iovec part = {&byte, 1};
  union {
    struct cmsghdr header;
    char space[CMSG_SPACE(sizeof(int))];
  } control;
  struct msghdr message = {.msg_iov = &part, .msg_iovlen = 1, .msg_control = control.space,
                           .msg_controllen = sizeof control.space};
  ssize_t n;
  do {
    message.msg_controllen = sizeof control.space;
    while ((n = recvmsg(control_fd, &message, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR) {
    }
  } while (n == 1 && byte == PROCORD_CONTROL_STOP); /* said during the last client: done with */
  if (n < 0) return errno == ECONNRESET ? PROCORD_ECLOSED : -errno;
  if (n == 0) return PROCORD_ECLOSED;
  struct cmsghdr *header = CMSG_FIRSTHDR(&message);
  if (!header || header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS)
    return PROCORD_EILL_FORMED;
  int fd;
  memcpy(&fd, CMSG_DATA(header), sizeof fd);
  return fd;
}

/* Serves sessions until the server closes `control_fd`. A worker process
   serves each session for as long as the server keeps it, and dies with its
   task if the server closes it mid-task (the watchdog); the server's own
   thread (`in_process`) serves one task per session (so that what its task
   prints is captured only meanwhile) and is never killed. */
static int serve_handoffs(const procord_worker_options_t *template, int control_fd, int in_process) {
  procord_lineage_mark_serving(); /* it may delegate from now on */
  int error = send_control(control_fd, PROCORD_CONTROL_READY, NULL, 0);
  while (!error) {
    int session = receive_client(control_fd);
    if (session == PROCORD_ECLOSED) return 0; /* the server is done with us */
    if (session < 0) return session;
    procord_worker_report_t report = {0};
    procord_worker_options_t options = *template;
    options.read_fd = options.write_fd = session;
    options.reusable = !in_process;
    options.end_with_peer = !in_process;
    options.report = &report;
    options.stop_fd = control_fd;
    /* A session waits on the server, which bounds every client itself: a
       read timeout here would end an idle session just as the server
       hands it a task, and lose that task. */
    options.read_timeout_ms = 0;
    procord_worker_serve(&options); /* whatever happened, the session is done */
    close(session);
    unsigned char body[1 + sizeof report.task_name];
    size_t name = strlen(report.task_name);
    body[0] = report.last_answer;
    memcpy(body + 1, report.task_name, name);
    error = send_control(control_fd, PROCORD_CONTROL_DONE, body, 1 + name);
  }
  return error == -EPIPE || error == -ECONNRESET ? 0 : error;
}

int procord_worker_serve_handoffs(const procord_worker_options_t *given, int control_fd) {
  procord_worker_options_t template;
  if (!given || PROCORD_OPTIONS_COPY(template, given, PROCORD_FIRST_SIZE_WORKER_OPTIONS) != 0)
    return PROCORD_EINVAL;
  return serve_handoffs(&template, control_fd, 0);
}

int procord_server_serve_in_process(const procord_worker_options_t *template, int control_fd) {
  return serve_handoffs(template, control_fd, 1);
}

int procord_server_hand_over(int control_fd, int client_fd) {
  char byte = PROCORD_CONTROL_CLIENT;
  struct iovec part = {&byte, 1};
  union {
    struct cmsghdr header;
    char space[CMSG_SPACE(sizeof(int))];
  } control;
  memset(&control, 0, sizeof control);
  struct msghdr message = {.msg_iov = &part, .msg_iovlen = 1, .msg_control = control.space,
                           .msg_controllen = sizeof control.space};
  struct cmsghdr *header = CMSG_FIRSTHDR(&message);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(header), &client_fd, sizeof client_fd);
  ssize_t n;
  while ((n = sendmsg(control_fd, &message, MSG_NOSIGNAL)) < 0 && errno == EINTR) {
  }
  return n == 1 ? 0 : -errno;
}
