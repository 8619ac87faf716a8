-- oia_status.lua: the state of one transaction.
-- KEYS[1] account hash   KEYS[2] transaction record
-- ARGV[1] operator id   ARGV[2] owner of accounts without one ('' = nobody)
-- Returns {state}: NO_PLAYER, OP_34 (the player belongs to another operator),
-- MISSING (not in Redis: ask the ledger store), or the record's st: OK, ERROR, CANCELED, TOMB.
if redis.call('EXISTS', KEYS[1]) == 0 then return {'NO_PLAYER'} end
if not owned_by(redis.call('HGET', KEYS[1], 'op'), ARGV[1], ARGV[2]) then return {'OP_34'} end
local st = redis.call('HGET', KEYS[2], 'st')
if not st then return {'MISSING'} end
return {st}
