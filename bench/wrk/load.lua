-- wrk script: signed OIA changebalance BETs or StarGame writeBets, one new
-- transaction id per request, players read from the runner's players file.
-- wrk ... -s load.lua URL -- PLAYERS_FILE oia|stargame FIRST_TX_ID BODY_HASH X_AUTHORIZATION EXPECT
local HOT_SHARE = 0.2
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local ordinary, hot = {}, {}
local mode, tx, body_hash, expect
-- transaction_timestamp: the run's start, current as for new transactions (an old one
-- would send every booking through the late-retry guard's ledger store lookup)
local stamp = os.date("!%Y-%m-%d %H:%M:%S")
local headers = {}
-- globals, so that done() can read them from each thread
checked, bad, refused, first_bad = 0, 0, 0, ""

function init(args)
  for line in io.lines(args[1]) do
    local player, token, is_hot = line:match("(%S+) (%S+) (%d)")
    table.insert(is_hot == "1" and hot or ordinary, {player, token})
  end
  mode, tx, body_hash, expect = args[2], tonumber(args[3]), args[4], args[6]
  headers["Content-Type"] = "application/json"
  headers["X-Operator-Id"] = "benchcasino"
  headers["X-Authorization"] = args[5]
  math.randomseed(tx % 2147483647)
end

local function pick()
  if #hot > 0 and math.random() < HOT_SHARE then return hot[math.random(#hot)] end
  return ordinary[math.random(#ordinary)]
end

function request()
  local p = pick()
  tx = tx + 1
  if mode == "stargame" then
    return wrk.format("GET", "/stargame?cmd=writeBet&uid=" .. p[1] .. "&bet=100&win=0")
  end
  -- the same bytes as bench/fixtures.py oia_body(): compact JSON, same key order
  local body = string.format(
    '{"command":"changebalance","request_timestamp":"2026-11-21 10:00:00","hash":"%s","data":'
    .. '{"user_id":"%s","transaction_type":"BET","transaction_id":%d,"round_id":%d,"round_finished":false,'
    .. '"game_id":200,"currency_code":"EUR","amount":"1.00","token":"%s",'
    .. '"transaction_timestamp":"%s","context":{"reason":"SPIN"}}}',
    body_hash, p[1], tx, tx, p[2], stamp)
  return wrk.format("POST", "/oia/changebalance", headers, body)
end

function response(status, _, body)
  checked = checked + 1
  if status ~= 200 or not body:find(expect, 1, true) then
    bad = bad + 1
    -- walletd keeping the platform's budget (nothing booked): counted apart as well
    if body:find("deadline passed before", 1, true) then refused = refused + 1 end
    if first_bad == "" then first_bad = status .. " " .. body:sub(1, 200) end
  end
end

function done(summary, latency, _)
  local total_checked, total_bad, total_refused = 0, 0, 0
  for _, thread in ipairs(threads) do
    total_checked = total_checked + thread:get("checked")
    total_bad = total_bad + thread:get("bad")
    total_refused = total_refused + thread:get("refused")
    if thread:get("first_bad") ~= "" then io.write("WRK_FIRST_BAD " .. thread:get("first_bad") .. "\n") end
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"socket_errors":%d,"bad_answers":%d,"deadline_refusals":%d,"checked":%d,'
    .. '"p50_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, total_bad, total_refused, total_checked,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
  -- The latency distribution as quantiles, so that several wrk processes' (one per walletd
  -- instance, bench/spread.py) merge into one: every 0.5 % to 99, then finer into the tail.
  local marks = {}
  for i = 1, 198 do table.insert(marks, i * 0.5) end
  for i = 1, 18 do table.insert(marks, 99 + i * 0.05) end
  for i = 1, 9 do table.insert(marks, 99.9 + i * 0.01) end
  local quantiles = {}
  for _, p in ipairs(marks) do table.insert(quantiles, string.format("%g:%d", p, latency:percentile(p))) end
  table.insert(quantiles, string.format("100:%d", latency.max))
  io.write("WRK_QUANTILES " .. table.concat(quantiles, ",") .. "\n")
end
