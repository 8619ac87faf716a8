-- admin_adjust.lua: operator deposit or withdrawal, idempotent by a caller reference.
-- KEYS: 4
-- ARGV: 6
-- WAIT: yes   (replicas confirm an operator's deposit or withdrawal: redis.replica_acks)
-- KEYS[1] account hash   KEYS[2] partition seq counter   KEYS[3] partition ledger stream
-- KEYS[4] transaction record for (player, ref)
-- ARGV[1] player id   ARGV[2] partition number   ARGV[3] kind: 'deposit' | 'withdraw'
-- ARGV[4] amount_minor (integer in [1, 2^53))     ARGV[5] ref
-- ARGV[6] backlog_max
-- Ledger: one 'deposit' or 'withdraw' entry (source admin, ref, cur; RECORD.md).
-- Returns {code, balance_minor, entry_id}; code is one of
--   OK (booked now), REPEAT (same ref, same kind and amount: booked before,
--   original balance and entry returned), REF_CONFLICT (same ref, other data),
--   FUNDS, OVERFLOW, BACKLOG, NO_PLAYER.
local acct, seq_key, ledger_key, tx_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local player, partition, kind, ref = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local amount = integer_arg(ARGV[4], 'amount_minor')
local backlog_max = integer_arg(ARGV[6], 'backlog_max')
if kind ~= 'deposit' and kind ~= 'withdraw' then error('walletd: bad kind ' .. kind) end
if amount < 1 then error('walletd: amount_minor must be positive') end

local fingerprint = kind .. '|' .. string.format('%d', amount)
local tx = redis.call('HMGET', tx_key, 'fp', 'bal', 'entry')
if tx[1] then
  reaffirm(tx_key, 'fp', tx[1])
  if tx[1] ~= fingerprint then return {'REF_CONFLICT', 0, ''} end
  return {'REPEAT', tonumber(tx[2]), tx[3]}
end
local a = redis.call('HMGET', acct, 'bal', 'cur')
if not a[1] then return {'NO_PLAYER', 0, ''} end
local balance = tonumber(a[1])
local delta = amount
if kind == 'withdraw' then delta = -amount end
if balance + delta < 0 then return {'FUNDS', balance, ''} end

local booking = {acct = acct, seq_key = seq_key, ledger_key = ledger_key, partition = partition,
                 player = player, source = 'admin', ref = ref, now = now_ms()}
local code, after, entries = book(booking, balance, {{kind, delta, {'cur', a[2]}}}, backlog_max)
if code ~= 'OK' then return {code, balance, ''} end
redis.call('HSET', tx_key, 'fp', fingerprint, 'bal', after, 'entry', entries[1])
return {'OK', after, entries[1]}
