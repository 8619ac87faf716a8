-- oia_status.lua: the state of one transaction.
-- KEYS[1] account hash   KEYS[2] transaction record
-- Returns {state}: NO_PLAYER, MISSING (not in Redis: ask the ledger store),
-- or the record's st: OK, ERROR, CANCELED, TOMB.
if redis.call('EXISTS', KEYS[1]) == 0 then return {'NO_PLAYER'} end
local st = redis.call('HGET', KEYS[2], 'st')
if not st then return {'MISSING'} end
return {st}
