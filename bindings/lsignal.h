/* async.signal (bindings/lsignal.c), and what the command line asks it. */
#ifndef AR_LSIGNAL_H
#define AR_LSIGNAL_H

#include <lua.h>

#include "asyncrun.h"

/* Registers async.signal into the "async" module table on top of L. */
void ar__signal_open(lua_State *L);

/* How many async.signal objects of E for signum are open (not closed, not
 * collected): a script that holds one handles that signal itself, so the
 * host's default handling (Ctrl-C stops the run) should stand aside.
 * While one is open, libuv's handler replaces the host's for that signal;
 * the host's is put back when the last one closes. */
int ar__signal_claimed(ar_engine_t *E, int signum);

#endif
