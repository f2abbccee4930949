-- A release, as a graph of Lua tasks for scripts/scheduler.lua:
--   asyncrun scripts/scheduler.lua scripts/dags/release.lua
-- Each task's function gets `inputs`, the results of the tasks it comes
-- after, by name. The lint step fails on purpose, so `package` and
-- `publish` (which need it) are skipped while `test` still runs.
local async = require "async"

return {
  parallel = 2,
  tasks = {
    { name = "fetch", run = function()
        async.sleep(0.3)                       -- download the sources
        return 20                              -- files fetched
      end },
    { name = "configure", run = function()
        async.sleep(0.1)
        return "release"
      end },
    { name = "compile", after = { "fetch", "configure" }, run = function(inputs)
        async.sleep(0.2)
        return inputs.fetch * 2                -- objects built
      end },
    { name = "lint", after = { "fetch" }, run = function()
        async.sleep(0.1)
        error("lint: 3 warnings treated as errors", 0)
      end },
    { name = "test", after = { "compile" }, timeout = 2, retries = 1,
      lua = "local inputs = ...; async.sleep(0.2); return inputs.compile + 2" },
    { name = "package", after = { "test", "lint" }, run = function(inputs)
        return "app-" .. inputs.test .. ".tar.gz"
      end },
    { name = "publish", after = { "package" }, run = function(inputs)
        return "published " .. inputs.package
      end },
  },
}
