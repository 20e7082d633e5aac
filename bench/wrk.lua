-- wrk script of the benchmark harness (bench/load.py).
-- Arguments after "--": "post N" sends every request as a POST with an N-byte body.
-- done() prints one machine-readable line, so that the harness parses no prose.

function init(args)
  if args[1] == "post" then
    wrk.method = "POST"
    wrk.body = string.rep("x", tonumber(args[2]))
    wrk.headers["Content-Type"] = "application/octet-stream"
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %.0f, "duration_us": %.0f, "bytes": %.0f, ' ..
    '"p50_us": %.0f, "p99_us": %.0f, "connect": %.0f, "read": %.0f, "write": %.0f, ' ..
    '"status": %.0f, "timeout": %.0f}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
