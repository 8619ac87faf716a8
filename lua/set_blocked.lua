-- set_blocked.lua: block or unblock a player (read by every booking script).
-- KEYS: 1
-- ARGV: 1
-- KEYS[1] account hash   ARGV[1] 1 (block) | 0 (unblock)
-- Returns {code}: OK or NO_PLAYER.
if redis.call('EXISTS', KEYS[1]) == 0 then return {'NO_PLAYER'} end
redis.call('HSET', KEYS[1], 'blocked', ARGV[1])
return {'OK'}
