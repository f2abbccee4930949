-- startup: load luv and run its (empty) loop.
dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/prelude.lua")
local uv = require "luv"
uv.run()
