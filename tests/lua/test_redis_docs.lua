-- Runs every ```lua example of docs/redis.md and docs/distributed.md, each
-- as its own case, against a private redis-server (the examples say
-- redis://127.0.0.1:6379/0; the test puts its own server's URL there).
local async = require "async"
local check = require "check"
local servers = require "redis_server"

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local server = servers.start()

local function run()
  local n = 0
  for _, doc in ipairs({ "redis.md", "distributed.md" }) do
    local f = assert(io.open(here .. "/../../docs/" .. doc, "r"))
    local text = f:read("a")
    f:close()
    for code in text:gmatch("```lua\n(.-)```") do
      n = n + 1
      code = code:gsub("redis://127%.0%.0%.1:6379/0", server.url)
      local chunk = assert(load(code, "=" .. doc .. " example " .. n))
      check.test("docs/" .. doc .. " example " .. n, function()
        local real_print = print
        print = function() end
        local ok, err = pcall(chunk)
        print = real_print
        if not ok then error(err, 0) end
      end)
    end
  end
  check.test("the docs have examples", function() check.truthy(n >= 7, n .. " examples") end)
end

local ok, err = pcall(run)
servers.stop_all()
if not ok then error(err, 0) end
check.done()
