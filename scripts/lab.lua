-- The whole lab: every demo in order, in this one process (each demo is
-- also a script of its own), then the total time.
--   asyncrun scripts/lab.lua [--base-url URL] [--only LIST] [--seed N] [--quiet]
--
-- Exit status: 0 when every demo succeeded, 1 when one failed (the others
-- still run), 2 for a bad command line.

-- The demos sit next to this file (require finds lib/ there by itself).
local here
do
  local path = debug.getinfo(1, "S").source:match("^@(.*)$") or arg and arg[0] or ""
  here = path:match("^(.*)/[^/]*$") or "."
end
local async = require "async"
local kit = require "lib.scriptkit"

local DEMOS = { "simple_tasks", "web_requests", "error_handling", "retry", "timeouts", "patterns" }

local script = {
  name = "lab",
  title = "The asyncrun lab",
  summary = "Runs every demo of the lab in order: " .. table.concat(DEMOS, ", ") .. ".",
  description = "Each demo is also a script of its own (asyncrun scripts/retry.lua ...).\n"
    .. "Exit status: 0 when every demo succeeded, 1 when one failed, 2 for a bad command line.",
  options = {
    { "base-url", "URL", "the httpbin for web_requests (default: a local one)" },
    { "only", "LIST", "comma-separated demos to run, in the lab's order" },
  },
}

function script.run(o)
  local chosen = DEMOS
  if o.only then
    local want, known = {}, {}
    for _, name in ipairs(DEMOS) do known[name] = true end
    for name in o.only:gmatch("[^,]+") do
      if not known[name] then kit.usage_error(script, "no demo named '%s' (demos: %s)", name, table.concat(DEMOS, ", ")) end
      want[name] = true
    end
    chosen = {}
    for _, name in ipairs(DEMOS) do if want[name] then chosen[#chosen + 1] = name end end
  end
  if o.base_url and not o.base_url:match("^https?://[^/]") then
    kit.usage_error(script, "--base-url wants an http:// or https:// URL, got '%s'", o.base_url)
  end

  o.show("%s: %s (seed %d)", script.title, table.concat(chosen, ", "), o.seed)
  local started = async.now()
  local failed = {}
  for _, name in ipairs(chosen) do
    local demo = assert(loadfile(here .. "/" .. name .. ".lua"))(kit.AS_MODULE)
    -- Every demo starts from the same seed, so it does what it would do
    -- when run alone with --seed.
    local d = kit.prepare({ seed = o.seed, quiet = o.quiet, base_url = o.base_url, args = {} })
    local ok, status = pcall(demo.run, d)
    if not ok then
      -- Ctrl-C cancels the lab itself: stop here.
      if type(status) == "table" and status.kind == "cancelled" then error(status, 0) end
      io.stderr:write("lab.lua: ", name, " failed: ", tostring(status), "\n")
    end
    if not ok or (status or 0) ~= 0 then failed[#failed + 1] = name end
  end
  o.show("")
  o.show("Total execution time: %.2f s", async.now() - started)
  if #failed > 0 then
    o.show("failed: %s", table.concat(failed, ", "))
    return 1
  end
  return 0
end

return kit.main(script, ...)
