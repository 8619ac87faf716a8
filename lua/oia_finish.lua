-- oia_finish.lua: mark a known round finished (idempotent).
-- KEYS[1] account hash   KEYS[2] round record
-- ARGV[1] retention_ms
-- Returns {code}: OK, NO_PLAYER, NOT_FOUND (no transaction of this round is known).
if redis.call('EXISTS', KEYS[1]) == 0 then return {'NO_PLAYER'} end
if redis.call('EXISTS', KEYS[2]) == 0 then return {'NOT_FOUND'} end
redis.call('HSET', KEYS[2], 'fin', '1')
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return {'OK'}
