-- A scraper: crawls the pages of one site breadth-first from URL, following
-- the links (<a href>) that stay on the same scheme, host and port, level by
-- level down to --depth, and reports what it found: each status's count and
-- the broken links (an error status, or no answer) with the pages that link
-- to them. At most --concurrency requests run at once, and requests start at
-- least --delay seconds apart (politeness: the site is not hammered).
--   asyncrun scripts/scraper.lua URL [--depth N] [--max-pages N] [--concurrency N]
--                                [--delay S] [--timeout S] [--seed N] [--quiet]
--
-- Exit status: 0 no broken link, 1 broken links (or the start page failed),
-- 2 a bad command line.

local async = require "async"
local http = require "async.http"
local kit = require "lib.scriptkit"

local format, concat, sort = string.format, table.concat, table.sort
local lower, gsub, gmatch, match = string.lower, string.gsub, string.gmatch, string.match
local max = math.max

local script = {
  name = "scraper",
  title = "Scraper",
  summary = "Crawls the same-host links of a site breadth-first; reports status counts and broken links.",
  description = "Only links to the start URL's scheme, host and port are followed; others are\n"
    .. "counted. Only HTML pages (Content-Type text/html) are searched for links.\n"
    .. "Exit status: 0 no broken link, 1 broken links found (or the start page failed),\n"
    .. "2 a bad command line.",
  args = "URL",
  min_args = 1,
  max_args = 1,
  options = {
    { "depth", "N", "levels of links to follow from the start page (default 2)", "integer", min = 0 },
    { "max-pages", "N", "pages to fetch at most (default 100)", "integer", min = 1 },
    { "concurrency", "N", "requests in flight at most (default 4)", "integer", min = 1 },
    { "delay", "S", "seconds between the starts of two requests (default 0.1)", "number", min = 0 },
    { "timeout", "S", "seconds allowed per request (default 10)", "number", min = 0.001 },
  },
}

-- URLs ------------------------------------------------------------------

-- "http://Host:8080/a/b?q#f" -> "http", "host:8080", "/a/b?q" (no fragment).
local function split_url(url)
  local scheme, auth, rest = match(url, "^(%a[%w+.-]*)://([^/?#]*)([^#]*)")
  if not scheme then return nil end
  if rest == "" then rest = "/" elseif rest:sub(1, 1) == "?" then rest = "/" .. rest end
  return lower(scheme), lower(auth), rest
end

-- Removes "." and ".." segments from a path (RFC 3986, 5.2.4).
local function clean_path(path)
  local p, q = match(path, "^([^?]*)(.*)$")
  local out = {}
  local trailing = p:sub(-1) == "/" or p:match("/%.%.?$") ~= nil
  for seg in gmatch(p, "[^/]+") do
    if seg == ".." then
      out[#out] = nil
    elseif seg ~= "." then
      out[#out + 1] = seg
    end
  end
  local s = "/" .. concat(out, "/")
  if trailing and s ~= "/" then s = s .. "/" end
  return s .. q
end

-- The absolute URL that ref (an href) names on the page at base, without
-- its fragment; nil for what is not http(s) (mailto:, javascript:, ...).
local function resolve(base, ref)
  ref = gsub(gsub(ref, "&amp;", "&"), "^%s+", "")
  ref = gsub(ref, "%s+$", "")
  ref = match(ref, "^[^#]*")
  local scheme, auth, path = split_url(base)
  if match(ref, "^%a[%w+.-]*:") then
    local s = lower(match(ref, "^(%a[%w+.-]*):"))
    if s ~= "http" and s ~= "https" then return nil end
    local s2, a2, p2 = split_url(ref)
    if not s2 then return nil end
    return s2 .. "://" .. a2 .. clean_path(p2)
  elseif ref:sub(1, 2) == "//" then
    local s2, a2, p2 = split_url(scheme .. ":" .. ref)
    if not s2 then return nil end
    return s2 .. "://" .. a2 .. clean_path(p2)
  elseif ref == "" then
    return scheme .. "://" .. auth .. path
  elseif ref:sub(1, 1) == "/" then
    return scheme .. "://" .. auth .. clean_path(ref)
  elseif ref:sub(1, 1) == "?" then
    return scheme .. "://" .. auth .. match(path, "^[^?]*") .. ref
  end
  local dir = match(match(path, "^[^?]*"), "^(.*/)") or "/"
  return scheme .. "://" .. auth .. clean_path(dir .. ref)
end

-- The href of every <a> tag of an HTML page, in order.
local function hrefs(html)
  local out = {}
  for tag in gmatch(html, "<[aA]%s[^>]*>") do
    local h = match(tag, "[hH][rR][eE][fF]%s*=%s*\"([^\"]*)\"")
      or match(tag, "[hH][rR][eE][fF]%s*=%s*'([^']*)'")
      or match(tag, "[hH][rR][eE][fF]%s*=%s*([^%s\"'>]+)")
    if h then out[#out + 1] = h end
  end
  return out
end

-- The crawl ---------------------------------------------------------------

function script.run(o)
  local start = o.args[1]
  local scheme, auth = split_url(start)
  if not scheme or (scheme ~= "http" and scheme ~= "https") or auth == "" then
    kit.usage_error(script, "URL must be an http:// or https:// URL, got '%s'", start)
  end
  local site = scheme .. "://" .. auth
  start = resolve(start, "")
  local depth = o.depth or 2
  local max_pages = o.max_pages or 100
  local concurrency = o.concurrency or 4
  local delay = o.delay or 0.1

  kit.heading(o, script.title)
  o.show("crawling %s (depth %d, at most %d pages, %d at once, %.2f s apart)",
    start, depth, max_pages, concurrency, delay)

  -- Shown relative to the site: "/a/b.html".
  local function short(url)
    if url:sub(1, #site) == site then return url:sub(#site + 1) end
    return url
  end

  local session = http.session({ timeout = o.timeout or 10, connect_timeout = 5,
    max_connections = concurrency })
  -- One start per `delay` seconds: a sliding window of one.
  local polite = delay > 0 and async.rate_limiter(1, delay) or nil

  local seen = {}       -- url -> true once queued
  local linked_from = {} -- url -> { page, ... } (same-host links only)
  local results = {}     -- url -> { status = or error = }
  local statuses = {}
  local external, beyond, skipped_limit = {}, 0, 0
  local fetched, in_flight, peak = 0, 0, 0
  local t0 = async.now()

  local function note_link(url, from)
    local l = linked_from[url]
    if not l then l = {}; linked_from[url] = l end
    if from and l[#l] ~= from then l[#l + 1] = from end
  end

  -- Fetches one page; returns the same-host links it has (HTML only).
  local function visit(item)
    if polite then polite:acquire() end
    in_flight = in_flight + 1
    peak = max(peak, in_flight)
    local started = async.now()
    local ok, r = pcall(session.get, session, item.url)
    in_flight = in_flight - 1
    fetched = fetched + 1
    local links = {}
    if not ok then
      if type(r) == "table" and r.kind == "cancelled" then error(r, 0) end
      local why = type(r) == "table" and r.kind and (r.kind .. ": " .. tostring(r.message)) or tostring(r)
      results[item.url] = { error = why }
      statuses.error = (statuses.error or 0) + 1
      o.log("  [d%d] ERR %s (%s)", item.depth, short(item.url), why)
      return links
    end
    results[item.url] = { status = r.status }
    statuses[r.status] = (statuses[r.status] or 0) + 1
    local ctype = lower(r.headers["content-type"] or "")
    local html = r:ok() and ctype:find("text/html", 1, true) ~= nil
    if html then
      -- Links resolve against where the page ended up after redirects.
      for _, h in ipairs(hrefs(r.body)) do
        local url = resolve(r.url or item.url, h)
        if url then
          if url:sub(1, #site) == site and (url:sub(#site + 1, #site + 1) == "/" or #url == #site) then
            links[#links + 1] = url
          else
            external[url] = true
          end
        end
      end
    end
    o.log("  [d%d] %d %s (%.2f s%s)", item.depth, r.status, short(item.url), async.now() - started,
      html and format(", %d links", #links) or "")
    return links
  end

  seen[start] = true
  local level = { { url = start, depth = 0 } }
  local queued = 1
  local reached = 0
  while #level > 0 do
    reached = level[1].depth
    local found = async.map(visit, level, { concurrency = concurrency })
    local next_level = {}
    for i = 1, found.n do
      local from = level[i].url
      for _, url in ipairs(found[i]) do
        note_link(url, short(from))
        if not seen[url] then
          if level[i].depth + 1 > depth then
            beyond = beyond + 1
            seen[url] = "beyond"
          elseif queued >= max_pages then
            skipped_limit = skipped_limit + 1
            seen[url] = "limit"
          else
            seen[url] = true
            queued = queued + 1
            next_level[#next_level + 1] = { url = url, depth = level[i].depth + 1 }
          end
        end
      end
    end
    level = next_level
  end
  local elapsed = async.now() - t0

  -- The report.
  o.show("pages: %d fetched in %.2f s, to depth %d (at most %d requests at once)",
    fetched, elapsed, reached, peak)
  local keys = {}
  for k in pairs(statuses) do keys[#keys + 1] = k end
  sort(keys, function(a, b)
    if type(a) ~= type(b) then return type(a) == "number" end
    return a < b
  end)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = format("%s %d", tostring(k), statuses[k]) end
  o.show("status: %s", concat(parts, ", "))
  local n_ext = 0
  for _ in pairs(external) do n_ext = n_ext + 1 end
  o.show("not followed: %d beyond the depth, %d over the page limit, %d on other sites",
    beyond, skipped_limit, n_ext)

  local broken = {}
  for url, res in pairs(results) do
    if res.error or res.status >= 400 then broken[#broken + 1] = url end
  end
  sort(broken)
  o.show("broken links: %d", #broken)
  for _, url in ipairs(broken) do
    local res = results[url]
    local from = linked_from[url] and #linked_from[url] > 0 and concat(linked_from[url], ", ") or "(the start URL)"
    o.show("  %s (%s) linked from %s", short(url), res.error or tostring(res.status), from)
  end
  local start_ok = results[start] and results[start].status and results[start].status < 400
  return (#broken > 0 or not start_ok) and 1 or 0
end

return kit.main(script, ...)
