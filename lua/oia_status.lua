-- oia_status.lua: the state of one transaction.
-- KEYS: 3
-- ARGV: 3
-- WAIT: yes   (the state it reports: a platform acts on it after an outcome-unknown answer)
-- KEYS[1] account hash   KEYS[2] transaction record   KEYS[3] partition ledger stream
-- ARGV[1] operator id   ARGV[2] owner of accounts without one ('' = nobody)
-- ARGV[3] retention_ms (records)
-- Returns {state, behind}: state NO_PLAYER, OP_34 (the player belongs to another operator),
-- MISSING (not in Redis: ask the ledger store), or the record's st: OK, ERROR, CANCELED, TOMB;
-- behind (with MISSING) 1 if the ledger store may be behind (see lib/oia.lua), else 0.
local retention_ms = integer_arg(ARGV[3], 'retention_ms')
if redis.call('EXISTS', KEYS[1]) == 0 then return {'NO_PLAYER', 0} end
if not owned_by(redis.call('HGET', KEYS[1], 'op'), ARGV[1], ARGV[2]) then return {'OP_34', 0} end
local st = redis.call('HGET', KEYS[2], 'st')
if not st then return {'MISSING', store_may_be_behind(KEYS[3], now_ms(), retention_ms)} end
reaffirm(KEYS[2], 'st', st)
return {st, 0}
