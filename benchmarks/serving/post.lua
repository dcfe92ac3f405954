-- wrk script: POST the JSON body read from the file named by $WRK_BODY.
local path = os.getenv("WRK_BODY")
local file = assert(io.open(path, "rb"), "set WRK_BODY to a JSON file")
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"

-- Count non-2xx answers so a fast error page cannot pass for throughput.
local bad = 0
function response(status, headers, body)
  if status >= 300 then bad = bad + 1 end
end
