-- Shared prelude (after lib/ledger.lua): book(), the one way a script moves money.
-- A booking moves one account's balance by one or more signed amounts, each one
-- HINCRBY and its ledger entry, all or none:
--   b        {acct=, seq_key=, ledger_key=, partition=, player=, source=, ref=, now=}:
--            the account, its partition's ledger, and what every entry carries
--   balance  the balance the caller read (and decided its own refusals on)
--   moves    {{kind, delta, extra}, ...}: delta in signed minor units; extra as in
--            ledger_append (nil or a flat field/value list)
--   backlog_max  refuse when the partition's stream already holds that many entries
--            not yet flushed; nil: never (a reversal the platform has decided)
-- Returns 'OK', the balance after, the entry ids; or, having written nothing,
-- 'OVERFLOW' (a balance on the way would leave (-2^53, 2^53)) or 'BACKLOG', the
-- balance before and {}. A script calls it after its own refusals and before any
-- other write, so every refusal still comes before the first write.
local function book(b, balance, moves, backlog_max)
  local after = balance
  for i = 1, #moves do
    after = after + moves[i][2]
    if after >= AMOUNT_LIMIT or after <= -AMOUNT_LIMIT then return 'OVERFLOW', balance, {} end
  end
  if backlog_max and #moves > 0 and stream_full(b.ledger_key, backlog_max) then
    return 'BACKLOG', balance, {}
  end
  local ids = {}
  for i = 1, #moves do
    local kind, delta, extra = moves[i][1], moves[i][2], moves[i][3]
    balance = redis.call('HINCRBY', b.acct, 'bal', string.format('%d', delta))
    ids[i] = ledger_append(b.seq_key, b.ledger_key, b.partition, b.player, kind, delta, balance,
                           b.source, b.ref, b.now, extra)
  end
  return 'OK', balance, ids
end
