-- async.queue{url=}: the queue distributed on a Redis stream. In one
-- process (API, close, join, dead letters), then with worker processes
-- running scripts/workers.lua: 3 workers drain 100,000 jobs; a worker
-- killed with SIGKILL loses nothing; a poison job ends in the dead letters.
local async = require "async"
local redis = require "async.redis"
local cjson = require "cjson"
local check = require "check"
local servers = require "redis_server"

local server = servers.start()
local BIN = arg[-1]
local ROOT = arg[0]:match("^(.*)/tests/lua/[^/]*$") or "."
local WORKERS = ROOT .. "/scripts/workers.lua"
local TMP = server.dir

local function sh(cmd) return os.execute(cmd .. " >/dev/null 2>&1") end

local function read(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- Starts scripts/workers.lua in the background; returns a handle whose
-- files are out (stdout and stderr), rc (exit status) and pid (of the
-- `timeout` that runs it, the parent of the asyncrun process).
local nproc = 0
local function spawn(args)
  nproc = nproc + 1
  local p = { out = TMP .. "/p" .. nproc .. ".out", rc = TMP .. "/p" .. nproc .. ".rc",
              pid = TMP .. "/p" .. nproc .. ".pid" }
  os.execute(string.format(
    "(sh -c 'echo $$ > %s; exec timeout -s KILL 100 %s %s %s' > %s 2>&1; echo $? > %s) " ..
    ">/dev/null 2>&1 &", p.pid, BIN, WORKERS, args, p.out, p.rc))
  return p
end

-- Waits (in the engine) until p has exited; returns its status.
local function wait(p, limit)
  local t0 = async.now()
  while not read(p.rc) or read(p.rc) == "" do
    if async.now() - t0 > (limit or 90) then error("process did not end: " .. p.out) end
    async.sleep(0.05)
  end
  return tonumber(read(p.rc))
end

local function kill(p)
  local pid = read(p.pid)
  if pid and pid:match("%d+") then sh("pkill -KILL -P " .. pid:match("%d+")) end
end

local function summary(p)
  local s = read(p.out) or ""
  for line in s:gmatch("[^\n]+") do
    if line:sub(1, 1) == "{" then return cjson.decode(line) end
  end
  error("no summary in " .. p.out .. ":\n" .. s)
end

-- Counts the jobs in record files: every job 1..n seen, duplicates.
local function tally(files, n)
  local seen, dups, total = {}, 0, 0
  for _, f in ipairs(files) do
    for line in (read(f) or ""):gmatch("[^\n]+") do
      local v = tonumber(line)
      total = total + 1
      if seen[v] then dups = dups + 1 else seen[v] = true end
    end
  end
  local missing = 0
  for i = 1, n do if not seen[i] then missing = missing + 1 end end
  return missing, dups, total
end

local function run()
  local admin = redis.connect(server.url)

  check.test("put/get/task_done/join/size, in one process", function()
    local q = async.queue{ url = server.url, name = "api", consumer = "c1" }
    check.eq(tostring(q), "redis queue (api, workers/c1)")
    q:put(1) q:put("two") q:put({ three = 3, list = { 1, 2.5 } })
    check.eq(q:size(), 3)
    local v, id = q:get()
    check.eq(v, 1)
    check.eq(math.type(v), "integer", "integers stay integers")
    check.matches(id, "^%d+%-%d+$")
    check.eq(q:get(), "two")
    local t = q:get()
    check.eq(t.three, 3)
    check.eq(math.type(t.three), "integer", "integers inside tables too")
    check.eq(math.type(t.list[1]), "integer")
    check.eq(t.list[2], 2.5)
    check.eq(q:size(), 0)
    local joined = false
    local j = async.spawn(function() q:join() joined = true end)
    q:task_done() q:task_done() -- the last two taken
    async.sleep(0.15)
    check.eq(joined, false, "one item still unacknowledged")
    check.eq(admin:call("XPENDING", "api", "workers")[1], 1)
    q:task_done(id) -- the first, by its id
    j:await()
    check.eq(joined, true)
    check.raises("invalid_state", q.task_done, q)
    check.eq(admin:call("XPENDING", "api", "workers")[1], 0)
    q:disconnect()
  end)

  check.test("works when the script has removed table, math and coroutine", function()
    local saved = { table = table, math = math, coroutine = coroutine }
    table, math, coroutine = nil, nil, nil
    local ok, sum, why = pcall(function()
      local q = async.queue{ url = server.url, name = "bare", visibility_timeout = 1 }
      q:put({ 1, 2 }) q:put(3)
      local a, b = q:get(), q:get()
      q:task_done() q:task_done()
      q:close()
      local v, why = q:get()
      q:disconnect()
      return a[2] + b, why
    end)
    table, math, coroutine = saved.table, saved.math, saved.coroutine
    check.truthy(ok, tostring(sum))
    check.eq(sum, 5)
    check.eq(why, "closed")
  end)

  check.test("close: seen by every consumer, put refused, get drains first", function()
    local a = async.queue{ url = server.url, name = "cl", consumer = "a" }
    local b = async.queue{ url = server.url, name = "cl", consumer = "b" }
    a:put("x")
    check.eq(a:get(), "x")
    a:close()
    check.raises("closed", a.put, a, "y")
    check.raises("closed", b.put, b, "y")
    check.eq(b:is_closed(), true)
    -- a holds x unacknowledged: b waits for it, then both see closed
    local bdone = async.spawn(function() return b:get() end)
    async.sleep(0.2)
    check.eq(bdone:done(), false, "drained means nothing unacknowledged")
    a:task_done()
    local v, err = bdone:await()
    check.eq(v, nil)
    check.eq(err, "closed")
    v, err = a:get()
    check.eq(err, "closed")
    a:disconnect() b:disconnect()
  end)

  check.test("a consumer that dies: its item is claimed after the visibility timeout", function()
    local dead = async.queue{ url = server.url, name = "vis", consumer = "dead",
                              visibility_timeout = 0.2 }
    local live = async.queue{ url = server.url, name = "vis", consumer = "live",
                              visibility_timeout = 0.2 }
    dead:put("job")
    check.eq(dead:get(), "job")
    dead:disconnect() -- never acknowledged
    local t0 = async.now()
    check.eq(live:get(), "job", "claimed")
    check.between(async.now() - t0, 0.15, 3, "after the visibility timeout")
    live:task_done()
    check.eq(live:stats().claimed, 1)
    live:close()
    check.eq(select(2, live:get()), "closed")
    live:disconnect()
  end)

  check.test("an item past max_deliveries goes to the dead letters", function()
    local q = async.queue{ url = server.url, name = "poison1", visibility_timeout = 0.1,
                           max_deliveries = 2 }
    q:put({ bad = true })
    q:put("good")
    q:close()
    local seen = {}
    while true do
      local v = q:get()
      if v == nil then break end
      if type(v) == "table" then
        seen.bad = (seen.bad or 0) + 1 -- fail: no task_done
      else
        seen.good = (seen.good or 0) + 1
        q:task_done()
      end
    end
    check.eq(seen.bad, 2, "delivered max_deliveries times")
    check.eq(seen.good, 1)
    local d = admin:call("XRANGE", "poison1:dead", "-", "+")
    check.eq(#d, 1)
    local f = {}
    for i = 1, #d[1][2], 2 do f[d[1][2][i]] = d[1][2][i + 1] end
    check.eq(cjson.decode(f.v).bad, true)
    check.eq(f.deliveries, "3")
    check.eq(admin:call("XPENDING", "poison1", "workers")[1], 0, "acknowledged there")
    q:disconnect()
  end)

  check.test("3 worker processes drain 100,000 jobs from one producer", function()
    local N = 100000
    local ws, recs = {}, {}
    for i = 1, 3 do
      recs[i] = TMP .. "/drain" .. i .. ".rec"
      ws[i] = spawn(string.format("--redis %s --role worker --name drain --json --concurrency 16 --record %s",
                                  server.url, recs[i]))
    end
    local p = spawn(string.format("--redis %s --role producer --name drain --n %d --concurrency 32",
                                  server.url, N))
    check.eq(wait(p), 0, "producer: " .. (read(p.out) or ""))
    local processed, sum = 0, 0
    for i = 1, 3 do
      check.eq(wait(ws[i]), 0, "worker " .. i .. ": " .. (read(ws[i].out) or ""))
      local s = summary(ws[i])
      processed = processed + s.processed
      sum = sum + s.sum
      check.truthy(s.processed > 0, "every worker took part")
    end
    local missing, dups = tally(recs, N)
    check.eq(missing, 0, "jobs never processed")
    check.eq(dups, 0, "duplicates without failures")
    check.eq(processed, N)
    check.eq(sum, N * (N + 1) // 2, "sum of the jobs")
    check.eq(admin:call("XPENDING", "drain", "workers")[1], 0)
  end)

  check.test("a worker killed with SIGKILL: its jobs are reclaimed, none lost", function()
    local N = 20000
    local ws, recs = {}, {}
    for i = 1, 3 do
      recs[i] = TMP .. "/kill" .. i .. ".rec"
      ws[i] = spawn(string.format("--redis %s --role worker --name kill --json --concurrency 8 " ..
                                  "--visibility 1 --work 0.002 --record %s", server.url, recs[i]))
    end
    local p = spawn(string.format("--redis %s --role producer --name kill --n %d --concurrency 16",
                                  server.url, N))
    -- kill worker 1 once it is well into its share
    local t0 = async.now()
    while select(2, (read(recs[1]) or ""):gsub("\n", "")) < 500 do
      if async.now() - t0 > 30 then error("worker 1 made no progress") end
      async.sleep(0.02)
    end
    kill(ws[1])
    check.truthy(wait(ws[1]) ~= 0, "killed")
    check.eq(wait(p), 0, "producer")
    local processed = 0
    for i = 2, 3 do
      check.eq(wait(ws[i]), 0, "worker " .. i .. ": " .. (read(ws[i].out) or ""))
      processed = processed + summary(ws[i]).processed
    end
    local missing, dups, total = tally(recs, N)
    check.eq(missing, 0, "jobs lost")
    print(string.format("     (killed worker: %d jobs recorded; %d duplicates in %d records)",
                        select(2, (read(recs[1]) or ""):gsub("\n", "")), dups, total))
    check.eq(admin:call("XPENDING", "kill", "workers")[1], 0, "nothing left pending")
  end)

  check.test("a poison job lands in the dead letters; close seen by every worker", function()
    local ws = {}
    for i = 1, 3 do
      ws[i] = spawn(string.format("--redis %s --role worker --name poison --json " ..
                                  "--visibility 0.2 --max-deliveries 3", server.url))
    end
    local p = spawn(string.format("--redis %s --role producer --name poison --n 100 --poison",
                                  server.url))
    check.eq(wait(p), 0)
    local failed, sum = 0, 0
    for i = 1, 3 do
      check.eq(wait(ws[i]), 0, "worker " .. i .. " saw close: " .. (read(ws[i].out) or ""))
      local s = summary(ws[i])
      failed = failed + s.failed
      sum = sum + s.sum
    end
    check.eq(sum, 5050)
    check.eq(failed, 3, "failed attempts: max_deliveries")
    local d = admin:call("XRANGE", "poison:dead", "-", "+")
    check.eq(#d, 1, "one dead letter")
    check.eq(d[1][2][2], '"poison"')
    check.eq(admin:call("XPENDING", "poison", "workers")[1], 0)
  end)
  admin:close()
end

local ok, err = pcall(run)
for i = 1, nproc do
  local p = { pid = TMP .. "/p" .. i .. ".pid" }
  kill(p)
end
servers.stop_all()
if not ok then error(err, 0) end
check.done()
