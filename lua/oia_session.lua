-- oia_session.lua: open a game session for a player.
-- KEYS: 2
-- ARGV: 6
-- WAIT: no    (a session: lost in a failover, the player's next BET is refused, no money moves)
-- KEYS[1] account hash   KEYS[2] session (fresh random token)
-- ARGV[1] player id   ARGV[2] operator id   ARGV[3] game id ('' for a lobby)
-- ARGV[4] lobby id ('' for a game)   ARGV[5] idle_ms
-- ARGV[6] owner of accounts without one ('' = nobody)
-- Returns {code, currency, language}; code: OK, NO_PLAYER, FOREIGN (the player
-- belongs to another operator), TAKEN (token exists). Only OK writes.
local a = redis.call('HMGET', KEYS[1], 'cur', 'lang', 'op')
if not a[1] then return {'NO_PLAYER', '', ''} end
if not owned_by(a[3], ARGV[2], ARGV[6]) then return {'FOREIGN', '', ''} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'TAKEN', '', ''} end
redis.call('HSET', KEYS[2], 'player', ARGV[1], 'operator', ARGV[2], 'game', ARGV[3], 'lobby', ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return {'OK', a[1], a[2] or ''}
