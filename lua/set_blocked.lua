-- set_blocked.lua: block or unblock a player (read by every booking script).
-- KEYS: 3
-- ARGV: 3
-- WAIT: yes   (replicas confirm a block decision: redis.replica_acks)
-- KEYS[1] account hash   KEYS[2] partition seq counter   KEYS[3] partition ledger stream
-- ARGV[1] 1 (block) | 0 (unblock)   ARGV[2] player id   ARGV[3] partition number
-- Ledger: a 'block' or 'unblock' journal entry (source admin, ref '', cur; RECORD.md), every
-- call: an operator's decision, recorded even when the state was already so. No backlog
-- refusal: blocking a player must work while the ledger store is down.
-- Returns {code}: OK or NO_PLAYER.
local acct, seq_key, ledger_key = KEYS[1], KEYS[2], KEYS[3]
local blocked, player, partition = ARGV[1], ARGV[2], ARGV[3]
if blocked ~= '1' and blocked ~= '0' then error('walletd: blocked must be 1 or 0') end
local a = redis.call('HMGET', acct, 'bal', 'cur')
if not a[1] then return {'NO_PLAYER'} end
local kind = 'unblock'
if blocked == '1' then kind = 'block' end
journal_append(seq_key, ledger_key, partition, player, kind, tonumber(a[1]), 'admin', '', now_ms(), {'cur', a[2]})
redis.call('HSET', acct, 'blocked', blocked)
return {'OK'}
