/*
 * The control channel between a worker server and its workers (never a
 * client's connection), on the Unix socket a worker finds as its handoff
 * descriptor:
 *   worker -> server  frames `0r` (ready: started) and, after each session,
 *                     `Nd` + one byte (the last answer's kind, 0 if none) +
 *                     the last task's name;
 *   server -> worker  one byte `C` carrying the session's socket (SCM_RIGHTS),
 *                     or one byte `S` (older servers: end the session once
 *                     idle between tasks), which is skipped.
 */
#define _GNU_SOURCE
#include "wire/wire_private.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int procord_control_send(int control_fd, unsigned char kind, const void *body, size_t length) {
  unsigned char frame[PROCORD_FRAME_HEADER_MAX + PROCORD_CONTROL_BODY_MAX];
  if (length > PROCORD_CONTROL_BODY_MAX) return PROCORD_EINVAL;
  size_t header = procord_frame_encode_header(kind, length, frame);
  if (length) memcpy(frame + header, body, length);
  return procord_write_all(control_fd, 1, frame, header + length, 0);
}

/* A control message that carries a socket: one byte, and room for one
   descriptor. Its pointers point into itself: set up in place. */
typedef struct {
  char byte;
  struct iovec part;
  struct msghdr message;
  /* Last: CMSG_SPACE is not a constant to every compiler. */
  union {
    struct cmsghdr header;
    char space[CMSG_SPACE(sizeof(int))];
  } control;
} socket_message_t;

static void socket_message_init(socket_message_t *m, char byte) {
  memset(m, 0, sizeof *m);
  m->byte = byte;
  m->part = (struct iovec){&m->byte, 1};
  m->message = (struct msghdr){.msg_iov = &m->part,
                               .msg_iovlen = 1,
                               .msg_control = m->control.space,
                               .msg_controllen = sizeof m->control.space};
}

int procord_control_receive_session(int control_fd) {
  socket_message_t m;
  ssize_t n;
  do {
    socket_message_init(&m, 0);
    while ((n = recvmsg(control_fd, &m.message, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR) {
    }
  } while (n == 1 && m.byte == PROCORD_CONTROL_STOP); /* said during the last client: done with */
  if (n < 0) return errno == ECONNRESET ? PROCORD_ECLOSED : -errno;
  if (n == 0) return PROCORD_ECLOSED;
  struct cmsghdr *header = CMSG_FIRSTHDR(&m.message);
  if (!header || header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS)
    return PROCORD_EILL_FORMED;
  int fd;
  memcpy(&fd, CMSG_DATA(header), sizeof fd);
  return fd;
}

int procord_control_serve_sessions(int control_fd, procord_control_session_cb serve,
                                   void *context) {
  int error = procord_control_send(control_fd, PROCORD_CONTROL_READY, NULL, 0);
  while (!error) {
    int session = procord_control_receive_session(control_fd);
    if (session == PROCORD_ECLOSED) return 0; /* the server is done with us */
    if (session < 0) return session;
    unsigned char last_answer = 0;
    char task_name[PROCORD_CONTROL_BODY_MAX] = {0};
    serve(session, context, &last_answer, task_name, sizeof task_name - 1);
    close(session); /* whatever happened, the session is done */
    unsigned char body[PROCORD_CONTROL_BODY_MAX];
    size_t name = strnlen(task_name, sizeof body - 1);
    body[0] = last_answer;
    memcpy(body + 1, task_name, name);
    error = procord_control_send(control_fd, PROCORD_CONTROL_DONE, body, 1 + name);
  }
  return error == -EPIPE || error == -ECONNRESET ? 0 : error;
}

int procord_control_hand_over(int control_fd, int session_fd) {
  socket_message_t m;
  socket_message_init(&m, PROCORD_CONTROL_CLIENT);
  struct cmsghdr *header = CMSG_FIRSTHDR(&m.message);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(header), &session_fd, sizeof session_fd);
  ssize_t n;
  while ((n = sendmsg(control_fd, &m.message, MSG_NOSIGNAL)) < 0 && errno == EINTR) {
  }
  return n == 1 ? 0 : -errno;
}
