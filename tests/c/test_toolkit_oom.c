/* Out of memory inside the toolkit: runs a script that uses every tool
 * (queue growth, semaphores, events, groups, map, limiter, retry) under a
 * memory cap that grows from "almost nothing left" to "enough", so that
 * allocations fail at every step of it in turn. Each run must end with a
 * status (never a crash; the sanitizer build checks for leaks and bad
 * accesses), and the last must succeed. */
#include <stdio.h>
#include <string.h>

#include "asyncrun.h"

static const char script[] =
    "local async = require 'async'\n"
    "local q = async.queue()\n"
    "for i = 1, 200 do q:put(i) end\n"
    "for i = 1, 200 do assert(q:get() == i) end\n"
    "local bq = async.queue(2)\n"
    "local c = async.spawn(function() local n = 0 while true do\n"
    "  local v = bq:get() if v == nil then return n end n = n + v end end)\n"
    "for i = 1, 50 do bq:put(i) end bq:close()\n"
    "assert(c:await() == 1275)\n"
    "local s = async.semaphore(2)\n"
    "local e = async.event()\n"
    "local r = async.map(function(x) return s:with(function()\n"
    "  async.sleep(0) return x * 2 end) end, { 1, 2, 3, 4, 5, 6 }, { "
    "concurrency = 3 })\n"
    "assert(r[6] == 12)\n"
    "local ok = pcall(async.group, function(g)\n"
    "  for i = 1, 5 do g:spawn(function() e:wait() end) end\n"
    "  g:spawn(function() error('child') end)\n"
    "end)\n"
    "assert(not ok)\n"
    "local rl = async.rate_limiter(3, 0.001)\n"
    "for i = 1, 6 do rl:acquire() end\n"
    "local n = 0\n"
    "assert(async.retry(function() n = n + 1 if n < 3 then error('x') end "
    "return n end,\n"
    "                   { delay = 0 }) == 3)\n"
    "async.group(function(g) for i = 1, 20 do g:spawn(async.sleep, 0) end "
    "end)\n";

static int run_with_cap(size_t extra, int *rc) {
  ar_engine_t *E = ar_engine_new(NULL);
  if (E == NULL) return -1;
  ar_engine_set_memory_limit(E, ar_engine_memory(E) + extra);
  *rc = ar_engine_run_string(E, script, "=oom");
  ar_engine_free(E);
  return 0;
}

int main(void) {
  int rc = 0, runs = 0, failures = 0;
  size_t extra;
  /* Steps small enough to land inside most allocations of the script. */
  for (extra = 0; extra < (size_t)4 << 20; extra += extra < 65536 ? 97 : 4099) {
    if (run_with_cap(extra, &rc) != 0) {
      fprintf(stderr, "engine creation failed\n");
      return 1;
    }
    runs++;
    if (rc == 0) break;
    failures++;
    if (rc != AR_ENOMEM && rc != AR_ERUNTIME && rc != AR_EDEADLOCK) {
      fprintf(stderr, "cap +%zu: unexpected status %d (%s)\n", extra, rc,
              ar_strerror(rc));
      return 1;
    }
  }
  if (rc != 0) {
    fprintf(stderr, "the script never succeeded (last status %d)\n", rc);
    return 1;
  }
  /* And without a cap, of course. */
  if (run_with_cap((size_t)1 << 40, &rc) != 0 || rc != 0) {
    fprintf(stderr, "uncapped run failed: %d\n", rc);
    return 1;
  }
  printf("%d runs, %d ran out of memory, success from +%zu bytes\n", runs,
         failures, extra);
  printf("1 passed, 0 failed\n");
  return 0;
}
