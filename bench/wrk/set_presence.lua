package.path = package.path .. ";" .. os.getenv("WRK_DIR") .. "/?.lua"
require("common")
local app = os.getenv("APP")

request = function()
  local body = string.format(
    '{"sessionId":"%s","availability":"Busy","activity":"InACall","expirationDuration":"PT1H"}', app)
  return wrk.format("POST", "/v1.0/users/" .. random_user() .. "/presence/setPresence", headers(), body)
end
