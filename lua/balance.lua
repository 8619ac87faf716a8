-- balance.lua: read a player's balance and profile.
-- KEYS: 1
-- ARGV: 0
-- WAIT: no    (a read)
-- KEYS[1] account hash
-- Returns {balance_minor, currency, language} or {} when the player is unknown.
local v = redis.call('HMGET', KEYS[1], 'bal', 'cur', 'lang')
if not v[1] then return {} end
return {tonumber(v[1]), v[2], v[3]}
