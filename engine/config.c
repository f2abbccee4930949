/* The options of ar_engine_new, and opening what they allow: standard
 * libraries, built-in modules and library functions, by name, through an
 * ordered list of allow/deny rules (the last match wins, as in a
 * firewall), so a module added later is covered by the same list. */
#include <string.h>

#include <lualib.h>

#include "internal.h"

ar_config_t *ar_config_new(void) { return calloc(1, sizeof(ar_config_t)); }

void ar_config_free(ar_config_t *cfg) {
  if (cfg == NULL) return;
  for (size_t i = 0; i < cfg->nrules; i++)
    free(cfg->rules[i].name);
  free(cfg->rules);
  free(cfg->path);
  free(cfg->cpath);
  free(cfg);
}

int ar_config_set_loop(ar_config_t *cfg, uv_loop_t *loop) {
  if (cfg == NULL) return AR_EINVAL;
  cfg->loop = loop;
  return 0;
}

int ar_config_set_memory_limit(ar_config_t *cfg, size_t bytes) {
  if (cfg == NULL) return AR_EINVAL;
  cfg->mem_limit = bytes;
  return 0;
}

static int set_string(char **slot, const char *value) {
  char *copy = NULL;
  if (value != NULL) {
    size_t len = strlen(value) + 1;
    if ((copy = malloc(len)) == NULL) return AR_ENOMEM;
    memcpy(copy, value, len);
  }
  free(*slot);
  *slot = copy;
  return 0;
}

int ar_config_set_path(ar_config_t *cfg, const char *path) {
  return cfg == NULL ? AR_EINVAL : set_string(&cfg->path, path);
}

int ar_config_set_cpath(ar_config_t *cfg, const char *cpath) {
  return cfg == NULL ? AR_EINVAL : set_string(&cfg->cpath, cpath);
}

/* "*", or dot-separated identifiers with an optional final ".*". */
static int valid_rule(const char *name) {
  if (strcmp(name, "*") == 0) return 1;
  size_t len = strlen(name);
  if (len == 0 || len > 200) return 0;
  if (len >= 2 && strcmp(name + len - 2, ".*") == 0) len -= 2;
  int seglen = 0;
  for (size_t i = 0; i < len; i++) {
    char c = name[i];
    if (c == '.') {
      if (seglen == 0) return 0;
      seglen = 0;
    } else if (c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               (c >= '0' && c <= '9')) {
      seglen++;
    } else {
      return 0;
    }
  }
  return seglen > 0;
}

static int add_rule(ar_config_t *cfg, const char *name, int allow) {
  if (cfg == NULL || name == NULL || !valid_rule(name)) return AR_EINVAL;
  ar__rule_t *rules = realloc(cfg->rules, (cfg->nrules + 1) * sizeof *rules);
  if (rules == NULL) return AR_ENOMEM;
  cfg->rules = rules;
  char *copy = NULL;
  if (set_string(&copy, name) != 0) return AR_ENOMEM;
  rules[cfg->nrules].name = copy;
  rules[cfg->nrules].allow = allow;
  cfg->nrules++;
  return 0;
}

int ar_config_allow(ar_config_t *cfg, const char *name) {
  return add_rule(cfg, name, 1);
}

int ar_config_deny(ar_config_t *cfg, const char *name) {
  return add_rule(cfg, name, 0);
}

/* Whether pattern covers name. "*" covers libraries and modules, not the
 * functions inside libraries (so "deny *, allow os" opens all of os). */
static int covers(const char *pattern, const char *name, int function) {
  if (strcmp(pattern, "*") == 0) return !function;
  size_t len = strlen(pattern);
  if (len >= 2 && strcmp(pattern + len - 2, ".*") == 0)
    return strncmp(pattern, name, len - 1) == 0 && name[len - 1] != '\0';
  return strcmp(pattern, name) == 0;
}

static int allowed(const ar_config_t *cfg, const char *name, int function) {
  if (cfg == NULL) return 1;
  for (size_t i = cfg->nrules; i-- > 0;)
    if (covers(cfg->rules[i].name, name, function)) return cfg->rules[i].allow;
  return 1;
}

/* What require finds in package.preload for what the config leaves out:
 * a clear message instead of a search of package.path. */
static int disabled_loader(lua_State *L) {
  return luaL_error(L, "module '%s' is not available in this engine",
                    luaL_optstring(L, 1, "?"));
}

/* Removes the functions (any field) of the library table on top that the
 * rules deny, naming them "lib.field". */
static void deny_fields(lua_State *L, const ar_config_t *cfg, const char *lib) {
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING) continue;
    lua_pushfstring(L, "%s.%s", lib, lua_tostring(L, -1));
    int keep = allowed(cfg, lua_tostring(L, -1), 1);
    lua_pop(L, 1);
    if (!keep) {
      /* Clearing an existing field during lua_next is allowed. */
      lua_pushvalue(L, -1);
      lua_pushnil(L);
      lua_rawset(L, -4);
    }
  }
}

static const luaL_Reg stdlibs[] = {{LUA_GNAME, luaopen_base},
                                   {LUA_LOADLIBNAME, luaopen_package},
                                   {LUA_COLIBNAME, luaopen_coroutine},
                                   {LUA_TABLIBNAME, luaopen_table},
                                   {LUA_IOLIBNAME, luaopen_io},
                                   {LUA_OSLIBNAME, luaopen_os},
                                   {LUA_STRLIBNAME, luaopen_string},
                                   {LUA_MATHLIBNAME, luaopen_math},
                                   {LUA_UTF8LIBNAME, luaopen_utf8},
                                   {LUA_DBLIBNAME, luaopen_debug},
                                   {NULL, NULL}};

void ar__config_open(lua_State *L, const ar_config_t *cfg,
                     void (*preload)(lua_State *L)) {
  int nstd = 0;
  /* The first two, base and package, always open. */
  for (const luaL_Reg *lib = stdlibs; lib->func != NULL; lib++, nstd++) {
    if (nstd < 2 || allowed(cfg, lib->name, 0)) {
      luaL_requiref(L, lib->name, lib->func, 1);
      lua_pop(L, 1);
    }
  }
  if (cfg != NULL && (cfg->path != NULL || cfg->cpath != NULL)) {
    lua_getglobal(L, LUA_LOADLIBNAME);
    if (cfg->path != NULL) {
      lua_pushstring(L, cfg->path);
      lua_setfield(L, -2, "path");
    }
    if (cfg->cpath != NULL) {
      lua_pushstring(L, cfg->cpath);
      lua_setfield(L, -2, "cpath");
    }
    lua_pop(L, 1);
  }
  ar__task_guard_coroutines(L);
  if (preload != NULL) preload(L);
  if (cfg == NULL || cfg->nrules == 0) return;

  /* Left-out standard libraries and built-in modules: require says so. */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (const luaL_Reg *lib = stdlibs + 2; lib->func != NULL; lib++) {
    if (!allowed(cfg, lib->name, 0)) {
      lua_pushcfunction(L, disabled_loader);
      lua_setfield(L, -2, lib->name);
    }
  }
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TSTRING &&
        !allowed(cfg, lua_tostring(L, -1), 0)) {
      lua_pushvalue(L, -1);
      lua_pushcfunction(L, disabled_loader);
      lua_rawset(L, -4);
    }
  }
  lua_pop(L, 1);

  /* Denied functions of the libraries that are open. */
  for (const luaL_Reg *lib = stdlibs; lib->func != NULL; lib++) {
    if (lua_getglobal(L, lib->name) == LUA_TTABLE)
      deny_fields(L, cfg, lib->name);
    lua_pop(L, 1);
  }
}
