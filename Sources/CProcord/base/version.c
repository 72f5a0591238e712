/* The version the library was built as (procord/version.h). */
#include "procord/version.h"

const char *procord_version(void) { return PROCORD_VERSION_STRING; }

int procord_version_number(void) { return PROCORD_VERSION_NUMBER; }
