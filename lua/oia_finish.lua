-- oia_finish.lua: mark a known round finished (idempotent).
-- KEYS: 2
-- ARGV: 3
-- KEYS[1] account hash   KEYS[2] round record
-- ARGV[1] retention_ms   ARGV[2] operator id   ARGV[3] owner of accounts without one ('' = nobody)
-- Returns {code}: OK, NO_PLAYER, OP_34 (the player belongs to another operator),
-- NOT_FOUND (no transaction of this round is known).
if redis.call('EXISTS', KEYS[1]) == 0 then return {'NO_PLAYER'} end
if not owned_by(redis.call('HGET', KEYS[1], 'op'), ARGV[2], ARGV[3]) then return {'OP_34'} end
if redis.call('EXISTS', KEYS[2]) == 0 then return {'NOT_FOUND'} end
redis.call('HSET', KEYS[2], 'fin', '1')
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return {'OK'}
