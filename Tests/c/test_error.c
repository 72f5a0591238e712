#define _GNU_SOURCE
/*
 * Error codes (procord/error.h): descriptions, names, the digits of `E`
 * frames, and signal names.
 */
#include "check.h"
#include "procord/error.h"

#include <errno.h>
#include <signal.h>

/* Every Procord code, with its name and its description. */
/* clang-format off */
#define CODE(code, description) {code, #code, description}
/* clang-format on */
static const struct {
  int code;
  const char *name;
  const char *description;
} procord_codes[] = {
    CODE(PROCORD_ETASK_NOT_SUPPORTED, "task not supported"),
    CODE(PROCORD_EUNEXPECTED, "unexpected message"),
    CODE(PROCORD_EILL_FORMED, "ill-formed message"),
    CODE(PROCORD_ETOO_LONG, "message too long"),
    CODE(PROCORD_EDISCONNECTED, "disconnected"),
    CODE(PROCORD_EINVALID_DESTINATION, "invalid print destination"),
    CODE(PROCORD_ETIMEOUT, "timed out"),
    CODE(PROCORD_EINVAL, "invalid argument"),
    CODE(PROCORD_ECLOSED, "already closed"),
    CODE(PROCORD_ERESOLVE, "could not resolve host name"),
    CODE(PROCORD_EFULL, "queue full"),
    CODE(PROCORD_ETLS, "TLS failed"),
    CODE(PROCORD_EAUTH, "authentication failed"),
    CODE(PROCORD_ENESTED, "delegations nested too deep"),
    CODE(PROCORD_ENOTSERVING, "a worker delegated before serving"),
    CODE(PROCORD_ENOVALUE, "no value to read"),
    CODE(PROCORD_EBADVALUE, "a value could not be serialized or read back"),
};
#undef CODE
#define PROCORD_CODE_COUNT (sizeof procord_codes / sizeof procord_codes[0])

static void strerror_describes_each_procord_code(void) {
  for (size_t i = 0; i < PROCORD_CODE_COUNT; i++)
    CHECK(strcmp(procord_strerror(procord_codes[i].code), procord_codes[i].description) == 0);
}

static void strerror_descriptions_are_distinct(void) {
  for (size_t i = 0; i < PROCORD_CODE_COUNT; i++)
    for (size_t j = i + 1; j < PROCORD_CODE_COUNT; j++)
      CHECK(strcmp(procord_strerror(procord_codes[i].code),
                   procord_strerror(procord_codes[j].code)) != 0);
}

static void err_name_names_each_procord_code(void) {
  for (size_t i = 0; i < PROCORD_CODE_COUNT; i++)
    CHECK(strcmp(procord_err_name(procord_codes[i].code), procord_codes[i].name) == 0);
}

static void procord_codes_are_outside_the_errno_range(void) {
  for (size_t i = 0; i < PROCORD_CODE_COUNT; i++) {
    CHECK(procord_codes[i].code <= -4000);
    CHECK(procord_codes[i].code >= -4099);
  }
}

static void strerror_describes_negated_errno(void) {
  CHECK(strcmp(procord_strerror(-ENOENT), "No such file or directory") == 0);
  CHECK(strcmp(procord_strerror(-EPIPE), "Broken pipe") == 0);
}

/* -EDEADLK comes from one place only, a wait on the loop's thread: its
   text says what to do instead. */
static void strerror_of_edeadlk_says_to_use_on_done(void) {
  CHECK_CONTAINS(procord_strerror(-EDEADLK), "use on_done");
  CHECK(strcmp(procord_err_name(-EDEADLK), "EDEADLK") == 0);
}

static void err_name_names_negated_errno(void) {
  CHECK(strcmp(procord_err_name(-ENOENT), "ENOENT") == 0);
  CHECK(strcmp(procord_err_name(-EMFILE), "EMFILE") == 0);
  CHECK(strcmp(procord_err_name(-ECHILD), "ECHILD") == 0);
}

static void success_has_a_description_and_a_name(void) {
  CHECK(strcmp(procord_strerror(0), "success") == 0);
  CHECK(strcmp(procord_err_name(0), "OK") == 0);
}

static void unknown_codes_are_never_null(void) {
  static const int unknown[] = {-4099, -4010, -3999 - 100000, 1, 12345};
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
    CHECK(procord_strerror(unknown[i]) != NULL);
    CHECK(strcmp(procord_err_name(unknown[i]), "UNKNOWN") == 0);
  }
}

static void unknown_procord_code_is_an_unknown_error(void) {
  CHECK(strcmp(procord_strerror(-4050), "unknown error") == 0);
  CHECK(strcmp(procord_err_name(-4050), "UNKNOWN") == 0);
}

static void protocol_codes_map_to_their_frame_digits(void) {
  CHECK_EQ_INT(procord_error_to_frame_digit(PROCORD_ETASK_NOT_SUPPORTED), '0');
  CHECK_EQ_INT(procord_error_to_frame_digit(PROCORD_EUNEXPECTED), '1');
  CHECK_EQ_INT(procord_error_to_frame_digit(PROCORD_EILL_FORMED), '2');
  CHECK_EQ_INT(procord_error_to_frame_digit(PROCORD_ETOO_LONG), '3');
  CHECK_EQ_INT(procord_error_to_frame_digit(PROCORD_EDISCONNECTED), '4');
  CHECK_EQ_INT(procord_error_to_frame_digit(PROCORD_EINVALID_DESTINATION), '5');
}

static void other_codes_have_no_frame_digit(void) {
  CHECK_EQ_INT(procord_error_to_frame_digit(0), 0);
  CHECK_EQ_INT(procord_error_to_frame_digit(PROCORD_ETIMEOUT), 0);
  CHECK_EQ_INT(procord_error_to_frame_digit(PROCORD_EINVAL), 0);
  CHECK_EQ_INT(procord_error_to_frame_digit(PROCORD_ECLOSED), 0);
  CHECK_EQ_INT(procord_error_to_frame_digit(-ENOENT), 0);
  CHECK_EQ_INT(procord_error_to_frame_digit(-3999), 0);
  CHECK_EQ_INT(procord_error_to_frame_digit(-4006), 0);
}

static void frame_digit_round_trips_through_the_frame_body(void) {
  for (int code = PROCORD_ETASK_NOT_SUPPORTED; code >= PROCORD_EINVALID_DESTINATION; code--) {
    unsigned char digit = (unsigned char)procord_error_to_frame_digit(code);
    int read_back = 0;
    CHECK_EQ_INT(procord_error_from_frame_body(&digit, 1, &read_back), 0);
    CHECK_EQ_INT(read_back, code);
  }
}

static void frame_body_that_is_not_one_digit_0_to_5_is_ill_formed(void) {
  int code = 12345;
  CHECK_EQ_INT(procord_error_from_frame_body((const unsigned char *)"6", 1, &code),
               PROCORD_EILL_FORMED);
  CHECK_EQ_INT(procord_error_from_frame_body((const unsigned char *)"x", 1, &code),
               PROCORD_EILL_FORMED);
  CHECK_EQ_INT(procord_error_from_frame_body((const unsigned char *)"00", 2, &code),
               PROCORD_EILL_FORMED);
  CHECK_EQ_INT(procord_error_from_frame_body((const unsigned char *)"", 0, &code),
               PROCORD_EILL_FORMED);
  CHECK_EQ_INT(code, 12345); /* left alone */
}

static void signal_name_of_sigsegv_is_segv(void) {
  CHECK(procord_signal_name(SIGSEGV) != NULL);
  CHECK(strcmp(procord_signal_name(SIGSEGV), "SEGV") == 0);
}

static void signal_names_have_no_sig_prefix(void) {
  CHECK(strcmp(procord_signal_name(SIGKILL), "KILL") == 0);
  CHECK(strcmp(procord_signal_name(SIGTERM), "TERM") == 0);
  CHECK(strcmp(procord_signal_name(SIGPIPE), "PIPE") == 0);
}

static void signal_name_of_an_unknown_number_is_null(void) {
  CHECK(procord_signal_name(0) == NULL);
  CHECK(procord_signal_name(1000) == NULL);
}

static void signal_description_of_sigsegv(void) {
  CHECK(procord_signal_description(SIGSEGV) != NULL);
  CHECK(strcmp(procord_signal_description(SIGSEGV), "Segmentation fault") == 0);
  CHECK(procord_signal_description(1000) == NULL);
}

int main(void) {
  RUN(strerror_describes_each_procord_code);
  RUN(strerror_descriptions_are_distinct);
  RUN(err_name_names_each_procord_code);
  RUN(procord_codes_are_outside_the_errno_range);
  RUN(strerror_describes_negated_errno);
  RUN(strerror_of_edeadlk_says_to_use_on_done);
  RUN(err_name_names_negated_errno);
  RUN(success_has_a_description_and_a_name);
  RUN(unknown_codes_are_never_null);
  RUN(unknown_procord_code_is_an_unknown_error);
  RUN(protocol_codes_map_to_their_frame_digits);
  RUN(other_codes_have_no_frame_digit);
  RUN(frame_digit_round_trips_through_the_frame_body);
  RUN(frame_body_that_is_not_one_digit_0_to_5_is_ill_formed);
  RUN(signal_name_of_sigsegv_is_segv);
  RUN(signal_names_have_no_sig_prefix);
  RUN(signal_name_of_an_unknown_number_is_null);
  RUN(signal_description_of_sigsegv);
  return CHECK_SUMMARY();
}
