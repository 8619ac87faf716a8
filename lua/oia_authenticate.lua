-- oia_authenticate.lua: the player behind a session token, with balance and profile.
-- KEYS: 2
-- ARGV: 4
-- WAIT: no    (a read (its session refresh moves no money))
-- KEYS[1] account hash   KEYS[2] session
-- ARGV[1] player id (read from the session just before)   ARGV[2] operator id
-- ARGV[3] session idle_ms   ARGV[4] owner of accounts without one ('' = nobody)
-- Returns {code, balance_minor, currency, name, country}; code: OK, OP_34 (the player
-- belongs to another operator: nothing written), OP_21 (no live session of this
-- player and operator), OP_22 (blocked or no account).
local a = redis.call('HMGET', KEYS[1], 'bal', 'cur', 'blocked', 'name', 'country', 'op')
if a[1] and not owned_by(a[6], ARGV[2], ARGV[4]) then return {'OP_34', 0, '', '', ''} end
local s = redis.call('HMGET', KEYS[2], 'player', 'operator')
if s[1] ~= ARGV[1] or s[2] ~= ARGV[2] then return {'OP_21', 0, '', '', ''} end
if not a[1] or a[3] == '1' then return {'OP_22', 0, '', '', ''} end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return {'OK', tonumber(a[1]), a[2], a[4] or '', a[5] or ''}
