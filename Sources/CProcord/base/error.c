/* Error codes: descriptions and names (see procord/error.h). */
#define _GNU_SOURCE
#include "procord/error.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

typedef struct known_error_s {
  int code;
  const char *name;
  const char *text;
} known_error_t;

static const known_error_t known_errors[] = {
    {0, "OK", "success"},
    /* The core returns it for one thing only: a wait on the loop's own thread. */
    {-EDEADLK, "EDEADLK",
     "a wait on the loop's own thread (a callback, or a hosted loop's thread) would never end: use "
     "on_done or on_stopped there, or a wait with a time of 0"},
    {PROCORD_ETASK_NOT_SUPPORTED, "PROCORD_ETASK_NOT_SUPPORTED", "task not supported"},
    {PROCORD_EUNEXPECTED, "PROCORD_EUNEXPECTED", "unexpected message"},
    {PROCORD_EILL_FORMED, "PROCORD_EILL_FORMED", "ill-formed message"},
    {PROCORD_ETOO_LONG, "PROCORD_ETOO_LONG", "message too long"},
    {PROCORD_EDISCONNECTED, "PROCORD_EDISCONNECTED", "disconnected"},
    {PROCORD_EINVALID_DESTINATION, "PROCORD_EINVALID_DESTINATION", "invalid print destination"},
    {PROCORD_ETIMEOUT, "PROCORD_ETIMEOUT", "timed out"},
    {PROCORD_EINVAL, "PROCORD_EINVAL", "invalid argument"},
    {PROCORD_ECLOSED, "PROCORD_ECLOSED", "already closed"},
    {PROCORD_ERESOLVE, "PROCORD_ERESOLVE", "could not resolve host name"},
    {PROCORD_EFULL, "PROCORD_EFULL", "queue full"},
    {PROCORD_ETLS, "PROCORD_ETLS", "TLS failed"},
    {PROCORD_EAUTH, "PROCORD_EAUTH", "authentication failed"},
    {PROCORD_ENESTED, "PROCORD_ENESTED", "delegations nested too deep"},
    {PROCORD_ENOTSERVING, "PROCORD_ENOTSERVING", "a worker delegated before serving"},
    {PROCORD_ENOVALUE, "PROCORD_ENOVALUE", "no value to read"},
    {PROCORD_EBADVALUE, "PROCORD_EBADVALUE", "a value could not be serialized or read back"},
};

static const known_error_t *find_known(int code) {
  for (size_t i = 0; i < sizeof known_errors / sizeof known_errors[0]; i++)
    if (known_errors[i].code == code) return &known_errors[i];
  return NULL;
}

static int is_errno(int code) { return code < 0 && code > -4000; }

const char *procord_strerror(int code) {
  const known_error_t *known = find_known(code);
  if (known) return known->text;
  /* strerror is not thread-safe in theory; strerrordesc_np is, and static. */
  const char *text = is_errno(code) ? strerrordesc_np(-code) : NULL;
  return text ? text : "unknown error";
}

const char *procord_err_name(int code) {
  const known_error_t *known = find_known(code);
  if (known) return known->name;
  const char *name = is_errno(code) ? strerrorname_np(-code) : NULL;
  return name ? name : "UNKNOWN";
}

char procord_error_to_frame_digit(int code) {
  if (code <= PROCORD_ETASK_NOT_SUPPORTED && code >= PROCORD_EINVALID_DESTINATION)
    return (char)('0' + (PROCORD_ETASK_NOT_SUPPORTED - code));
  return 0;
}

int procord_error_from_frame_body(const unsigned char *body, size_t length, int *code) {
  if (length != 1 || body[0] < '0' || body[0] > '5') return PROCORD_EILL_FORMED;
  *code = PROCORD_ETASK_NOT_SUPPORTED - (body[0] - '0');
  return 0;
}

const char *procord_signal_name(int signal) { return sigabbrev_np(signal); }

const char *procord_signal_description(int signal) { return sigdescr_np(signal); }
