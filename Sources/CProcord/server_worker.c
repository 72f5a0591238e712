/*
 * The worker side of a server (procord/server.h): receive a client's socket
 * from the server, serve it, report, and wait for the next one.
 *
 * Between a server and its workers (never on a client's connection), on the
 * Unix socket the worker finds as its handoff descriptor:
 *   worker -> server  frames `0r` (ready: started, or done with a client) and
 *                     `Nd` + one byte (the last answer's kind, 0 if none) +
 *                     the last task's name (what it served, for the log);
 *   server -> worker  one byte `C` carrying the client's socket (SCM_RIGHTS),
 *                     or one byte `S`: the server drains, so the client's
 *                     connection ends once it is idle between tasks.
 */
#define _GNU_SOURCE
#include "lineage_private.h"
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

int procord_worker_serve_handoffs(const procord_worker_options_t *template, int control_fd) {
  procord_lineage_mark_serving(); /* it may delegate from now on */
  int error = send_control(control_fd, PROCORD_CONTROL_READY, NULL, 0);
  while (!error) {
    int client = receive_client(control_fd);
    if (client == PROCORD_ECLOSED) return 0; /* the server is done with us */
    if (client < 0) return client;
    procord_worker_report_t report = {0};
    procord_worker_options_t options = *template;
    options.read_fd = options.write_fd = client;
    options.reusable = 1;
    options.end_with_peer = 1;
    options.report = &report;
    options.stop_fd = control_fd;
    procord_worker_serve(&options); /* whatever happened, the client is done */
    close(client);
    unsigned char body[1 + sizeof report.task_name];
    size_t name = strlen(report.task_name);
    body[0] = report.last_answer;
    memcpy(body + 1, report.task_name, name);
    error = send_control(control_fd, PROCORD_CONTROL_DONE, body, 1 + name);
  }
  return error == -EPIPE || error == -ECONNRESET ? 0 : error;
}

int procord_server_tell_stop(int control_fd) {
  char byte = PROCORD_CONTROL_STOP;
  ssize_t n;
  while ((n = send(control_fd, &byte, 1, MSG_NOSIGNAL | MSG_DONTWAIT)) < 0 && errno == EINTR) {
  }
  return n == 1 ? 0 : -errno;
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
