/*
 * procord/version.h: the version of Procord.
 *
 * The macros say which version a program was compiled against; the
 * functions say which library it runs with (the shared library may be newer).
 * The Makefile reads VERSION from the three numbers below: this header is the
 * one place where the version is written.
 */
#ifndef PROCORD_VERSION_H
#define PROCORD_VERSION_H

#ifdef __cplusplus
extern "C" {
#endif

#define PROCORD_VERSION_MAJOR 0
#define PROCORD_VERSION_MINOR 1
#define PROCORD_VERSION_PATCH 0

#define PROCORD_VERSION_STRINGIFY_(x) #x
#define PROCORD_VERSION_STRINGIFY(x) PROCORD_VERSION_STRINGIFY_(x)
/* "MAJOR.MINOR.PATCH", for example "0.1.0". */
/* clang-format off */
#define PROCORD_VERSION_STRING                                                     \
  PROCORD_VERSION_STRINGIFY(PROCORD_VERSION_MAJOR) "."                             \
  PROCORD_VERSION_STRINGIFY(PROCORD_VERSION_MINOR) "."                             \
  PROCORD_VERSION_STRINGIFY(PROCORD_VERSION_PATCH)
/* clang-format on */
/* MAJOR * 10000 + MINOR * 100 + PATCH, for example 100 for 0.1.0: compare
   with `PROCORD_VERSION_NUMBER >= 200` for "0.2.0 or later". */
#define PROCORD_VERSION_NUMBER                                                                     \
  (PROCORD_VERSION_MAJOR * 10000 + PROCORD_VERSION_MINOR * 100 + PROCORD_VERSION_PATCH)

/*
 * The version of the library the program runs with. Returns a static string,
 * "MAJOR.MINOR.PATCH" (PROCORD_VERSION_STRING as the library was built);
 * never NULL, never to be freed.
 */
const char *procord_version(void);

/*
 * Returns the version of the library the program runs with as one number,
 * MAJOR * 10000 + MINOR * 100 + PATCH (PROCORD_VERSION_NUMBER as the library
 * was built).
 */
int procord_version_number(void);

#ifdef __cplusplus
}
#endif

#endif
