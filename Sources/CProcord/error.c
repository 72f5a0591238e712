/* Error codes: descriptions and names (see procord/error.h). */
#define _GNU_SOURCE
#include "procord/error.h"

#include <errno.h>
#include <string.h>

const char *procord_strerror(int code) {
  switch (code) {
  case 0: return "success";
  case PROCORD_ETASK_NOT_SUPPORTED: return "task not supported";
  case PROCORD_EUNEXPECTED: return "unexpected message";
  case PROCORD_EILL_FORMED: return "ill-formed message";
  case PROCORD_ETOO_LONG: return "message too long";
  case PROCORD_EDISCONNECTED: return "disconnected";
  case PROCORD_EINVALID_DESTINATION: return "invalid print destination";
  case PROCORD_ETIMEOUT: return "timed out";
  case PROCORD_EINVAL: return "invalid argument";
  case PROCORD_ECLOSED: return "already closed";
  }
  if (code < 0 && code > -4000) {
    /* strerror is not thread-safe in theory; strerrordesc_np is, and static. */
    const char *text = strerrordesc_np(-code);
    if (text) return text;
  }
  return "unknown error";
}

const char *procord_err_name(int code) {
  switch (code) {
  case 0: return "OK";
  case PROCORD_ETASK_NOT_SUPPORTED: return "PROCORD_ETASK_NOT_SUPPORTED";
  case PROCORD_EUNEXPECTED: return "PROCORD_EUNEXPECTED";
  case PROCORD_EILL_FORMED: return "PROCORD_EILL_FORMED";
  case PROCORD_ETOO_LONG: return "PROCORD_ETOO_LONG";
  case PROCORD_EDISCONNECTED: return "PROCORD_EDISCONNECTED";
  case PROCORD_EINVALID_DESTINATION: return "PROCORD_EINVALID_DESTINATION";
  case PROCORD_ETIMEOUT: return "PROCORD_ETIMEOUT";
  case PROCORD_EINVAL: return "PROCORD_EINVAL";
  case PROCORD_ECLOSED: return "PROCORD_ECLOSED";
  }
  if (code < 0 && code > -4000) {
    const char *name = strerrorname_np(-code);
    if (name) return name;
  }
  return "UNKNOWN";
}

char procord_error_to_frame_digit(int code) {
  if (code <= PROCORD_ETASK_NOT_SUPPORTED && code >= PROCORD_EINVALID_DESTINATION)
    return (char)('0' + (PROCORD_ETASK_NOT_SUPPORTED - code));
  return 0;
}

int procord_error_from_frame_body(const unsigned char *body, unsigned long length) {
  if (length != 1 || body[0] < '0' || body[0] > '5') return PROCORD_EILL_FORMED;
  return PROCORD_ETASK_NOT_SUPPORTED - (body[0] - '0');
}

const char *procord_signal_name(int signal) { return sigabbrev_np(signal); }

const char *procord_signal_description(int signal) { return sigdescr_np(signal); }
