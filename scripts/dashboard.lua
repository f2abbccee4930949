-- A live monitoring dashboard: runs periodic checks (HTTP endpoints and
-- shell commands), serves a page on loopback that shows their status, and
-- pushes every change to the browser with Server-Sent Events, so the page
-- updates without reloading. Each check is its own task; the page's event
-- stream is one more task per browser; nothing waits on anything else.
--   asyncrun scripts/dashboard.lua [CHECK ...] [--file FILE] [--interval S] [--timeout S]
--                                  [--port N] [--duration S] [--seed N] [--quiet]
--
-- A CHECK is one of
--   http://host/path            an HTTP check, named after its host and path
--   NAME=http://host/path       the same, named NAME
--   NAME=cmd:COMMAND            a shell command (/bin/sh -c), up when it exits 0
-- An HTTP check is up when the answer's status is below 400. FILE holds one
-- CHECK per line ('#' starts a comment).
--
-- The page is at http://127.0.0.1:PORT/ (printed at the start); /events is
-- the event stream and /api/status the current state as JSON.
-- Exit status: 0 after --duration (or Ctrl-C), 2 a bad command line.

local async = require "async"
local http = require "async.http"
local kit = require "lib.scriptkit"
local cjson = require "cjson"

local format, concat, gsub, match = string.format, table.concat, string.gsub, string.match
local encode = cjson.encode

-- Command checks need async.process; an asyncrun without it rejects them.
local has_process, process = pcall(require, "async.process")
if not has_process then process = nil end

local script = {
  name = "dashboard",
  title = "Dashboard",
  summary = "Runs periodic checks and shows their status live in a browser (Server-Sent Events).",
  description = "A CHECK is URL, NAME=URL (http:// or https://; up below status 400) or\n"
    .. "NAME=cmd:COMMAND (a /bin/sh command; up when it exits 0). --file FILE reads one\n"
    .. "CHECK per line. The page is served on 127.0.0.1; its address is printed first.\n"
    .. "Exit status: 0 after --duration or Ctrl-C, 2 a bad command line.",
  args = "[CHECK ...]",
  max_args = math.huge,
  options = {
    { "file", "FILE", "read checks from FILE, one per line" },
    { "interval", "S", "seconds between two runs of a check (default 5)", "number", min = 0.05 },
    { "timeout", "S", "seconds a check may take (default 5)", "number", min = 0.01 },
    { "port", "N", "port of the page (default: a free one)", "integer", min = 0 },
    { "duration", "S", "stop after S seconds (default: run until Ctrl-C)", "number", min = 0 },
  },
}

-- Parses one CHECK; returns a check table or nil and a message.
local function parse_check(spec)
  local name, rest = match(spec, "^([%w_.-]+)=(.*)$")
  if not name then rest = spec end
  if match(rest, "^https?://[^/]") then
    return { name = name or gsub(gsub(rest, "^https?://", ""), "/$", ""), kind = "http", target = rest }
  end
  local cmd = match(rest, "^cmd:(.*)$")
  if cmd then
    if not name then return nil, format("a command check needs a name (NAME=cmd:...): '%s'", spec) end
    if match(cmd, "^%s*$") then return nil, format("check '%s' has an empty command", name) end
    if not process then
      return nil, format("check '%s': command checks need async.process, which this asyncrun does not have", name)
    end
    return { name = name, kind = "cmd", target = cmd }
  end
  return nil, format("not a check: '%s' (want URL, NAME=URL or NAME=cmd:COMMAND)", spec)
end

-- Runs a check once. Returns up (boolean) and a one-line detail.
local function run_check(c, timeout)
  local t0 = async.now()
  if c.kind == "http" then
    local ok, r = pcall(c.session.get, c.session, c.target)
    local ms = (async.now() - t0) * 1000
    if not ok then
      if type(r) == "table" and r.kind == "cancelled" then error(r, 0) end
      return false, type(r) == "table" and r.kind and ("no answer: " .. r.kind) or tostring(r)
    end
    return r.status < 400, format("HTTP %d in %.0f ms", r.status, ms)
  end
  local ok, r = pcall(process.exec, { "/bin/sh", "-c", c.target }, { timeout = timeout })
  local ms = (async.now() - t0) * 1000
  if not ok then
    if type(r) == "table" and r.kind == "cancelled" then error(r, 0) end
    return false, type(r) == "table" and r.kind and (r.kind .. ": " .. tostring(r.message)) or tostring(r)
  end
  local line = match(r.stdout or "", "^%s*([^\n]*)") or ""
  if line == "" then line = match(r.stderr or "", "^%s*([^\n]*)") or "" end
  if #line > 80 then line = line:sub(1, 77) .. "..." end
  local how = r.code and format("exit %d", r.code) or ("killed by " .. tostring(r.signal))
  return r.code == 0, format("%s in %.0f ms%s", how, ms, line ~= "" and ": " .. line or "")
end

-- The page: a table filled and kept up to date by the event stream.
local PAGE = [[<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>asyncrun dashboard</title>
<style>
 body { font: 15px system-ui, sans-serif; margin: 2em; }
 table { border-collapse: collapse; } td, th { padding: .3em .8em; border-bottom: 1px solid #ddd; text-align: left; }
 .UP { color: #fff; background: #2a7; } .DOWN { color: #fff; background: #c33; } .PENDING { background: #eee; }
 .status { font-weight: bold; text-align: center; } #conn { color: #666; }
</style></head><body>
<h1>asyncrun dashboard</h1>
<p id="summary">waiting for the first results</p>
<table><thead><tr><th>check</th><th>status</th><th>detail</th><th>checked</th><th>target</th></tr></thead>
<tbody id="rows"></tbody></table>
<p id="conn">connecting</p>
<script>
"use strict";
window.loadId = Math.random().toString(36).slice(2);
let updates = 0;
function cell(tr, text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td); return td; }
function render(state) {
  const rows = document.getElementById("rows");
  rows.textContent = "";
  let up = 0;
  state.checks.forEach((c, i) => {
    const tr = document.createElement("tr");
    tr.id = "check-" + c.name;
    cell(tr, c.name);
    cell(tr, c.status, "status " + c.status).id = "status-" + c.name;
    cell(tr, c.detail || "");
    cell(tr, c.checked || "");
    cell(tr, c.kind + " " + c.target);
    rows.appendChild(tr);
    if (c.status === "UP") up++;
  });
  document.getElementById("summary").textContent =
    up + " of " + state.checks.length + " up (round " + state.round + ")";
}
const es = new EventSource("/events");
es.addEventListener("status", (e) => {
  updates++;
  render(JSON.parse(e.data));
  document.getElementById("conn").textContent = "live: " + updates + " updates received";
});
es.onerror = () => { document.getElementById("conn").textContent = "connection lost, retrying"; };
</script>
</body></html>
]]

function script.run(o)
  local checks, problems = {}, {}
  local specs = {}
  for _, a in ipairs(o.args) do specs[#specs + 1] = a end
  if o.file then
    local f, err = io.open(o.file, "r")
    if not f then
      io.stderr:write("dashboard.lua: cannot read ", err, "\n")
      return 2
    end
    for line in f:lines() do
      line = gsub(gsub(line, "^%s+", ""), "%s+$", "")
      if line ~= "" and line:sub(1, 1) ~= "#" then specs[#specs + 1] = line end
    end
    f:close()
  end
  local names = {}
  for _, s in ipairs(specs) do
    local c, err = parse_check(s)
    if not c then
      problems[#problems + 1] = err
    elseif names[c.name] then
      problems[#problems + 1] = format("two checks are named '%s'", c.name)
    else
      names[c.name] = true
      checks[#checks + 1] = c
    end
  end
  if #problems > 0 then kit.usage_error(script, "%s", concat(problems, "; ")) end
  if #checks == 0 then kit.usage_error(script, "no check given (CHECK arguments or --file FILE)") end
  if type(http.serve) ~= "function" then
    io.stderr:write("dashboard.lua: this asyncrun has no HTTP server (http.serve), so it cannot serve the page\n")
    return 2
  end

  local interval, timeout = o.interval or 5, o.timeout or 5
  local round = 0
  for _, c in ipairs(checks) do
    c.status, c.detail, c.checked = "PENDING", nil, nil
    if c.kind == "http" then c.session = http.session({ timeout = timeout, connect_timeout = timeout }) end
  end

  -- Every change replaces `changed` after setting it: each event stream
  -- waits on the one it saw, so it wakes once per change and misses none
  -- (it sends the whole state, which includes every earlier change).
  local changed = async.event()
  local function state()
    local list = {}
    for i, c in ipairs(checks) do
      list[i] = { name = c.name, kind = c.kind, target = c.target, status = c.status,
        detail = c.detail or "", checked = c.checked or "" }
    end
    return encode({ round = round, checks = list })
  end
  local function publish()
    local e = changed
    changed = async.event()
    e:set()
  end

  local srv = http.serve({ host = "127.0.0.1", port = o.port or 0 })
  local streams = 0
  srv:route("GET", "/", function(_, res)
    res:header("Content-Type", "text/html; charset=utf-8"):send(PAGE)
  end)
  srv:route("GET", "/api/status", function(_, res)
    res:header("Content-Type", "application/json"):send(state())
  end)
  srv:route("GET", "/events", function(_, res)
    local sse = res:sse()
    streams = streams + 1
    local ok, err = pcall(function()
      while true do
        local e = changed
        sse:send("status", state())
        -- A comment every 15 s keeps proxies from closing an idle stream.
        -- Only the timeout is caught: a cancellation (the server closing)
        -- ends the stream.
        while true do
          local woke, werr = pcall(async.wait_for, function() e:wait() end, 15)
          if woke then break end
          if not (type(werr) == "table" and werr.kind == "timeout") then error(werr, 0) end
          sse:comment("still here")
        end
      end
    end)
    streams = streams - 1
    -- A browser that goes away is the normal end of a stream.
    if not ok and not (type(err) == "table" and err.kind == "closed") then error(err, 0) end
  end)

  kit.heading(o, script.title)
  o.show("dashboard at %s/ (%d checks, every %g s)", (srv.url:gsub("/+$", "")), #checks, interval)
  io.stdout:flush()

  local changes = 0
  local t0 = async.now()
  local ok, err = pcall(async.group, function(g)
    for _, c in ipairs(checks) do
      g:spawn(function()
        while true do
          local up, detail = run_check(c, timeout)
          local status = up and "UP" or "DOWN"
          c.detail, c.checked = detail, async.timestamp():sub(12, 19)
          if status ~= c.status then
            o.show("[%s] %s: %s -> %s (%s)", c.checked, c.name, c.status, status, detail)
            io.stdout:flush()
            if c.status ~= "PENDING" then changes = changes + 1 end
            c.status = status
          end
          round = round + 1
          publish()
          async.sleep(interval)
        end
      end)
    end
    if o.duration then
      async.sleep(o.duration)
      error({ kind = "duration" })
    end
  end)
  if not ok and not (type(err) == "table" and err.kind == "duration") then error(err, 0) end
  srv:close({ grace = 0.2 })
  local up = 0
  for _, c in ipairs(checks) do if c.status == "UP" then up = up + 1 end end
  o.show("stopped after %.1f s: %d check runs, %d changes of status, %d of %d up", async.now() - t0,
    round, changes, up, #checks)
  return 0
end

return kit.main(script, ...)
