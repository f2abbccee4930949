-- fslines: count the lines of FILE with async.fs's f:lines().
-- Usage: asyncrun fslines.lua N FILE   (N, the size in MiB, is not used).
local fs = require "async.fs"

local f <close> = fs.open(arg[2])
local n = 0
for _ in f:lines() do n = n + 1 end
print("sum=" .. n)
