-- wrk script: POST the JSON body in $WRK_BODY at a fixed mean rate instead of as fast as answers come.
-- Each connection waits a random think time (exponential, mean $WRK_DELAY_MS ms) before each request,
-- so the offered rate is about connections / (mean think time + latency): set below the service's
-- saturation, latency measures the service's work and what interferes with it, not a queue.
-- (Not a strict open loop: a connection whose answer is late sends its next request late. wrk2's -R
-- corrects for that; it is not packaged in Debian.)
local path = os.getenv("WRK_BODY")
local file = assert(io.open(path, "rb"), "set WRK_BODY to a JSON file")
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"
local mean = assert(tonumber(os.getenv("WRK_DELAY_MS")), "set WRK_DELAY_MS to the mean think time in ms")

function setup(thread)
  thread:set("seed", math.random(1, 2 ^ 30))
end

function init(args)
  math.randomseed(seed or os.time())
end

function delay()
  return -mean * math.log(1 - math.random())
end

local bad = 0
function response(status, headers, body)
  if status >= 300 then bad = bad + 1 end
end
