-- Encoding bench/run's 400-byte document with lua-cjson and async.json in
-- one process: the best of 5 rounds of 50,000 encodes each (CPU time).
--   build/asyncrun bench/json_encode.lua
local json = require "async.json"
local cjson = require "cjson"
local doc = json.decode('{"n": 42, "id": "item-042", "name": "Widget number 42", "active": true, "price": 52.5, "tags": ["bench", "asyncrun", "group-0"], "owner": {"name": "Bench Owner", "email": "owner@example.invalid"}, "history": [{"at": 1700000042, "qty": 1}, {"at": 1700000084, "qty": 2}, {"at": 1700000126, "qty": 3}], "note": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}')
for _, m in ipairs{{"cjson", cjson.encode}, {"async.json", json.encode}} do
  local best = math.huge
  for r = 1, 5 do
    local t0 = os.clock()
    for i = 1, 50000 do m[2](doc) end
    best = math.min(best, (os.clock() - t0) / 50000)
  end
  print(m[1], string.format("%.2f us", best * 1e6))
end
