package.path = package.path .. ";" .. os.getenv("WRK_DIR") .. "/?.lua"
require("common")

-- A few bodies of 650 random ids, built once per thread.
local bodies = {}

init = function(args)
  for b = 1, 16 do
    local ids = {}
    for i = 1, 650 do
      ids[i] = '"' .. random_user() .. '"'
    end
    bodies[b] = '{"ids":[' .. table.concat(ids, ",") .. ']}'
  end
end

request = function()
  return wrk.format("POST", "/v1.0/communications/getPresencesByUserId", headers(), bodies[math.random(1, 16)])
end
