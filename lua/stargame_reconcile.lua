-- stargame_reconcile.lua: settle one StarGame writeBet answered 'fail' with its outcome unknown.
-- Idempotent: the first call decides and records; any later call returns DONE and changes nothing
-- (it rewrites the record as it is: lib/ledger.lua reaffirm).
-- KEYS: 4
-- ARGV: 4
-- WAIT: yes   (replicas confirm the settlement (a reversal): redis.replica_acks)
-- KEYS[1] the request's record   KEYS[2] account hash   KEYS[3] partition seq counter
-- KEYS[4] partition ledger stream
-- ARGV[1] player id   ARGV[2] partition number   ARGV[3] retention_ms (record lifetime, integer >= 1)
-- ARGV[4] the request id (names KEYS[1]; the ref of a tombstone's ledger entry)
-- Returns one of
--   {'REVERSED', amount_minor, entry_id, original_ids, balance_minor}: the booking had landed and
--       bet > 0 (StarGame refused the spin): one 'reverse' entry of amount bet - win (signed),
--       ref = the original entry ids; the balance may go below zero if the win was spent meanwhile
--   {'KEPT', win_minor, '', original_ids, balance_minor}: it had landed and was a win notification
--       (bet = 0): StarGame ignores the answer to a win, so the win stands
--   {'TOMBSTONED'}: it had not landed: a tombstone now refuses it (SETTLED) if it arrives later,
--       and a 'tombstone' journal entry (source stargame, ref the request id) records it
--   {'DONE', record}: settled before
local request_key, acct, seq_key, ledger_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local player, partition, request_id = ARGV[1], ARGV[2], ARGV[4]
local retention_ms = integer_arg(ARGV[3], 'retention_ms')
if retention_ms < 1 then error('walletd: retention_ms must be positive') end

local record = redis.call('GET', request_key)
if not record then
  -- No backlog refusal: the spin was answered fail, the tombstone must land. The journal
  -- entry's balance is the account's then (0 if there is none: a journal entry opens nothing).
  local bal = redis.call('HGET', acct, 'bal') or '0'
  journal_append(seq_key, ledger_key, partition, player, 'tombstone', tonumber(bal), 'stargame', request_id,
                 now_ms(), nil)
  redis.call('SET', request_key, 'tombstone', 'PX', retention_ms)
  return {'TOMBSTONED'}
end
local bet_text, win_text, ids = string.match(record, '^booked|(%d+)|(%d+)|(.+)$')
if not bet_text then
  -- As lib/ledger.lua's reaffirm, for a string: the WAIT after this answer covers the settlement.
  redis.call('SET', request_key, record, 'KEEPTTL')
  return {'DONE', record}
end
local bet, win = tonumber(bet_text), tonumber(win_text)
local a = redis.call('HMGET', acct, 'bal', 'cur')
local bal = a[1]
if not bal then error('walletd: request ' .. request_key .. ' booked for a missing account') end

if bet == 0 then
  redis.call('SET', request_key, 'kept|' .. ids, 'PX', retention_ms)
  return {'KEPT', win, '', ids, tonumber(bal)}
end
local amount = bet - win
-- No backlog refusal: StarGame has decided, the reversal lands even on a full stream.
local booking = {acct = acct, seq_key = seq_key, ledger_key = ledger_key, partition = partition,
                 player = player, source = 'stargame', ref = ids, now = now_ms()}
local code, balance, entries = book(booking, tonumber(bal), {{'reverse', amount, {'cur', a[2]}}}, nil)
-- (Only a balance near 2^53 gets here: a broken invariant, so stop with nothing written.)
if code ~= 'OK' then error('walletd: reversing ' .. ids .. ' would take the balance past 2^53') end
redis.call('SET', request_key, 'reversed|' .. ids .. '|' .. entries[1], 'PX', retention_ms)
return {'REVERSED', amount, entries[1], ids, balance}
