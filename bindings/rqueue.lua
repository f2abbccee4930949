-- async.queue{url = ...}: the queue distributed on a Redis stream and a
-- consumer group (docs/distributed.md). Embedded in the binary and loaded
-- by bindings/lrqueue.c, which passes the modules it needs and private
-- copies of the standard libraries it uses (so it works in an engine whose
-- scripts have no table or math); what it uses is captured here.
--
-- Keys, for a queue named N:
--   N          the stream; each entry has one field "v", the cjson value
--   N:dead     the dead-letter stream (v, id, deliveries, consumer)
--   N:closed   set by close(); put() refuses once it exists
-- Delivery is at least once: an item whose consumer does not acknowledge
-- it (task_done) within the visibility timeout is claimed by another.
local async, redis, cjson, table, math = ...

local type, pairs, next, tostring, tonumber = type, pairs, next, tostring, tonumber
local setmetatable, error, pcall, select = setmetatable, error, pcall, select
local math_type, tointeger, floor = math.type, math.tointeger, math.floor
local math_min = math.min
local table_remove, table_unpack = table.remove, table.unpack
-- Items are held per task (its handle), not per thread: a thread outlives
-- its task when the engine reuses it.
local current = async.current
local now, sleep = async.now, async.sleep
local encode, decode = cjson.encode, cjson.decode
local null = redis.null

-- put: refuse on a closed queue, append, optionally trim.
local PUT = [[
if redis.call('EXISTS', KEYS[2]) == 1 then
  return redis.error_reply('CLOSED queue is closed')
end
if ARGV[2] ~= '' then
  return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'v', ARGV[1])
end
return redis.call('XADD', KEYS[1], '*', 'v', ARGV[1])
]]

-- state: {closed, undelivered, pending} for the group, read atomically.
-- Undelivered is 1 when the group has not read the stream's newest entry
-- (entries trimmed away before delivery do not count).
local STATE = [[
local closed = redis.call('EXISTS', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 0 then return {closed, 0, 0} end
local pending = redis.call('XPENDING', KEYS[1], ARGV[1])[1]
local last_gen = redis.call('XINFO', 'STREAM', KEYS[1])
local gen
for i = 1, #last_gen, 2 do
  if last_gen[i] == 'last-generated-id' then gen = last_gen[i + 1] end
end
local delivered = '0-0'
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
for _, g in ipairs(groups) do
  local name, last
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] end
    if g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  if name == ARGV[1] then delivered = last end
end
local function split(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local gm, gs = split(gen)
local dm, ds = split(delivered)
local undelivered = (gm > dm or (gm == dm and gs > ds)) and 1 or 0
return {closed, undelivered, pending}
]]

-- cjson decodes every number as a float: integral values come back as
-- integers, as they were most likely put.
local function fix(v)
  if math_type(v) == "float" then
    return tointeger(v) or v
  elseif type(v) == "table" then
    for k, x in pairs(v) do
      local y = fix(x)
      if y ~= x or math_type(y) ~= math_type(x) then v[k] = y end
    end
  end
  return v
end

local function closed_error()
  return async.error("closed", "queue is closed")
end

local Queue = {}
Queue.__index = Queue
Queue.__name = "asyncrun.redis.queue"

-- Runs a script by its digest, loading it again after a server restart.
function Queue:_script(which, nkeys, ...)
  local c = self.client
  local ok, r = pcall(c.call, c, "EVALSHA", self.sha[which], nkeys, ...)
  if ok then return r end
  if type(r) == "table" and r.kind == "redis" and r.code == "NOSCRIPT" then
    self.sha[which] = c:call("SCRIPT", "LOAD", which == "put" and PUT or STATE)
    return c:call("EVALSHA", self.sha[which], nkeys, ...)
  end
  error(r, 0)
end

function Queue:_ensure_group()
  local ok, err = pcall(self.client.call, self.client, "XGROUP", "CREATE",
                        self.name, self.group, "0", "MKSTREAM")
  if not ok and not (type(err) == "table" and err.code == "BUSYGROUP") then
    error(err, 0)
  end
end

-- Adds the entries of an XREADGROUP/XAUTOCLAIM list to the local buffer.
function Queue:_buffer(entries)
  local buf = self.buf
  for i = 1, #entries do
    local e = entries[i]
    local fields = e[2]
    if type(fields) == "table" then
      local v
      for j = 1, #fields, 2 do
        if fields[j] == "v" then v = fields[j + 1] end
      end
      buf[#buf + 1] = { e[1], v }
    end
  end
end

-- Moves the entry id (value v, delivered n times) to the dead letters.
function Queue:_bury(id, v, n, consumer)
  self.client:pipeline(function(p)
    p:call("XADD", self.dead, "*", "v", v or "null", "id", id,
           "deliveries", n, "consumer", consumer or "")
    p:call("XACK", self.name, self.group, id)
  end)
  self.buried = self.buried + 1
end

-- Claims entries idle longer than the visibility timeout. Entries past
-- max_deliveries go to the dead letters instead of the buffer.
function Queue:_reclaim()
  self.next_claim = now() + self.claim_every
  local c, start = self.client, "0-0"
  for _ = 1, 100 do -- bounded: a pass claims at most 100 batches
    local r = c:call("XAUTOCLAIM", self.name, self.group, self.consumer,
                     self.vis_ms, start, "COUNT", self.batch)
    local entries, deleted = r[2], r[3]
    if deleted and #deleted > 0 then
      -- trimmed before anyone acknowledged them: nothing left to deliver
      c:call("XACK", self.name, self.group, table_unpack(deleted))
    end
    if #entries > 0 then
      local counts = c:pipeline(function(p)
        for i = 1, #entries do
          p:call("XPENDING", self.name, self.group, entries[i][1], entries[i][1], 1)
        end
      end)
      local keep = {}
      for i = 1, #entries do
        local info = counts[i][1]
        local n = info and info[4] or 1
        if n > self.max_deliveries then
          local fields, v = entries[i][2], nil
          if type(fields) == "table" then
            for j = 1, #fields, 2 do
              if fields[j] == "v" then v = fields[j + 1] end
            end
          end
          self:_bury(entries[i][1], v, n, info and info[2])
        else
          keep[#keep + 1] = entries[i]
        end
      end
      self.claimed = self.claimed + #keep
      self:_buffer(keep)
    end
    start = r[1]
    if start == "0-0" or #self.buf > 0 then break end
  end
end

-- One round of fetching for the local buffer. Returns true when the queue
-- is closed and drained.
function Queue:_fetch()
  local c = self.client
  if now() >= self.next_claim then
    self:_reclaim()
    if #self.buf > 0 then return false end
  end
  local ok, r = pcall(c.call, c, "XREADGROUP", "GROUP", self.group, self.consumer,
                      "COUNT", self.batch, "STREAMS", self.name, ">")
  if not ok then
    -- The group is gone (the server restarted without its data, or the
    -- key was deleted): create it again and read from the start.
    if type(r) == "table" and r.kind == "redis" and r.code == "NOGROUP" then
      self:_ensure_group()
      return false
    end
    error(r, 0)
  end
  if r ~= nil then
    self:_buffer(r[1][2])
    if #self.buf > 0 then return false end
  end
  local st = self:_script("state", 2, self.name, self.closed_key, self.group)
  local closed, undelivered, pending = st[1] == 1, st[2], st[3]
  if closed and undelivered == 0 and pending == 0 then return true end
  if pending > 0 then
    self:_reclaim()
    if #self.buf > 0 then return false end
  end
  r = c:call("XREADGROUP", "GROUP", self.group, self.consumer, "COUNT",
             self.batch, "BLOCK", self.block_ms, "STREAMS", self.name, ">")
  if r ~= nil then self:_buffer(r[1][2]) end
  return false
end

-- Hands out the oldest buffered item to the running task: the value and
-- the entry's id.
function Queue:_take()
  local e = table_remove(self.buf, 1)
  local co = current()
  local held = self.held[co]
  if held == nil then
    held = {}
    self.held[co] = held
  end
  held[#held + 1] = e[1]
  self.outstanding = self.outstanding + 1
  local ok, v = pcall(decode, e[2] or "null")
  if not ok then return e[2], e[1] end -- not ours: the raw string
  return fix(v), e[1]
end

function Queue:get()
  while true do
    if #self.buf > 0 then return self:_take() end
    if self.drained then return nil, "closed" end
    if self.fetching then
      self.wakeup:wait()
    else
      self.fetching = true
      self.wakeup:clear()
      local ok, done = pcall(self._fetch, self)
      self.fetching = false
      self.wakeup:set()
      if not ok then error(done, 0) end
      if done and #self.buf == 0 then
        self.drained = true
        return nil, "closed"
      end
    end
  end
end

function Queue:put(v)
  local ok, r = pcall(self._script, self, "put", 2, self.name,
                      self.closed_key, encode(v), self.maxlen)
  if ok then return end
  if type(r) == "table" and r.kind == "redis" and r.code == "CLOSED" then
    error(closed_error(), 2)
  end
  error(r, 0)
end

-- Acknowledges an item: the one with that id, or else the one the running
-- task took last (an item whose processing failed, and was therefore not
-- acknowledged, is left pending and delivered again after the visibility
-- timeout), or else, from a task that took none, one taken here.
function Queue:task_done(id)
  local held
  if id ~= nil then
    for _, h in pairs(self.held) do
      for i = #h, 1, -1 do
        if h[i] == id then table_remove(h, i) held = h break end
      end
      if held then break end
    end
  else
    held = self.held[current()]
    if held == nil or #held == 0 then
      held = nil
      for _, h in pairs(self.held) do
        if #h > 0 then held = h break end
      end
    end
    if held == nil then
      error(async.error("invalid_state",
                        "task_done() called more times than items were taken"), 2)
    end
    id = table_remove(held)
  end
  self.outstanding = self.outstanding - 1
  self.acked = self.acked + 1
  self.client:call("XACK", self.name, self.group, id)
end

-- Waits until every item put has been acknowledged, by any consumer.
function Queue:join()
  while true do
    local st = self:_script("state", 2, self.name, self.closed_key, self.group)
    if st[2] == 0 and st[3] == 0 then return end
    sleep(self.poll)
  end
end

-- Items put and not yet delivered to any consumer of the group.
function Queue:size()
  local ok, groups = pcall(self.client.call, self.client, "XINFO", "GROUPS", self.name)
  if not ok then return 0 end
  for _, g in pairs(groups) do
    local name, lag
    for i = 1, #g, 2 do
      if g[i] == "name" then name = g[i + 1] end
      if g[i] == "lag" then lag = g[i + 1] end
    end
    if name == self.group then
      if type(lag) == "number" then return lag end
      return self.client:call("XLEN", self.name)
    end
  end
  return 0
end
Queue.__len = Queue.size

function Queue:empty() return self:size() == 0 end

-- Closes the queue for every producer and consumer.
function Queue:close()
  self.client:call("SET", self.closed_key, "1")
end

function Queue:is_closed()
  return self.client:call("EXISTS", self.closed_key) == 1
end

-- What this consumer did so far: got (delivered here), claimed, acked,
-- buried (moved to the dead letters by this consumer).
function Queue:stats()
  return { claimed = self.claimed, acked = self.acked, buried = self.buried,
           outstanding = self.outstanding, buffered = #self.buf }
end

-- Closes this process's connection (the queue itself stays).
function Queue:disconnect()
  self.client:close()
end

function Queue:__tostring()
  return "redis queue (" .. self.name .. ", " .. self.group .. "/" .. self.consumer .. ")"
end

local M = {}

local function opt_number(opts, key, dflt, min)
  local v = opts[key]
  if v == nil then return dflt end
  if type(v) ~= "number" or v < min then
    error("bad option '" .. key .. "' to 'queue' (number >= " .. min .. " expected)", 3)
  end
  return v
end

function M.new(opts)
  local url, name = opts.url, opts.name
  if type(url) ~= "string" then error("bad option 'url' to 'queue' (string expected)", 2) end
  if type(name) ~= "string" or name == "" then
    error("bad option 'name' to 'queue' (non-empty string expected)", 2)
  end
  local group = opts.group or "workers"
  local consumer = opts.consumer or redis.consumer_name()
  local vis = opt_number(opts, "visibility_timeout", 30, 0.001)
  local maxlen = opts.maxlen
  if maxlen ~= nil and (math_type(maxlen) ~= "integer" or maxlen < 1) then
    error("bad option 'maxlen' to 'queue' (integer >= 1 expected)", 2)
  end
  local poll = opt_number(opts, "poll", 0.2, 0.001)
  local client = redis.connect(url, { pool = opts.pool or 8,
                                      connect_timeout = opts.connect_timeout,
                                      timeout = opts.timeout })
  local self = setmetatable({
    client = client, name = name, group = group, consumer = consumer,
    dead = name .. ":dead", closed_key = name .. ":closed",
    vis_ms = floor(vis * 1000 + 0.5), claim_every = vis / 2,
    next_claim = 0,
    max_deliveries = opt_number(opts, "max_deliveries", 5, 1),
    batch = floor(opt_number(opts, "prefetch", 64, 1)),
    -- how often an idle consumer looks for close() and items to claim
    -- (its blocking read returns that often), and join() polls
    poll = poll,
    block_ms = floor(math_min(poll, vis / 2) * 1000 + 0.5),
    maxlen = maxlen and tostring(maxlen) or "",
    buf = {}, held = setmetatable({}, { __mode = "k" }),
    outstanding = 0, claimed = 0, acked = 0, buried = 0,
    wakeup = async.event(), fetching = false, drained = false,
    sha = {},
  }, Queue)
  if self.block_ms < 1 then self.block_ms = 1 end
  self.sha.put = client:call("SCRIPT", "LOAD", PUT)
  self.sha.state = client:call("SCRIPT", "LOAD", STATE)
  self:_ensure_group()
  return self
end

return M
