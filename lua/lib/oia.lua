-- Shared prelude for the Operator Integration API booking scripts.
-- A transaction record (hash, expires after the retention) holds:
--   st     OK (booked) | ERROR (refused, code says why) | CANCELED | TOMB (cancel
--          arrived before the transaction: any later booking with this id is refused)
--   fp     fingerprint of the request: type|user|amount_minor|currency|round|game
--   code   the answer given: OK or an OP_xx refusal
--   bal, cur   balance and currency of the original answer
--   type, amt  BET|WIN|REFUND and amount_minor (what a cancel reverses)
-- A record lives retention_ms after the last ledger entry written for its id (the
-- booking, or the cancel: it renews the expiry), so store_may_be_behind below holds.
-- A round record (hash, same retention) holds game and fin (1 once finished).
local function keep_round(round_key, game, finished, retention_ms)
  if game ~= '' then redis.call('HSET', round_key, 'game', game) end
  if finished == '1' then redis.call('HSET', round_key, 'fin', '1')
  elseif redis.call('HEXISTS', round_key, 'fin') == 0 then redis.call('HSET', round_key, 'fin', '0') end
  redis.call('PEXPIRE', round_key, retention_ms)
end

-- Stream ids are Redis ms; a little slack for a clock that stepped back (conservative).
local STREAM_CLOCK_SLACK_MS = 1000

-- 1 if the partition's ledger stream still holds an entry as old as the retention: a
-- record that expired may have its entry there, not yet in the ledger store. Asked in
-- the call that found no record, so an entry moved after it is in the store by then.
local function store_may_be_behind(ledger_key, now, retention_ms)
  local oldest = redis.call('XRANGE', ledger_key, '-', '+', 'COUNT', 1)
  if #oldest == 0 then return 0 end
  local ms = tonumber(string.match(oldest[1][1], '^(%d+)'))
  if ms <= now - retention_ms + STREAM_CLOCK_SLACK_MS then return 1 end
  return 0
end

-- Sets an id's bits in the late-retry filter's current generation (README "Late retries";
-- word and mask from app/protocols/oia/late_retry.py). Every decision recorded for an id (a
-- booking, a refusal, a tombstone) sets them, so a retry arriving after the record expired
-- is looked up in the ledger store, where that decision is.
--   word: '#<index>'   old_word: the word as read (BITFIELD GET u32)
--   signed_mask: bit.tobit(mask) (LuaBitOp works on signed 32-bit values)
-- A new key has every word 0, so its first id sets the expiry; later ones need not (same
-- absolute time), which keeps a PEXPIREAT out of most bookings and of the AOF.
local function mark_seen(filter_key, word, old_word, signed_mask, expire_at_ms)
  local set_word = bit.bor(old_word, signed_mask)
  if set_word < 0 then set_word = set_word + 4294967296 end
  redis.call('BITFIELD', filter_key, 'SET', 'u32', word, set_word)
  if old_word == 0 then redis.call('PEXPIREAT', filter_key, expire_at_ms) end
end
