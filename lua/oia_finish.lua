-- oia_finish.lua: mark a known round finished (idempotent).
-- KEYS: 4
-- ARGV: 7
-- WAIT: yes   (replicas confirm the round's end: redis.replica_acks)
-- KEYS[1] account hash   KEYS[2] round record   KEYS[3] partition seq counter
-- KEYS[4] partition ledger stream
-- ARGV[1] retention_ms   ARGV[2] operator id   ARGV[3] owner of accounts without one ('' = nobody)
-- ARGV[4] player id   ARGV[5] partition number   ARGV[6] backlog_max   ARGV[7] round id
-- Ledger: marking the round finished writes a 'finish' journal entry (source oia, ref
-- '<operator>|', round, op; RECORD.md); a round already finished writes nothing.
-- Returns {code}: OK, NO_PLAYER, OP_34 (the player belongs to another operator),
-- NOT_FOUND (no transaction of this round is known), BACKLOG (ledger stream full: nothing written).
local acct, round_key, seq_key, ledger_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local retention_ms = integer_arg(ARGV[1], 'retention_ms')
local operator, player, partition = ARGV[2], ARGV[4], ARGV[5]
local backlog_max = integer_arg(ARGV[6], 'backlog_max')
local a = redis.call('HMGET', acct, 'bal', 'op')
if not a[1] then return {'NO_PLAYER'} end
if not owned_by(a[2], operator, ARGV[3]) then return {'OP_34'} end
-- (Every round record holds fin: lib/oia.lua keep_round.)
local fin = redis.call('HGET', round_key, 'fin')
if not fin then return {'NOT_FOUND'} end
if fin ~= '1' then
  if stream_full(ledger_key, backlog_max) then return {'BACKLOG'} end
  journal_append(seq_key, ledger_key, partition, player, 'finish', tonumber(a[1]), 'oia', operator .. '|',
                 now_ms(), {'round', ARGV[7], 'op', operator})
  redis.call('HSET', round_key, 'fin', '1')
end
redis.call('PEXPIRE', round_key, retention_ms)
return {'OK'}
