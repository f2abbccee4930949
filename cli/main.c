/* asyncrun: the command line. A thin host on the public API, in the manner
 * of lua.c: it parses options, builds the `arg` table, runs -e chunks, -l
 * modules and the script, and maps the outcome to an exit status:
 *   0 success, 1 the script failed (or a task's failure was never
 *   retrieved), 2 usage errors, 130 after Ctrl-C (143 after SIGTERM).
 *
 * Ctrl-C and SIGTERM are caught with sigaction, not through the loop: a
 * script that computes without waiting never gives the loop a turn. The
 * first one interrupts the running Lua code and stops the engine
 * (ar_engine_interrupt); the second exits at once. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#include "asyncrun.h"

#define PROGNAME "asyncrun"

static void usage(FILE *f) {
  fprintf(f, "usage: " PROGNAME " [options] [script [args]]\n"
             "Available options are:\n"
             "  -e stat   execute string 'stat'\n"
             "  -l mod    require library 'mod' into global 'mod'\n"
             "  -l g=mod  require library 'mod' into global 'g'\n"
             "  -v        show version information\n"
             "  -h        show this help (also --help)\n"
             "  --        stop handling options\n"
             "  -         stop handling options and execute stdin\n");
}

struct cli {
  ar_engine_t *E;
};

/* The signal handler's view: set before the handler is installed. */
static ar_engine_t *volatile signal_engine;
static volatile sig_atomic_t signal_first; /* 0 until the first signal */

static void on_signal(int signum) {
  if (signal_first != 0) {
    static const char msg[] = PROGNAME ": interrupted again, exiting now\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(signal_first == SIGINT ? 130 : 128 + signal_first);
  }
  signal_first = signum;
  if (signal_engine != NULL) ar_engine_interrupt(signal_engine);
}

static void catch_signals(ar_engine_t *E) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  signal_engine = E;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}

/* Protected: arg = { [-n..-1] = interpreter and options, [0] = script,
 * [1..] = script arguments }, as lua.c builds it. */
static int build_arg_p(lua_State *L) {
  char **argv = lua_touserdata(L, 1);
  int argc = (int)lua_tointeger(L, 2);
  int script = (int)lua_tointeger(L, 3);
  lua_createtable(L, argc - script, script + 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
  return 0;
}

static int report(struct cli *c, int rc) {
  /* After Ctrl-C the status says so, even if the script swallowed the
   * cancellation and ended normally. */
  int sig = signal_first;
  if (sig != 0) return sig == SIGINT ? 130 : 128 + sig;
  if (rc == 0) return ar_engine_failures(c->E) > 0 ? 1 : 0;
  const char *msg = ar_engine_error(c->E);
  fprintf(stderr, PROGNAME ": %s\n", *msg ? msg : ar_strerror(rc));
  fflush(stderr);
  return rc == AR_EFILE ? 2 : 1;
}

static int run_string(struct cli *c, const char *code, const char *name) {
  return report(c, ar_engine_run_string(c->E, code, name));
}

/* Protected: puts the script's directory first in package.path, as Python
 * does with sys.path[0], so a script requires its neighbours from any
 * working directory. */
static int script_dir_p(lua_State *L) {
  const char *path = lua_touserdata(L, 1);
  const char *slash = strrchr(path, '/');
  if (slash == NULL) return 0; /* in the working directory: "./?.lua" */
  lua_getglobal(L, "package");
  if (!lua_istable(L, -1)) return 0;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = 0; i < 2; i++) {
    luaL_addlstring(&b, path, (size_t)(slash - path) + 1);
    luaL_addstring(&b, i == 0 ? "?.lua;" : "?/init.lua;");
  }
  lua_getfield(L, -2, "path");
  if (lua_isstring(L, -1))
    luaL_addvalue(&b);
  else
    lua_pop(L, 1);
  luaL_pushresult(&b);
  lua_setfield(L, -2, "path");
  return 0;
}

static int search_script_dir(struct cli *c, const char *path) {
  lua_State *L = ar_engine_lua(c->E);
  lua_pushcfunction(L, script_dir_p);
  lua_pushlightuserdata(L, (void *)path);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    fprintf(stderr, PROGNAME ": %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    return 1;
  }
  return 0;
}

/* -l mod or -l g=mod */
static int run_require(struct cli *c, const char *spec) {
  const char *eq = strchr(spec, '=');
  char code[512];
  if (strlen(spec) > 200 || strpbrk(spec, "\"\\\n") != NULL) {
    fprintf(stderr, PROGNAME ": bad module name '%s'\n", spec);
    return 2;
  }
  if (eq != NULL)
    snprintf(code, sizeof code, "%.*s = require \"%s\"", (int)(eq - spec), spec,
             eq + 1);
  else
    snprintf(code, sizeof code, "%s = require \"%s\"", spec, spec);
  return run_string(c, code, "=(command line)");
}

/* LUA_INIT_5_4 or LUA_INIT: "@file" runs the file, anything else is code. */
static int run_init(struct cli *c) {
  const char *init = getenv("LUA_INIT_5_4");
  const char *name = "=LUA_INIT_5_4";
  if (init == NULL) {
    init = getenv("LUA_INIT");
    name = "=LUA_INIT";
  }
  if (init == NULL) return 0;
  if (init[0] == '@')
    return report(c, ar_engine_run_file(c->E, init + 1, 0, NULL));
  return run_string(c, init, name);
}

int main(int argc, char **argv) {
  int script = 0, has_e = 0, has_v = 0, status = 0;
  int i;

  /* First pass: validate options and find the script, as lua.c does. */
  for (i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] != '-') break;
    if (strcmp(a, "-") == 0) break;
    if (strcmp(a, "--") == 0) {
      i++;
      break;
    }
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      return 0;
    }
    if (strcmp(a, "-v") == 0 || strcmp(a, "--version") == 0) {
      has_v = 1;
    } else if (strcmp(a, "-e") == 0 || strcmp(a, "-l") == 0) {
      if (a[1] == 'e') has_e = 1;
      if (++i >= argc) {
        fprintf(stderr, PROGNAME ": '%s' needs argument\n", a);
        usage(stderr);
        return 2;
      }
    } else if ((a[1] == 'e' || a[1] == 'l') && a[2] != '\0') {
      if (a[1] == 'e') has_e = 1;
    } else {
      fprintf(stderr, PROGNAME ": unrecognized option '%s'\n", a);
      usage(stderr);
      return 2;
    }
  }
  script = i < argc ? i : 0;

  if (has_v) {
    printf(PROGNAME " %s (%s, libuv %s)\n", ar_version(), LUA_RELEASE,
           uv_version_string());
    if (!script && !has_e) return 0;
  }
  if (!script && !has_e && !has_v) {
    if (isatty(0)) {
      usage(stderr);
      return 2;
    }
  }

  struct cli c = {0};
  c.E = ar_engine_new(NULL);
  if (c.E == NULL) {
    fprintf(stderr, PROGNAME ": cannot create engine: not enough memory\n");
    return 1;
  }
  catch_signals(c.E);

  lua_State *L = ar_engine_lua(c.E);
  lua_pushcfunction(L, build_arg_p);
  lua_pushlightuserdata(L, argv);
  lua_pushinteger(L, argc);
  lua_pushinteger(L, script ? script : argc);
  if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
    fprintf(stderr, PROGNAME ": %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    status = 1;
    goto done;
  }

  if ((status = run_init(&c)) != 0) goto done;
  for (i = 1; i < (script ? script : argc) && status == 0; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--") == 0) break;
    if (a[0] != '-' || a[1] == '\0') break;
    if (a[1] == 'e' || a[1] == 'l') {
      const char *val = a[2] != '\0' ? a + 2 : argv[++i];
      status = a[1] == 'e' ? run_string(&c, val, "=(command line)")
                           : run_require(&c, val);
    }
  }
  if (status == 0 && (script || (!has_e && !has_v))) {
    const char *path = script ? argv[script] : "-";
    if (script && (status = search_script_dir(&c, path)) != 0) goto done;
    int nargs = script ? argc - script - 1 : 0;
    status =
        report(&c, ar_engine_run_file(c.E, path, nargs,
                                      (const char *const *)argv + script + 1));
  }

done:
  signal_engine = NULL;
  ar_engine_free(c.E);
  return status;
}
