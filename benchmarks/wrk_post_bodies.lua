-- wrk script for benchmarks/common.py's wrk_latency: each wrk thread POSTs its share of a file of
-- JSON bodies (one per line; thread k of n takes lines k, k + n, ...), each body once, in order.
-- Arguments after `--`: the bodies file, the thread count, the path.
local counter = 1

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  bodies, next_body, path = {}, 1, args[3]
  local threads, line_number = tonumber(args[2]), 0
  for line in io.lines(args[1]) do
    if line_number % threads == id - 1 then
      table.insert(bodies, line)
    end
    line_number = line_number + 1
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  local body = bodies[next_body]
  if body == nil then
    error("wrk_post_bodies.lua: out of bodies; give it more lines or a shorter duration")
  end
  next_body = next_body + 1
  return wrk.format(nil, path, nil, body)
end
