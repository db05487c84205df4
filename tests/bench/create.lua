-- wrk script: POST unique customers to /api/v1/customers with the API key in CUSTOMERS_API_KEY.
-- Usage: CUSTOMERS_API_KEY=ck_… wrk -t2 -c64 -d10s -s tests/bench/create.lua http://127.0.0.1:8080
local threads = {}
local run = tostring(os.time())

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"name":"Load Test %d","email":"lt-%s-%d-%d@example.com","phone":"+255 788 123 456",' ..
    '"address":{"city":"Dar es Salaam","country":"TZ"},"payment_method":"card_%d",' ..
    '"custom_data":{"loyalty_program":"Gold","n":%d}}',
    counter, run, tid, counter, counter, counter)
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. (os.getenv("CUSTOMERS_API_KEY") or ""),
  }
  return wrk.format("POST", "/api/v1/customers", headers, body)
end

function response(status, headers, body)
  if status ~= 201 then
    errors = (errors or 0) + 1
  end
end
