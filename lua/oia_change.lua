-- oia_change.lua: one changebalance (BET debits; WIN and REFUND credit), idempotent
-- by transaction id, also after the transaction record's retention (README "Late
-- retries"). Every refusal is decided before the first write.
-- KEYS: 8
-- ARGV: 22 | 28   (28 in mode 'found')
-- WAIT: yes   (replicas confirm the booking or the recorded refusal: redis.replica_acks)
-- KEYS[1] account hash   KEYS[2] partition seq counter   KEYS[3] partition ledger stream
-- KEYS[4] transaction record   KEYS[5] session (may not exist)   KEYS[6] round record
-- KEYS[7] late-retry filter, current generation (bitmap)   KEYS[8] the previous generation
-- ARGV[1] player id   ARGV[2] partition number   ARGV[3] type: BET | WIN | REFUND
-- ARGV[4] amount_minor (integer in [0, 2^53))    ARGV[5] currency (ISO alpha)
-- ARGV[6] fingerprint   ARGV[7] operator id   ARGV[8] game id   ARGV[9] round_finished: 1 | 0 | ''
-- ARGV[10] currency allowed for the operator: 1 | 0   ARGV[11] game disabled by the operator: 1 | 0
-- ARGV[12] deadline_ms (unix ms, Redis clock)    ARGV[13] backlog_max
-- ARGV[14] retention_ms (records)   ARGV[15] session idle_ms   ARGV[16] ref (ledger entry ref)
-- ARGV[17] round id (kept with the ledger entry)
-- ARGV[18] owner of accounts without one ('' = nobody)
-- ARGV[19] expiry of KEYS[7] (unix ms; set when a booking finds its word empty, so at the key's first)
-- ARGV[20] what to do when there is no transaction record:
--   'new'    the filter decides: if the id's bits are all set in KEYS[7] or KEYS[8], return CHECK
--   'old'    transaction_timestamp is beyond the filter's horizon (or unusable): return CHECK
--   'absent' the ledger store holds no decision for this id: decide it as new
--   'found'  the ledger store holds one: restore the record from ARGV[23..28], answer as a retry
-- ARGV[21] the id's word in the filter (index of a 32-bit word, integer in [0, 2^27))
-- ARGV[22] the id's bits in that word (mask, integer in [1, 2^32)); app/late_retry.py
-- ARGV[23..28] (mode 'found') what the store holds (app/protocols/oia/wallet.py StoredRecord):
--   state OK | CANCELED | ERROR (a recorded refusal) | TOMB (a cancel's tombstone), type,
--   amount_minor, balance_minor of the original answer, its fingerprint ('' if stored without
--   one), its code (OK or the refusal's OP_xx)
-- Ledger entries (RECORD.md), each with op cur round game fin fp: a booking writes one of
-- kind bet | win | refund; a recorded refusal a 'refusal' journal entry (amount 0, code the
-- OP_xx). Both set the id's bits in the late-retry filter.
-- Returns {code, balance_minor, currency}; code is one of
--   OP_34 unrecorded (the player belongs to another operator: nothing written at all),
--   OK (booked now, or the original answer to an identical retry),
--   OP_21 OP_30 OP_31 OP_33 OP_34 OP_35 (refused; recorded, so a retry gets the same),
--   OP_40 (same id, other data), OP_49 (id cancelled before (recorded) or after it arrived),
--   CHECK (modes new/old: may have been booked before; ask the ledger store; balance_minor
--     is 1 if the ledger stream holds an entry as old as the retention (the store may be
--     behind), else 0), LATE (deadline passed), BACKLOG (ledger stream full: neither a
--     booking nor a refusal is recorded), OVERFLOW: nothing written.
local acct, seq_key, ledger_key, tx_key, sess_key, round_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local player, partition, kind = ARGV[1], ARGV[2], ARGV[3]
local amount = integer_arg(ARGV[4], 'amount_minor')
local cur, fp, operator, game, finished = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local currency_allowed, game_disabled = ARGV[10] == '1', ARGV[11] == '1'
local deadline_ms = integer_arg(ARGV[12], 'deadline_ms')
local backlog_max = integer_arg(ARGV[13], 'backlog_max')
local retention_ms = integer_arg(ARGV[14], 'retention_ms')
local idle_ms = integer_arg(ARGV[15], 'idle_ms')
local ref, round_id, implied_owner = ARGV[16], ARGV[17], ARGV[18]
local filter_key, previous_filter_key = KEYS[7], KEYS[8]
local filter_expire_at = integer_arg(ARGV[19], 'filter expiry')
local mode = ARGV[20]
local word = '#' .. ARGV[21]
local mask = integer_arg(ARGV[22], 'filter mask')
if kind ~= 'BET' and kind ~= 'WIN' and kind ~= 'REFUND' then error('walletd: bad type ' .. kind) end
if mode ~= 'new' and mode ~= 'old' and mode ~= 'absent' and mode ~= 'found' then error('walletd: bad mode') end
assert(integer_arg(ARGV[21], 'filter word') < 134217728, 'walletd: filter word past 2^27')
assert(mask >= 1 and mask < 4294967296, 'walletd: filter mask out of range')
-- LuaBitOp works on signed 32-bit values: compare and store through tobit/unsigned.
local signed_mask = bit.tobit(mask)

local now = now_ms()
if now > deadline_ms then return {'LATE', 0, ''} end
local owner = redis.call('HMGET', acct, 'bal', 'op')
if owner[1] and not owned_by(owner[2], operator, implied_owner) then return {'OP_34', 0, ''} end

-- What every ledger entry of this id carries (RECORD.md), with the currency answered.
local function entry_fields(currency)
  return {'op', operator, 'cur', currency, 'round', round_id, 'game', game, 'fin', finished, 'fp', fp}
end

local function record(st, code, balance, currency)
  redis.call('HSET', tx_key, 'st', st, 'fp', fp, 'code', code, 'bal', string.format('%d', balance),
             'cur', currency, 'type', kind, 'amt', string.format('%d', amount))
  redis.call('PEXPIRE', tx_key, retention_ms)
  keep_round(round_key, game, finished, retention_ms)
  return {code, balance, currency}
end

local function filter_word(key)
  return redis.call('BITFIELD', key, 'GET', 'u32', word)[1]
end

-- The id's word in the current generation, read once: nothing else writes it meanwhile.
local current_word
local function current_filter_word()
  if current_word == nil then current_word = filter_word(filter_key) end
  return current_word
end

local function has_bits(value)
  return bit.band(value, signed_mask) == signed_mask
end

-- A refusal recorded against the id: the record, a 'refusal' journal entry (balance: the
-- account's then) and the filter bits, or, on a full stream, BACKLOG and nothing at all.
local function refuse(code, balance, currency)
  if stream_full(ledger_key, backlog_max) then return {'BACKLOG', 0, ''} end
  local fields = entry_fields(currency)
  fields[#fields + 1] = 'code'
  fields[#fields + 1] = code
  journal_append(seq_key, ledger_key, partition, player, 'refusal', tonumber(owner[1] or 0), 'oia', ref, now,
                 fields)
  mark_seen(filter_key, word, current_filter_word(), signed_mask, filter_expire_at)
  return record('ERROR', code, balance, currency)
end

local tx = redis.call('HMGET', tx_key, 'st', 'fp', 'code', 'bal', 'cur', 'type', 'amt')
if not tx[1] then
  if mode == 'old' or (mode == 'new' and (has_bits(current_filter_word()) or has_bits(filter_word(previous_filter_key)))) then
    return {'CHECK', store_may_be_behind(ledger_key, now, retention_ms), ''}
  end
  if mode == 'found' then
    local st = ARGV[23]
    if st == 'TOMB' then
      tx = {'TOMB'}  -- (recorded by the refusal below, which writes nothing on BACKLOG)
    else
      -- The record as it was: its state, fingerprint and code, the original answer's balance.
      assert(st == 'OK' or st == 'CANCELED' or st == 'ERROR', 'walletd: bad stored state')
      local balance_after = tonumber(ARGV[26])
      assert(balance_after and balance_after == math.floor(balance_after), 'walletd: bad stored balance')
      local currency = redis.call('HGET', acct, 'cur') or ''
      tx = {st, ARGV[27], ARGV[28], string.format('%d', balance_after), currency, ARGV[24], ARGV[25]}
      redis.call('HSET', tx_key, 'st', st, 'fp', tx[2], 'code', tx[3], 'bal', tx[4], 'cur', currency,
                 'type', tx[6], 'amt', tx[7])
      redis.call('PEXPIRE', tx_key, retention_ms)
    end
  end
end
if tx[1] == 'TOMB' then return refuse('OP_49', 0, '') end
if tx[1] then
  reaffirm(tx_key, 'st', tx[1])
  -- A record restored from a ledger entry stored without a fingerprint ('')
  -- can only be compared on type and amount.
  local same = tx[2] == fp or (tx[2] == '' and tx[6] == kind and tx[7] == ARGV[4])
  if not same then return {'OP_40', 0, ''} end
  if tx[1] == 'CANCELED' then return {'OP_49', 0, ''} end
  return {tx[3], tonumber(tx[4]), tx[5]}
end

local a = redis.call('HMGET', acct, 'bal', 'cur', 'blocked')
if not a[1] then return refuse('OP_34', 0, '') end
local balance = tonumber(a[1])
if kind == 'BET' then
  local s = redis.call('HMGET', sess_key, 'player', 'operator', 'game', 'lobby')
  if s[1] ~= player or s[2] ~= operator or (s[4] == '' and s[3] ~= game) then
    return refuse('OP_21', balance, a[2])
  end
end
if cur ~= a[2] or not currency_allowed then return refuse('OP_30', balance, a[2]) end
if kind == 'BET' then
  if a[3] == '1' then return refuse('OP_33', balance, a[2]) end
  if game_disabled then return refuse('OP_35', balance, a[2]) end
  if amount > balance then return refuse('OP_31', balance, a[2]) end
end
local delta = amount
if kind == 'BET' then delta = -amount end
local booking = {acct = acct, seq_key = seq_key, ledger_key = ledger_key, partition = partition,
                 player = player, source = 'oia', ref = ref, now = now}
local code
code, balance = book(booking, balance, {{string.lower(kind), delta, entry_fields(a[2])}}, backlog_max)
if code ~= 'OK' then return {code, balance, a[2]} end
if kind == 'BET' then redis.call('PEXPIRE', sess_key, idle_ms) end
mark_seen(filter_key, word, current_filter_word(), signed_mask, filter_expire_at)
return record('OK', 'OK', balance, a[2])
