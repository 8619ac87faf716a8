-- oia_cancel.lua: cancel one transaction, once. A booked BET is credited back, a
-- booked WIN or REFUND debited back (even below zero: the platform has decided).
-- KEYS: 5
-- ARGV: 12 | 17   (17 in mode 'restore')
-- KEYS[1] account hash   KEYS[2] partition seq counter   KEYS[3] partition ledger stream
-- KEYS[4] transaction record   KEYS[5] round record
-- ARGV[1] player id   ARGV[2] partition number   ARGV[3] game id   ARGV[4] round_finished: 1 | 0 | ''
-- ARGV[5] deadline_ms   ARGV[6] backlog_max   ARGV[7] retention_ms   ARGV[8] ref   ARGV[9] round id
-- ARGV[10] operator id   ARGV[11] owner of accounts without one ('' = nobody)
-- ARGV[12] when the record is missing:
--   'check'     -> return MISSING, write nothing (the caller then asks the ledger store);
--                  balance_minor is 1 if the ledger store may be behind (see lib/oia.lua)
--   'tombstone' -> leave a tombstone: a later booking with this id is refused
--   'restore'   -> re-create the record from the ledger store: ARGV[13] type,
--                  ARGV[14] amount_minor, ARGV[15] 1 if the store shows it cancelled already,
--                  ARGV[16] fingerprint of the booking ('' if stored without one),
--                  ARGV[17] balance_minor after the booking (the original answer's balance)
-- Returns {code, balance_minor}; code is one of
--   OP_34 (the player belongs to another operator: nothing written),
--   CANCELED (now or before), NOT_FOUND (tombstone left), NO_PLAYER (tombstone left),
--   MISSING (mode 'check'), LATE, BACKLOG, OVERFLOW (nothing written).
local acct, seq_key, ledger_key, tx_key, round_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local player, partition, game, finished = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local deadline_ms = integer_arg(ARGV[5], 'deadline_ms')
local backlog_max = integer_arg(ARGV[6], 'backlog_max')
local retention_ms = integer_arg(ARGV[7], 'retention_ms')
local ref, round_id, operator, implied_owner, mode = ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12]

local now = now_ms()
if now > deadline_ms then return {'LATE', 0} end
local owner = redis.call('HMGET', acct, 'bal', 'op')
if owner[1] and not owned_by(owner[2], operator, implied_owner) then return {'OP_34', 0} end

local tx = redis.call('HMGET', tx_key, 'st', 'type', 'amt')
if not tx[1] then
  if mode == 'check' then return {'MISSING', store_may_be_behind(ledger_key, now, retention_ms)} end
  if mode == 'restore' then
    local st = 'OK'
    if ARGV[15] == '1' then st = 'CANCELED' end
    tx = {st, ARGV[13], ARGV[14]}
    -- The real fingerprint, so a later retry of the id answers OP_49, not OP_40.
    local cur = redis.call('HGET', acct, 'cur') or ''
    redis.call('HSET', tx_key, 'st', st, 'fp', ARGV[16], 'code', 'OK', 'type', tx[2], 'amt', tx[3],
               'bal', ARGV[17], 'cur', cur)
  else
    assert(mode == 'tombstone', 'walletd: bad mode')
    tx = {'TOMB'}
    redis.call('HSET', tx_key, 'st', 'TOMB')
  end
  redis.call('PEXPIRE', tx_key, retention_ms)
end
if tx[1] == 'TOMB' then
  if redis.call('EXISTS', acct) == 0 then return {'NO_PLAYER', 0} end
  return {'NOT_FOUND', 0}
end
if tx[1] ~= 'OK' then
  -- CANCELED already, or ERROR (refused: nothing to give back)
  redis.call('HSET', tx_key, 'st', 'CANCELED')
  keep_round(round_key, game, finished, retention_ms)
  return {'CANCELED', 0}
end

local bal = redis.call('HGET', acct, 'bal')
assert(bal, 'walletd: account missing for a booked transaction')
local amount = integer_arg(tx[3], 'amt')
local delta = -amount
if tx[2] == 'BET' then delta = amount end
local booking = {acct = acct, seq_key = seq_key, ledger_key = ledger_key, partition = partition,
                 player = player, source = 'oia', ref = ref, now = now}
local code, balance = book(booking, tonumber(bal), {{'cancel', delta, {'round', round_id, 'game', game}}},
                           backlog_max)
if code ~= 'OK' then return {code, balance} end
redis.call('HSET', tx_key, 'st', 'CANCELED')
-- The record outlives the id's last ledger entry by the retention: once it is gone,
-- an entry not yet in the store is as old as the retention (store_may_be_behind).
redis.call('PEXPIRE', tx_key, retention_ms)
keep_round(round_key, game, finished, retention_ms)
return {'CANCELED', balance}
