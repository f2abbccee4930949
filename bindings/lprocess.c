/* The "async.process" module: programs run without a shell, on uv_spawn.
 *
 * A process is a C record (proc_t) holding a uv_poll_t on the child's
 * pidfd (Linux 5.3 and later), started with posix_spawnp. It lives
 * until both its handle is closed (after the exit callback: the child is
 * reaped by then) and the Lua box that points at it is collected: refs
 * counts the two. The module keeps every record whose handle is open, so
 * that when the engine is freed it kills what still runs and lets the
 * exit callback reap it.
 *
 * Stopping a child: terminate() sends SIGTERM, and SIGKILL after the
 * grace period (opts.kill_grace, 2 s by default) if the child is still
 * there. A task cancelled in p:wait() or process.exec does that, and so
 * does a process box collected (or closed) while its child runs.
 *
 * exec runs the same machinery with its pipes read whole into their C
 * buffers (collect mode): the waiting task is woken once the child has
 * exited and both pipes have ended, or, after a timeout, once the killed
 * child has been reaped. The exit callback may come before or after the
 * pipes end; either order completes the same check. */
#define _GNU_SOURCE /* posix_spawn_file_actions_addchdir_np */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lstream.h"
#include "modules.h"
#include "toolkit.h"

#define PROC_MT "asyncrun.process"
#define EXEC_MT "asyncrun.process.exec"
#define DEFAULT_GRACE 2.0

extern char **environ;

typedef struct proc_s {
  union {
    uv_handle_t handle;
    uv_poll_t poll;       /* on the child's pidfd: readable once it exited */
    uv_process_t process; /* without pidfds: libuv's uv_spawn */
  } h;
  int pidfd; /* or -1 */
  ar_engine_t *E;
  ar__list_t node; /* in the module's list while the handle is open */
  int refs;        /* the open handle, and the box */
  int pid;
  uint8_t exited, terminating, timed_out, engine_closed, exec_cancelling;
  int64_t status;
  int term_signal;
  double grace;
  ar__list_t waiters; /* tasks in p:wait() */
  ar__timer_t kill_timer;
  /* exec */
  ar__task_t *exec_task;
  ar__timer_t timeout;
  double timeout_s;
  ar__stream_t *io[3]; /* exec's pipes; spawn's belong to their boxes */
} proc_t;

/* ---- per-engine state -------------------------------------------------- */

typedef struct {
  ar__list_t live;
  int pidfd_ok; /* pidfd_open works here (not under valgrind 3.19, say) */
} state_t;

static void state_close(ar_engine_t *E, void *data);
static const ar__module_t proc_module = {"async.process", sizeof(state_t), NULL,
                                         state_close, NULL};

static void proc_unref(proc_t *p) {
  if (--p->refs == 0) free(p);
}

/* ---- signals by name --------------------------------------------------- */

static const struct {
  const char *name;
  int num;
} signals[] = {
    {"SIGHUP", SIGHUP},   {"SIGINT", SIGINT},   {"SIGQUIT", SIGQUIT},
    {"SIGILL", SIGILL},   {"SIGABRT", SIGABRT}, {"SIGFPE", SIGFPE},
    {"SIGKILL", SIGKILL}, {"SIGSEGV", SIGSEGV}, {"SIGPIPE", SIGPIPE},
    {"SIGALRM", SIGALRM}, {"SIGTERM", SIGTERM}, {"SIGUSR1", SIGUSR1},
    {"SIGUSR2", SIGUSR2}, {"SIGCHLD", SIGCHLD}, {"SIGCONT", SIGCONT},
    {"SIGSTOP", SIGSTOP}, {"SIGTSTP", SIGTSTP}, {"SIGBUS", SIGBUS},
    {"SIGTRAP", SIGTRAP}, {"SIGXCPU", SIGXCPU}, {"SIGWINCH", SIGWINCH},
};

static void push_signal(lua_State *L, int num) {
  for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
    if (signals[i].num == num) {
      lua_pushstring(L, signals[i].name);
      return;
    }
  lua_pushinteger(L, num);
}

static int check_signal(lua_State *L, int arg) {
  if (lua_isnoneornil(L, arg)) return SIGTERM;
  if (lua_type(L, arg) == LUA_TNUMBER) {
    lua_Integer n = luaL_checkinteger(L, arg);
    if (n < 0 || n > 64) luaL_argerror(L, arg, "no such signal");
    return (int)n;
  }
  const char *name = luaL_checkstring(L, arg);
  for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
    if (strcmp(signals[i].name, name) == 0 ||
        strcmp(signals[i].name + 3, name) == 0)
      return signals[i].num;
  return luaL_argerror(L, arg, lua_pushfstring(L, "unknown signal '%s'", name));
}

/* ---- the child's end --------------------------------------------------- */

static void close_io(proc_t *p) {
  for (int i = 0; i < 3; i++)
    if (p->io[i] != NULL) {
      ar__stream_close(p->io[i]);
      p->io[i] = NULL;
    }
}

static int io_ended(const ar__stream_t *s) { return s == NULL || s->rerr; }

/* Wakes exec's task when its wait is over. Kept: its continuation always
 * runs, so it is the one place that closes the pipes after a wake. */
static void exec_check(proc_t *p) {
  ar__task_t *t = p->exec_task;
  if (t == NULL || !p->exited) return;
  if (!p->timed_out && !(io_ended(p->io[1]) && io_ended(p->io[2]))) return;
  p->exec_task = NULL;
  ar__timer_stop(p->E, &p->timeout);
  ar__task_wake_kept(t, 0);
}

static void io_notify(ar__stream_t *s, void *data) {
  (void)s;
  exec_check(data);
}

static void handle_close_cb(uv_handle_t *h) {
  proc_t *p = h->data;
  if (p->pidfd >= 0) close(p->pidfd);
  ar__handle_closed(p->E);
  proc_unref(p);
}

/* The child has exited and been reaped. */
static void exited(proc_t *p, int64_t status, int term_signal) {
  p->exited = 1;
  p->status = status;
  p->term_signal = term_signal;
  if (!p->engine_closed) {
    ar__timer_stop(p->E, &p->kill_timer);
    ar__task_t *t;
    while ((t = ar__waiters_shift(&p->waiters)) != NULL)
      ar__task_wake(t, 0);
    exec_check(p);
  }
  ar__list_remove(&p->node);
  uv_close(&p->h.handle, handle_close_cb);
}

static void process_exit_cb(uv_process_t *h, int64_t status, int term_signal) {
  exited(h->data, status, term_signal);
}

/* The pidfd is readable: the child has exited. Reap it (only this pid:
 * libuv's own SIGCHLD handling waits for its own children by pid too). */
static void exit_cb(uv_poll_t *h, int status, int events) {
  (void)status;
  (void)events;
  proc_t *p = h->data;
  siginfo_t si;
  memset(&si, 0, sizeof si);
  int rc;
  do
    rc = waitid(P_PID, (id_t)p->pid, &si, WEXITED | WNOHANG);
  while (rc == -1 && errno == EINTR);
  if (rc == 0 && si.si_pid == 0) return; /* not yet */
  uv_poll_stop(&p->h.poll);
  if (rc == 0 && si.si_code == CLD_EXITED)
    exited(p, si.si_status, 0);
  else if (rc == 0)
    exited(p, 0, si.si_status);
  else /* reaped by someone else (SIGCHLD ignored, say): status lost */
    exited(p, -1, 0);
}

static void kill_timer_cb(ar__timer_t *tm) {
  proc_t *p = ar__container_of(tm, proc_t, kill_timer);
  if (!p->exited) uv_kill(p->pid, SIGKILL);
}

/* SIGTERM now, SIGKILL after the grace period. Never calls Lua. */
static void terminate(proc_t *p) {
  if (p->exited || p->terminating) return;
  p->terminating = 1;
  if (p->grace <= 0 ||
      ar__timer_start(p->E, &p->kill_timer, p->grace, kill_timer_cb) != 0) {
    uv_kill(p->pid, SIGKILL);
    return;
  }
  uv_kill(p->pid, SIGTERM);
}

/* The engine is being freed: every task has ended. Kill what still runs;
 * the exit callback reaps it and closes the handle. */
static void state_close(ar_engine_t *E, void *data) {
  state_t *st = data;
  /* Unlinked: the state is freed after this hook, the records are not. */
  while (!ar__list_empty(&st->live)) {
    proc_t *p = ar__container_of(st->live.next, proc_t, node);
    ar__list_remove(&p->node);
    p->engine_closed = 1;
    ar__timer_stop(E, &p->kill_timer);
    ar__timer_stop(E, &p->timeout);
    p->exec_task = NULL;
    close_io(p);
    if (!p->exited) uv_kill(p->pid, SIGKILL);
  }
}

/* ---- options ----------------------------------------------------------- */

enum { IO_PIPE, IO_INHERIT, IO_IGNORE, IO_STRING };

typedef struct {
  const char *cwd;
  double grace, timeout;
  int io[3];
  const char *input; /* exec's stdin string */
  size_t input_len;
} opts_t;

static double opt_seconds(lua_State *L, int opts, const char *name,
                          double def) {
  double v = def;
  if (lua_getfield(L, opts, name) != LUA_TNIL) {
    int isnum;
    v = (double)lua_tonumberx(L, -1, &isnum);
    if (!isnum || !(v >= 0))
      luaL_error(L,
                 "bad option '%s' (a number of seconds >= 0 expected, got %s)",
                 name, isnum ? lua_tostring(L, -1) : luaL_typename(L, -1));
  }
  lua_pop(L, 1);
  return v;
}

static int opt_io(lua_State *L, int opts, int fd, int def, opts_t *o) {
  static const char *const names[] = {"stdin", "stdout", "stderr"};
  int v = def;
  int ty = lua_getfield(L, opts, names[fd]);
  if (ty == LUA_TSTRING) {
    const char *s = lua_tostring(L, -1);
    if (strcmp(s, "pipe") == 0)
      v = IO_PIPE;
    else if (strcmp(s, "inherit") == 0)
      v = IO_INHERIT;
    else if (strcmp(s, "ignore") == 0)
      v = IO_IGNORE;
    else if (fd == 0 && o != NULL) {
      v = IO_STRING;
      o->input = lua_tolstring(L, -1, &o->input_len);
    } else
      luaL_error(L,
                 "bad option '%s' (\"pipe\", \"inherit\" or \"ignore\" "
                 "expected, got \"%s\")",
                 names[fd], s);
  } else if (ty != LUA_TNIL) {
    luaL_error(L, "bad option '%s' (string expected, got %s)", names[fd],
               luaL_typename(L, -1));
  }
  /* A string input stays referenced by opts, which the caller's stack
   * holds, so popping it here is safe. */
  lua_pop(L, 1);
  return v;
}

/* Pushes the NULL-terminated argv array (a userdata; its strings are
 * argv's, which the caller's stack keeps alive) and returns it. */
static char **check_argv(lua_State *L, int idx) {
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_Integer n = luaL_len(L, idx);
  if (n < 1) luaL_argerror(L, idx, "a list with the program first expected");
  if (n > 65536) luaL_argerror(L, idx, "too many arguments");
  char **argv = lua_newuserdatauv(L, (size_t)(n + 1) * sizeof *argv, 0);
  for (lua_Integer i = 1; i <= n; i++) {
    int ty = lua_rawgeti(L, idx, i);
    if (ty != LUA_TSTRING && ty != LUA_TNUMBER)
      luaL_error(L, "bad argument #%d to 'process' (argv[%d] is a %s)", idx,
                 (int)i, luaL_typename(L, -1));
    lua_tostring(L, -1); /* numbers become strings in place */
    lua_rawseti(L, idx, i);
    lua_rawgeti(L, idx, i);
    argv[i - 1] = (char *)lua_tostring(L, -1);
    if (strlen(argv[i - 1]) != lua_rawlen(L, -1))
      luaL_error(L,
                 "bad argument #%d to 'process' (argv[%d] contains a zero "
                 "byte)",
                 idx, (int)i);
    lua_pop(L, 1);
  }
  argv[n] = NULL;
  return argv;
}

/* The child's environment from opts.env (and, with inherit_env, ours):
 * pushes a table holding the "NAME=value" strings and the array userdata;
 * returns the array, or NULL (inherit everything) when there is no env. */
static char **check_env(lua_State *L, int opts) {
  int ty = lua_getfield(L, opts, "env");
  if (ty == LUA_TNIL) {
    lua_pop(L, 1);
    return NULL;
  }
  if (ty != LUA_TTABLE)
    luaL_error(L, "bad option 'env' (table expected, got %s)",
               luaL_typename(L, -1));
  int env = lua_gettop(L);
  lua_getfield(L, opts, "inherit_env");
  int inherit = lua_toboolean(L, -1);
  lua_pop(L, 1);
  lua_newtable(L); /* the strings, 1..n */
  int strs = lua_gettop(L);
  int n = 0;
  if (inherit)
    for (char **e = environ; *e != NULL; e++) {
      const char *eq = strchr(*e, '=');
      if (eq == NULL) continue;
      lua_pushlstring(L, *e, (size_t)(eq - *e));
      int overridden = lua_rawget(L, env) != LUA_TNIL;
      lua_pop(L, 1);
      if (overridden) continue;
      lua_pushstring(L, *e);
      lua_rawseti(L, strs, ++n);
    }
  lua_pushnil(L);
  while (lua_next(L, env)) {
    if (lua_type(L, -2) != LUA_TSTRING)
      luaL_error(L, "bad option 'env' (names must be strings)");
    const char *name = lua_tostring(L, -2);
    if (*name == '\0' || strchr(name, '=') != NULL)
      luaL_error(L, "bad option 'env' (bad name '%s')", name);
    if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
      lua_pop(L, 1); /* false: left out */
      continue;
    }
    if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
      luaL_error(L, "bad option 'env' (value of '%s' must be a string)", name);
    lua_pushfstring(L, "%s=%s", name, lua_tostring(L, -1));
    lua_rawseti(L, strs, ++n);
    lua_pop(L, 1);
  }
  char **arr = lua_newuserdatauv(L, (size_t)(n + 1) * sizeof *arr, 0);
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, strs, i);
    arr[i - 1] = (char *)lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  arr[n] = NULL;
  return arr;
}

static void check_opts(lua_State *L, int opts, int exec, opts_t *o) {
  memset(o, 0, sizeof *o);
  o->grace = DEFAULT_GRACE;
  int def_in = exec ? IO_IGNORE : IO_PIPE;
  if (opts == 0) {
    o->io[0] = def_in;
    o->io[1] = o->io[2] = IO_PIPE;
    return;
  }
  if (lua_getfield(L, opts, "cwd") != LUA_TNIL) {
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "bad option 'cwd' (string expected, got %s)",
                 luaL_typename(L, -1));
    o->cwd = lua_tostring(L, -1); /* opts keeps it */
  }
  lua_pop(L, 1);
  o->grace = opt_seconds(L, opts, "kill_grace", DEFAULT_GRACE);
  if (exec) o->timeout = opt_seconds(L, opts, "timeout", 0);
  o->io[0] = opt_io(L, opts, 0, def_in, exec ? o : NULL);
  o->io[1] = opt_io(L, opts, 1, IO_PIPE, NULL);
  o->io[2] = opt_io(L, opts, 2, IO_PIPE, NULL);
}

/* ---- starting ---------------------------------------------------------- */

/* Starts the child with posix_spawnp: glibc runs it with vfork semantics
 * (the parent waits only for the exec, on the same CPU), which costs a
 * fraction of libuv's fork-then-wait under load. child[fd] is the
 * child's end of a pipe, or -1. Signals start at their defaults and
 * unblocked, as with uv_spawn. Returns 0 or a negative errno. */
static int spawn_child(char **argv, char **env, const opts_t *o,
                       const int child[3], int *pid) {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  sigset_t all, none;
  int rc = posix_spawn_file_actions_init(&fa);
  if (rc != 0) return -rc;
  if ((rc = posix_spawnattr_init(&attr)) != 0) {
    posix_spawn_file_actions_destroy(&fa);
    return -rc;
  }
  sigfillset(&all);
  sigemptyset(&none);
  rc = posix_spawnattr_setflags(&attr,
                                POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  if (rc == 0) rc = posix_spawnattr_setsigdefault(&attr, &all);
  if (rc == 0) rc = posix_spawnattr_setsigmask(&attr, &none);
  for (int fd = 0; fd < 3 && rc == 0; fd++) {
    if (child[fd] >= 0)
      rc = posix_spawn_file_actions_adddup2(&fa, child[fd], fd);
    else if (o->io[fd] == IO_IGNORE)
      rc = posix_spawn_file_actions_addopen(&fa, fd, "/dev/null",
                                            fd == 0 ? O_RDONLY : O_RDWR, 0);
  }
  if (rc == 0 && o->cwd != NULL)
    rc = posix_spawn_file_actions_addchdir_np(&fa, o->cwd);
  if (rc == 0)
    rc = posix_spawnp(pid, argv[0], &fa, &attr, argv,
                      env != NULL ? env : environ);
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&fa);
  return -rc;
}

static int open_pidfd(int pid) {
#ifdef SYS_pidfd_open
  return (int)syscall(SYS_pidfd_open, pid, 0);
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

/* A child we cannot watch: kill and reap it at once, return err. */
static int reap_now(int pid, int err) {
  kill(pid, SIGKILL);
  while (waitpid(pid, NULL, 0) == -1 && errno == EINTR) {
  }
  return err;
}

static int raise_spawn(lua_State *L, const char *prog, const char *cwd,
                       int err);
static void io_start(proc_t *p, int exec);

/* Where pidfds are missing: libuv's uv_spawn, over pipes it creates (the
 * streams in p->io are initialized, not open). Same contract as start. */
static proc_t *spawn_uv(lua_State *L, state_t *st, proc_t *p, char **argv,
                        char **env, const opts_t *o, int exec, proc_t **boxp) {
  ar_engine_t *E = p->E;
  uv_stdio_container_t stdio[3];
  for (int fd = 0; fd < 3; fd++) {
    if (p->io[fd] != NULL) {
      stdio[fd].flags =
          UV_CREATE_PIPE | (fd == 0 ? UV_READABLE_PIPE : UV_WRITABLE_PIPE);
      stdio[fd].data.stream = &p->io[fd]->u.stream;
    } else if (o->io[fd] == IO_INHERIT) {
      stdio[fd].flags = UV_INHERIT_FD;
      stdio[fd].data.fd = fd;
    } else {
      stdio[fd].flags = UV_IGNORE;
    }
  }
  uv_process_options_t po;
  memset(&po, 0, sizeof po);
  po.exit_cb = process_exit_cb;
  po.file = argv[0];
  po.args = argv;
  po.env = env;
  po.cwd = o->cwd;
  po.stdio_count = 3;
  po.stdio = stdio;
  p->h.handle.data = p;
  p->pidfd = -1;
  int rc = uv_spawn(ar_engine_loop(E), &p->h.process, &po);
  /* Either way the handle is initialized and must be closed. */
  ar__handle_opened(E);
  p->refs = 1;
  if (rc != 0) {
    close_io(p);
    uv_close(&p->h.handle, handle_close_cb);
    return (void)raise_spawn(L, argv[0], o->cwd, rc), NULL;
  }
  p->pid = p->h.process.pid;
  ar__list_insert_tail(&st->live, &p->node);
  p->refs = 2;
  *boxp = p;
  io_start(p, exec);
  return p;
}

/* Raises kind "spawn" naming the program and the errno. */
static int raise_spawn(lua_State *L, const char *prog, const char *cwd,
                       int err) {
  if (cwd != NULL)
    ar__error_push(L, "spawn", "cannot run '%s' in '%s': %s (%s)", prog, cwd,
                   uv_err_name(err), uv_strerror(err));
  else
    ar__error_push(L, "spawn", "cannot run '%s': %s (%s)", prog,
                   uv_err_name(err), uv_strerror(err));
  lua_pushstring(L, prog);
  lua_setfield(L, -2, "program");
  lua_pushstring(L, uv_err_name(err));
  lua_setfield(L, -2, "errno");
  return ar__error_throw(L);
}

/* Starts argv (at stack index 1) with the options at index opts (0: none)
 * into the record box *boxp (already on the stack). On success *boxp holds
 * a record with refs 2 and its pipes in p->io (owned by the caller).
 * Raises on failure, with everything created closed. */
static proc_t *proc_start(lua_State *L, int opts, int exec, opts_t *o,
                          proc_t **boxp) {
  ar_engine_t *E = ar__engine_of(L);
  char **argv = check_argv(L, 1);
  char **env = opts != 0 ? check_env(L, opts) : NULL;
  check_opts(L, opts, exec, o);
  state_t *st = ar__module_state(E, &proc_module);
  if (st == NULL) {
    if ((st = ar__module_open(E, &proc_module)) == NULL)
      luaL_error(L, "not enough memory");
    ar__list_init(&st->live);
    int fd = open_pidfd(getpid());
    st->pidfd_ok = fd >= 0;
    if (fd >= 0) close(fd);
  }
  proc_t *p = calloc(1, sizeof *p);
  if (p == NULL) luaL_error(L, "not enough memory");
  p->E = E;
  p->grace = o->grace;
  p->timeout_s = o->timeout;
  ar__list_init(&p->node);
  ar__list_init(&p->waiters);
  ar__timer_init(&p->kill_timer);
  ar__timer_init(&p->timeout);

  int child[3] = {-1, -1, -1}; /* the child's ends of the pipes */
  int rc = 0;
  for (int fd = 0; fd < 3 && rc == 0; fd++) {
    int mode = o->io[fd];
    if (mode != IO_PIPE && mode != IO_STRING) continue;
    int sv[2];
    if ((p->io[fd] = ar__stream_new(E, AR__STREAM_PIPE)) == NULL)
      rc = UV_ENOMEM;
    else if (!st->pidfd_ok) /* uv_spawn makes the pipes */
      continue;
    else if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
      rc = -errno;
    else if ((rc = uv_pipe_open(&p->io[fd]->u.pipe, sv[0])) != 0)
      close(sv[0]), close(sv[1]);
    else
      child[fd] = sv[1];
  }
  int pid = 0, pidfd = -1;
  if (!st->pidfd_ok) {
    for (int fd = 0; fd < 3; fd++)
      if (child[fd] >= 0) close(child[fd]);
    if (rc == 0) return spawn_uv(L, st, p, argv, env, o, exec, boxp);
    close_io(p);
    free(p);
    return (void)raise_spawn(L, argv[0], o->cwd, rc), NULL;
  }
  if (rc == 0) rc = spawn_child(argv, env, o, child, &pid);
  for (int fd = 0; fd < 3; fd++)
    if (child[fd] >= 0) close(child[fd]);
  if (rc == 0 && (pidfd = open_pidfd(pid)) < 0) rc = reap_now(pid, -errno);
  if (rc == 0 &&
      (rc = uv_poll_init(ar_engine_loop(E), &p->h.poll, pidfd)) != 0) {
    close(pidfd);
    rc = reap_now(pid, rc);
  }
  if (rc != 0) {
    close_io(p);
    free(p);
    return (void)raise_spawn(L, argv[0], o->cwd, rc), NULL;
  }
  /* From here on the record is the poll handle's until its close. */
  ar__handle_opened(E);
  p->h.handle.data = p;
  p->pidfd = pidfd;
  p->pid = pid;
  p->refs = 1;
  uv_poll_start(&p->h.poll, UV_READABLE, exit_cb);
  ar__list_insert_tail(&st->live, &p->node);
  p->refs = 2;
  *boxp = p;
  io_start(p, exec);
  return p;
}

/* Starts reading the child's output; exec collects all of it. */
static void io_start(proc_t *p, int exec) {
  for (int fd = 1; fd < 3; fd++)
    if (p->io[fd] != NULL) {
      if (exec) {
        p->io[fd]->collect = 1;
        p->io[fd]->notify = io_notify;
        p->io[fd]->notify_data = p;
      }
      ar__stream_start(p->io[fd]);
    }
}

static proc_t **newbox(lua_State *L, const char *mt, int nuv) {
  proc_t **box = lua_newuserdatauv(L, sizeof *box, nuv);
  *box = NULL;
  luaL_setmetatable(L, mt);
  return box;
}

/* Lets go of the record: stops a child still running, closes exec's
 * pipes. From __gc, __close and exec's end; never calls Lua. */
static void release(proc_t **box) {
  proc_t *p = *box;
  if (p == NULL) return;
  *box = NULL;
  if (!p->engine_closed) {
    if (ar__timer_active(&p->timeout)) ar__timer_stop(p->E, &p->timeout);
    terminate(p);
  }
  close_io(p);
  proc_unref(p);
}

/* ---- exec -------------------------------------------------------------- */

static void exec_timeout_cb(ar__timer_t *tm) {
  proc_t *p = ar__container_of(tm, proc_t, timeout);
  p->timed_out = 1;
  if (!p->exited) uv_kill(p->pid, SIGKILL);
  exec_check(p); /* if it had exited already, waiting only for its pipes */
}

/* A cancelled exec stops the child and waits until it is gone (the
 * exit callback then wakes the task, which raises "cancelled"), so that
 * after a cancellation no child of it is left. Called again if the task
 * is closed by force meanwhile: then it lets go at once, and the child is
 * still stopped and reaped, without anybody waiting. */
static int exec_cancel(ar__task_t *t, void *data) {
  (void)t;
  proc_t *p = data;
  ar__timer_stop(p->E, &p->timeout);
  close_io(p);
  if (p->exec_cancelling || p->exited) {
    p->exec_task = NULL;
    return AR__CANCEL_DONE;
  }
  p->exec_cancelling = 1;
  terminate(p);
  return AR__CANCEL_WAIT;
}

static void push_output(lua_State *L, const ar__stream_t *s) {
  if (s == NULL)
    lua_pushnil(L);
  else
    lua_pushlstring(L, s->len ? s->buf + s->head : "", s->len);
}

static void push_status(lua_State *L, const proc_t *p) {
  if (p->term_signal != 0)
    lua_pushnil(L);
  else
    lua_pushinteger(L, (lua_Integer)p->status);
  if (p->term_signal != 0)
    push_signal(L, p->term_signal);
  else
    lua_pushnil(L);
}

/* Stack: argv, opts, (env...), box at ctx. */
static int exec_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  proc_t **box = lua_touserdata(L, (int)ctx);
  proc_t *p = *box;
  if (ar__task_cancelling(L)) { /* the child is gone */
    release(box);
    return ar__task_raise_cancelled(L);
  }
  if (p->timed_out) {
    lua_rawgeti(L, 1, 1);
    const char *prog = lua_tostring(L, -1);
    double secs = p->timeout_s;
    release(box);
    ar__error_push(L, "timeout", "'%s' timed out after %f s and was killed",
                   prog, secs);
    lua_pushstring(L, prog);
    lua_setfield(L, -2, "program");
    return ar__error_throw(L);
  }
  lua_createtable(L, 0, 4);
  push_status(L, p);
  lua_setfield(L, -3, "signal");
  lua_setfield(L, -2, "code");
  push_output(L, p->io[1]);
  lua_setfield(L, -2, "stdout");
  push_output(L, p->io[2]);
  lua_setfield(L, -2, "stderr");
  release(box);
  return 1;
}

/* process.exec(argv [, opts]) -> {code=, signal=, stdout=, stderr=} */
static int l_exec(lua_State *L) {
  int opts = 0;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    opts = 2;
  }
  lua_settop(L, 2);
  ar__task_t *t = ar__task_check_suspendable(L, "process.exec");
  proc_t **box = newbox(L, EXEC_MT, 0);
  int boxidx = lua_gettop(L);
  opts_t o;
  proc_t *p = proc_start(L, opts, 1, &o, box);
  if (o.io[0] == IO_STRING &&
      ar__stream_send_and_shutdown(p->io[0], o.input, o.input_len) != 0) {
    /* The child may have exited already: its input is of no interest. */
    ar__stream_close(p->io[0]);
    p->io[0] = NULL;
  }
  if (o.timeout > 0 &&
      ar__timer_start(p->E, &p->timeout, o.timeout, exec_timeout_cb) != 0)
    luaL_error(L, "not enough memory"); /* the box's __gc stops the child */
  p->exec_task = t;
  exec_check(p); /* nothing to wait for if it exited already (never yet) */
  if (p->exec_task == NULL) return exec_k(L, LUA_OK, boxidx);
  return ar__task_suspend(L, t, exec_cancel, p, exec_k, boxidx);
}

static int exec_gc(lua_State *L) {
  release(lua_touserdata(L, 1));
  return 0;
}

/* ---- spawn ------------------------------------------------------------- */

static proc_t **check_proc(lua_State *L) {
  return luaL_checkudata(L, 1, PROC_MT);
}

/* process.spawn(argv [, opts]) -> process */
static int l_spawn(lua_State *L) {
  int opts = 0;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    opts = 2;
  }
  lua_settop(L, 2);
  proc_t **box = newbox(L, PROC_MT, 3);
  int boxidx = lua_gettop(L);
  /* The stream boxes first, while a memory error costs nothing. */
  ar__stream_t **sbox[3];
  for (int fd = 0; fd < 3; fd++) {
    sbox[fd] = ar__stream_newbox(L);
    lua_setiuservalue(L, boxidx, fd + 1);
  }
  opts_t o;
  proc_t *p = proc_start(L, opts, 0, &o, box);
  for (int fd = 0; fd < 3; fd++) {
    if (p->io[fd] != NULL) {
      ar__stream_bind(sbox[fd], p->io[fd]);
      p->io[fd] = NULL; /* the box owns it now */
    } else {
      lua_pushnil(L);
      lua_setiuservalue(L, boxidx, fd + 1);
    }
  }
  lua_settop(L, boxidx);
  return 1;
}

/* One task's wait in p:wait(), on its stack (index 2). */
typedef struct {
  proc_t *p;
  int cancelling;
} wait_t;

/* As exec_cancel: stop the child, wait until it is gone; let go at once
 * when called again (the task closed by force). */
static int wait_cancel(ar__task_t *t, void *data) {
  wait_t *w = data;
  if (w->cancelling) return ar__waiters_cancel(t, NULL);
  w->cancelling = 1;
  terminate(w->p);
  return AR__CANCEL_WAIT;
}

static int wait_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  if (status == LUA_YIELD && ar__task_cancelling(L))
    return ar__task_raise_cancelled(L);
  proc_t *p = *check_proc(L);
  push_status(L, p);
  return 2;
}

/* p:wait() -> code, signal: the exit status (nil if a signal ended it)
 * and the signal's name (nil if it exited). */
static int p_wait(lua_State *L) {
  proc_t *p = *check_proc(L);
  lua_settop(L, 1);
  if (p->exited) return wait_k(L, LUA_OK, 0);
  ar__task_t *t = ar__task_check_suspendable(L, "process:wait");
  wait_t *w = lua_newuserdatauv(L, sizeof *w, 0);
  w->p = p;
  w->cancelling = 0;
  ar__waiters_push(&p->waiters, t);
  return ar__task_suspend(L, t, wait_cancel, w, wait_k, 0);
}

/* p:kill([sig]) -> true if the signal was sent, false if the child had
 * already exited. sig: a name ("SIGTERM", "TERM") or a number. */
static int p_kill(lua_State *L) {
  proc_t *p = *check_proc(L);
  int sig = check_signal(L, 2);
  if (p == NULL || p->exited) {
    lua_pushboolean(L, 0);
    return 1;
  }
  int rc = uv_kill(p->pid, sig);
  if (rc == UV_ESRCH) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (rc != 0) return ar__stream_raise(L, "io", rc, "process:kill");
  lua_pushboolean(L, 1);
  return 1;
}

static void close_stream_uv(lua_State *L, int box, int n) {
  if (lua_getiuservalue(L, box, n) == LUA_TUSERDATA) {
    ar__stream_t **sb = lua_touserdata(L, -1);
    if (*sb != NULL) ar__stream_close(*sb);
  }
  lua_pop(L, 1);
}

/* p:close(): closes the pipes and, if the child still runs, stops it
 * (SIGTERM, then SIGKILL after the grace period). Also __close. The
 * child is reaped when it exits, whether or not p is kept; p:wait() and
 * p.pid go on working. */
static int p_close(lua_State *L) {
  proc_t *p = *check_proc(L);
  for (int n = 1; n <= 3; n++)
    close_stream_uv(L, 1, n);
  if (p != NULL && !p->engine_closed) terminate(p);
  return 0;
}

static int p_gc(lua_State *L) {
  release(lua_touserdata(L, 1));
  return 0;
}

static int p_index(lua_State *L) {
  proc_t *p = *check_proc(L);
  const char *k = lua_tostring(L, 2);
  static const char *const io[] = {"stdin", "stdout", "stderr"};
  if (k != NULL) {
    for (int i = 0; i < 3; i++)
      if (strcmp(k, io[i]) == 0) {
        lua_getiuservalue(L, 1, i + 1);
        return 1;
      }
    if (strcmp(k, "pid") == 0) {
      if (p != NULL)
        lua_pushinteger(L, p->pid);
      else
        lua_pushnil(L);
      return 1;
    }
    if (strcmp(k, "exited") == 0) {
      lua_pushboolean(L, p == NULL || p->exited);
      return 1;
    }
  }
  return ar__index_method(L);
}

static int p_tostring(lua_State *L) {
  proc_t *p = *check_proc(L);
  if (p == NULL)
    lua_pushliteral(L, "process (closed)");
  else
    lua_pushfstring(L, "process %d (%s)", p->pid,
                    p->exited ? "exited" : "running");
  return 1;
}

int luaopen_async_process(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"wait", p_wait}, {"kill", p_kill}, {"close", p_close}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {
      {"exec", l_exec}, {"spawn", l_spawn}, {NULL, NULL}};
  ar__stream_open(L);
  static const luaL_Reg meta[] = {{"__index", p_index},
                                  {"__close", p_close},
                                  {"__gc", p_gc},
                                  {"__tostring", p_tostring},
                                  {NULL, NULL}};
  ar__class_new(L, PROC_MT, methods, meta);
  if (luaL_newmetatable(L, EXEC_MT)) {
    lua_pushcfunction(L, exec_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
