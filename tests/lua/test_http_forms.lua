-- async.http's form bodies, multipart uploads, cookie jars and
-- raise_for_status, against Debian's httpbin (tests/helpers/).
local http = require "async.http"
local json = require "async.json"
local check = require "check"
local servers = require "servers"

local hb = servers.httpbin(120)
local function url(path) return hb:url(path) end

check.test("form = {...}: URL-encoded, with its Content-Type", function()
  local r = http.post(url("/post"), { form = { name = "Lua async", tag = { "a", "b" }, n = 3 } })
  check.eq(r.status, 200)
  local j = r:json()
  check.eq(j.form.name, "Lua async")
  check.eq(j.form.n, "3")
  check.eq(j.form.tag[1], "a"); check.eq(j.form.tag[2], "b")
  check.eq(j.headers["Content-Type"], "application/x-www-form-urlencoded")
end)

check.test("files = {...}: multipart from strings, with form fields", function()
  local blob = "line 1\r\nline 2\0binary\255"
  local r = http.post(url("/post"), {
    form = { title = "report" },
    files = { doc = { content = "hello, world", filename = "hello.txt", content_type = "text/plain" },
              raw = "plain string file" },
  })
  check.eq(r.status, 200)
  local j = r:json()
  check.eq(j.form.title, "report")
  check.eq(j.files.doc, "hello, world")
  check.eq(j.files.raw, "plain string file")
  check.matches(j.headers["Content-Type"], "^multipart/form%-data; boundary=asyncrun%-")
  -- binary content arrives intact (httpbin shows non-UTF-8 files as data URLs)
  local r2 = http.post(url("/post"), { files = { bin = { content = blob, filename = "b.bin" } } })
  check.truthy(r2:json().files.bin ~= nil, "binary file received")
end)

check.test("bad form options raise argument errors", function()
  check.raises(nil, http.post, url("/post"), { form = 3 })
  check.raises(nil, http.post, url("/post"), { files = { f = { filename = "x" } } })
  check.raises(nil, http.post, url("/post"), { files = { ['a"b'] = "x" } })
  check.raises(nil, http.post, url("/post"), { files = { f = { content = "x", content_type = "text/plain\r\nX-Evil: 1" } } })
end)

check.test("session{cookies=true}: a jar, cookies set during a redirect kept", function()
  local s = http.session({ cookies = true })
  -- /cookies/set answers 302 to /cookies with Set-Cookie: the jar keeps it
  local r = s:get(url("/cookies/set?flavour=oat&size=2"))
  check.eq(r.status, 200)
  check.eq(r.url, url("/cookies"))
  check.eq(r:json().cookies.flavour, "oat", "cookie seen after the redirect")
  check.eq(s:get(url("/cookies")):json().cookies.size, "2", "and on the next request")
  s:get(url("/cookies/delete?flavour"))
  local c = s:get(url("/cookies")):json().cookies
  check.eq(c.flavour, nil, "deleted"); check.eq(c.size, "2")
  -- another session, and the default one, have no jar
  check.eq(next(http.session():get(url("/cookies")):json().cookies), nil)
  check.eq(next(http.get(url("/cookies")):json().cookies), nil)
end)

check.test("a jar's session collected with its handles pooled", function()
  do
    local s = http.session({ cookies = true })
    s:get(url("/cookies/set?a=1"))
  end
  collectgarbage(); collectgarbage()
  check.eq(next(http.get(url("/cookies")):json().cookies), nil, "no cookie leaks to pooled handles")
end)

check.test("raise_for_status: the response below 400, kind http_status above", function()
  local r = http.get(url("/status/204"))
  check.eq(r:raise_for_status(), r)
  local e = check.raises("http_status", function() http.get(url("/status/404")):raise_for_status() end)
  check.eq(e.status, 404)
  check.eq(e.url, url("/status/404"))
  check.matches(e.message, "404")
  e = check.raises("http_status", function() http.get(url("/status/503")):raise_for_status() end)
  check.eq(e.status, 503)
end)

check.test("json= sends async.json's encoding: exact integers, [] and {}", function()
  local big = 9007199254740993 -- 2^53 + 1
  local r = http.post(url("/post"), { json = { id = big, list = json.array(), map = {}, f = 0.1 } })
  check.eq(r.status, 200)
  check.eq(r:json().data, json.encode({ id = big, list = json.array(), map = {}, f = 0.1 }))
  local back = json.decode(r:json().data)
  check.eq(back.id, big); check.eq(math.type(back.id), "integer")
  check.eq(getmetatable(back.list), json.array_mt)
  check.eq(next(back.map), nil)
end)

hb:stop()
check.done()
