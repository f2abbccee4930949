-- Makes the scripts runnable by hand: luv from Debian's lua-luv (and cjson
-- from lua-cjson), sched.lua from this directory.
local dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = dir .. "/?.lua;" .. package.path
package.cpath = "/usr/lib/x86_64-linux-gnu/lua/5.4/?.so;" .. package.cpath
