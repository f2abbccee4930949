-- Patterns: bounded concurrency (10 jobs, 3 at a time), producer and
-- consumers on a queue (1 producer, 3 consumers; the producer closes the
-- queue when it is done, so no sentinel values), and a rate limit (2 calls
-- per second). Timestamps show each pattern at work.
--   asyncrun scripts/patterns.lua [--seed N] [--quiet]

local async = require "async"
local kit = require "lib.scriptkit"

local script = {
  name = "patterns",
  title = "Async patterns",
  summary = "Bounded concurrency, producer/consumer on a queue, rate limiting.",
}

local function bounded(o)
  o.show("")
  o.show("1. Bounded concurrency: 10 jobs of 0.5-2.0 s, at most 3 at a time (async.map)")
  o.mark()
  local jobs = {}
  for i = 1, 10 do jobs[i] = { id = i, seconds = 0.5 + math.random() * 1.5 } end
  local running, peak = 0, 0
  local results = async.map(function(job)
    running = running + 1
    peak = math.max(peak, running)
    o.show("%s job %2d starts (%.2f s), %d running", o.stamp(), job.id, job.seconds, running)
    async.sleep(job.seconds)
    running = running - 1
    o.log("%s job %2d done", o.stamp(), job.id)
    return job.id * 10
  end, jobs, { concurrency = 3 })
  o.show("%d jobs done in %.2f s, at most %d at a time", results.n, async.now() - o.t0, peak)
end

local function producer_consumer(o)
  o.show("")
  o.show("2. Producer/consumer: 1 producer, 3 consumers, an async.queue closed at the end")
  o.mark()
  local q = async.queue()
  local producer = async.spawn(function()
    for i = 1, 10 do
      q:put("item " .. i)
      o.log("%s producer: put item %d", o.stamp(), i)
      async.sleep(0.1 + math.random() * 0.4)
    end
    -- Closing says "no more items": consumers drain what is left, then
    -- their get returns nil. No sentinel per consumer to count out.
    q:close()
    o.log("%s producer: queue closed", o.stamp())
  end)
  local consumers = {}
  for c = 1, 3 do
    consumers[c] = async.spawn(function()
      local handled = 0
      while true do
        local item = q:get()
        if item == nil then
          o.log("%s consumer %d: queue closed and empty, stopping", o.stamp(), c)
          return handled
        end
        o.log("%s consumer %d: processing %s", o.stamp(), c, item)
        async.sleep(0.5 + math.random())
        handled = handled + 1
        o.show("%s consumer %d: finished %s", o.stamp(), c, item)
      end
    end)
  end
  producer:await()
  local counts = async.gather(consumers)
  o.show("consumers handled %d, %d and %d items (%d in all) in %.2f s",
    counts[1], counts[2], counts[3], counts[1] + counts[2] + counts[3], async.now() - o.t0)
end

local function rate_limiting(o)
  o.show("")
  o.show("3. Rate limiting: 6 calls, at most 2 per second (async.rate_limiter)")
  o.mark()
  -- The limiter is an object: each API client makes its own, so two clients
  -- never share (and never slow down) each other's window.
  local limiter = async.rate_limiter(2, 1.0)
  local call = limiter:wrap(function(i)
    o.show("%s call %d runs", o.stamp(), i)
    async.sleep(0.1)
    return i
  end)
  for i = 1, 6 do call(i) end
  o.show("6 calls in %.2f s", async.now() - o.t0)
end

function script.run(o)
  kit.heading(o, script.title)
  bounded(o)
  producer_consumer(o)
  rate_limiting(o)
  return 0
end

return kit.main(script, ...)
