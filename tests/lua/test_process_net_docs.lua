-- Runs every ```lua example of docs/process.md and docs/net.md, each as
-- its own case, so the documentation cannot drift from the modules.
local check = require "check"

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
for _, doc in ipairs({ "process.md", "net.md" }) do
  local f = assert(io.open(here .. "/../../docs/" .. doc, "r"))
  local text = f:read("a")
  f:close()
  local n = 0
  for code in text:gmatch("```lua\n(.-)```") do
    n = n + 1
    local chunk = assert(load(code, "=" .. doc .. " example " .. n))
    check.test("docs/" .. doc .. " example " .. n, function()
      local real_print, real_write = print, io.write
      print, io.write = function() end, function() end
      local ok, err = pcall(chunk)
      print, io.write = real_print, real_write
      if not ok then error(err, 0) end
    end)
  end
  check.test(doc .. " has examples", function() check.truthy(n >= 4, n .. " examples") end)
end
check.done()
