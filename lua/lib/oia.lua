-- Shared prelude for the Operator Integration API booking scripts.
-- A transaction record (hash, expires after the retention) holds:
--   st     OK (booked) | ERROR (refused, code says why) | CANCELED | TOMB (cancel
--          arrived before the transaction: any later booking with this id is refused)
--   fp     fingerprint of the request: type|user|amount_minor|currency|round|game
--   code   the answer given: OK or an OP_xx refusal
--   bal, cur   balance and currency of the original answer
--   type, amt  BET|WIN|REFUND and amount_minor (what a cancel reverses)
-- A round record (hash, same retention) holds game and fin (1 once finished).
local function keep_round(round_key, game, finished, retention_ms)
  if game ~= '' then redis.call('HSET', round_key, 'game', game) end
  if finished == '1' then redis.call('HSET', round_key, 'fin', '1')
  elseif redis.call('HEXISTS', round_key, 'fin') == 0 then redis.call('HSET', round_key, 'fin', '0') end
  redis.call('PEXPIRE', round_key, retention_ms)
end
