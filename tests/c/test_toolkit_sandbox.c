/* The toolkit in a sandboxed engine: with every standard library denied
 * but the base one, each tool still works (none of them may lean on math,
 * table or string behind the script's back). */
#include <stdio.h>

#include "asyncrun.h"

static const char script[] =
    "local async = require 'async'\n"
    "assert(math == nil and table == nil and string == nil)\n"
    "local n = 0\n"
    "assert(async.retry(function() n = n + 1 if n < 3 then error('x') end\n"
    "  return n end, { delay = 0.001, jitter = 0.5 }) == 3)\n"
    "local ok, err = pcall(async.retry, function() error('down') end,\n"
    "  { retries = 1, delay = 0 })\n"
    "assert(not ok and err.kind == 'failed' and err.attempts == 2)\n"
    "local q = async.queue(2)\n"
    "local c = async.spawn(function() local s = 0 while true do\n"
    "  local v = q:get() if v == nil then return s end s = s + v end end)\n"
    "for i = 1, 10 do q:put(i) end q:close()\n"
    "assert(c:await() == 55)\n"
    "local r = async.map(function(x) async.sleep(0) return x * 2 end, { 1, 2, "
    "3 })\n"
    "assert(r[3] == 6 and r.n == 3)\n"
    "local s, e, l = async.semaphore(1), async.event(), async.lock()\n"
    "assert(s:with(function() return l:with(function() return 1 end) end) == "
    "1)\n"
    "e:set() assert(e:wait())\n"
    "local rl = async.rate_limiter(2, 0.01)\n"
    "for i = 1, 4 do rl:acquire() end\n"
    "assert(async.group(function(g) g:spawn(async.sleep, 0) return 'ok' end) "
    "== 'ok')\n";

int main(void) {
  ar_config_t *cfg = ar_config_new();
  if (cfg == NULL || ar_config_deny(cfg, "*") != 0 ||
      ar_config_allow(cfg, "async") != 0) {
    fprintf(stderr, "config failed\n");
    return 1;
  }
  ar_engine_t *E = ar_engine_new(cfg);
  ar_config_free(cfg);
  if (E == NULL) {
    fprintf(stderr, "engine creation failed\n");
    return 1;
  }
  int rc = ar_engine_run_string(E, script, "=sandbox");
  if (rc != 0) {
    fprintf(stderr, "sandboxed toolkit script failed: %s\n",
            ar_engine_error(E));
    ar_engine_free(E);
    printf("0 passed, 1 failed\n");
    return 1;
  }
  ar_engine_free(E);
  printf("1 passed, 0 failed\n");
  return 0;
}
