-- http: N GETs, at most 64 in flight over one keep-alive session, each body
-- decoded as JSON. URL i is BASE .. (i % 100) .. ".json"; prints the sum of
-- the "n" fields as sum=<total>.
--   asyncrun bench/asyncrun/http.lua N BASE_URL
local async = require "async"
local http = require "async.http"

local N = tonumber(arg[1]) or 20000
local base = assert(arg[2], "usage: http.lua N BASE_URL")

local session = http.session({ max_connections = 64 })
local urls = {}
for i = 1, N do urls[i] = base .. (i % 100) .. ".json" end

local docs = async.map(function(url)
  local resp = session:get(url)
  if resp.status ~= 200 then error("status " .. resp.status .. " for " .. url) end
  return resp:json().n
end, urls, { concurrency = 64 })

local total = 0
for i = 1, N do total = total + math.tointeger(docs[i]) end
print("sum=" .. total)
