#define _GNU_SOURCE
/* The frame connection over pipes, socketpairs and TCP (procord/connection.h). */
#include "check.h"
#include "procord/procord.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

/* What one connection saw, and when to stop the loop. */
typedef struct seen_s {
  procord_loop_t *loop;
  int frames;
  unsigned char last_kind;
  size_t last_length;
  unsigned char last_body[64];
  int parse_error;
  int connected;
  int disconnected;
  procord_cause_t cause;
  int stop_after_frames; /* stop the loop once this many frames arrived */
  int free_in_callback;
} seen_t;

static void on_frame(procord_connection_t *c, const procord_frame_t *frame, int error,
                     void *context) {
  seen_t *seen = context;
  if (error) {
    seen->parse_error = error;
    procord_loop_stop(seen->loop);
    return;
  }
  seen->frames++;
  seen->last_kind = frame->kind;
  seen->last_length = frame->length;
  memcpy(seen->last_body, frame->body, frame->length < 64 ? frame->length : 64);
  if (seen->frames == seen->stop_after_frames) {
    if (seen->free_in_callback) procord_connection_free(c);
    procord_loop_stop(seen->loop);
  }
}

static void on_state(procord_connection_t *c, procord_connection_state_t state, void *context) {
  seen_t *seen = context;
  if (state == PROCORD_CONNECTED) seen->connected = 1;
  if (state == PROCORD_DISCONNECTED) {
    seen->disconnected = 1;
    seen->cause = procord_connection_cause(c);
    procord_loop_stop(seen->loop);
  }
}

static procord_connection_t *open_on(procord_loop_t *loop, int read_fd, int write_fd,
                                     int connecting, seen_t *seen) {
  seen->loop = loop;
  procord_connection_options_t options = {.read_fd = read_fd,
                                          .write_fd = write_fd,
                                          .connecting = connecting,
                                          .on_frame = on_frame,
                                          .on_state = on_state,
                                          .context = seen};
  procord_connection_t *c = NULL;
  if (procord_connection_open(loop, &options, &c) != 0) return NULL;
  return c;
}

/* A new loop and a socketpair for one test; 0, or -1 with nothing left open. */
static int new_loop_and_socketpair(procord_loop_t **loop, int pair[2]) {
  if (procord_loop_new(loop) != 0) return -1;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0) return 0;
  procord_loop_free(*loop);
  return -1;
}

/* Frees the test's connections (either may be NULL), then its loop. */
static void free_all(procord_loop_t *loop, procord_connection_t *first,
                     procord_connection_t *second) {
  procord_connection_free(first);
  procord_connection_free(second);
  procord_loop_free(loop);
}

static int open_descriptor_count(void) {
  int count = 0;
  for (int fd = 0; fd < 1024; fd++) count += fcntl(fd, F_GETFD) >= 0;
  return count;
}

static void frames_cross_a_pipe_pair(void) {
  procord_loop_t *loop;
  CHECK_EQ_INT(procord_loop_new(&loop), 0);
  int a_to_b[2], b_to_a[2];
  CHECK(pipe2(a_to_b, O_CLOEXEC) == 0 && pipe2(b_to_a, O_CLOEXEC) == 0);
  seen_t a = {0}, b = {0};
  b.stop_after_frames = 2;
  procord_connection_t *ca = open_on(loop, b_to_a[0], a_to_b[1], 0, &a);
  procord_connection_t *cb = open_on(loop, a_to_b[0], b_to_a[1], 0, &b);
  CHECK(ca && cb);
  CHECK_EQ_INT(procord_connection_send(ca, 'T', "hello", 5), 0);
  CHECK_EQ_INT(procord_connection_send(ca, 'V', "", 0), 0);
  procord_loop_run(loop);
  CHECK_EQ_INT(b.frames, 2);
  CHECK_EQ_INT(b.last_kind, 'V');
  CHECK_EQ_INT(b.last_length, 0);
  free_all(loop, ca, cb);
}

static void a_large_owned_body_crosses_a_socketpair(void) {
  procord_loop_t *loop;
  int pair[2];
  CHECK_EQ_INT(new_loop_and_socketpair(&loop, pair), 0);
  seen_t a = {0}, b = {0};
  b.stop_after_frames = 1;
  procord_connection_t *ca = open_on(loop, pair[0], pair[0], 0, &a);
  procord_connection_t *cb = open_on(loop, pair[1], pair[1], 0, &b);
  size_t size = 3 << 20;
  unsigned char *body = malloc(size);
  for (size_t i = 0; i < size; i++) body[i] = (unsigned char)(i * 31);
  CHECK_EQ_INT(procord_connection_send_owned(ca, 'V', body, size, free), 0);
  procord_loop_run(loop);
  CHECK_EQ_INT(b.frames, 1);
  CHECK_EQ_INT(b.last_length, size);
  /* The first bytes are kept: all of them are the ones sent. */
  for (size_t i = 0; i < sizeof b.last_body; i++)
    CHECK_EQ_INT(b.last_body[i], (unsigned char)(i * 31));
  free_all(loop, ca, cb);
}

static void the_end_of_stream_is_a_disconnection(void) {
  procord_loop_t *loop;
  int pair[2];
  CHECK_EQ_INT(new_loop_and_socketpair(&loop, pair), 0);
  seen_t seen = {0};
  procord_connection_t *c = open_on(loop, pair[0], pair[0], 0, &seen);
  CHECK(write(pair[1], "2V42", 4) == 4);
  close(pair[1]);
  procord_loop_run(loop);
  CHECK_EQ_INT(seen.frames, 1);
  CHECK_EQ_INT(seen.disconnected, 1);
  CHECK_EQ_INT(seen.cause.error, PROCORD_EDISCONNECTED);
  CHECK(strcmp(seen.cause.call, "read") == 0);
  CHECK_EQ_INT(procord_connection_state(c), PROCORD_DISCONNECTED);
  free_all(loop, c, NULL);
}

static void an_ill_formed_frame_is_reported_and_reading_stops(void) {
  procord_loop_t *loop;
  int pair[2];
  CHECK_EQ_INT(new_loop_and_socketpair(&loop, pair), 0);
  seen_t seen = {0};
  procord_connection_t *c = open_on(loop, pair[0], pair[0], 0, &seen);
  CHECK(write(pair[1], "1Vaxyz", 6) == 6);
  procord_loop_run(loop);
  CHECK_EQ_INT(seen.frames, 1);
  CHECK_EQ_INT(seen.parse_error, PROCORD_EILL_FORMED);
  close(pair[1]);
  free_all(loop, c, NULL);
}

static void freeing_inside_a_callback_is_safe(void) {
  procord_loop_t *loop;
  int pair[2];
  CHECK_EQ_INT(new_loop_and_socketpair(&loop, pair), 0);
  seen_t seen = {0};
  seen.stop_after_frames = 1;
  seen.free_in_callback = 1;
  CHECK(open_on(loop, pair[0], pair[0], 0, &seen) != NULL);
  CHECK(write(pair[1], "1Va1Vb1Vc", 9) == 9); /* frames after the free are never delivered */
  procord_loop_run(loop);
  CHECK_EQ_INT(seen.frames, 1);
  close(pair[1]);
  procord_loop_free(loop);
}

static int listen_on_loopback(struct sockaddr_in *address) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  memset(address, 0, sizeof *address);
  address->sin_family = AF_INET;
  address->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof *address;
  if (bind(fd, (struct sockaddr *)address, length) < 0 || listen(fd, 4) < 0 ||
      getsockname(fd, (struct sockaddr *)address, &length) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static int connect_nonblocking(const struct sockaddr_in *address) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (connect(fd, (const struct sockaddr *)address, sizeof *address) < 0 && errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  return fd;
}

static void a_tcp_connect_goes_from_connecting_to_connected(void) {
  procord_loop_t *loop;
  CHECK_EQ_INT(procord_loop_new(&loop), 0);
  struct sockaddr_in address;
  int listener = listen_on_loopback(&address);
  CHECK(listener >= 0);
  int fd = connect_nonblocking(&address);
  CHECK(fd >= 0);
  seen_t client = {0};
  procord_connection_t *c = open_on(loop, fd, fd, 1, &client);
  CHECK(c != NULL);
  CHECK_EQ_INT(procord_connection_state(c), PROCORD_CONNECTING);
  /* Frames queued while connecting go out once connected. */
  CHECK_EQ_INT(procord_connection_send(c, 'T', "fibo", 4), 0);
  int accepted = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
  CHECK(accepted >= 0);
  seen_t server = {0};
  server.stop_after_frames = 1;
  procord_connection_t *s = open_on(loop, accepted, accepted, 0, &server);
  procord_loop_run(loop);
  CHECK_EQ_INT(client.connected, 1);
  CHECK_EQ_INT(procord_connection_state(c), PROCORD_CONNECTED);
  CHECK_EQ_INT(server.frames, 1);
  CHECK_BYTES(server.last_body, server.last_length, "fibo");
  procord_connection_free(c);
  procord_connection_free(s);
  close(listener);
  procord_loop_free(loop);
}

/* What a listener test's accept callback saw. */
typedef struct accepted_s {
  procord_loop_t *loop;
  seen_t seen;
  procord_connection_t *connection;
  char peer[96];
  int count;
} accepted_t;

static void on_accepted(procord_listener_t *listener, int fd, const char *peer, void *context) {
  (void)listener;
  accepted_t *a = context;
  a->count++;
  snprintf(a->peer, sizeof a->peer, "%s", peer);
  a->seen.stop_after_frames = 1;
  a->connection = open_on(a->loop, fd, fd, 0, &a->seen);
}

static void a_listener_hands_each_peer_to_its_callback(void) {
  int before = open_descriptor_count();
  procord_loop_t *loop;
  CHECK_EQ_INT(procord_loop_new(&loop), 0);
  accepted_t accepted = {.loop = loop};
  procord_listener_options_t options = {
      .port = 0, .listen_fd = -1, .on_accept = on_accepted, .context = &accepted};
  procord_listener_t *listener = NULL;
  CHECK_EQ_INT(procord_listen(loop, &options, &listener), 0);
  int port = procord_listener_port(listener);
  CHECK(port > 0);
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int fd = connect_nonblocking(&address);
  CHECK(fd >= 0);
  seen_t client = {0};
  procord_connection_t *c = open_on(loop, fd, fd, 1, &client);
  CHECK_EQ_INT(procord_connection_send(c, 'T', "echo", 4), 0);
  procord_loop_run(loop); /* until the accepted side has the frame */
  CHECK_EQ_INT(accepted.count, 1);
  CHECK_EQ_INT(accepted.seen.frames, 1);
  CHECK_BYTES(accepted.seen.last_body, accepted.seen.last_length, "echo");
  CHECK(strncmp(accepted.peer, "127.0.0.1:", 10) == 0);
  procord_connection_free(c);
  procord_connection_free(accepted.connection);
  procord_listener_close(listener);
  procord_loop_free(loop);
  CHECK_EQ_INT(open_descriptor_count(), before);
}

static void close_and_stop(procord_listener_t *listener, int fd, const char *peer, void *context) {
  (void)peer;
  accepted_t *a = context;
  a->count++;
  close(fd);
  procord_listener_close(listener); /* inside the callback: freed once it returns */
  procord_loop_stop(a->loop);
}

static void a_listener_closed_inside_its_callback_stops_cleanly(void) {
  int before = open_descriptor_count();
  procord_loop_t *loop;
  CHECK_EQ_INT(procord_loop_new(&loop), 0);
  accepted_t accepted = {.loop = loop};
  procord_listener_options_t options = {
      .listen_fd = -1, .on_accept = close_and_stop, .context = &accepted};
  procord_listener_t *listener = NULL;
  CHECK_EQ_INT(procord_listen(loop, &options, &listener), 0);
  struct sockaddr_in address = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)procord_listener_port(listener))};
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int first = connect_nonblocking(&address), second = connect_nonblocking(&address);
  procord_loop_run(loop);
  close(first);
  close(second);
  procord_loop_free(loop);
  CHECK_EQ_INT(accepted.count, 1); /* the second peer was never handed over */
  CHECK_EQ_INT(open_descriptor_count(), before);
}

static void a_port_outside_the_range_is_einval(void) {
  int fd = -1;
  CHECK_EQ_INT(procord_listen_socket(NULL, 70000, 0, &fd), PROCORD_EINVAL);
  CHECK_EQ_INT(procord_listen_socket(NULL, -1, 0, &fd), PROCORD_EINVAL);
  CHECK_EQ_INT(fd, -1);
}

static void a_port_in_use_is_eaddrinuse(void) {
  procord_loop_t *loop;
  CHECK_EQ_INT(procord_loop_new(&loop), 0);
  accepted_t accepted = {.loop = loop};
  procord_listener_options_t options = {
      .listen_fd = -1, .on_accept = on_accepted, .context = &accepted};
  procord_listener_t *first = NULL, *second = NULL;
  CHECK_EQ_INT(procord_listen(loop, &options, &first), 0);
  options.port = procord_listener_port(first);
  int error = procord_listen(loop, &options, &second);
  procord_listener_close(first);
  procord_loop_free(loop);
  CHECK_EQ_INT(error, -EADDRINUSE);
  CHECK(second == NULL);
}

static void a_host_that_does_not_resolve_is_eresolve(void) {
  int fd = -1;
  CHECK_EQ_INT(procord_listen_socket("no-such-host.invalid", 0, 0, &fd), PROCORD_ERESOLVE);
  CHECK_EQ_INT(fd, -1);
}

static void a_refused_connect_names_connect(void) {
  procord_loop_t *loop;
  CHECK_EQ_INT(procord_loop_new(&loop), 0);
  struct sockaddr_in address;
  int listener = listen_on_loopback(&address);
  CHECK(listener >= 0);
  close(listener); /* nobody listens on that port any more */
  int fd = connect_nonblocking(&address);
  CHECK(fd >= 0);
  seen_t seen = {0};
  procord_connection_t *c = open_on(loop, fd, fd, 1, &seen);
  procord_loop_run(loop);
  CHECK_EQ_INT(seen.disconnected, 1);
  CHECK_EQ_INT(seen.cause.error, -ECONNREFUSED);
  CHECK(strcmp(seen.cause.call, "connect") == 0);
  free_all(loop, c, NULL);
}

static void close_nicely_writes_everything_first(void) {
  procord_loop_t *loop;
  int pair[2];
  CHECK_EQ_INT(new_loop_and_socketpair(&loop, pair), 0);
  seen_t writer = {0}, reader = {0};
  reader.stop_after_frames = 3;
  procord_connection_t *w = open_on(loop, pair[0], pair[0], 0, &writer);
  procord_connection_t *r = open_on(loop, pair[1], pair[1], 0, &reader);
  size_t size = 2 << 20;
  CHECK_EQ_INT(procord_connection_send_owned(w, 'V', calloc(1, size), size, free), 0);
  CHECK_EQ_INT(procord_connection_send(w, 'V', "x", 1), 0);
  CHECK_EQ_INT(procord_connection_send(w, 'R', NULL, 0), 0);
  procord_connection_close_nicely(w, 10000);
  CHECK_EQ_INT(procord_connection_state(w), PROCORD_DISCONNECTING);
  CHECK_EQ_INT(procord_connection_send(w, 'V', "late", 4), PROCORD_ECLOSED);
  procord_loop_run(loop); /* until the reader has all three frames */
  CHECK_EQ_INT(reader.frames, 3);
  CHECK_EQ_INT(reader.last_kind, 'R');
  if (!writer.disconnected) procord_loop_run(loop);
  CHECK_EQ_INT(writer.disconnected, 1);
  CHECK_EQ_INT(writer.cause.error, 0);
  free_all(loop, w, r);
}

static void close_nicely_gives_up_after_its_timeout(void) {
  procord_loop_t *loop;
  int pair[2];
  CHECK_EQ_INT(new_loop_and_socketpair(&loop, pair), 0);
  seen_t writer = {0};
  procord_connection_t *w = open_on(loop, pair[0], pair[0], 0, &writer);
  size_t size = 16 << 20; /* far more than the socket buffers: the peer never reads */
  CHECK_EQ_INT(procord_connection_send_owned(w, 'V', calloc(1, size), size, free), 0);
  CHECK(procord_connection_pending_output(w) > 0);
  procord_connection_close_nicely(w, 50);
  procord_loop_run(loop);
  CHECK_EQ_INT(writer.disconnected, 1);
  CHECK_EQ_INT(writer.cause.error, PROCORD_ETIMEOUT);
  CHECK(strcmp(writer.cause.call, "close") == 0);
  close(pair[1]);
  free_all(loop, w, NULL);
}

static void a_closed_connection_leaves_no_descriptor(void) {
  int before = open_descriptor_count();
  procord_loop_t *loop;
  int pair[2];
  CHECK_EQ_INT(new_loop_and_socketpair(&loop, pair), 0);
  seen_t seen = {0};
  procord_connection_t *c = open_on(loop, pair[0], pair[0], 0, &seen);
  procord_connection_close(c);
  CHECK_EQ_INT(procord_connection_state(c), PROCORD_DISCONNECTED);
  CHECK_EQ_INT(procord_connection_cause(c).error, 0);
  procord_connection_free(c);
  close(pair[1]);
  procord_loop_free(loop);
  CHECK_EQ_INT(open_descriptor_count(), before);
}

/* ---- A peer that stops reading ---- */

/*
 * One side of a connection whose peer (the test) stops reading. The
 * callbacks record whether they ran inside one of our sends, and how many
 * frames had arrived when the disconnection was reported.
 */
typedef struct {
  seen_t seen; /* first: the plain callbacks get it as their context */
  procord_connection_t *c;
  int peer_read_fd, peer_write_fd; /* the peer's ends (one socket, or two pipe ends) */
  int is_socket;
  int in_send;
  int callback_in_send;
  int frames_at_disconnection;
  int send_result;
  size_t pending_before_late_send, pending_after_late_send;
  procord_connection_state_t state_at_late_send;
  int late_send_result;
} broken_t;

static void on_frame_watching_sends(procord_connection_t *c, const procord_frame_t *frame,
                                    int error, void *context) {
  broken_t *b = context;
  if (b->in_send) b->callback_in_send = 1;
  on_frame(c, frame, error, &b->seen);
}

static void on_state_watching_sends(procord_connection_t *c, procord_connection_state_t state,
                                    void *context) {
  broken_t *b = context;
  if (b->in_send) b->callback_in_send = 1;
  if (state == PROCORD_DISCONNECTED) b->frames_at_disconnection = b->seen.frames;
  on_state(c, state, &b->seen);
}

/* Opens our side over a socketpair or a pipe pair; the peer's ends go into `b`. */
static int open_broken(procord_loop_t *loop, int is_socket, broken_t *b) {
  memset(b, 0, sizeof *b);
  b->seen.loop = loop;
  b->is_socket = is_socket;
  int read_fd, write_fd;
  if (is_socket) {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0) return -1;
    read_fd = write_fd = pair[0];
    b->peer_read_fd = b->peer_write_fd = pair[1];
  } else {
    int to_peer[2], from_peer[2];
    if (pipe2(to_peer, O_CLOEXEC) < 0) return -1;
    if (pipe2(from_peer, O_CLOEXEC) < 0) {
      close(to_peer[0]);
      close(to_peer[1]);
      return -1;
    }
    read_fd = from_peer[0];
    write_fd = to_peer[1];
    b->peer_read_fd = to_peer[0];
    b->peer_write_fd = from_peer[1];
  }
  procord_connection_options_t options = {.read_fd = read_fd,
                                          .write_fd = write_fd,
                                          .on_frame = on_frame_watching_sends,
                                          .on_state = on_state_watching_sends,
                                          .context = b};
  return procord_connection_open(loop, &options, &b->c);
}

static void close_peer(broken_t *b) {
  if (b->peer_read_fd >= 0) close(b->peer_read_fd);
  if (b->peer_write_fd >= 0 && b->peer_write_fd != b->peer_read_fd) close(b->peer_write_fd);
  b->peer_read_fd = b->peer_write_fd = -1;
}

/* Sends 4 MiB, more than any socket or pipe buffer, noting any callback inside. */
static int send_4_mib(broken_t *b) {
  size_t size = 4 << 20;
  b->in_send = 1;
  int result = procord_connection_send_owned(b->c, 'V', calloc(1, size), size, free);
  b->in_send = 0;
  return result;
}

/* The peer stops reading (our writes fail from now on) but may still write. */
static void peer_stops_reading(broken_t *b) {
  if (b->is_socket) {
    shutdown(b->peer_read_fd, SHUT_RD);
  } else {
    close(b->peer_read_fd);
    b->peer_read_fd = -1;
  }
}

/*
 * On the loop: start sending 4 MiB; meanwhile the peer stops reading, says
 * `1E3` and closes both ends. In that order, our write failure is usually
 * seen before the `E` frame is readable, which is the case that matters.
 */
static void peer_closes_during_a_large_send(void *argument) {
  broken_t *b = argument;
  b->send_result = send_4_mib(b);
  peer_stops_reading(b);
  if (write(b->peer_write_fd, "1E3", 3) != 3) b->send_result = -1;
  close_peer(b);
}

static void last_frame_of_a_peer_that_closed_during_a_send_is_delivered(int is_socket) {
  int before = open_descriptor_count();
  procord_loop_t *loop;
  CHECK_EQ_INT(procord_loop_new(&loop), 0);
  broken_t b;
  CHECK_EQ_INT(open_broken(loop, is_socket, &b), 0);
  /* Sends run on the loop's thread, where a broken pipe raises no SIGPIPE. */
  CHECK_EQ_INT(procord_loop_call(loop, peer_closes_during_a_large_send, &b), 0);
  procord_loop_run(loop); /* until DISCONNECTED */
  procord_connection_free(b.c);
  procord_loop_free(loop);
  CHECK_EQ_INT(b.send_result, 0);
  CHECK_EQ_INT(b.callback_in_send, 0);
  CHECK_EQ_INT(b.seen.parse_error, 0);
  CHECK_EQ_INT(b.seen.frames, 1);
  CHECK_EQ_INT(b.seen.last_kind, 'E');
  CHECK_BYTES(b.seen.last_body, b.seen.last_length, "3");
  CHECK_EQ_INT(b.seen.disconnected, 1);
  CHECK_EQ_INT(b.frames_at_disconnection, 1);
  /* The end of the stream decides, not the failed write. A socket closed
     with unread input resets its peer after the data. */
  CHECK(b.seen.cause.call && strcmp(b.seen.cause.call, "read") == 0);
  CHECK(b.seen.cause.error == PROCORD_EDISCONNECTED ||
        (is_socket && b.seen.cause.error == -ECONNRESET));
  CHECK_EQ_INT(open_descriptor_count(), before);
}

static void last_frame_of_a_peer_that_closed_during_a_send_is_delivered_on_a_socketpair(void) {
  last_frame_of_a_peer_that_closed_during_a_send_is_delivered(1);
}

static void last_frame_of_a_peer_that_closed_during_a_send_is_delivered_on_a_pipe_pair(void) {
  last_frame_of_a_peer_that_closed_during_a_send_is_delivered(0);
}

/* On the loop, a later turn: the write failure has been handled; send again. */
static void send_after_the_failure(void *argument) {
  broken_t *b = argument;
  b->state_at_late_send = procord_connection_state(b->c);
  b->pending_before_late_send = procord_connection_pending_output(b->c);
  b->in_send = 1;
  b->late_send_result = procord_connection_send(b->c, 'V', "late", 4);
  b->in_send = 0;
  b->pending_after_late_send = procord_connection_pending_output(b->c);
  /* The peer's last words, then the end of the stream. */
  if (write(b->peer_write_fd, "1E3", 3) != 3) b->late_send_result = -1;
  close_peer(b);
}

/* On the loop: the peer stops reading, then we send (the write fails at once). */
static void peer_stops_reading_then_we_send(void *argument) {
  broken_t *b = argument;
  peer_stops_reading(b);
  b->send_result = send_4_mib(b);
  /* Runs after the write callback that the failed write activated. */
  procord_loop_call(b->seen.loop, send_after_the_failure, b);
}

static void send_after_the_peer_stopped_reading_is_dropped_without_a_callback(int is_socket) {
  int before = open_descriptor_count();
  procord_loop_t *loop;
  CHECK_EQ_INT(procord_loop_new(&loop), 0);
  broken_t b;
  CHECK_EQ_INT(open_broken(loop, is_socket, &b), 0);
  CHECK_EQ_INT(procord_loop_call(loop, peer_stops_reading_then_we_send, &b), 0);
  procord_loop_run(loop); /* until DISCONNECTED */
  procord_connection_free(b.c);
  procord_loop_free(loop);
  CHECK_EQ_INT(b.send_result, 0);
  CHECK_EQ_INT(b.state_at_late_send, PROCORD_CONNECTED);
  CHECK_EQ_INT(b.pending_before_late_send, 0); /* the 4 MiB were dropped */
  CHECK_EQ_INT(b.late_send_result, 0);
  CHECK_EQ_INT(b.pending_after_late_send, 0); /* and so was the late frame */
  CHECK_EQ_INT(b.callback_in_send, 0);
  CHECK_EQ_INT(b.seen.frames, 1);
  CHECK_EQ_INT(b.seen.last_kind, 'E');
  CHECK_BYTES(b.seen.last_body, b.seen.last_length, "3");
  CHECK_EQ_INT(b.seen.disconnected, 1);
  CHECK_EQ_INT(b.frames_at_disconnection, 1);
  CHECK_EQ_INT(b.seen.cause.error, PROCORD_EDISCONNECTED);
  CHECK(b.seen.cause.call && strcmp(b.seen.cause.call, "read") == 0);
  CHECK_EQ_INT(open_descriptor_count(), before);
}

static void
send_after_the_peer_stopped_reading_is_dropped_without_a_callback_on_a_socketpair(void) {
  send_after_the_peer_stopped_reading_is_dropped_without_a_callback(1);
}

static void send_after_the_peer_stopped_reading_is_dropped_without_a_callback_on_a_pipe_pair(void) {
  send_after_the_peer_stopped_reading_is_dropped_without_a_callback(0);
}

int main(void) {
  RUN(frames_cross_a_pipe_pair);
  RUN(a_large_owned_body_crosses_a_socketpair);
  RUN(the_end_of_stream_is_a_disconnection);
  RUN(an_ill_formed_frame_is_reported_and_reading_stops);
  RUN(freeing_inside_a_callback_is_safe);
  RUN(a_tcp_connect_goes_from_connecting_to_connected);
  RUN(a_refused_connect_names_connect);
  RUN(a_listener_hands_each_peer_to_its_callback);
  RUN(a_port_in_use_is_eaddrinuse);
  RUN(a_listener_closed_inside_its_callback_stops_cleanly);
  RUN(a_port_outside_the_range_is_einval);
  RUN(a_host_that_does_not_resolve_is_eresolve);
  RUN(close_nicely_writes_everything_first);
  RUN(close_nicely_gives_up_after_its_timeout);
  RUN(a_closed_connection_leaves_no_descriptor);
  RUN(last_frame_of_a_peer_that_closed_during_a_send_is_delivered_on_a_socketpair);
  RUN(last_frame_of_a_peer_that_closed_during_a_send_is_delivered_on_a_pipe_pair);
  RUN(send_after_the_peer_stopped_reading_is_dropped_without_a_callback_on_a_socketpair);
  RUN(send_after_the_peer_stopped_reading_is_dropped_without_a_callback_on_a_pipe_pair);
  return CHECK_SUMMARY();
}
