/* Brings libevent (Debian: libevent-dev) to SwiftPM as a system library. */
#include <event2/buffer.h>
#include <event2/event.h>
