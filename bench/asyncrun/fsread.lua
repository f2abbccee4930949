-- fsread: read FILE in 64 KiB chunks with async.fs; print the bytes read.
-- Usage: asyncrun fsread.lua N FILE   (N, the size in MiB, is not used).
local fs = require "async.fs"

local f <close> = fs.open(arg[2])
local n = 0
for chunk in f:chunks(65536) do n = n + #chunk end
print("sum=" .. n)
