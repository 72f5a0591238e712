/*
 * recursive.c: workers that delegate to workers. rfibo(n) delegates
 * rfibo(n-1) and rfibo(n-2) to two new worker processes and adds their
 * answers, so the whole call tree (2 fibo(n) - 1 processes) is alive at
 * once; n is capped at 10 to keep it a demo.
 *
 *   recursive 8        prints rfibo(8) = 34
 *
 * Build: cc recursive.c $(pkg-config --cflags --libs procord) -o recursive
 */
#include "fibo_task.h"

#define LIMIT 10

/* The loop of this process, started the first time a task needs it. */
static procord_loop_t *loop;

static procord_loop_t *the_loop(void) {
  if (!loop && (procord_loop_new(&loop) != 0 || procord_loop_start_thread(loop) != 0)) loop = NULL;
  return loop;
}

/* Delegates rfibo(n) to a new worker, this program again. */
static procord_delegation_t *delegate_rfibo(long long n) {
  static const char *const arguments[] = {"recursive", "--procord-worker", "--procord-socket-fd",
                                          "3", NULL};
  char input[24];
  snprintf(input, sizeof input, "%lld", n);
  procord_delegation_options_t options;
  procord_delegation_options_init(&options); /* the defaults first */
  options.task_name = "rfibo";
  options.input = input;
  options.input_length = strlen(input);
  options.worker.program = "/proc/self/exe";
  options.worker.arguments = arguments;
  options.worker.channel = PROCORD_CHANNEL_SOCKET;
  options.worker.stderr_fd = -1;
  procord_delegation_t *delegation = NULL;
  procord_loop_t *current = the_loop();
  return current && procord_delegate(current, &options, &delegation) == 0 ? delegation : NULL;
}

/* The value of a finished delegation, or -1. */
static long long value_of(procord_delegation_t *delegation) {
  const procord_outcome_t *outcome = procord_delegation_outcome(delegation);
  long long value;
  if (!outcome || outcome->kind != PROCORD_OUTCOME_VALUE ||
      !read_decimal(outcome->body, outcome->length, &value))
    return -1;
  return value;
}

static void rfibo_task(void *context, const unsigned char *input, size_t length,
                       procord_reply_t *reply) {
  (void)context;
  long long n;
  if (!read_decimal(input, length, &n) || n < 0 || n > LIMIT) {
    reply_text(reply, PROCORD_FRAME_EXCEPTION, "rfibo: the input must be a number from 0 to 10");
    return;
  }
  long long result = 1;
  if (n >= 2) {
    procord_delegation_t *halves[2] = {delegate_rfibo(n - 1), delegate_rfibo(n - 2)};
    if (halves[0] && halves[1]) procord_delegation_wait(loop, halves, 2, 1, -1);
    long long first = halves[0] ? value_of(halves[0]) : -1,
              second = halves[1] ? value_of(halves[1]) : -1;
    /* Why a sub-task failed, in a sentence, before its outcome is released. */
    char why[512] = "rfibo: a sub-task could not be delegated";
    procord_delegation_t *failed = !halves[0] || !halves[1] ? NULL
                                   : first < 0              ? halves[0]
                                                            : halves[1];
    if (failed && (first < 0 || second < 0)) {
      size_t used = (size_t)snprintf(why, sizeof why, "rfibo: a sub-task failed: ");
      procord_outcome_describe(procord_delegation_outcome(failed), NULL, NULL, why + used,
                               sizeof why - used);
    }
    procord_delegation_release(halves[0]);
    procord_delegation_release(halves[1]);
    if (first < 0 || second < 0) {
      reply_text(reply, PROCORD_FRAME_EXCEPTION, why);
      return;
    }
    result = first + second;
  }
  char text[24];
  snprintf(text, sizeof text, "%lld", result);
  reply_text(reply, PROCORD_FRAME_VALUE, text);
}

static const procord_worker_task_t tasks[] = {{"rfibo", rfibo_task, NULL}};

int main(int argc, char **argv) {
  procord_worker_command_t command;
  procord_worker_main(argc, argv, tasks, 1, &command);
  if (argc - command.first_argument != 1) {
    fprintf(stderr, "usage: %s N (0 to %d)\n", argv[0], LIMIT);
    return 2;
  }
  const char *input = argv[command.first_argument];
  long long n;
  if (!read_decimal((const unsigned char *)input, strlen(input), &n)) {
    fprintf(stderr, "%s: not a number: %s\n", argv[0], input);
    return 2;
  }
  procord_delegation_t *delegation = delegate_rfibo(n);
  if (!delegation) {
    fprintf(stderr, "%s: cannot delegate\n", argv[0]);
    return 1;
  }
  procord_delegation_wait(loop, &delegation, 1, 1, -1);
  const procord_outcome_t *outcome = procord_delegation_outcome(delegation);
  int ok = outcome->kind == PROCORD_OUTCOME_VALUE;
  if (ok) {
    printf("rfibo(%s) = %.*s\n", input, (int)outcome->length, (const char *)outcome->body);
  } else {
    char why[1024]; /* a crash names its signal, a refused input gives its text */
    procord_outcome_describe(outcome, NULL, argv[0], why, sizeof why);
    printf("rfibo(%s) failed: %s\n", input, why);
  }
  procord_delegation_release(delegation);
  procord_loop_free(loop);
  return ok ? 0 : 1;
}
