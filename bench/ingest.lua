-- wrk script: unique transaction webhooks, unsigned, or pre-signed from a file (arg 2).
local counter = 0
local signed = {}
local thread_index = 0
local threads = {}

function setup(thread)
  thread:set("index", #threads)
  table.insert(threads, thread)
end

function init(args)
  run_id = args[1] or tostring(os.time())
  if args[2] then
    for line in io.lines(args[2]) do
      local id, ts, sig, body = line:match("([^\t]+)\t([^\t]+)\t([^\t]+)\t(.+)")
      table.insert(signed, {id, ts, sig, body})
    end
  end
end

request = function()
  counter = counter + 1
  if #signed > 0 then
    local item = signed[((counter * 7 + index) % #signed) + 1]
    return wrk.format("POST", "/v1/webhooks/transactions", {
      ["Content-Type"] = "application/json", ["webhook-id"] = item[1],
      ["webhook-timestamp"] = item[2], ["webhook-signature"] = item[3]}, item[4])
  end
  local body = string.format(
    '{"transaction_id":"b-%s-%d-%d","source_account":"acct-a","destination_account":"acct-b",' ..
    '"amount":"12.50","currency":"USD","booking_reference":"BK-%d"}',
    run_id, index, counter, counter % 5000)
  return wrk.format("POST", "/v1/webhooks/transactions",
                    {["Content-Type"] = "application/json"}, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"non2xx":%d,"socket_errors":%d,' ..
    '"p50":%d,"p90":%d,"p99":%d,"max":%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
