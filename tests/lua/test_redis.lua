-- async.redis against private redis-servers (tests/lua/lib/redis_server.lua):
-- replies, errors, pipelining from many tasks, cancellation, timeouts,
-- blocking commands on the pool, a server killed and restarted, and
-- connection failures.
local async = require "async"
local redis = require "async.redis"
local check = require "check"
local servers = require "redis_server"

local server = servers.start()
local secured = servers.start{ password = "s3cret" }

-- A script that keeps the server busy for `ms` milliseconds, so that calls
-- queued behind it are in flight for that long.
local BUSY = [[
local t = redis.call('TIME')
local stop = t[1] * 1000000 + t[2] + tonumber(ARGV[1]) * 1000
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= stop
return 'done'
]]

local function run()
  check.test("commands and reply types", function()
    local c = redis.connect(server.url)
    check.eq(c:call("FLUSHALL"), "OK", "status reply")
    check.eq(c:call("SET", "k", "v"), "OK")
    check.eq(c:call("GET", "k"), "v", "bulk string")
    check.eq(c:call("GET", "missing"), nil, "null reply")
    check.eq(c:call("INCRBY", "n", 41), 41, "integer reply")
    check.eq(math.type(c:call("INCR", "n")), "integer")
    check.eq(c:call("SET", "bin", "a\0b\r\nc"), "OK")
    check.eq(c:call("GET", "bin"), "a\0b\r\nc", "binary-safe")
    check.eq(c:call("SET", "f", 1.5), "OK", "number argument")
    check.eq(c:call("GET", "f"), "1.5")
    check.eq(c:call("RPUSH", "l", "a", "b", "c"), 3)
    check.list(c:call("LRANGE", "l", 0, -1), { "a", "b", "c" }, "array")
    check.eq(#c:call("LRANGE", "nothing", 0, -1), 0, "empty array")
    local m = c:call("MGET", "k", "missing", "n")
    check.eq(m[1], "v")
    check.eq(m[2], redis.null, "null inside an array")
    check.eq(m[3], "42")
    local id = c:call("XADD", "s", "*", "f", "x")
    local r = c:call("XRANGE", "s", "-", "+")
    check.eq(r[1][1], id, "nested arrays")
    check.list(r[1][2], { "f", "x" })
    local many = {}
    for i = 1, 40 do many[i] = "a" .. i end
    check.eq(c:call("RPUSH", "big", table.unpack(many)), 40, "more than 16 arguments")
    check.eq(c:call("ping"), "PONG", "lower-case command")
    check.matches(tostring(c), "redis client %(127%.0%.0%.1:%d+%)")
    c:close()
    check.matches(tostring(c), "closed")
    check.raises("closed", c.call, c, "PING")
  end)

  check.test("unix socket and database number", function()
    local c = redis.connect("unix://" .. server.socket .. "?db=3")
    c:call("SET", "where", "db3")
    local d = redis.connect((server.url:gsub("/0$", "/3")))
    check.eq(d:call("GET", "where"), "db3")
    local z = redis.connect(server.url)
    check.eq(z:call("GET", "where"), nil, "db 0 is another database")
    c:close() d:close() z:close()
  end)

  check.test("redis errors raise kind redis with Redis's message", function()
    local c = redis.connect(server.url)
    c:call("SET", "str", "x")
    local e = check.raises("redis", c.call, c, "INCR", "str")
    check.eq(e.message, "ERR value is not an integer or out of range")
    check.eq(e.code, "ERR", "the error's code")
    e = check.raises("redis", c.call, c, "LPUSH", "str", "x")
    check.matches(e.message, "^WRONGTYPE")
    check.eq(e.code, "WRONGTYPE")
    e = check.raises("redis", c.call, c, "NOSUCHCOMMAND")
    check.matches(e.message, "^ERR unknown command")
    check.eq(c:call("GET", "str"), "x", "usable after errors")
    check.raises(nil, c.call, c) -- no command: bad argument
    check.raises(nil, c.call, c, "SET", "k", {})
    check.raises(nil, c.call, c, "SUBSCRIBE", "ch")
    c:close()
  end)

  check.test("10,000 calls from 100 tasks: pipelined, each reply to its caller", function()
    local c = redis.connect(server.url)
    local before = tonumber(c:call("INFO", "stats"):match("total_connections_received:(%d+)"))
    local tasks = {}
    for i = 1, 100 do
      tasks[i] = async.spawn(function()
        local bad = 0
        for j = 1, 100 do
          local want = "t" .. i .. "-" .. j
          if c:call("ECHO", want) ~= want then bad = bad + 1 end
          if j % 10 == 0 then
            if c:call("INCR", "count:" .. i) ~= j // 10 then bad = bad + 1 end
          end
        end
        return bad
      end)
    end
    local bad = async.gather(tasks)
    for i = 1, 100 do check.eq(bad[i], 0, "mismatched replies in task " .. i) end
    local after = tonumber(c:call("INFO", "stats"):match("total_connections_received:(%d+)"))
    check.eq(after, before, "no new connection: all on one")
    c:close()
  end)

  check.test("pipeline: every reply after one round trip", function()
    local c = redis.connect(server.url)
    local r = c:pipeline(function(p)
      p:call("DEL", "pl")
      for i = 1, 100 do p:call("RPUSH", "pl", i) end
      p:call("LRANGE", "pl", 0, 2)
      p:call("GET", "nope")
    end)
    check.eq(r.n, 103)
    check.eq(r[2], 1)
    check.eq(r[101], 100)
    check.list(r[102], { "1", "2", "3" })
    check.eq(r[103], nil)
    local e = check.raises("redis", c.pipeline, c, function(p)
      p:call("SET", "a", "1")
      p:call("INCR", "pl")
      p:call("GET", "a")
    end)
    check.eq(e.index, 2, "the failing command's index")
    check.eq(e.replies[1], "OK")
    check.eq(e.replies[3], "1", "the others ran")
    check.eq(c:pipeline(function() end).n, 0, "an empty pipeline")
    check.raises(nil, c.pipeline, c, function(p) p:call("BLPOP", "x", 0) end)
    c:close()
  end)

  check.test("cancelling a call in flight leaves the connection usable", function()
    local c = redis.connect(server.url)
    local slow = async.spawn(function() return c:call("EVAL", BUSY, 0, 200) end)
    local tasks = {}
    for i = 1, 50 do
      tasks[i] = async.spawn(function() return c:call("ECHO", "e" .. i) end)
    end
    async.sleep(0.05)
    slow:cancel()
    for i = 2, 50, 2 do tasks[i]:cancel() end
    check.raises("cancelled", slow.await, slow)
    for i = 1, 49, 2 do check.eq(tasks[i]:await(), "e" .. i, "reply of task " .. i) end
    for i = 2, 50, 2 do check.raises("cancelled", tasks[i].await, tasks[i]) end
    for i = 1, 20 do check.eq(c:call("ECHO", "after" .. i), "after" .. i) end
    c:close()
  end)

  check.test("per-call timeout: kind timeout; late reply dropped", function()
    local c = redis.connect(server.url, { timeout = 0.1 })
    local t0 = async.now()
    local e = check.raises("timeout", c.call, c, "EVAL", BUSY, 0, 500)
    check.between(async.now() - t0, 0.09, 0.45, "elapsed")
    check.matches(e.message, "timed out")
    -- queued behind the script: it times out too, or (on a slow machine)
    -- gets its own reply, never the script's
    local ok, r = pcall(c.call, c, "ECHO", "queued")
    check.truthy((ok and r == "queued") or (not ok and r.kind == "timeout"), tostring(r))
    async.sleep(0.6) -- the server is done with the script
    check.eq(c:call("ECHO", "next"), "next", "the late replies went to no one")
    c:close()
  end)

  check.test("blocking commands suspend only their task, on the pool", function()
    local c = redis.connect(server.url, { pool = 2 })
    c:call("DEL", "bq")
    local got = {}
    local waiters = {}
    for i = 1, 3 do
      waiters[i] = async.spawn(function()
        local r = c:call("BLPOP", "bq", 5)
        got[#got + 1] = r[2]
        return r[2]
      end)
    end
    async.sleep(0.1)
    for i = 1, 20 do check.eq(c:call("ECHO", i), tostring(i), "shared connection free") end
    check.eq(#got, 0)
    c:call("RPUSH", "bq", "x", "y", "z")
    async.gather(waiters)
    table.sort(got)
    check.list(got, { "x", "y", "z" }, "each blocked task got one (the third after a pool slot freed)")
    -- a cancelled blocking call gives its slot back
    local b = async.spawn(function() return c:call("BLPOP", "bq", 0) end)
    async.sleep(0.05)
    b:cancel()
    check.raises("cancelled", b.await, b)
    local r = c:call("XREAD", "BLOCK", 50, "STREAMS", "nostream", "$")
    check.eq(r, nil, "XREAD BLOCK timed out on the server: null")
    c:call("RPUSH", "bq", "w")
    check.eq(c:call("BLPOP", "bq", 1)[2], "w")
    c:close()
  end)

  check.test("connection failures: refused, malformed URL, wrong password", function()
    local e = check.raises("connection", redis.connect, "redis://127.0.0.1:1/0")
    check.matches(e.message, "[Rr]efused")
    for _, bad in ipairs({ "http://127.0.0.1:6379", "redis://", "redis://:6379",
                           "redis://host:port", "redis://h:99999", "redis://h:1/x",
                           "unix://relative", "redis://user@host:1" }) do
      e = check.raises("invalid_url", redis.connect, bad)
      check.matches(e.message, bad:gsub("%p", "%%%0"), "the URL in the message")
    end
    e = check.raises("connection", redis.connect,
                     "redis://:wrong@127.0.0.1:" .. secured.port .. "/0")
    check.matches(e.message, "WRONGPASS")
    e = check.raises("connection", redis.connect, "redis://127.0.0.1:" .. secured.port)
    check.matches(e.message, "NOAUTH")
    local c = redis.connect(secured.url .. "")
    check.eq(c:call("PING"), "PONG", "right password")
    c:close()
    c = redis.connect("redis://default:s3cret@127.0.0.1:" .. secured.port .. "/2")
    check.eq(c:call("PING"), "PONG", "user and password, db 2")
    c:close()
  end)

  check.test("connect_timeout: a server that does not answer", function()
    local admin = redis.connect(server.url)
    admin:call("CLIENT", "PAUSE", 800, "ALL") -- commands wait; connects succeed
    local t0 = async.now()
    local e = check.raises("connection", redis.connect, server.url, { connect_timeout = 0.2 })
    check.matches(e.message, "timed out connecting")
    check.between(async.now() - t0, 0.15, 0.7, "elapsed")
    async.sleep(0.8)
    check.eq(admin:call("PING"), "PONG")
    admin:close()
  end)

  check.test("server killed and restarted: calls fail with connection, then recover", function()
    local s = servers.start()
    local c = redis.connect(s.url, { connect_timeout = 1 })
    c:call("SET", "k", "before")
    local slow = async.spawn(function() return c:call("EVAL", BUSY, 0, 2000) end)
    local queued = async.spawn(function() return c:call("ECHO", "queued") end)
    async.sleep(0.1)
    s:kill()
    check.raises("connection", slow.await, slow)
    local e = check.raises("connection", queued.await, queued)
    check.matches(e.message, "redis: ")
    check.raises("connection", c.call, c, "PING")
    s:restart()
    local ok, v
    local t0 = async.now()
    repeat
      ok, v = pcall(c.call, c, "PING")
      if not ok then
        check.eq(v.kind, "connection", "while it comes back")
        async.sleep(0.05)
      end
    until ok or async.now() - t0 > 10
    check.eq(v, "PONG", "recovered")
    check.eq(c:call("GET", "k"), nil, "a fresh server (no persistence)")
    check.eq(c:call("SET", "k", "after"), "OK")
    c:close()
    s:stop()
  end)
end

local ok, err = pcall(run)
servers.stop_all()
if not ok then error(err, 0) end
check.done()
