-- Producer and workers on one queue, local or spread over processes.
--
--   asyncrun scripts/workers.lua [--n N]                  one process
--   asyncrun scripts/workers.lua --redis URL --role producer --n N
--   asyncrun scripts/workers.lua --redis URL --role worker [--concurrency C]
--
-- Without --redis the producer and one worker share a local async.queue.
-- With it, start one producer and any number of workers, on this machine
-- or others: the queue is a Redis stream (docs/distributed.md), and the
-- code below is the same either way; only the queue's options differ.
-- Each job is an integer; processing it adds it to a sum. Each worker
-- prints a summary line; with --json, a JSON object too.
--
-- Options for tests and benchmarks: --name Q (the stream), --visibility S,
-- --max-deliveries N, --work S (seconds each job takes), --record FILE (the
-- jobs processed, one a line, flushed before each acknowledgement),
-- --poison (the producer adds a job that every worker fails on), --close
-- (the producer closes the queue when done; the default), --no-close.
local async = require "async"
local cjson = require "cjson"

local opts = { n = 1000, concurrency = 8, name = "jobs", close = true, work = 0 }
do
  local i = 1
  while arg and arg[i] do
    local a, v = arg[i], arg[i + 1]
    if a == "--redis" then opts.redis = v; i = i + 1
    elseif a == "--role" then opts.role = v; i = i + 1
    elseif a == "--n" then opts.n = math.tointeger(tonumber(v)); i = i + 1
    elseif a == "--concurrency" then opts.concurrency = math.tointeger(tonumber(v)); i = i + 1
    elseif a == "--name" then opts.name = v; i = i + 1
    elseif a == "--visibility" then opts.visibility = tonumber(v); i = i + 1
    elseif a == "--max-deliveries" then opts.max_deliveries = math.tointeger(tonumber(v)); i = i + 1
    elseif a == "--work" then opts.work = tonumber(v); i = i + 1
    elseif a == "--record" then opts.record = v; i = i + 1
    elseif a == "--poison" then opts.poison = true
    elseif a == "--no-close" then opts.close = false
    elseif a == "--json" then opts.json = true
    else
      io.stderr:write("workers.lua: unknown option ", a, "\n")
      os.exit(2)
    end
    i = i + 1
  end
  if opts.redis and opts.role ~= "producer" and opts.role ~= "worker" then
    io.stderr:write("workers.lua: --role producer|worker is needed with --redis\n")
    os.exit(2)
  end
end

local function open_queue()
  if not opts.redis then return async.queue() end
  return async.queue{ url = opts.redis, name = opts.name,
                      visibility_timeout = opts.visibility,
                      max_deliveries = opts.max_deliveries }
end

-- Puts jobs 1..n from `concurrency` tasks (with Redis, their puts share
-- round trips).
local function produce(q)
  local t0 = async.now()
  local tasks, next_job = {}, 1
  for w = 1, opts.concurrency do
    tasks[w] = async.spawn(function()
      while next_job <= opts.n do
        local i = next_job
        next_job = i + 1
        q:put(i)
      end
    end)
  end
  async.gather(tasks)
  if opts.poison then q:put("poison") end
  if opts.close then q:close() end
  return async.now() - t0
end

-- Runs `concurrency` tasks taking jobs until the queue is closed and
-- drained. Returns the summary.
local function work(q, name)
  local s = { worker = name, processed = 0, sum = 0, failed = 0 }
  local rec = opts.record and assert(io.open(opts.record, "w"))
  if rec then rec:setvbuf("line") end
  local t0 = async.now()
  local tasks = {}
  for w = 1, opts.concurrency do
    tasks[w] = async.spawn(function()
      while true do
        local job = q:get()
        if job == nil then return end
        local ok = pcall(function()
          if job == "poison" then error("cannot process this job") end
          if opts.work > 0 then async.sleep(opts.work) end
        end)
        if ok then
          s.processed = s.processed + 1
          s.sum = s.sum + job
          if rec then rec:write(job, "\n") end
          q:task_done()
        else
          s.failed = s.failed + 1 -- not acknowledged: delivered again later
        end
      end
    end)
  end
  async.gather(tasks)
  if rec then rec:close() end
  s.seconds = async.now() - t0
  s.rate = s.processed / math.max(s.seconds, 1e-9)
  return s
end

local function report(s)
  print(string.format("worker %s: %d jobs, sum %d, %d failed attempts, %.2f s, %.0f jobs/s",
                      s.worker, s.processed, s.sum, s.failed, s.seconds, s.rate))
  if opts.json then print(cjson.encode(s)) end
end

if not opts.redis then
  local q = open_queue()
  local producer = async.spawn(produce, q)
  report(work(q, "local"))
  producer:await()
elseif opts.role == "producer" then
  local q = open_queue()
  local secs = produce(q)
  print(string.format("producer: %d jobs in %.2f s%s", opts.n, secs,
                      opts.close and ", queue closed" or ""))
  q:disconnect()
else
  local q = open_queue()
  report(work(q, q.consumer))
  q:disconnect()
end
