/*
 * procord/worker.h: the worker side, which serves tasks to a main program.
 *
 * A worker reads a task name (`T`) and an input (`V`), runs the task, and
 * answers with exactly one terminal frame: `V` (the output), `X` (a
 * serialized error), `U` (a readable error text) or `E` (a protocol error).
 * In this project's socket mode it then sends `0R` and serves the next task
 * on the same connection until the end of the stream; in the original
 * stdin/stdout mode it serves one task and returns, exactly like an original
 * worker. The worker uses blocking I/O: it runs one task at a time.
 */
#ifndef PROCORD_WORKER_H
#define PROCORD_WORKER_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * What a task answers. The task function sets `kind` to PROCORD_FRAME_VALUE,
 * PROCORD_FRAME_EXCEPTION or PROCORD_FRAME_UNKNOWN_EXCEPTION and `body` to a
 * buffer allocated with malloc (or NULL when `length` is 0), which the worker
 * frees with free() after sending it: libc's, whatever allocator
 * procord_set_allocator gave the core (procord/memory.h).
 */
typedef struct procord_reply_s {
  unsigned char kind;
  void *body;
  size_t length;
  /* Optional: when set, `body` was not allocated with malloc and is not
     freed; the worker calls release(release_context) once it has sent it
     (for a large answer lent without a copy). */
  void (*release)(void *release_context);
  void *release_context;
} procord_reply_t;

/* Runs a task on its serialized input and fills `reply`. */
typedef void (*procord_task_fn)(void *context, const unsigned char *input, size_t length,
                                procord_reply_t *reply);

/* A task a worker serves: its name, its function and the function's context. */
typedef struct procord_worker_task_s {
  const char *name;
  procord_task_fn run;
  void *context;
} procord_worker_task_t;

/* What a worker sends to its main program of what its task prints. */
typedef enum procord_capture {
  PROCORD_CAPTURE_NONE = 0,              /* stdout and stderr left as they are */
  PROCORD_CAPTURE_STDOUT = 1,            /* stdout as `P` frames to `O` */
  PROCORD_CAPTURE_STDOUT_AND_STDERR = 2, /* and stderr as `P` frames to `E` */
} procord_capture_mode_t;

typedef struct procord_worker_options_s {
  /* The size of this struct as the calling program was built with: set by
     procord_worker_options_init; 0 means the layout of this first release.
     A size larger than this library's struct, with a byte beyond it that is
     not 0 (a program built against a newer Procord than it runs with), is
     refused with PROCORD_EINVAL. */
  size_t size;
  int read_fd;  /* where frames come from (0 in the original mode) */
  int write_fd; /* where answers go (1 in the original mode); may equal read_fd */
  const procord_worker_task_t *tasks; /* not copied: must outlive the call */
  size_t task_count;
  int reusable;            /* send `0R` after each answer and serve the next task */
  size_t max_message_size; /* 0: procord_default_max_message_size() */
  /* On a socket: while a task runs, a watchdog thread watches the
     connection, and if the main program closes it (it died, or gave up), the
     worker kills its process group if it leads one (as a worker Procord
     started does), or else itself. Without it a task runs on for nobody. */
  int end_with_peer;
  /* While waiting for a task's frames, how long the peer may stay silent,
     and while writing an answer, how long it may go without reading, before
     the worker gives up and returns PROCORD_ETIMEOUT (no `E` frame: a silent
     peer is not a protocol error). 0: no limit. */
  int read_timeout_ms;
  /* What the task writes to its stdout (and stderr) is sent to the main
     program as `P` frames to `O` (and `E`) instead of going anywhere else,
     and all of it arrives before the task's answer. Serve from one thread
     at a time: descriptors 1 and 2 are the process's. */
  procord_capture_mode_t capture_output;
  /* If not NULL, filled in as tasks are served (for a server's log). */
  struct procord_worker_report_s *report;
  /* A descriptor (above 2) that becomes readable when the worker should
     stop: between tasks (after the first), if the peer has sent nothing of
     a next task, the worker then ends as if the peer had closed. A server
     that drains uses it to end idle reusable connections (a pool's) at
     once. 0: none. */
  int stop_fd;
} procord_worker_options_t;

/*
 * Sets every field of `options` to its default (0, NULL: see each field)
 * and `size` to this struct's size. Call it first, then set the fields you
 * need: a field added in a later version then gets its default even in a
 * program built before it.
 */
void procord_worker_options_init(procord_worker_options_t *options);

/*
 * From inside a task: sends `text` to the main program's handler for custom
 * `destination` (a byte other than 'O' and 'E', by convention '0'..'9') as
 * a `P` frame. Thread-safe. Returns 0, PROCORD_EINVALID_DESTINATION for 'O'
 * or 'E' (print to stdout and stderr instead), PROCORD_ECLOSED when no
 * worker is serving (the text is dropped), or a write error.
 */
int procord_worker_print(unsigned char destination, const void *text, size_t length);

/* Sends an `F` frame for `destination`; returns like procord_worker_print. */
int procord_worker_flush(unsigned char destination);

/* What a worker served on one connection. */
typedef struct procord_worker_report_s {
  char task_name[128];       /* the last task's name, cut to fit, NUL-terminated */
  unsigned char last_answer; /* the last terminal frame's kind: 'V', 'X', 'U', 'E'; 0: none */
  unsigned tasks_served;
} procord_worker_report_t;

/*
 * Serves tasks on the options' descriptors (which it does not close). Returns
 * 0 at a clean end: the main program closed the stream between tasks (or,
 * when not reusable, after the one task); a failed write of `0R` is a clean
 * end too, since the main program may close as soon as it has its answer.
 * Writes never raise SIGPIPE (MSG_NOSIGNAL on sockets, SIGPIPE blocked
 * around writes to pipes), and the process's SIGPIPE disposition is left
 * alone.
 * Otherwise returns a negative error code: a protocol error (after sending
 * the matching `E` frame), PROCORD_EDISCONNECTED for an end of stream in the
 * middle of a task, a negated errno of a failed read or write, or
 * PROCORD_EINVAL for a `size` refused (see procord_worker_options_t).
 */
int procord_worker_serve(const procord_worker_options_t *options);

/*
 * From now on, the news that this worker's task must stop calls
 * `on_termination(context)` on a thread of its own (started here, with every
 * signal blocked): for a worker whose tasks can be cancelled (the Swift
 * overlay's async bodies). The news is a SIGTERM when `on_sigterm` is
 * non-zero (a main program cancels a task, or its deadline passes, with
 * SIGTERM and, after the grace period, SIGKILL; a server's workers must
 * survive a SIGTERM sent to the whole service, so they pass 0), and the
 * peer going away while a task runs (the watchdog of end_with_peer, which
 * then kills the worker only after a grace period of 2 s, instead of at
 * once). The callback decides what to do: cancel the running task, or
 * exit. Once per process. Returns 0, PROCORD_EINVAL (no callback, or called
 * before), or a negated errno.
 */
int procord_worker_watch_termination(void (*on_termination)(void *context), void *context,
                                     int on_sigterm);

/* What the `--procord-*` options of a command line ask for. */
typedef enum procord_worker_mode {
  PROCORD_MODE_NONE = 0, /* no worker option: the program is a main program */
  PROCORD_MODE_WORKER,   /* --procord-worker */
  PROCORD_MODE_SERVER,   /* --procord-server (served by a later part of the core) */
} procord_worker_mode_t;

typedef struct procord_worker_command_s {
  procord_worker_mode_t mode;
  int socket_fd;  /* --procord-socket-fd N: protocol on N, not stdin/stdout; -1 */
  int handoff_fd; /* --procord-handoff-fd N (N > 0): a server's worker; -1 (0 counts as none too) */
  int read_timeout_ms;        /* --procord-read-timeout MS (0: no limit), or -1 */
  int drain_timeout_ms;       /* --procord-drain-timeout MS, or -1 */
  int log_level;              /* --procord-log-level error|warning|info|debug, or -1 */
  int capture_output;         /* --procord-capture-output: socket mode sends stdout/stderr as `P` */
  const char *input_file;     /* --procord-input-file PATH, or NULL */
  const char *output_file;    /* --procord-output-file PATH, or NULL */
  const char *hostname;       /* --procord-hostname NAME, or NULL */
  int port;                   /* --procord-port N, or -1 */
  int max_simultaneous_tasks; /* --procord-max-simultaneous-tasks N, or 0 */
  int reuse_address;          /* --procord-reuse-address */
  int dont_fork;              /* --procord-dont-fork */
  size_t max_message_size;    /* --procord-max-message-size N, or 0 */
  int first_argument;         /* the index in argv of the program's own first argument
                                 (argc when there is none) */
  /* Security (procord/security.h; procord_security_from_command reads these).
     A server's TLS options are its own certificate, key and the CA of its
     clients; a main program's, its client certificate, key and the CA of
     the server. */
  int tls;                            /* --procord-tls: TLS (implied by the options below) */
  const char *tls_certificate_file;   /* --procord-tls-cert PATH, or NULL */
  const char *tls_private_key_file;   /* --procord-tls-key PATH, or NULL */
  const char *tls_ca_file;            /* --procord-tls-ca PATH, or NULL */
  int tls_require_client_certificate; /* --procord-tls-require-client-cert (a server) */
  const char *tls_server_name;        /* --procord-tls-server-name NAME (a main program), or NULL */
  const char *secret_file;            /* --procord-secret-file PATH, or NULL */
  const char *secret_environment; /* --procord-secret-env NAME: the variable holding it, or NULL */
  int handshake_timeout_ms;       /* --procord-handshake-timeout MS (a server), or -1 */
  /* A server's bounds on its clients (procord_server_options_t's, which
     say what each does): 0 (or -1 for the time limits) when not given; a
     time limit of 0 given means none. */
  int max_connections;              /* --procord-max-connections N */
  int max_connections_per_peer;     /* --procord-max-connections-per-peer N */
  int max_tasks_per_peer;           /* --procord-max-tasks-per-peer N */
  int idle_timeout_ms;              /* --procord-idle-timeout MS */
  int task_timeout_ms;              /* --procord-task-timeout MS */
  int answer_timeout_ms;            /* --procord-answer-timeout MS */
  int min_receive_rate;             /* --procord-min-receive-rate BYTES_PER_SECOND */
  int min_send_rate;                /* --procord-min-send-rate BYTES_PER_SECOND */
  size_t max_buffered_task_bytes;   /* --procord-max-buffered-task-bytes N */
  size_t max_buffered_answer_bytes; /* --procord-max-buffered-answer-bytes N */
} procord_worker_command_t;

/*
 * Reads the `--procord-*` options at the start of `argv`: those right after
 * argv[0], up to the first argument that is not one of them (or its value).
 * Later arguments belong to the program and are never read, so a program
 * argument that happens to start with `--procord-` cannot turn the program
 * into a worker. Both `--option VALUE` and `--option=VALUE` are accepted. Returns 0, or
 * PROCORD_EINVAL for an unknown `--procord-` option or a bad value, with a message in `error` (of
 * `error_size` bytes, may be NULL). Strings in `*command` point into argv.
 */
int procord_worker_parse_arguments(int argc, const char *const *argv,
                                   procord_worker_command_t *command, char *error,
                                   size_t error_size);

/*
 * Serves tasks as `command` says (mode PROCORD_MODE_WORKER): on the socket
 * descriptor (reusable, `0R`, end_with_peer; stdout and stderr left alone
 * unless --procord-capture-output), on a server's handoff descriptor (stdout
 * and stderr sent as `P` frames), on the input and output files, or on stdin
 * and stdout. In the last two, the protocol descriptors are moved away from 0
 * and 1 first and what the task writes to stdout travels as `P` frames to
 * `O`, so that nothing the task prints can corrupt the protocol. Returns like procord_worker_serve,
 * or a negated errno if a file could not be opened.
 */
int procord_worker_run(const procord_worker_command_t *command, const procord_worker_task_t *tasks,
                       size_t task_count);

/*
 * Runs a worker server as `command` says (mode PROCORD_MODE_SERVER): it
 * listens on --procord-hostname (127.0.0.1 by default) and --procord-port
 * (1111 by default), and serves `tasks` in worker processes that are this
 * program again (/proc/self/exe with --procord-worker --procord-handoff-fd 3),
 * or in the server process with --procord-dont-fork, until SIGTERM or SIGINT.
 * Logs to stderr at --procord-log-level (warnings and errors by default).
 * Secured as the `--procord-tls*` and `--procord-secret-*` options say
 * (procord_security_from_command), with --procord-handshake-timeout.
 * Returns 0 after a clean stop, what procord_server_run returns, or
 * PROCORD_EINVAL when the security options are wrong (logged).
 */
int procord_worker_run_server(const procord_worker_command_t *command,
                              const procord_worker_task_t *tasks, size_t task_count);

/*
 * The worker main entry: call it first in main. It reads the `--procord-*`
 * options of argv. When they ask for a worker or a worker server, it serves
 * `tasks` (which must outlive the call) and ends the process: exit(0) after
 * a clean end, exit(1) otherwise. For an invalid option it prints a message
 * on stderr and calls exit(2). When they ask for neither, the program is a
 * main program: it returns, with `*command` filled in (its hostname and
 * port name the server its tasks should go to, if any; first_argument is
 * where the program's own arguments begin).
 */
void procord_worker_main(int argc, char **argv, const procord_worker_task_t *tasks,
                         size_t task_count, procord_worker_command_t *command);

/*
 * The worker side of a server: tells the server it is ready on
 * `control_fd`, then serves each session the server hands over (a socket
 * on which the server sends whole tasks and takes their answers to their
 * clients; reusable, `0R`, watchdog on: closed mid-task, the task is
 * killed) with the options' tasks and limits (not its read timeout: the
 * server bounds its clients itself, and a session may wait idle), and
 * reports back after each.
 * Returns 0 when the server closes `control_fd`, or a negative error code.
 */
int procord_worker_serve_handoffs(const procord_worker_options_t *options, int control_fd);

#ifdef __cplusplus
}
#endif

#endif
