-- HTTP GET throughput: N requests with C in flight against one URL.
--   asyncrun bench/asyncrun/http.lua URL [N=20000] [C=64]
-- Prints one line: "http_get requests=N concurrency=C seconds=S rps=R".
-- C worker tasks share one session (max_connections = C, keep-alive) and
-- each fetches until N requests have been made; every response must be a
-- 200 with a body, or the run fails.
local async = require "async"
local http = require "async.http"

local url = assert(arg[1], "usage: http.lua URL [N] [C]")
local total = tonumber(arg[2]) or 20000
local conc = tonumber(arg[3]) or 64

local session = http.session({ max_connections = conc })
local started, bytes = 0, 0

local function worker()
  while started < total do
    started = started + 1
    local r = session:get(url)
    if r.status ~= 200 or #r.body == 0 then
      error(string.format("unexpected response: %d, %d bytes", r.status, #r.body))
    end
    bytes = bytes + #r.body
  end
end

-- One warm-up round opens the connections.
local warm = {}
for i = 1, conc do warm[i] = function() session:get(url) end end
async.gather(warm)

local t0 = async.now()
local workers = {}
for i = 1, conc do workers[i] = worker end
async.gather(workers)
local dt = async.now() - t0
print(string.format("http_get requests=%d concurrency=%d seconds=%.3f rps=%.0f bytes=%d",
  total, conc, dt, total / dt, bytes))
