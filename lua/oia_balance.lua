-- oia_balance.lua: a player's balance, for a live session of that player.
-- KEYS: 2
-- ARGV: 6
-- WAIT: no    (a read (its session refresh moves no money))
-- KEYS[1] account hash   KEYS[2] session (may not exist)
-- ARGV[1] player id   ARGV[2] operator id   ARGV[3] currency asked for
-- ARGV[4] currency allowed for the operator: 1 | 0   ARGV[5] session idle_ms
-- ARGV[6] owner of accounts without one ('' = nobody)
-- Returns {code, balance_minor, currency}; code: OK, OP_21, OP_30, OP_33,
-- OP_34 (no such player, or it belongs to another operator).
local a = redis.call('HMGET', KEYS[1], 'bal', 'cur', 'blocked', 'op')
if not a[1] or not owned_by(a[4], ARGV[2], ARGV[6]) then return {'OP_34', 0, ''} end
local s = redis.call('HMGET', KEYS[2], 'player', 'operator')
if s[1] ~= ARGV[1] or s[2] ~= ARGV[2] then return {'OP_21', 0, ''} end
if ARGV[3] ~= a[2] or ARGV[4] ~= '1' then return {'OP_30', 0, ''} end
if a[3] == '1' then return {'OP_33', 0, ''} end
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return {'OK', tonumber(a[1]), a[2]}
