-- wrk script: one POST /v1/messages per request, destinations spread and clear of the simulator's magic endings.
-- Usage: KEY=... wrk -t2 -c10 -d10s --latency -s scripts/bench/post.lua http://127.0.0.1:8080
local counter = 0
local key = os.getenv("KEY")
request = function()
  counter = counter + 1
  local to = string.format("+4477009%05d", (counter % 9000) * 10 + 5)
  local body = '{"to": "' .. to .. '", "from": "Bench", "body": "benchmark message"}'
  return wrk.format("POST", "/v1/messages", {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}, body)
end
