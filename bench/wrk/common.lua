-- Shared by the scenarios: users spread over USERS ids, the token, and a JSON summary line at the end.
local users = tonumber(os.getenv("USERS") or "100000")
local token = os.getenv("TOKEN") or ""

function user_id(index)
  return string.format("00000000-0000-4000-8000-%012d", index)
end

function random_user()
  return user_id(math.random(0, users - 1))
end

function headers()
  return { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }
end

-- WRK_DELAY_MS: each connection waits this long before each request (bench/http-load.sh's soak, which
-- holds the load below capacity).
local pause = tonumber(os.getenv("WRK_DELAY_MS") or "0")
if pause > 0 then
  function delay()
    return pause
  end
end

function setup(thread)
  math.randomseed(os.time())
end

function done(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status
    + summary.errors.timeout
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), errors))
end
