-- bench serve: answers every request with "hello" (wrk drives it).
-- Usage: asyncrun serve.lua PORT; prints "port=N" once listening.
local http = require "async.http"
local srv = http.serve({ port = tonumber(arg[1]) or 0, handler = function(req, res)
  res:send("hello")
end })
print("port=" .. srv.port)
io.stdout:flush()
srv:wait()
