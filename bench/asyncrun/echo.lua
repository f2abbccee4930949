-- echo: a TCP echo server and 64 clients in one process, over loopback;
-- each client makes N round trips of a 64-byte message (write it, read
-- 64 bytes back). Prints sum=<bytes echoed>.
--   asyncrun bench/asyncrun/echo.lua [N=10000]
local async = require "async"
local net = require "async.net"

local N = tonumber(arg[1]) or 10000
local CONNECTIONS = 64
local MSG = string.rep("x", 64)

local srv = net.listen({ port = 0, handler = function(s)
  while true do
    local data = s:read()
    if data == nil then break end
    s:write(data)
  end
end })

local function client()
  local s <close> = net.connect("127.0.0.1", srv.port)
  local echoed = 0
  for _ = 1, N do
    s:write(MSG)
    local need = 64
    while need > 0 do
      need = need - #s:read(need)
    end
    echoed = echoed + 64
  end
  return echoed
end

local clients = {}
for i = 1, CONNECTIONS do clients[i] = client end
local results = async.gather(clients)
srv:close()
local sum = 0
for i = 1, CONNECTIONS do sum = sum + results[i] end
print("sum=" .. sum)
