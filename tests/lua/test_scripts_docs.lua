-- Runs every ```lua example of docs/tutorial.md and docs/scenarios.md, each
-- as its own case, so that the lab's documentation cannot drift from what
-- asyncrun does. An example's printed lines are checked against its
-- "--> " comments ("~0.2 s" is a duration, checked within 0.1 s).
local async = require "async"
local check = require "check"

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
-- The skeleton of a scenario in scenarios.md requires lib.scriptkit, found
-- next to the script in scripts/.
package.path = here .. "/../../scripts/?.lua;" .. package.path

local function examples(doc)
  local f = assert(io.open(here .. "/../../docs/" .. doc, "r"))
  local text = f:read("a")
  f:close()
  local list = {}
  for code in text:gmatch("```lua\n(.-)```") do list[#list + 1] = code end
  return list
end

for _, doc in ipairs({ "tutorial.md", "scenarios.md" }) do
  local list = examples(doc)
  for n, code in ipairs(list) do
    local chunk = assert(load(code, "=" .. doc .. " example " .. n))
    check.test("docs/" .. doc .. " example " .. n, function()
      local printed = {}
      local real_print = print
      print = function(...)
        local parts = {}
        for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
        printed[#printed + 1] = table.concat(parts, "\t")
      end
      local ok, err = pcall(chunk)
      print = real_print
      if not ok then error(err, 0) end
      -- The "--> " comments show, in order, the lines the example prints;
      -- those without a placeholder ("x", "...") must match exactly (runs
      -- of spaces in the docs stand for the tabs print puts between values).
      local wants = {}
      for want in code:gmatch("%-%->%s*([^\n]-)%s*\n") do wants[#wants + 1] = want end
      if #wants > 0 then
        check.eq(#printed, #wants, doc .. " example " .. n .. ": lines printed and documented")
        for k, want in ipairs(wants) do
          if want:sub(1, 1) == "~" then
            -- "~0.2 s": a duration, within 0.1 s (the machine may be loaded)
            local w = tonumber(want:match("[%d.]+"))
            local g = tonumber((printed[k] or ""):match("[%d.]+"))
            check.truthy(g and math.abs(g - w) <= 0.1 + 1e-9,
              doc .. " example " .. n .. " line " .. k .. ": " .. tostring(printed[k]) .. " vs " .. want)
          elseif not want:find("x", 1, true) and not want:find("...", 1, true) then
            local got = (printed[k] or ""):gsub("%s+", " ")
            check.eq(got, (want:gsub("%s+", " ")), doc .. " example " .. n .. " line " .. k)
          end
        end
      end
    end)
  end
  check.test(doc .. " has examples", function() check.truthy(#list >= 2, #list .. " examples") end)
end
check.done()
