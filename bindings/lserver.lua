-- The HTTP server's Lua front (embedded in the binary; see lserver.c).
-- Called once with the C core; returns serve(opts). docs/server.md is the
-- user's documentation.
local core = ...

local async = require "async"
local spawn, event, current = async.spawn, async.event, async.current
local wait_for, aerror = async.wait_for, async.error
local listen, dispatch_requests, stop = core.listen, core.dispatch, core.stop
local info, idle, cancel_handlers = core.info, core.idle, core.cancel
local closing = core.closing
local setmetatable, type, tostring, error = setmetatable, type, tostring, error
local xpcall, pcall, pairs, ipairs = xpcall, pcall, pairs, ipairs
local tonumber, require, rawset = tonumber, require, rawset
local traceback = debug.traceback
local concat, insert = table.concat, table.insert
local gsub, gmatch, find, sub, upper, char, format =
  string.gsub, string.gmatch, string.find, string.sub, string.upper,
  string.char, string.format
local stderr = io.stderr

-- JSON: async.json (built in; exact integers). This function is the one
-- place that chooses the codec (it fell back to lua-cjson until async.json
-- landed).
local json
local function codec()
  if json == nil then json = require "async.json" end
  return json
end

local function is_kind(e, kind)
  return type(e) == "table" and e.kind == kind
end

---- requests -------------------------------------------------------------

local function unescape(s)
  s = gsub(s, "+", " ")
  return (gsub(s, "%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end

local function decode_query(qs)
  local t = {}
  if qs == nil then return t end
  for pair in gmatch(qs, "[^&]+") do
    local eq = find(pair, "=", 1, true)
    if eq then
      t[unescape(sub(pair, 1, eq - 1))] = unescape(sub(pair, eq + 1))
    else
      t[unescape(pair)] = ""
    end
  end
  return t
end

local Request = {}
local request_mt = {}

function request_mt.__index(req, k)
  local m = Request[k]
  if m ~= nil then return m end
  if k == "headers" then
    local h = req._R:headers()
    rawset(req, "headers", h)
    return h
  elseif k == "query" then
    local q = decode_query(req._qs)
    rawset(req, "query", q)
    return q
  elseif k == "params" then
    local p = {}
    rawset(req, "params", p)
    return p
  end
end

function Request:body()
  local b = self._body
  if b == nil then
    b = self._R:body()
    self._body = b
  end
  return b
end

function Request:json()
  local ok, v = pcall(codec().decode, self:body())
  if not ok then
    local msg = type(v) == "table" and v.message or tostring(v)
    error(aerror("json", "invalid JSON in the request body: " .. tostring(msg)), 2)
  end
  return v
end

---- responses ------------------------------------------------------------

local Response = {}
Response.__index = Response

function Response:status(n)
  if type(n) ~= "number" or n < 100 or n > 999 or n % 1 ~= 0 then
    error("bad argument #1 to 'status' (HTTP status expected)", 2)
  end
  self._status = n
  return self
end

function Response:header(k, v)
  if type(k) ~= "string" then
    error("bad argument #1 to 'header' (string expected)", 2)
  end
  -- What would let a value start a header or a response of its own (a
  -- query string echoed into a header, say) is refused, as Node does.
  if k == "" or find(k, "[^%w!#$%%&'*+%-.^_`|~]") then
    error(format("bad argument #1 to 'header' (%q is not a header name)", k), 2)
  end
  v = tostring(v)
  if find(v, "[\r\n\0]") then
    error("bad argument #2 to 'header' (header value with CR, LF or NUL)", 2)
  end
  local h = self._h
  if h == nil then
    h = {}
    self._h = h
  end
  h[#h + 1] = k
  h[#h + 1] = v
  if upper(k) == "CONTENT-TYPE" then self._ctype = true end
  return self
end

function Response:send(body)
  if body ~= nil and type(body) ~= "string" then body = tostring(body) end
  self._sent = true
  self._R:respond(self._status, self._h, body)
end

function Response:json(value)
  local body = codec().encode(value)
  if not self._ctype then self:header("content-type", "application/json") end
  self._sent = true
  self._R:respond(self._status, self._h, body)
end

local function start(self)
  if not self._streaming then
    self._streaming = true
    self._sent = true
    self._R:start(self._status, self._h)
  end
end

function Response:write(chunk)
  if type(chunk) ~= "string" then chunk = tostring(chunk) end
  start(self)
  self._R:write(chunk)
end

function Response:finish()
  start(self)
  self._R:finish()
end

local Sse = {}
Sse.__index = Sse

-- One event: "event:" when given, then one "data:" line per line of data.
function Sse:send(ev, data)
  local parts = {}
  if data == nil then ev, data = nil, ev end
  if ev ~= nil then parts[1] = "event: " .. tostring(ev) .. "\n" end
  data = tostring(data == nil and "" or data)
  for line in gmatch(data .. "\n", "([^\n]*)\n") do
    parts[#parts + 1] = "data: " .. line .. "\n"
  end
  parts[#parts + 1] = "\n"
  self._res._R:write(concat(parts))
end

function Sse:comment(text)
  self._res._R:write(": " .. tostring(text or "") .. "\n\n")
end

function Sse:close()
  self._res._R:finish()
end

function Response:sse()
  if not self._ctype then self:header("content-type", "text/event-stream") end
  self:header("cache-control", "no-cache")
  start(self)
  return setmetatable({_res = self}, Sse)
end

---- routes ---------------------------------------------------------------

local function split_path(p)
  local segs = {}
  for s in gmatch(p, "[^/]+") do segs[#segs + 1] = s end
  return segs
end

-- A route pattern: "/users/:id/posts" (":name" takes one segment) and an
-- optional trailing "*" (the rest, in params["*"]).
local function compile(pattern)
  local segs = split_path(pattern)
  local tail = false
  if segs[#segs] == "*" then
    segs[#segs] = nil
    tail = true
  end
  return segs, tail
end

local function match_route(r, segs)
  local n = #r.segs
  if #segs < n or (#segs > n and not r.tail) then return nil end
  local params = {}
  for i = 1, n do
    local p = r.segs[i]
    if sub(p, 1, 1) == ":" then
      params[sub(p, 2)] = unescape(segs[i])
    elseif p ~= segs[i] then
      return nil
    end
  end
  if r.tail then params["*"] = concat(segs, "/", n + 1) end
  return params
end

-- The route for method and path, its params; or nil and the methods the
-- path would accept ("GET, POST"), if any.
local function find_route(routes, method, path)
  local segs = split_path(path)
  local allow
  for _, r in ipairs(routes) do
    local params = match_route(r, segs)
    if params then
      if r.method == "*" or r.method == method or
         (method == "HEAD" and r.method == "GET") then
        return r.fn, params
      end
      allow = allow or {}
      if not allow[r.method] then
        allow[r.method] = true
        allow[#allow + 1] = r.method
      end
    end
  end
  return nil, allow and concat(allow, ", ")
end

---- running one request --------------------------------------------------

local function handler_error(e)
  if is_kind(e, "cancelled") or is_kind(e, "json") or is_kind(e, "closed") then
    return e
  end
  return {err = e, tb = traceback(tostring(e), 2)}
end

local function plain(R, status, text, extra)
  local h = {"content-type", "text/plain; charset=utf-8"}
  if extra then for i = 1, #extra do h[#h + 1] = extra[i] end end
  R:respond(status, h, text)
end

-- Each request's task (spawned by core.dispatch). When it ends, however
-- it ends, the C side lets go of R: an unanswered request gets a 503.
local function run(srv, R, method, path, qs)
  local req = setmetatable({method = method, path = path, _qs = qs, _R = R},
                           request_mt)
  -- _sent is there from the start: setting it later would grow the table.
  local res = setmetatable({_R = R, _status = 200, _sent = false}, Response)
  local fn, params = nil, nil
  local answered = false
  if srv._routes[1] ~= nil then
    local allow
    fn, allow = find_route(srv._routes, method, path)
    if fn then
      params = allow
    elseif allow then
      pcall(plain, R, 405, "method not allowed\n", {"allow", allow})
      answered = true
    end
  end
  if fn == nil and not answered then
    fn = srv._handler
    if fn == nil then pcall(plain, R, 404, "not found\n") end
  end
  if fn ~= nil then
    if params then req.params = params end
    local ok, e = xpcall(fn, handler_error, req, res)
    if ok then
      if not res._sent then
        pcall(R.respond, R, 204, res._h)
      elseif res._streaming and R:state() == "streaming" then
        pcall(R.finish, R)
      end
    elseif is_kind(e, "cancelled") then
      error(e, 0)
    elseif is_kind(e, "json") then
      if R:state() == "new" then
        pcall(plain, R, 400, "bad request: " .. tostring(e.message) .. "\n")
      end
    elseif not is_kind(e, "closed") then
      stderr:write(format("asyncrun: http handler for %s %s failed: %s\n",
                          method, path, e.tb))
      if R:state() == "new" then
        pcall(plain, R, 500, "internal server error\n")
      end
    end
  end
end

---- the server -----------------------------------------------------------

local Server = {}
Server.__index = Server

function Server:route(method, pattern, fn)
  if type(method) ~= "string" then
    error("bad argument #1 to 'route' (string expected)", 2)
  end
  if type(pattern) ~= "string" or sub(pattern, 1, 1) ~= "/" then
    error("bad argument #2 to 'route' (path pattern starting with / expected)", 2)
  end
  if type(fn) ~= "function" then
    error("bad argument #3 to 'route' (function expected)", 2)
  end
  local segs, tail = compile(pattern)
  insert(self._routes, {method = upper(method), segs = segs, tail = tail, fn = fn})
  return self
end

-- Waits until no handler is running but those in close (a handler may
-- close its own server); the dispatcher ends first, so none can start any
-- more.
local function drain(self)
  local d = self._dispatcher
  if not d:done() then self._done_ev:wait() end
  idle(self._S)
end

local function closed(self)
  self._closed = true
  self._closed_ev:set()
end

function Server:close(opts)
  local grace = 5
  if opts ~= nil then
    if type(opts) ~= "table" then
      error("bad argument #1 to 'close' (table expected)", 2)
    end
    grace = opts.grace or grace
    if type(grace) ~= "number" or grace < 0 then
      error("bad option 'grace' to 'close' (number >= 0 expected)", 2)
    end
  end
  if self._closed then return end
  -- A handler closing its own server is not waited for (nor cancelled).
  closing(self._S, current())
  if self._closing then
    self._closed_ev:wait()
    return
  end
  self._closing = true
  stop(self._S)
  local ok, e = pcall(wait_for, function() drain(self) end, grace)
  if not ok and is_kind(e, "timeout") then
    -- Grace is over: cancel what still runs, then wait for it to end.
    self._dispatcher:cancel()
    stop(self._S, true)
    cancel_handlers(self._S)
    ok, e = pcall(drain, self)
  end
  if not ok then
    -- This close was cancelled or failed: the server closes by force, and
    -- whoever waits for it (srv:wait(), another close) is let go.
    stop(self._S, true)
    cancel_handlers(self._S)
    closed(self)
    error(e, 0)
  end
  closed(self)
end

-- Waits until the server is closed. If the waiting task is cancelled
-- (Ctrl-C, the end of the run), the server stops accepting first.
function Server:wait()
  local ok, e = pcall(self._closed_ev.wait, self._closed_ev)
  if not ok then
    stop(self._S, true)
    error(e, 0)
  end
end

function Server:stats()
  local conns, reqs, stopped, active = info(self._S)
  return {connections = conns, requests = reqs, active = active,
          closed = stopped}
end

local function dispatch(self)
  local S = self._S
  local ok, e = pcall(dispatch_requests, S, run, self)
  self._done_ev:set()
  if not ok then
    stop(S, true)
    error(e, 0)
  end
end

local OPTS = {host = "string", port = "number", handler = "function",
              tls = "table", max_body = "number", max_header = "number",
              timeout = "number", max_connections = "number",
              grace = "number"}

-- Numeric options: lowest value, fractions allowed, what is expected,
-- highest value.
local MIN = {timeout = {0.001, true, "seconds > 0, at most a day, expected", 86400},
             grace = {0, true, "seconds >= 0, at most a day, expected", 86400},
             port = {0, false, "a whole number 0-65535 expected", 65535},
             max_body = {0, false, "a whole number of bytes expected"},
             max_header = {256, false, "a whole number of bytes >= 256 expected"},
             max_connections = {1, false, "a whole number >= 1 expected"}}

local function serve(opts)
  if type(opts) ~= "table" then
    error("bad argument #1 to 'serve' (table expected)", 2)
  end
  for k, v in pairs(opts) do
    if OPTS[k] == nil then
      error(format("bad argument #1 to 'serve' (unknown option '%s')", tostring(k)), 2)
    elseif type(v) ~= OPTS[k] then
      error(format("bad argument #1 to 'serve' (option '%s': %s expected)", k, OPTS[k]), 2)
    end
  end
  for k, lo in pairs(MIN) do
    local v = opts[k]
    if v ~= nil and not (v >= lo[1] and v <= (lo[4] or 86400 * 1e6)
                         and (lo[2] or v == v // 1)) then
      error(format("bad argument #1 to 'serve' (option '%s': %s)", k, lo[3]), 2)
    end
  end
  local host = opts.host or "127.0.0.1"
  local copts = {max_body = opts.max_body, max_header = opts.max_header,
                 timeout = opts.timeout, max_connections = opts.max_connections,
                 grace = opts.grace}
  if opts.tls then
    copts.cert, copts.key = opts.tls.cert, opts.tls.key
    if type(copts.cert) ~= "string" or type(copts.key) ~= "string" then
      error("bad argument #1 to 'serve' (tls needs cert and key file names)", 2)
    end
  end
  local S, port = listen(host, opts.port or 0, copts)
  local scheme = opts.tls and "https" or "http"
  local h = find(host, ":", 1, true) and "[" .. host .. "]" or host
  local self = setmetatable({
    _S = S, _handler = opts.handler, _routes = {},
    _done_ev = event(), _closed_ev = event(),
    port = port, host = host,
    url = format("%s://%s:%d", scheme, h, port),
  }, Server)
  self._dispatcher = spawn(dispatch, self)
  return self
end

return serve
