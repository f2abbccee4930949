-- Runs every ```lua example of docs/toolkit.md, each as its own case, so
-- the documentation cannot drift from what the toolkit does.
local async = require "async"
local check = require "check"

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local path = here .. "/../../docs/toolkit.md"
local f = assert(io.open(path, "r"))
local text = f:read("a")
f:close()

local n = 0
for code in text:gmatch("```lua\n(.-)```") do
  n = n + 1
  local chunk = assert(load(code, "=toolkit.md example " .. n))
  check.test("docs/toolkit.md example " .. n, function()
    -- the examples print; keep their output out of the test log
    local real_print = print
    print = function() end
    local ok, err = pcall(chunk)
    print = real_print
    if not ok then error(err, 0) end
  end)
end
check.test("the docs have examples", function() check.truthy(n >= 9, n .. " examples") end)
check.done()
