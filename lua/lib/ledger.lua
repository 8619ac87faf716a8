-- Shared prelude, prepended to every booking script by app/scripts.py.
-- Appends one ledger entry to the partition's stream.
--   seq_key:    counter of entries ever written in the partition; the entry id
--               is "<partition>:<seq>", so a lost entry shows as a gap.
--   ledger_key: the partition's stream, drained by the flusher.
--   amount_minor is signed (debits negative); balance_after in minor units.
--   extra:      optional flat list of additional field/value pairs.
-- Returns the entry id.
local function ledger_append(seq_key, ledger_key, partition, player, kind,
                             amount_minor, balance_after, source, ref, now_ms, extra)
  local seq = redis.call('INCR', seq_key)
  local entry_id = partition .. ':' .. seq
  local fields = {
    'id', entry_id, 'player', player, 'kind', kind,
    'amount', string.format('%d', amount_minor),
    'balance', string.format('%d', balance_after),
    'source', source, 'ref', ref, 'ts', string.format('%d', now_ms)}
  if extra then
    for i = 1, #extra do fields[#fields + 1] = extra[i] end
  end
  redis.call('XADD', ledger_key, '*', unpack(fields))
  return entry_id
end

-- A journal entry (RECORD.md): a decision that moves nothing, so amount 0 and
-- balance the account's balance then (0 when the account does not exist).
local function journal_append(seq_key, ledger_key, partition, player, kind, balance,
                              source, ref, now_ms, extra)
  return ledger_append(seq_key, ledger_key, partition, player, kind, 0, balance, source, ref,
                       now_ms, extra)
end

-- Whether the partition's stream already holds backlog_max entries not yet flushed:
-- a decision that may be refused (answered BACKLOG, retried) is then recorded nowhere.
local function stream_full(ledger_key, backlog_max)
  return redis.call('XLEN', ledger_key) >= backlog_max
end

-- An answer that repeats an earlier decision (a retry, a status, a settled request)
-- writes nothing of its own, so the WAIT after it (redis.replica_acks) would cover only
-- its connection's earlier writes, not that decision, written perhaps by another
-- process. A write's replication offset is the primary's at that moment: rewriting one
-- field of the decision's record with the value it holds (HSET always propagates) makes
-- the WAIT cover the decision too. Nothing else changes (HSET keeps the key's expiry).
local function reaffirm(hash_key, field, value)
  redis.call('HSET', hash_key, field, value)
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Programmer errors (the caller validates wire input first) abort before any write.
local function integer_arg(value, name)
  local n = tonumber(value)
  if n == nil or n ~= math.floor(n) or n < 0 or n >= 9007199254740992 then
    error('walletd: ' .. name .. ' must be an integer in [0, 2^53), got ' .. tostring(value))
  end
  return n
end

local AMOUNT_LIMIT = 9007199254740992
