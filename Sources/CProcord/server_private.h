/* Private to the C core: the control channel between a server and its workers. */
#ifndef PROCORD_SERVER_PRIVATE_H
#define PROCORD_SERVER_PRIVATE_H

/* Frame kinds on the control channel (see server_worker.c). */
#define PROCORD_CONTROL_READY 'r'
#define PROCORD_CONTROL_DONE 'd'
/* The byte that carries a session's socket to a worker. */
#define PROCORD_CONTROL_CLIENT 'C'
/* From older servers (a drain): skipped by a worker, which ends a session
   when the server closes it. */
#define PROCORD_CONTROL_STOP 'S'

/* The server's own worker thread (dont_fork): serves sessions handed over
   on `control_fd`, one task each, until the server closes it. */
struct procord_worker_options_s;
int procord_server_serve_in_process(const struct procord_worker_options_s *options, int control_fd);

/* Passes `client_fd` to the worker at the other end of `control_fd`. Returns 0 or -errno. */
int procord_server_hand_over(int control_fd, int client_fd);


#endif
