/* A tiny program built against the installed library, both with CMake's
 * find_package(asyncrun) and with pkg-config. */
#include <stdio.h>
#include <string.h>

#include <asyncrun.h>

static int l_answer(lua_State *L) {
  lua_pushinteger(L, 42);
  return 1;
}

int main(void) {
  ar_config_t *cfg = ar_config_new();
  ar_config_deny(cfg, "io");
  ar_engine_t *E = ar_engine_new(cfg);
  ar_config_free(cfg);
  if (E == NULL) return 1;
  ar_engine_register_function(E, "answer", l_answer);
  int rc = ar_engine_run_string(E,
                                "local async = require 'async'\n"
                                "local t = async.spawn(function() async.sleep(0.001) return answer() end)\n"
                                "result = t:await() + (io == nil and 0 or 1000)",
                                "=consumer");
  if (rc != 0) {
    fprintf(stderr, "consumer: %s\n", ar_engine_error(E));
    ar_engine_free(E);
    return 1;
  }
  rc = ar_engine_run_string(E, "assert(result == 42)", NULL);
  printf("consumer: asyncrun %s, %s\n", ar_version(), rc == 0 ? "ok" : ar_engine_error(E));
  ar_engine_free(E);
  return rc == 0 && strcmp(ar_version(), AR_VERSION_STRING) == 0 ? 0 : 1;
}
