/*
 * What the C core needs from the system, said at build time as the fix to
 * apply, rather than only as a header that is not found or a function that
 * is not declared. (The other files' own errors come alongside; this one
 * names the package.)
 */
#if defined(__has_include)
#if !__has_include(<event2/event.h>)
#error                                                                                             \
    "Procord needs libevent's headers: apt-get install libevent-dev (Debian, Ubuntu), or your system's libevent development package"
#endif
#if !__has_include(<openssl/ssl.h>)
#error                                                                                             \
    "Procord needs OpenSSL's headers: apt-get install libssl-dev (Debian, Ubuntu), or your system's OpenSSL development package"
#endif
#endif

#if !defined(__linux__)
#error                                                                                             \
    "Procord runs on Linux only: it starts workers with posix_spawn and closefrom, watches them through pidfds, and asks for parent-death signals"
#endif

#if defined(__has_include) && __has_include(<features.h>)
#include <features.h>
#if defined(__GLIBC__) && !__GLIBC_PREREQ(2, 34)
#error                                                                                             \
    "Procord needs glibc 2.34 or later (posix_spawn_file_actions_addclosefrom_np); Debian 12 and Ubuntu 22.04 have it"
#endif
#endif

/* ISO C wants a declaration in every file. */
typedef int procord_requirements_checked;
