package.path = package.path .. ";" .. os.getenv("WRK_DIR") .. "/?.lua"
require("common")

request = function()
  return wrk.format("GET", "/v1.0/users/" .. random_user() .. "/presence", headers())
end
