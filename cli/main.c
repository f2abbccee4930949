/* asyncrun: the command line. A thin host on the public API, in the manner
 * of lua.c: it parses options, builds the `arg` table, runs -e chunks, -l
 * modules and the script, and maps the outcome to an exit status:
 *   0 success, 1 the script failed, 2 usage errors, 130 after Ctrl-C
 *   (143 after SIGTERM). */
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
  uv_signal_t sigint, sigterm;
  int signum; /* the first stop signal received, 0 if none */
};

static void signal_cb(uv_signal_t *h, int signum) {
  struct cli *c = h->data;
  if (c->signum != 0 && signum == SIGINT) {
    static const char msg[] = PROGNAME ": interrupted again, exiting now\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(130);
  }
  if (c->signum == 0) c->signum = signum;
  ar_engine_stop(c->E);
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
  if (c->signum != 0) return c->signum == SIGINT ? 130 : 128 + c->signum;
  if (rc == 0) return 0;
  const char *msg = ar_engine_error(c->E);
  fprintf(stderr, PROGNAME ": %s\n", *msg ? msg : ar_strerror(rc));
  fflush(stderr);
  return rc == AR_EFILE ? 2 : 1;
}

static int run_string(struct cli *c, const char *code, const char *name) {
  return report(c, ar_engine_run_string(c->E, code, name));
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
  uv_loop_t *loop = ar_engine_loop(c.E);
  uv_signal_init(loop, &c.sigint);
  uv_signal_init(loop, &c.sigterm);
  c.sigint.data = c.sigterm.data = &c;
  uv_signal_start(&c.sigint, signal_cb, SIGINT);
  uv_signal_start(&c.sigterm, signal_cb, SIGTERM);
  /* Signals never keep the loop alive on their own. */
  uv_unref((uv_handle_t *)&c.sigint);
  uv_unref((uv_handle_t *)&c.sigterm);

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
    int nargs = script ? argc - script - 1 : 0;
    status =
        report(&c, ar_engine_run_file(c.E, path, nargs,
                                      (const char *const *)argv + script + 1));
  }

done:
  uv_close((uv_handle_t *)&c.sigint, NULL);
  uv_close((uv_handle_t *)&c.sigterm, NULL);
  ar_engine_free(c.E);
  return status;
}
