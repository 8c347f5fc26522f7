-- wrk script for webhook-guard benchmarks.
-- BENCH_BODY: file with the request body. BENCH_FIXTURES: optional file of pre-signed
-- deliveries, one "id timestamp signature" per line: each request sends the next one (unique
-- deliveries). Without fixtures, BENCH_ID/BENCH_TS/BENCH_SIG give one fixed delivery.
local function read(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

local body = read(os.getenv("BENCH_BODY"))
local fixtures = {}
local n = 0
-- BENCH_OFFSET: start further into the fixtures (a second run must not replay the first's).
local i = tonumber(os.getenv("BENCH_OFFSET") or "0")
-- BENCH_LIMIT: stop after that many deliveries (prefilling a store to a given size).
local limit = tonumber(os.getenv("BENCH_LIMIT") or "0")
local sent = 0

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"

local fixture_path = os.getenv("BENCH_FIXTURES")
if fixture_path then
  for line in io.lines(fixture_path) do
    local id, ts, sig = line:match("^(%S+) (%S+) (%S+)$")
    n = n + 1
    fixtures[n] = { id, ts, sig }
  end
else
  wrk.headers["webhook-id"] = os.getenv("BENCH_ID")
  wrk.headers["webhook-timestamp"] = os.getenv("BENCH_TS")
  wrk.headers["webhook-signature"] = os.getenv("BENCH_SIG")
end

if n > 0 then
  request = function()
    sent = sent + 1
    if limit > 0 and sent >= limit then wrk.thread:stop() end
    i = i + 1
    if i > n then i = 1 end -- wraps into replays; the report flags non-2xx answers
    local f = fixtures[i]
    return wrk.format(nil, "/webhook", {
      ["Content-Type"] = "application/json",
      ["webhook-id"] = f[1],
      ["webhook-timestamp"] = f[2],
      ["webhook-signature"] = f[3],
    }, body)
  end
end
