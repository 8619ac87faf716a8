-- oia_cancel.lua: cancel one transaction, once. A booked BET is credited back, a
-- booked WIN or REFUND debited back (even below zero: the platform has decided).
-- KEYS: 6
-- ARGV: 15 | 21   (21 in mode 'restore')
-- WAIT: yes   (replicas confirm the cancel or the tombstone: redis.replica_acks)
-- KEYS[1] account hash   KEYS[2] partition seq counter   KEYS[3] partition ledger stream
-- KEYS[4] transaction record   KEYS[5] round record
-- KEYS[6] late-retry filter, current generation (bitmap; a tombstone sets the id's bits)
-- ARGV[1] player id   ARGV[2] partition number   ARGV[3] game id   ARGV[4] round_finished: 1 | 0 | ''
-- ARGV[5] deadline_ms   ARGV[6] backlog_max   ARGV[7] retention_ms   ARGV[8] ref   ARGV[9] round id
-- ARGV[10] operator id   ARGV[11] owner of accounts without one ('' = nobody)
-- ARGV[12] the id's word in the filter   ARGV[13] the id's bits in that word (app/protocols/oia/late_retry.py)
-- ARGV[14] expiry of KEYS[6] (unix ms)
-- ARGV[15] when the record is missing:
--   'check'     -> return MISSING, write nothing (the caller then asks the ledger store);
--                  balance_minor is 1 if the ledger store may be behind (see lib/oia.lua)
--   'tombstone' -> leave a tombstone: a later booking with this id is refused
--   'restore'   -> re-create the record from the ledger store (app/protocols/oia/wallet.py
--                  StoredRecord): ARGV[16] state OK | CANCELED | ERROR | TOMB, ARGV[17] type,
--                  ARGV[18] amount_minor, ARGV[19] balance_minor of the original answer,
--                  ARGV[20] fingerprint ('' if stored without one), ARGV[21] its code
-- Ledger entries (RECORD.md): a cancel of a booking writes 'cancel' (the reversal), of a
-- recorded refusal 'cancel' with amount 0; each with op cur round game fin. A tombstone
-- writes a 'tombstone' journal entry with op. A tombstone restored from the store writes none.
-- A refusal of a player that does not exist (OP_34) is not cancelled: NO_PLAYER, nothing
-- written (a money entry would open that player in the store's sums).
-- Returns {code, balance_minor}; code is one of
--   OP_34 (the player belongs to another operator: nothing written),
--   CANCELED (now or before), NOT_FOUND (tombstone left), NO_PLAYER (tombstone left, or a
--   refusal of a player that does not exist),
--   MISSING (mode 'check'), LATE, BACKLOG, OVERFLOW (nothing written).
local acct, seq_key, ledger_key, tx_key, round_key, filter_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local player, partition, game, finished = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local deadline_ms = integer_arg(ARGV[5], 'deadline_ms')
local backlog_max = integer_arg(ARGV[6], 'backlog_max')
local retention_ms = integer_arg(ARGV[7], 'retention_ms')
local ref, round_id, operator, implied_owner = ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local word = '#' .. ARGV[12]
local mask = integer_arg(ARGV[13], 'filter mask')
local filter_expire_at = integer_arg(ARGV[14], 'filter expiry')
local mode = ARGV[15]
assert(integer_arg(ARGV[12], 'filter word') < 134217728, 'walletd: filter word past 2^27')
assert(mask >= 1 and mask < 4294967296, 'walletd: filter mask out of range')

local now = now_ms()
if now > deadline_ms then return {'LATE', 0} end
local owner = redis.call('HMGET', acct, 'bal', 'op', 'cur')
if owner[1] and not owned_by(owner[2], operator, implied_owner) then return {'OP_34', 0} end
local balance_then = tonumber(owner[1] or 0)

-- A tombstone: the record, a journal entry and the id's filter bits (so a booking arriving
-- after the record expired asks the store, which holds the tombstone); or BACKLOG, nothing.
local function tombstone()
  if stream_full(ledger_key, backlog_max) then return {'BACKLOG', 0} end
  journal_append(seq_key, ledger_key, partition, player, 'tombstone', balance_then, 'oia', ref, now,
                 {'op', operator})
  local old_word = redis.call('BITFIELD', filter_key, 'GET', 'u32', word)[1]
  mark_seen(filter_key, word, old_word, bit.tobit(mask), filter_expire_at)
  redis.call('HSET', tx_key, 'st', 'TOMB')
  redis.call('PEXPIRE', tx_key, retention_ms)
  if not owner[1] then return {'NO_PLAYER', 0} end
  return {'NOT_FOUND', 0}
end

local tx = redis.call('HMGET', tx_key, 'st', 'type', 'amt')
-- A record restored from the store (mode 'restore'): written with this call's outcome, so a
-- BACKLOG or OVERFLOW refusal still writes nothing at all.
local restored
if not tx[1] then
  if mode == 'check' then return {'MISSING', store_may_be_behind(ledger_key, now, retention_ms)} end
  if mode == 'tombstone' then return tombstone() end
  assert(mode == 'restore', 'walletd: bad mode')
  local st = ARGV[16]
  assert(st == 'OK' or st == 'CANCELED' or st == 'ERROR' or st == 'TOMB', 'walletd: bad stored state')
  tx = {st, ARGV[17], ARGV[18]}
  if st == 'TOMB' then
    restored = {'st', st}  -- the store's tombstone, not a second one
  else
    -- The real fingerprint and code, so a later retry of the id answers OP_49, not OP_40.
    restored = {'st', st, 'fp', ARGV[20], 'code', ARGV[21], 'type', tx[2], 'amt', tx[3], 'bal', ARGV[19],
                'cur', owner[3] or ''}
  end
end

-- The record in state st: the restored one in full, else only its state. The record
-- outlives the id's last ledger entry by the retention: once it is gone, an entry not yet
-- in the store is as old as the retention (store_may_be_behind).
local function keep_record(st)
  if restored then
    restored[2] = st
    redis.call('HSET', tx_key, unpack(restored))
  else
    redis.call('HSET', tx_key, 'st', st)
  end
  redis.call('PEXPIRE', tx_key, retention_ms)
end

if tx[1] == 'TOMB' then
  if restored then keep_record('TOMB') else reaffirm(tx_key, 'st', 'TOMB') end
  if not owner[1] then return {'NO_PLAYER', 0} end
  return {'NOT_FOUND', 0}
end
if tx[1] == 'CANCELED' then
  if restored then keep_record('CANCELED') end
  keep_round(round_key, game, finished, retention_ms)
  return {'CANCELED', 0}
end
if not owner[1] then
  assert(tx[1] == 'ERROR', 'walletd: account missing for a booked transaction')
  if restored then keep_record('ERROR') end
  return {'NO_PLAYER', 0}
end

-- A booking's reversal, or (a refusal: nothing to give back) amount 0, so the CANCELED
-- state reaches the store too.
local delta = 0
if tx[1] == 'OK' then
  local amount = integer_arg(tx[3], 'amt')
  delta = -amount
  if tx[2] == 'BET' then delta = amount end
else
  assert(tx[1] == 'ERROR', 'walletd: bad record state ' .. tostring(tx[1]))
end
local fields = {'op', operator, 'cur', owner[3], 'round', round_id, 'game', game, 'fin', finished}
local booking = {acct = acct, seq_key = seq_key, ledger_key = ledger_key, partition = partition,
                 player = player, source = 'oia', ref = ref, now = now}
local code, balance = book(booking, balance_then, {{'cancel', delta, fields}}, backlog_max)
if code ~= 'OK' then return {code, balance} end
keep_record('CANCELED')
keep_round(round_key, game, finished, retention_ms)
if tx[1] == 'ERROR' then return {'CANCELED', 0} end
return {'CANCELED', balance}
