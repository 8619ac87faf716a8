-- create_player.lua: create a player with an opening balance.
-- KEYS: 3
-- ARGV: 9
-- WAIT: yes   (replicas confirm the opening balance: redis.replica_acks)
-- KEYS[1] account hash   KEYS[2] partition seq counter   KEYS[3] partition ledger stream
-- ARGV[1] player id   ARGV[2] partition number   ARGV[3] currency (ISO alpha)
-- ARGV[4] opening balance_minor (integer in [0, 2^53))
-- ARGV[5] country   ARGV[6] language   ARGV[7] display name
-- ARGV[8] aliases ("kind:id" joined by spaces; already claimed by the caller)
-- ARGV[9] owning operator id ('' = none: only when no operator is configured)
-- Returns {code, entry_id}: OK, or EXISTS (nothing written).
-- The opening balance is the player's first ledger entry (kind 'open'), which
-- also carries the profile and the owning operator, so the ledger store alone can rebuild the account.
local acct, seq_key, ledger_key = KEYS[1], KEYS[2], KEYS[3]
local player, partition = ARGV[1], ARGV[2]
local opening = integer_arg(ARGV[4], 'balance_minor')
if redis.call('EXISTS', acct) == 1 then return {'EXISTS', ''} end

redis.call('HSET', acct, 'bal', string.format('%d', opening), 'cur', ARGV[3],
           'country', ARGV[5], 'lang', ARGV[6], 'name', ARGV[7], 'aliases', ARGV[8], 'op', ARGV[9])
local entry = ledger_append(seq_key, ledger_key, partition, player, 'open', opening, opening,
                            'admin', '', now_ms(),
                            {'cur', ARGV[3], 'country', ARGV[5], 'lang', ARGV[6],
                             'name', ARGV[7], 'aliases', ARGV[8], 'op', ARGV[9]})
return {'OK', entry}
