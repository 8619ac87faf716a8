-- stargame_book.lua: one StarGame writeBet: debit bet, then credit win, atomically.
-- KEYS: 4
-- ARGV: 9
-- WAIT: yes   (replicas confirm the booking: redis.replica_acks)
-- KEYS[1] account hash   KEYS[2] partition seq counter   KEYS[3] partition ledger stream
-- KEYS[4] the request's record (what it booked, or a reconciler's tombstone)
-- ARGV[1] player id      ARGV[2] partition number
-- ARGV[3] bet_minor      ARGV[4] win_minor          (integers in [0, 2^53), the account currency's minor units)
-- ARGV[5] deadline_ms    (unix ms on Redis's clock; 0 = none)
-- ARGV[6] backlog_max    (max un-flushed entries in the partition stream)
-- ARGV[7] request id     (the one naming KEYS[4]; the ledger entries' ref)
-- ARGV[8] currency       (ISO code the amounts were converted for; '' = book minor units as given,
--                         anything not the account's currency (e.g. '?') = CURRENCY, nothing booked)
-- ARGV[9] retention_ms   (how long the request's record is kept; integer >= 1)
-- Returns {code, balance_minor, currency, language}; code is one of
--   OK, CURRENCY (the account's currency is not ARGV[8]: convert again), SETTLED (the request
--   id is already recorded: reconciled or booked before), FUNDS (balance < bet),
--   BLOCKED (player blocked and bet > 0), LATE (deadline passed), OVERFLOW (balance would
--   reach 2^53), BACKLOG (ledger stream full), and {'NO_PLAYER'}.
-- A booking that moves money records 'booked|<bet>|<win>|<entry ids>' under KEYS[4], and
-- writes a 'bet' and/or 'win' entry (source stargame, ref the request id, cur; RECORD.md).
-- A writeBet carries no round or game (the manual's cmd=writeBet&uid=&bet=&win=).
-- Every refusal happens before the first write.
local acct, seq_key, ledger_key, request_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local player, partition, ref = ARGV[1], ARGV[2], ARGV[7]
local bet = integer_arg(ARGV[3], 'bet_minor')
local win = integer_arg(ARGV[4], 'win_minor')
local deadline_ms = integer_arg(ARGV[5], 'deadline_ms')
local backlog_max = integer_arg(ARGV[6], 'backlog_max')
local expected_currency = ARGV[8]
local retention_ms = integer_arg(ARGV[9], 'retention_ms')
if retention_ms < 1 then error('walletd: retention_ms must be positive') end

local v = redis.call('HMGET', acct, 'bal', 'cur', 'lang', 'blocked')
if not v[1] then return {'NO_PLAYER'} end
local balance = tonumber(v[1])
if expected_currency ~= '' and expected_currency ~= v[2] then return {'CURRENCY', balance, v[2], v[3]} end
if redis.call('EXISTS', request_key) == 1 then return {'SETTLED', balance, v[2], v[3]} end
local now = now_ms()
if deadline_ms > 0 and now > deadline_ms then return {'LATE', balance, v[2], v[3]} end
if bet > 0 and v[4] == '1' then return {'BLOCKED', balance, v[2], v[3]} end
if bet > balance then return {'FUNDS', balance, v[2], v[3]} end

-- A zero side books nothing (and a zero spin writes nothing at all).
local moves = {}
local fields = {'cur', v[2]}
if bet > 0 then moves[#moves + 1] = {'bet', -bet, fields} end
if win > 0 then moves[#moves + 1] = {'win', win, fields} end
local booking = {acct = acct, seq_key = seq_key, ledger_key = ledger_key, partition = partition,
                 player = player, source = 'stargame', ref = ref, now = now}
local code, ids
code, balance, ids = book(booking, balance, moves, backlog_max)
if code ~= 'OK' then return {code, balance, v[2], v[3]} end
if #ids > 0 then
  local record = string.format('booked|%d|%d|', bet, win) .. table.concat(ids, ',')
  redis.call('SET', request_key, record, 'PX', retention_ms)
end
return {'OK', balance, v[2], v[3]}
