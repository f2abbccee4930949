/* The "async.http" module: requests as cancellable waits on the engine's
 * one CURLM (engine/http.c), sessions with connection limits, responses as
 * tables, JSON through async.json (bindings/json.h).
 *
 * A request is a userdata on the calling task's stack (so the task anchors
 * it and everything it points at) holding the engine's ar__http_req_t. The
 * task suspends through ar__task_suspend; the transfer's completion only
 * wakes it, and the response or error is built in the task's own
 * continuation. Cancelling the task aborts the transfer in req_cancel. */
#define _GNU_SOURCE /* memmem */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "json.h"
#include "modules.h"

#define SESSION_MT "asyncrun.http.session"
#define REQUEST_MT "asyncrun.http.request"
#define RESPONSE_MT "asyncrun.http.response"

/* Registry keys (their addresses; the values live in each engine's own
 * registry, so engines share nothing). */
static const char default_key = 'D';

#define DEFAULT_MAX_CONNECTIONS 100
#define DEFAULT_MAX_BODY ((lua_Integer)64 << 20)
#define DEFAULT_MAX_REDIRECTS 10

typedef struct {
  ar__http_limit_t limit;
  struct curl_slist *headers;      /* the session's headers, ready for curl */
  struct curl_slist *body_headers; /* the same for requests with a body */
  double timeout, connect_timeout;
  long max_redirects;
  size_t max_body;
  int verify_tls;
  CURLSH *jar; /* cookies=true: the session's cookie jar */
  int open;    /* limit initialised, headers ours to free */
} session_t;

/* User values of a request: 1 the body string, 2 the session. */
typedef struct {
  ar__http_req_t req;
  ar__task_t *task;
  char *url;      /* malloc'd, the full URL sent */
  char *host_key; /* in url's block (see ar__http_url) */
  char method[24];
  char ctype[96]; /* a form body's Content-Type, "" when none */
} request_t;

/* ---- the engine's multi: created at the first request -------------------- */

/* The engine's multi state: made at the first request, closed by the
 * module's close hook before Lua closes (not by a finalizer, whose order
 * against the requests' and sessions' own is not defined). */
typedef struct {
  ar__http_t *H;
} http_state_t;

static void http_close_hook(ar_engine_t *E, void *state) {
  (void)E;
  ar__http_close(((http_state_t *)state)->H);
}

static const ar__module_t http_module = {"async.http", sizeof(http_state_t),
                                         NULL, http_close_hook, NULL};

static ar__http_t *multi_peek(lua_State *L) {
  http_state_t *st = ar__module_state(ar__engine_of(L), &http_module);
  return st != NULL ? st->H : NULL;
}

static void need_curl(lua_State *L) {
  const char *err = ar__http_load();
  if (err != NULL) luaL_error(L, "async.http: %s", err);
}

static ar__http_t *multi_get(lua_State *L) {
  ar__http_t *H = multi_peek(L);
  if (H != NULL) return H;
  need_curl(L);
  ar_engine_t *E = ar__engine_of(L);
  http_state_t *st = ar__module_open(E, &http_module);
  if (st == NULL || (st->H = ar__http_new(E)) == NULL)
    luaL_error(L, "not enough memory");
  return st->H;
}

/* ---- options ------------------------------------------------------------ */

/* opts[name] as seconds > 0, or def when absent. */
static double opt_seconds(lua_State *L, int opts, const char *name,
                          double def) {
  if (opts == 0) return def;
  double v = def;
  if (lua_getfield(L, opts, name) != LUA_TNIL) {
    int isnum;
    v = (double)lua_tonumberx(L, -1, &isnum);
    if (!isnum || !(v > 0))
      luaL_error(L,
                 "bad option '%s' (a number of seconds > 0 expected, got %s)",
                 name, isnum ? lua_tostring(L, -1) : luaL_typename(L, -1));
  }
  lua_pop(L, 1);
  return v;
}

static lua_Integer opt_count(lua_State *L, int opts, const char *name,
                             lua_Integer def) {
  if (opts == 0) return def;
  lua_Integer v = def;
  if (lua_getfield(L, opts, name) != LUA_TNIL) {
    int isint;
    v = lua_tointegerx(L, -1, &isint);
    if (!isint || v < 0)
      luaL_error(L, "bad option '%s' (an integer >= 0 expected, got %s)", name,
                 lua_isnumber(L, -1) ? lua_tostring(L, -1)
                                     : luaL_typename(L, -1));
  }
  lua_pop(L, 1);
  return v;
}

static int opt_bool(lua_State *L, int opts, const char *name, int def) {
  if (opts == 0) return def;
  int v = def;
  int ty = lua_getfield(L, opts, name);
  if (ty == LUA_TBOOLEAN)
    v = lua_toboolean(L, -1);
  else if (ty != LUA_TNIL)
    luaL_error(L, "bad option '%s' (boolean expected, got %s)", name,
               luaL_typename(L, -1));
  lua_pop(L, 1);
  return v;
}

/* Pushes opts[name] if it is a string (or nil when absent). */
static const char *opt_string(lua_State *L, int opts, const char *name) {
  if (opts == 0) {
    lua_pushnil(L);
    return NULL;
  }
  int ty = lua_getfield(L, opts, name);
  if (ty == LUA_TNIL) return NULL;
  if (ty != LUA_TSTRING)
    luaL_error(L, "bad option '%s' (string expected, got %s)", name,
               luaL_typename(L, -1));
  return lua_tostring(L, -1);
}

static int check_opts(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return 0;
  luaL_checktype(L, idx, LUA_TTABLE);
  return lua_absindex(L, idx);
}

/* ---- headers --------------------------------------------------------------
 */

/* A header line "Name: value" checked for what would break the request:
 * an empty or non-token name, or a line break in either part. false as
 * the value gives "Name:", which makes curl drop a header it would add. */
static void push_header_line(lua_State *L, int key, int val) {
  size_t nlen, vlen = 0;
  if (lua_type(L, key) != LUA_TSTRING)
    luaL_error(L, "bad header name (string expected, got %s)",
               luaL_typename(L, key));
  const char *name = lua_tolstring(L, key, &nlen);
  const char *value = "";
  if (lua_type(L, val) == LUA_TSTRING || lua_type(L, val) == LUA_TNUMBER)
    value = lua_tolstring(L, val, &vlen);
  else if (!(lua_type(L, val) == LUA_TBOOLEAN && !lua_toboolean(L, val)))
    luaL_error(
        L,
        "bad value for header '%s' (string, number or false expected, got %s)",
        name, luaL_typename(L, val));
  if (nlen == 0) luaL_error(L, "bad header name (empty)");
  for (size_t i = 0; i < nlen; i++) {
    unsigned char c = (unsigned char)name[i];
    if (c <= ' ' || c == ':' || c >= 127)
      luaL_error(L, "bad header name '%s'", name);
  }
  for (size_t i = 0; i < vlen; i++)
    if (value[i] == '\r' || value[i] == '\n' || value[i] == '\0')
      luaL_error(L, "bad value for header '%s' (contains a line break)", name);
  lua_pushfstring(L, "%s:%s%s", name, vlen > 0 ? " " : "", value);
}

/* Pushes lower(name) for the string at idx. */
static void push_lower(lua_State *L, int idx) {
  size_t len;
  const char *s = lua_tolstring(L, idx, &len);
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, len);
  for (size_t i = 0; i < len; i++)
    p[i] = (char)tolower((unsigned char)s[i]);
  luaL_pushresultsize(&b, len);
}

/* Fills lines (a table at idx lines: lower name -> line) from the header
 * table at idx hdrs. */
static void collect_headers(lua_State *L, int hdrs, int lines) {
  lua_pushnil(L);
  while (lua_next(L, hdrs)) {
    push_header_line(L, -2, -1);
    push_lower(L, -3);
    lua_insert(L, -2);
    lua_rawset(L, lines);
    lua_pop(L, 1);
  }
}

/* A header list for curl from lines (lower name -> "Name: value"), plus,
 * for requests with a body, "Expect:", which keeps curl from waiting for a
 * 100 Continue before large bodies (many servers never send one), and when
 * they have no Content-Type, "Content-Type:", which stops curl from
 * labelling any body as a form. (Without a body curl sends neither, and
 * every line costs it a little on each request.) Raises on memory errors;
 * nothing is leaked then, as the list is freed on the way out. */
static struct curl_slist *build_headers(lua_State *L, int lines, int body) {
  struct curl_slist *list = NULL, *l;
  lua_pushnil(L);
  while (lua_next(L, lines)) {
    if ((l = ar__http_slist_append(list, lua_tostring(L, -1))) == NULL)
      goto nomem;
    list = l;
    lua_pop(L, 1);
  }
  if (body) {
    if ((l = ar__http_slist_append(list, "Expect:")) == NULL) goto nomem;
    list = l;
  }
  if (body && lua_getfield(L, lines, "content-type") == LUA_TNIL) {
    if ((l = ar__http_slist_append(list, "Content-Type:")) == NULL) goto nomem;
    list = l;
  }
  if (body) lua_pop(L, 1);
  return list;
nomem:
  ar__http_slist_free(list);
  luaL_error(L, "not enough memory");
  return NULL;
}

/* ---- sessions ---------------------------------------------------------------
 */

static session_t *check_session(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, SESSION_MT);
}

static int session_gc(lua_State *L) {
  session_t *S = lua_touserdata(L, 1);
  if (S->open) {
    /* Every request anchors its session, so none is in flight now. */
    ar__http_limit_close(&S->limit);
    ar__http_slist_free(S->headers);
    ar__http_slist_free(S->body_headers);
    S->headers = S->body_headers = NULL;
    if (S->jar != NULL) ar__http_jar_free(multi_peek(L), S->jar);
    S->jar = NULL;
    S->open = 0;
  }
  return 0;
}

/* Creates a session from the options table at opts (0: defaults) and
 * pushes it. User values: 1 base URL, 2 lines (lower name -> "Name: v"),
 * 3 proxy URL. */
static session_t *session_new(lua_State *L, int opts) {
  need_curl(L);
  session_t *S = lua_newuserdatauv(L, sizeof *S, 3);
  int sidx = lua_gettop(L);
  memset(S, 0, sizeof *S);
  luaL_setmetatable(L, SESSION_MT);
  lua_Integer maxc =
      opt_count(L, opts, "max_connections", DEFAULT_MAX_CONNECTIONS);
  lua_Integer maxh = opt_count(L, opts, "max_per_host", 0);
  if (maxc < 1)
    luaL_error(L, "bad option 'max_connections' (must be at least 1)");
  if (maxc > INT32_MAX) maxc = INT32_MAX;
  if (maxh > INT32_MAX) maxh = INT32_MAX;
  S->timeout = opt_seconds(L, opts, "timeout", 0);
  S->connect_timeout = opt_seconds(L, opts, "connect_timeout", 0);
  S->max_redirects =
      (long)opt_count(L, opts, "max_redirects", DEFAULT_MAX_REDIRECTS);
  lua_Integer mb = opt_count(L, opts, "max_body", DEFAULT_MAX_BODY);
  S->max_body = (uint64_t)mb > SIZE_MAX ? SIZE_MAX : (size_t)mb;
  S->verify_tls = opt_bool(L, opts, "verify_tls", 1);
  if (opt_bool(L, opts, "cookies", 0) && (S->jar = ar__http_jar_new()) == NULL)
    luaL_error(L, "not enough memory");
  const char *base = opt_string(L, opts, "base_url");
  if (base != NULL) {
    char *full, *key;
    const char *err;
    if (ar__http_url(NULL, base, NULL, &full, &key, &err) != 0)
      luaL_error(L, "bad option 'base_url' (%s)", err);
    free(full);
  }
  lua_setiuservalue(L, sidx, 1);
  const char *proxy = opt_string(L, opts, "proxy");
  if (proxy != NULL && *proxy == '\0') { /* "" means none */
    lua_pop(L, 1);
    lua_pushnil(L);
  }
  lua_setiuservalue(L, sidx, 3);
  lua_newtable(L);
  int lines = lua_gettop(L);
  /* curl's own User-Agent and Accept-Encoding as lines, which headers of
   * the session or a request replace: see ar__http_user_agent. */
  lua_pushfstring(L, "User-Agent: %s", ar__http_user_agent());
  lua_setfield(L, lines, "user-agent");
  lua_pushfstring(L, "Accept-Encoding: %s", ar__http_accept_encoding());
  lua_setfield(L, lines, "accept-encoding");
  if (opts != 0 && lua_getfield(L, opts, "headers") != LUA_TNIL) {
    luaL_checktype(L, -1, LUA_TTABLE);
    collect_headers(L, lua_gettop(L), lines);
  }
  lua_settop(L, lines);
  ar__http_limit_init(&S->limit, (int)maxc, (int)maxh);
  S->open = 1;
  S->headers = build_headers(L, lines, 0);
  S->body_headers = build_headers(L, lines, 1);
  lua_setiuservalue(L, sidx, 2);
  return S;
}

/* Pushes the engine's default session, creating it on first use. */
static void push_default_session(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &default_key) == LUA_TUSERDATA) return;
  lua_pop(L, 1);
  session_new(L, 0);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &default_key);
}

/* http.session(opts) */
static int l_session(lua_State *L) {
  int opts = check_opts(L, 1);
  session_new(L, opts);
  return 1;
}

/* ---- query strings ---------------------------------------------------------
 */

static void add_encoded(luaL_Buffer *b, const char *s, size_t len) {
  static const char hex[] = "0123456789ABCDEF";
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      luaL_addchar(b, (char)c);
    } else {
      luaL_addchar(b, '%');
      luaL_addchar(b, hex[c >> 4]);
      luaL_addchar(b, hex[c & 15]);
    }
  }
}

/* Appends the value at idx to the list at list as a string. */
static void add_value(lua_State *L, int list, const char *key, int idx) {
  int ty = lua_type(L, idx);
  if (ty == LUA_TBOOLEAN)
    lua_pushstring(L, lua_toboolean(L, idx) ? "true" : "false");
  else if (ty == LUA_TSTRING || ty == LUA_TNUMBER)
    lua_pushstring(L, lua_tostring(L, idx));
  else
    luaL_error(L,
               "bad query value for '%s' (string, number, boolean or list "
               "expected, got %s)",
               key, luaL_typename(L, idx));
  lua_rawseti(L, list, (lua_Integer)lua_rawlen(L, list) + 1);
}

typedef struct {
  const char *s;
  size_t len;
} str_t;

static int str_cmp(const void *a, const void *b) {
  const str_t *x = a, *y = b;
  int c = memcmp(x->s, y->s, x->len < y->len ? x->len : y->len);
  return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

/* Sorts the strings list[1..n] in place, byte-wise as Lua's < does. In C,
 * so that no standard library function (table.sort) is needed: a sandbox
 * may deny `table`, and a script may replace it. */
static void sort_strings(lua_State *L, int list, lua_Integer n) {
  if (n < 2) return;
  str_t *a = lua_newuserdatauv(L, (size_t)n * sizeof *a, 0);
  for (lua_Integer i = 0; i < n; i++) {
    lua_rawgeti(L, list, i + 1);
    a[i].s = lua_tolstring(L, -1, &a[i].len);
    lua_pop(L, 1); /* still referenced by list */
  }
  qsort(a, (size_t)n, sizeof *a, str_cmp);
  /* Into a new table, as the old one keeps the strings alive meanwhile. */
  lua_createtable(L, (int)n, 0);
  for (lua_Integer i = 0; i < n; i++) {
    lua_pushlstring(L, a[i].s, a[i].len);
    lua_rawseti(L, -2, i + 1);
  }
  lua_replace(L, list);
  lua_pop(L, 1);
}

/* Pushes the query table at idx as "k=v&k=v2&...", keys sorted so the same
 * table always gives the same URL; a list value repeats its key. */
static void push_query(lua_State *L, int idx) {
  lua_newtable(L);
  int keys = lua_gettop(L);
  lua_Integer n = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "bad query key (string expected, got %s)",
                 luaL_typename(L, -1));
    lua_pushvalue(L, -1);
    lua_rawseti(L, keys, ++n);
  }
  sort_strings(L, keys, n);
  /* Flattened to key, value, key, value... as strings, so the buffer below
   * only reads strings the list keeps alive. */
  lua_newtable(L);
  int list = lua_gettop(L);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, keys, i);
    const char *key = lua_tostring(L, -1);
    lua_pushvalue(L, -1);
    lua_gettable(L, idx);
    int val = lua_gettop(L);
    if (lua_type(L, val) == LUA_TTABLE) {
      lua_Integer len = (lua_Integer)lua_rawlen(L, val);
      for (lua_Integer j = 1; j <= len; j++) {
        lua_pushvalue(L, val - 1);
        lua_rawseti(L, list, (lua_Integer)lua_rawlen(L, list) + 1);
        lua_rawgeti(L, val, j);
        add_value(L, list, key, lua_gettop(L));
        lua_pop(L, 1);
      }
    } else {
      lua_pushvalue(L, val - 1);
      lua_rawseti(L, list, (lua_Integer)lua_rawlen(L, list) + 1);
      add_value(L, list, key, val);
    }
    lua_pop(L, 2);
  }
  lua_Integer m = (lua_Integer)lua_rawlen(L, list);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (lua_Integer i = 1; i <= m; i++) {
    size_t len;
    lua_rawgeti(L, list, i);
    const char *s = lua_tolstring(L, -1, &len);
    lua_pop(L, 1); /* still referenced by list */
    if (i > 1) luaL_addchar(&b, (i & 1) ? '&' : '=');
    add_encoded(&b, s, len);
  }
  luaL_pushresult(&b);
  lua_replace(L, keys);
  lua_settop(L, keys);
}

/* ---- form bodies -----------------------------------------------------------
 */

/* Pushes the multipart part for the field named by the string at key,
 * from the value at val: a string, or for a file a table {content=,
 * filename=, content_type=}. */
static void push_part(lua_State *L, const char *boundary, int key, int val,
                      int is_file) {
  const char *filename = NULL, *ctype = NULL;
  int base = lua_gettop(L);
  if (lua_type(L, key) != LUA_TSTRING)
    luaL_error(L, "bad form field name (string expected, got %s)",
               luaL_typename(L, key));
  const char *name = lua_tostring(L, key);
  if (is_file && lua_type(L, val) == LUA_TTABLE) {
    lua_getfield(L, val, "filename");
    lua_getfield(L, val, "content_type");
    filename = lua_isstring(L, -2) ? lua_tostring(L, -2) : name;
    ctype = lua_isstring(L, -1) ? lua_tostring(L, -1) : NULL;
    lua_getfield(L, val, "content");
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "bad file '%s' (content: string expected, got %s)", name,
                 luaL_typename(L, -1));
  } else if (lua_type(L, val) == LUA_TSTRING ||
             lua_type(L, val) == LUA_TNUMBER) {
    if (is_file) filename = name;
    lua_pushvalue(L, val);
    lua_tolstring(L, -1, NULL);
  } else {
    luaL_error(L, "bad %s '%s' (string expected, got %s)",
               is_file ? "file" : "form field", name, luaL_typename(L, val));
  }
  int content = lua_gettop(L);
  /* What goes into the part's header lines must not break them. */
  const char *names[3] = {name, filename, ctype};
  for (int i = 0; i < 3; i++)
    for (const char *p = names[i]; p != NULL && *p; p++)
      if (*p == '\r' || *p == '\n' || (*p == '"' && i < 2))
        luaL_error(L, "bad form field, file name or content type '%s'",
                   names[i]);
  if (filename != NULL)
    lua_pushfstring(L,
                    "--%s\r\nContent-Disposition: form-data; name=\"%s\"; "
                    "filename=\"%s\"\r\nContent-Type: %s\r\n\r\n",
                    boundary, name, filename,
                    ctype != NULL ? ctype : "application/octet-stream");
  else
    lua_pushfstring(L,
                    "--%s\r\nContent-Disposition: form-data; "
                    "name=\"%s\"\r\n\r\n",
                    boundary, name);
  lua_pushvalue(L, content);
  lua_pushliteral(L, "\r\n");
  lua_concat(L, 3);
  lua_replace(L, base + 1);
  lua_settop(L, base + 1);
}

/* For opts.form (fields) and opts.files (files, from strings): pushes the
 * body, and writes its Content-Type into ctype; or pushes nil when there
 * is neither. Without files the form is URL-encoded like a query (keys
 * sorted, lists repeat their key). */
static void push_form_body(lua_State *L, int opts, char *ctype, size_t size) {
  lua_getfield(L, opts, "form");
  lua_getfield(L, opts, "files");
  int form = lua_gettop(L) - 1, files = form + 1;
  if (!lua_isnil(L, form) && !lua_istable(L, form))
    luaL_error(L, "bad option 'form' (table expected, got %s)",
               luaL_typename(L, form));
  if (!lua_isnil(L, files) && !lua_istable(L, files))
    luaL_error(L, "bad option 'files' (table expected, got %s)",
               luaL_typename(L, files));
  if (lua_isnil(L, files)) {
    if (!lua_isnil(L, form)) {
      push_query(L, form);
      snprintf(ctype, size, "application/x-www-form-urlencoded");
    } else {
      lua_pushnil(L);
    }
    lua_replace(L, form);
    lua_settop(L, form);
    return;
  }
  /* Parts in a list first: a luaL_Buffer wants the stack to itself. */
  /* Unique without shared state: the time and the request's address. */
  char boundary[64];
  snprintf(boundary, sizeof boundary, "asyncrun-%016llx%012llx",
           (unsigned long long)uv_hrtime(),
           (unsigned long long)(uintptr_t)ctype & 0xffffffffffffull);
  lua_newtable(L);
  int parts = lua_gettop(L);
  lua_Integer n = 0;
  for (int pass = 0; pass < 2; pass++) {
    int t = pass == 0 ? form : files;
    if (lua_isnil(L, t)) continue;
    lua_pushnil(L);
    while (lua_next(L, t)) {
      int key = lua_gettop(L) - 1;
      push_part(L, boundary, key, key + 1, pass == 1);
      size_t len;
      const char *part = lua_tolstring(L, -1, &len);
      /* A boundary that occurs in a part would cut it: never in practice
       * (it holds the time in ns), but checked. */
      if (memmem(part + 2 + strlen(boundary), len - 2 - strlen(boundary),
                 boundary, strlen(boundary)) != NULL)
        luaL_error(L, "form data contains the multipart boundary");
      lua_rawseti(L, parts, ++n);
      lua_pop(L, 1);
    }
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, parts, i);
    luaL_addvalue(&b);
  }
  luaL_addstring(&b, "--");
  luaL_addstring(&b, boundary);
  luaL_addstring(&b, "--\r\n");
  luaL_pushresult(&b);
  lua_replace(L, form);
  lua_settop(L, form);
  snprintf(ctype, size, "multipart/form-data; boundary=%s", boundary);
}

/* ---- requests --------------------------------------------------------------
 */

static int request_gc(lua_State *L) {
  request_t *r = lua_touserdata(L, 1);
  ar__http_abort(&r->req);
  ar__http_req_release(&r->req);
  free(r->url);
  r->url = r->host_key = NULL;
  return 0;
}

static void req_done_cb(ar__http_req_t *req) {
  request_t *r = ar__container_of(req, request_t, req);
  ar__task_wake(r->task, 0);
}

static int req_cancel(ar__task_t *t, void *data) {
  (void)t;
  request_t *r = data;
  ar__http_abort(&r->req);
  return AR__CANCEL_DONE;
}

static const char *version_name(long v) {
  switch (v) {
  case CURL_HTTP_VERSION_1_0: return "1.0";
  case CURL_HTTP_VERSION_1_1: return "1.1";
  case CURL_HTTP_VERSION_2_0: return "2";
  case CURL_HTTP_VERSION_3: return "3";
  default: return "";
  }
}

static int is_space(char c) { return c == ' ' || c == '\t'; }

/* Pushes a table of the header block: lower-case names; a repeated header
 * has its values joined with ", " (as RFC 9110 allows for lists). */
static void push_headers(lua_State *L, const char *p, size_t len) {
  char lower[64];
  lua_createtable(L, 0, 8);
  int t = lua_gettop(L);
  const char *end = p + len;
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *next = eol ? eol + 1 : end;
    if (eol == NULL) eol = end;
    if (eol > p && eol[-1] == '\r') eol--;
    const char *colon = memchr(p, ':', (size_t)(eol - p));
    if (colon != NULL && colon > p && !is_space(*p) &&
        !(eol - p >= 5 && memcmp(p, "HTTP/", 5) == 0)) {
      const char *v = colon + 1, *ve = eol;
      while (v < ve && is_space(*v))
        v++;
      while (ve > v && is_space(ve[-1]))
        ve--;
      const char *ne = colon;
      while (ne > p && is_space(ne[-1]))
        ne--;
      size_t nlen = (size_t)(ne - p);
      if (nlen <= sizeof lower) {
        for (size_t i = 0; i < nlen; i++)
          lower[i] = (char)tolower((unsigned char)p[i]);
        lua_pushlstring(L, lower, nlen);
      } else {
        luaL_Buffer b;
        char *lc = luaL_buffinitsize(L, &b, nlen);
        for (size_t i = 0; i < nlen; i++)
          lc[i] = (char)tolower((unsigned char)p[i]);
        luaL_pushresultsize(&b, nlen);
      }
      lua_pushvalue(L, -1);
      if (lua_rawget(L, t) == LUA_TSTRING) {
        lua_pushliteral(L, ", ");
        lua_pushlstring(L, v, (size_t)(ve - v));
        lua_concat(L, 3);
      } else {
        lua_pop(L, 1);
        lua_pushlstring(L, v, (size_t)(ve - v));
      }
      lua_rawset(L, t);
    }
    p = next;
  }
}

static int request_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  request_t *r = lua_touserdata(L, (int)ctx);
  ar__http_req_t *req = &r->req;
  if (req->result != CURLE_OK) {
    if (req->result == CURLE_OUT_OF_MEMORY) {
      ar__http_req_release(req);
      return luaL_error(L, "not enough memory");
    }
    ar__error_push(L, ar__http_error_kind(req), "%s %s: %s", r->method, r->url,
                   ar__http_error_message(req));
    lua_pushstring(L, r->url);
    lua_setfield(L, -2, "url");
    lua_pushinteger(L, req->result);
    lua_setfield(L, -2, "curl_code");
    ar__http_req_release(req);
    return ar__error_throw(L);
  }
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, req->status);
  lua_setfield(L, -2, "status");
  push_headers(L, req->hdr_buf, req->hdr_size);
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, req->body_buf != NULL ? req->body_buf : "",
                  req->body_size);
  lua_setfield(L, -2, "body");
  lua_pushstring(L, req->final_url != NULL ? req->final_url : r->url);
  lua_setfield(L, -2, "url");
  lua_pushnumber(L, (lua_Number)(req->done_ns - req->start_ns) / 1e9);
  lua_setfield(L, -2, "elapsed");
  lua_pushstring(L, version_name(req->http_version));
  lua_setfield(L, -2, "http_version");
  luaL_setmetatable(L, RESPONSE_MT);
  ar__http_req_release(req);
  return 1;
}

/* Validates and upper-cases a method name into buf. */
static void set_method(lua_State *L, request_t *r, const char *m) {
  size_t len = strlen(m);
  if (len == 0 || len >= sizeof r->method)
    luaL_error(L, "bad option 'method' ('%s' is not an HTTP method)", m);
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)m[i];
    if (!isalpha(c) && c != '-' && c != '_')
      luaL_error(L, "bad option 'method' ('%s' is not an HTTP method)", m);
    r->method[i] = (char)toupper(c);
  }
  r->method[len] = '\0';
}

/* The common request: session at sidx, URL string at uidx (0: opts.url),
 * options table at opts (0: none). Runs in a task; suspends until the
 * response is in and returns it, or raises the transport error. */
static int do_request(lua_State *L, int sidx, int uidx, int opts,
                      const char *method, const char *what) {
  ar__task_t *t = ar__task_check_current(L, what);
  session_t *S = lua_touserdata(L, sidx);
  ar__http_t *H = multi_get(L); /* before the request: see http.h */

  request_t *r = lua_newuserdatauv(L, sizeof *r, 2);
  int ridx = lua_gettop(L);
  memset(r, 0, sizeof *r);
  ar__http_req_init(&r->req);
  luaL_setmetatable(L, REQUEST_MT);
  lua_pushvalue(L, sidx);
  lua_setiuservalue(L, ridx, 2);
  ar__http_req_t *req = &r->req;

  const char *m = opt_string(L, opts, "method");
  set_method(L, r, m != NULL ? m : method);
  lua_pop(L, 1);
  req->method = r->method;

  /* The URL: resolved against the base, with the query appended. */
  const char *url;
  if (uidx != 0) {
    url = lua_tostring(L, uidx);
  } else if ((url = opt_string(L, opts, "url")) == NULL) {
    return luaL_error(L, "bad option 'url' (string expected, got nil)");
  }
  int top = lua_gettop(L);
  const char *query = NULL;
  if (opts != 0 && lua_getfield(L, opts, "query") != LUA_TNIL) {
    if (lua_type(L, -1) == LUA_TSTRING) {
      query = lua_tostring(L, -1);
    } else {
      luaL_checktype(L, -1, LUA_TTABLE);
      push_query(L, lua_gettop(L));
      query = lua_tostring(L, -1);
    }
  }
  lua_getiuservalue(L, sidx, 1);
  const char *base = lua_tostring(L, -1);
  const char *err;
  if (ar__http_url(base, url, query, &r->url, &r->host_key, &err) != 0)
    return ar__error_raise(L, "invalid_url", "%s: %s", url, err);
  req->url = r->url;
  lua_settop(L, top);
  if (uidx == 0) lua_pop(L, 1);

  /* The body: a string, a value encoded as JSON, or a form. */
  int has_json = 0;
  const char *body_type = NULL; /* the Content-Type a form body needs */
  if (opts != 0) {
    if (lua_getfield(L, opts, "json") != LUA_TNIL) {
      ar__json_encode(L, -1);
      lua_remove(L, -2);
      has_json = 1;
    } else {
      lua_pop(L, 1);
      if (lua_getfield(L, opts, "body") != LUA_TNIL &&
          lua_type(L, -1) != LUA_TSTRING)
        return luaL_error(L, "bad option 'body' (string expected, got %s)",
                          luaL_typename(L, -1));
      if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        push_form_body(L, opts, r->ctype, sizeof r->ctype);
        if (r->ctype[0] != '\0') body_type = r->ctype;
      }
    }
    if (lua_isstring(L, -1)) req->body = lua_tolstring(L, -1, &req->body_len);
    lua_setiuservalue(L, ridx, 1);
  }

  /* Headers: the session's, unless the request adds its own. */
  req->headers = req->body != NULL ? S->body_headers : S->headers;
  int hdrs = 0;
  if (opts != 0 && lua_getfield(L, opts, "headers") != LUA_TNIL) {
    luaL_checktype(L, -1, LUA_TTABLE);
    hdrs = lua_gettop(L);
  }
  if (hdrs != 0 || has_json || body_type != NULL) {
    lua_newtable(L);
    int lines = lua_gettop(L);
    lua_getiuservalue(L, sidx, 2);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, lines);
    }
    lua_pop(L, 1);
    if (hdrs != 0) collect_headers(L, hdrs, lines);
    if (has_json || body_type != NULL) {
      if (lua_getfield(L, lines, "content-type") == LUA_TNIL) {
        lua_pushfstring(L, "Content-Type: %s",
                        has_json ? "application/json" : body_type);
        lua_setfield(L, lines, "content-type");
      }
      lua_pop(L, 1);
    }
    req->headers = build_headers(L, lines, req->body != NULL);
    req->headers_owned = 1;
  }
  req->jar = S->jar;
  /* The proxy string stays alive in the session, which the request
   * anchors. */
  lua_getiuservalue(L, sidx, 3);
  req->proxy = lua_tostring(L, -1);
  lua_pop(L, 1);
  req->timeout = opt_seconds(L, opts, "timeout", S->timeout);
  req->connect_timeout =
      opt_seconds(L, opts, "connect_timeout", S->connect_timeout);
  req->max_redirects =
      (long)opt_count(L, opts, "max_redirects", S->max_redirects);
  lua_Integer mb = opt_count(L, opts, "max_body", (lua_Integer)S->max_body);
  req->max_body = (uint64_t)mb > SIZE_MAX ? SIZE_MAX : (size_t)mb;
  req->verify_tls = (uint8_t)opt_bool(L, opts, "verify_tls", S->verify_tls);

  lua_settop(L, ridx);
  r->task = t;
  req->done_cb = req_done_cb;
  if (ar__http_submit(H, &S->limit, r->host_key, req) != 0)
    return luaL_error(L, "not enough memory");
  return ar__task_suspend(L, t, req_cancel, r, request_k, ridx);
}

/* get and post, on a session (self at 1, the URL at 2) or on the default
 * session (the URL at 1): the same checks, then do_request. */
static int url_request(lua_State *L, int on_session, const char *method,
                       const char *name) {
  int url = on_session ? 2 : 1, sidx = 1;
  if (on_session) check_session(L, 1);
  luaL_checktype(L, url, LUA_TSTRING);
  int opts = check_opts(L, url + 1);
  lua_settop(L, url + 1);
  if (!on_session) {
    push_default_session(L);
    sidx = 3;
  }
  return do_request(L, sidx, url, opts, method, name);
}

/* http.get(url, opts), http.post(url, opts), http.request(opts): the
 * default session's. */
static int l_get(lua_State *L) { return url_request(L, 0, "GET", "http.get"); }
static int l_post(lua_State *L) {
  return url_request(L, 0, "POST", "http.post");
}

static int l_request(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  push_default_session(L);
  return do_request(L, 2, 0, 1, "GET", "http.request");
}

/* s:get(url, opts), s:post(url, opts), s:request(opts) */
static int s_get(lua_State *L) {
  return url_request(L, 1, "GET", "session:get");
}
static int s_post(lua_State *L) {
  return url_request(L, 1, "POST", "session:post");
}

static int s_request(lua_State *L) {
  check_session(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  return do_request(L, 1, 0, 2, "GET", "session:request");
}

static int session_tostring(lua_State *L) {
  session_t *S = check_session(L, 1);
  lua_pushfstring(L, "http session (%d active, %d waiting)", S->limit.active,
                  S->limit.queued);
  return 1;
}

/* __index: the methods (upvalue 1) first, as s:get(url) is the common
 * case; then s.active and s.waiting, how many requests run and wait under
 * the session's limits. */
static int session_index(lua_State *L) {
  lua_settop(L, 2);
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
  session_t *S = check_session(L, 1);
  const char *k = lua_tostring(L, 2);
  if (k != NULL && strcmp(k, "active") == 0) {
    lua_pushinteger(L, S->limit.active);
    return 1;
  }
  if (k != NULL && strcmp(k, "waiting") == 0) {
    lua_pushinteger(L, S->limit.queued);
    return 1;
  }
  lua_pushnil(L);
  return 1;
}

/* ---- responses
 * ---------------------------------------------------------------- */

static int resp_ok(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "status");
  lua_Integer st = lua_tointeger(L, -1);
  lua_pushboolean(L, st >= 200 && st < 300);
  return 1;
}

/* resp:raise_for_status(): the response itself for a status below 400,
 * else raises kind "http_status" with the status and URL. */
static int resp_raise_for_status(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_getfield(L, 1, "status");
  lua_getfield(L, 1, "url");
  lua_Integer st = lua_tointeger(L, 2);
  if (st < 400) {
    lua_settop(L, 1);
    return 1;
  }
  const char *url = lua_tostring(L, 3);
  ar__error_push(L, "http_status", "%s: HTTP status %I (%s error)",
                 url ? url : "?", st, st < 500 ? "client" : "server");
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, "status");
  lua_pushvalue(L, 3);
  lua_setfield(L, -2, "url");
  return ar__error_throw(L);
}

/* resp:json(): the body decoded by async.json; a body that is not JSON
 * raises kind "json" naming the URL, the status, the content type and the
 * position, as an HTML error page is the usual reason. */
static int resp_json(lua_State *L) {
  size_t len;
  ar__json_error_t err;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  if (lua_getfield(L, 1, "body") != LUA_TSTRING)
    return luaL_error(L, "response has no body string");
  const char *body = lua_tolstring(L, 2, &len);
  if (ar__json_decode(L, body, len, &err) == 0) return 1;
  lua_getfield(L, 1, "url");
  lua_getfield(L, 1, "status");
  lua_getfield(L, 1, "headers");
  const char *ctype = NULL;
  if (lua_istable(L, -1) && lua_getfield(L, -1, "content-type") == LUA_TSTRING)
    ctype = lua_tostring(L, -1);
  const char *url = lua_tostring(L, 3);
  ar__error_push(L, "json",
                 "%s: status %I, content-type %s: invalid JSON at "
                 "position %I: %s",
                 url ? url : "?", (lua_Integer)lua_tointeger(L, 4),
                 ctype ? ctype : "(none)", (lua_Integer)err.position,
                 err.message);
  lua_pushinteger(L, (lua_Integer)err.position);
  lua_setfield(L, -2, "position");
  lua_pushvalue(L, 3);
  lua_setfield(L, -2, "url");
  lua_pushvalue(L, 4);
  lua_setfield(L, -2, "status");
  return ar__error_throw(L);
}

/* ---- stats and the module
 * -------------------------------------------------------- */

/* http.stats() -> {active, sockets, pooled, handles, owned, stale,
 * multi_errors}: what the tests use to show nothing is left behind and the
 * socket invariant holds (stale is always 0). */
static int l_stats(lua_State *L) {
  ar__http_stats_t st;
  ar__http_stats(multi_peek(L), &st);
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, st.active);
  lua_setfield(L, -2, "active");
  lua_pushinteger(L, st.sockets);
  lua_setfield(L, -2, "sockets");
  lua_pushinteger(L, st.pooled);
  lua_setfield(L, -2, "pooled");
  lua_pushinteger(L, st.handles);
  lua_setfield(L, -2, "handles");
  lua_pushinteger(L, st.owned);
  lua_setfield(L, -2, "owned");
  lua_pushinteger(L, st.stale + st.violations);
  lua_setfield(L, -2, "stale");
  lua_pushinteger(L, st.unannounced);
  lua_setfield(L, -2, "unannounced");
  lua_pushinteger(L, st.multi_errors);
  lua_setfield(L, -2, "multi_errors");
  lua_pushinteger(L, (lua_Integer)st.resent);
  lua_setfield(L, -2, "resent");
  return 1;
}

int luaopen_async_http(lua_State *L) {
  static const luaL_Reg funcs[] = {{"get", l_get},
                                   {"post", l_post},
                                   {"request", l_request},
                                   {"session", l_session},
                                   {"stats", l_stats},
                                   {"serve", ar__http_serve},
                                   {NULL, NULL}};
  static const luaL_Reg session_methods[] = {
      {"get", s_get}, {"post", s_post}, {"request", s_request}, {NULL, NULL}};
  static const luaL_Reg response_methods[] = {
      {"json", resp_json},
      {"ok", resp_ok},
      {"raise_for_status", resp_raise_for_status},
      {NULL, NULL}};

  luaL_newmetatable(L, REQUEST_MT);
  lua_pushcfunction(L, request_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);

  luaL_newmetatable(L, SESSION_MT);
  lua_newtable(L);
  luaL_setfuncs(L, session_methods, 0);
  lua_pushcclosure(L, session_index, 1);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, session_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, session_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);

  luaL_newmetatable(L, RESPONSE_MT);
  lua_newtable(L);
  luaL_setfuncs(L, response_methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);

  lua_newtable(L);
  luaL_setfuncs(L, funcs, 0);
  return 1;
}
