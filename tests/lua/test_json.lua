-- async.json: exact integers, floats that round-trip, [] and {} that stay
-- what they were, null, errors of kind "json" with a position.
local json = require "async.json"
local cjson = require "cjson"
local check = require "check"

check.test("integers stay Lua integers, exact over int64", function()
  for _, n in ipairs({ 0, 1, -1, 2, 9007199254740993, -9007199254740993,
                       math.maxinteger, math.mininteger, 12345678901234567 }) do
    local v = json.decode(tostring(n))
    check.eq(math.type(v), "integer", "type of " .. n)
    check.eq(v, n)
    check.eq(json.encode(n), tostring(n))
  end
  check.eq(json.decode('{"id": 12345678901234567}').id, 12345678901234567)
end)

check.test("numbers beyond int64 and with a point or exponent are floats", function()
  check.eq(math.type(json.decode("2.0")), "float")
  check.eq(math.type(json.decode("1e3")), "float")
  check.eq(json.decode("1e3"), 1000.0)
  local big = json.decode("18446744073709551615")
  check.eq(math.type(big), "float"); check.eq(big, 18446744073709551615.0)
  -- beyond 64 bits (simdjson's DOM parser alone would refuse them)
  local t = json.decode('{"a": 123456789012345678901234567890, "b": [-9223372036854775809, 18446744073709551616],'
                        .. ' "s": "99999999999999999999999 \\" 88888888888888888888888"}')
  check.eq(t.a, 1.2345678901234568e29); check.eq(math.type(t.a), "float")
  check.eq(t.b[1], -9223372036854775809.0); check.eq(math.type(t.b[1]), "float")
  check.eq(t.b[2], 18446744073709551616.0)
  check.eq(t.s, '99999999999999999999999 " 88888888888888888888888', "strings untouched")
  check.eq(json.decode("-9223372036854775808"), math.mininteger)
  check.eq(math.type(json.decode("-9223372036854775808")), "integer")
  -- and errors after such a number still say where
  local e = check.raises("json", json.decode, '[123456789012345678901234567890, 1e400]')
  check.eq(e.position, 34)
end)

check.test("floats: the shortest text that reads back the same", function()
  -- (pairs, not keys: a float key with an integral value becomes an integer)
  local cases = { { 0.1, "0.1" }, { 0.1 + 0.2, "0.30000000000000004" }, { 2.0, "2.0" },
                  { -0.0, "-0.0" }, { 1e300, "1e+300" }, { 5e-324, "5e-324" }, { 2.5e-320, "2.5e-320" },
                  { 123456.789, "123456.789" }, { 1 / 3, "0.3333333333333333" }, { 2 / 3, "0.6666666666666666" } }
  for _, c in ipairs(cases) do
    local v, text = c[1], c[2]
    check.eq(json.encode(v), text)
    local back = json.decode(text)
    check.eq(back, v, "round trip of " .. text)
    check.eq(math.type(back), "float")
  end
  -- many random doubles
  math.randomseed(12)
  for _ = 1, 2000 do
    local v = (math.random() - 0.5) * 10 ^ math.random(-300, 300)
    check.eq(json.decode(json.encode(v)), v)
  end
end)

check.test("empty arrays and objects round-trip; the array marker", function()
  check.eq(json.encode(json.decode("[]")), "[]")
  check.eq(json.encode(json.decode("{}")), "{}")
  check.eq(json.encode(json.decode('{"a":[],"b":{},"c":[[]]}')):len(), #'{"a":[],"b":{},"c":[[]]}')
  check.eq(json.encode({}), "{}")
  check.eq(json.encode(json.array()), "[]")
  local t = json.array({ 1, 2 })
  check.eq(getmetatable(t), json.array_mt)
  check.eq(json.encode(t), "[1,2]")
  check.eq(getmetatable(json.decode("[1]")), json.array_mt, "decoded arrays carry the marker")
  check.eq(getmetatable(json.decode("{}")), nil)
  check.raises(nil, json.array, setmetatable({}, {}))
end)

check.test("null, booleans, strings and escapes", function()
  local t = json.decode('{"n":null,"t":true,"f":false,"s":"a\\"b\\\\c\\n\\u00e9\\ud83d\\ude00"}')
  check.eq(t.n, json.null); check.eq(json.null, cjson.null, "the same null as cjson")
  check.eq(t.t, true); check.eq(t.f, false)
  check.eq(t.s, 'a"b\\c\né😀')
  check.eq(json.encode("a\"b\\c\n\1/é"), '"a\\"b\\\\c\\n\\u0001/é"')
  check.eq(json.encode({ json.null, true, false }), "[null,true,false]")
  check.eq(json.encode("x\0y"), '"x\\u0000y"')
  check.eq(json.decode('"x\\u0000y"'), "x\0y")
end)

check.test("tables: arrays by their keys 1..n, objects otherwise", function()
  check.eq(json.encode({ 1, "two", { 3 } }), '[1,"two",[3]]')
  local sparse = json.decode(json.encode({ [1] = "a", [3] = "c" }))
  check.eq(sparse["1"], "a"); check.eq(sparse["3"], "c"); check.eq(getmetatable(sparse), nil)
  local o = json.decode(json.encode({ a = 1, [2] = "x", [1.5] = true }))
  check.eq(o.a, 1); check.eq(o["2"], "x"); check.eq(o["1.5"], true)
end)

check.test("what JSON cannot hold: kind json", function()
  check.raises("json", json.encode, { f = print })
  check.raises("json", json.encode, 0 / 0)
  check.raises("json", json.encode, math.huge)
  check.raises("json", json.encode, { [true] = 1 })
  local c = {}; c.self = c
  check.matches(check.raises("json", json.encode, c).message, "deeper than 1000")
end)

check.test("invalid JSON: kind json with the position", function()
  local cases = {
    ['{"a": 1, "b": [1, 2,, 3]}'] = 21,
    ["nul"] = 1,
    ["<html>"] = 1,
    ["[1, 2] x"] = 8,
    ['{"a" 1}'] = 6,
  }
  for text, pos in pairs(cases) do
    local e = check.raises("json", json.decode, text)
    check.eq(e.position, pos, "position in " .. text)
    check.matches(e.message, "position " .. pos)
  end
  check.raises("json", json.decode, "")
  check.raises("json", json.decode, string.rep("[", 5000) .. string.rep("]", 5000))
  check.raises(nil, json.decode, {})
end)

check.test("a large document: a million numbers and back", function()
  local parts = {}
  for i = 1, 100000 do parts[i] = string.format('{"i":%d,"f":%.17g,"s":"item %d"}', i, i / 7, i) end
  local text = "[" .. table.concat(parts, ",") .. "]"
  local t = json.decode(text)
  check.eq(#t, 100000)
  check.eq(t[77777].i, 77777); check.eq(t[77777].f, 77777 / 7); check.eq(t[77777].s, "item 77777")
  local again = json.decode(json.encode(t))
  check.eq(again[100000].f, 100000 / 7)
end)

check.test("a finalizer that decodes while a decode builds its tables", function()
  local seen, bad = 0, 0
  local function litter()
    for _ = 1, 200 do
      setmetatable({}, { __gc = function()
        local v = json.decode('{"inner": [1, 2, 3]}')
        if v.inner[3] == 3 then seen = seen + 1 else bad = bad + 1 end
      end })
    end
  end
  local parts = {}
  for i = 1, 20000 do parts[i] = string.format('{"i":%d,"s":"x%d"}', i, i) end
  local text = "[" .. table.concat(parts, ",") .. "]"
  for _ = 1, 5 do
    litter()
    local t = json.decode(text)
    check.eq(#t, 20000)
    for i = 1, 20000, 997 do check.eq(t[i].i, i); check.eq(t[i].s, "x" .. i) end
  end
  collectgarbage()
  check.eq(bad, 0, "finalizer decodes that went wrong")
  check.truthy(seen > 0, "finalizers ran")
end)

check.done()
